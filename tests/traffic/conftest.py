"""Fixtures every traffic test shares: two real HTTP backends, one per slot, and a real
Nginx running the shipped site in front of them."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends import Backend
from tests.nginx_instance import NginxInstance
from tests.traffic.switch_helpers import BEFORE


@pytest.fixture
def blue() -> Iterator[Backend]:
    backend = Backend("blue").start()
    yield backend
    backend.stop()


@pytest.fixture
def green() -> Iterator[Backend]:
    backend = Backend("green").start()
    yield backend
    backend.stop()


@pytest.fixture
def green2() -> Iterator[Backend]:
    """Green again, on another port: a slot whose address changed."""
    backend = Backend("green").start()
    yield backend
    backend.stop()


@pytest.fixture
def prefix() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="nocturna-nginx-"))
    yield path
    subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True, check=False)
    shutil.rmtree(path)


@pytest.fixture
def nginx(prefix: Path, blue: Backend, green: Backend) -> Iterator[NginxInstance]:
    """Nginx with both slots' groups, routing to blue, as after an earlier switch."""
    instance = NginxInstance(prefix, blue.port, green.port)
    instance.write_config()
    instance.write_routing("blue", {"blue": blue.server, "green": green.server}, BEFORE)
    instance.start()
    yield instance
    instance.stop()
