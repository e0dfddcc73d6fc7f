"""Fixtures every traffic test shares: two real HTTP backends, one per slot."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.backends import Backend


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
