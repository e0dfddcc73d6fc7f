"""What the switch tests share: the expected upstream file, the selection and state of a test
Nginx, recorders for Nginx commands, and a switch run as a child process (for signals)."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from tests.nginx_instance import NginxInstance

BEFORE = datetime(2026, 11, 26, 9, 0, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 26, 20, 40, 5, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


def both_groups(blue_server: str, green_server: str) -> str:
    return (
        "# Managed by nocturna_infra.switch; rewritten whole when a slot's servers change, "
        "do not edit.\n"
        "# written-at: 2026-11-26T20:40:05Z\n"
        "upstream nocturna-img-production-blue {\n"
        f"    server {blue_server};\n"
        "    keepalive 32;\n"
        "    keepalive_timeout 60s;\n"
        "}\n"
        "upstream nocturna-img-production-green {\n"
        f"    server {green_server};\n"
        "    keepalive 32;\n"
        "    keepalive_timeout 60s;\n"
        "}\n"
    )


def selection(nginx: NginxInstance) -> list[str]:
    """The selection files present (and nothing else may linger in that directory)."""
    return sorted(path.name for path in nginx.selection_dir.iterdir())


def state(nginx: NginxInstance) -> tuple[bytes, list[str]]:
    return nginx.upstream_file.read_bytes(), selection(nginx)


BLUE_SELECTED = ["nocturna-img-production.blue"]
GREEN_SELECTED = ["nocturna-img-production.green"]


NO_WAIT = ("--nginx-pid-file", "")
"""For a stand-in reload command that reloads nothing: no old workers to wait for."""


def call_recorder(log: Path, status: int, then: str = "") -> str:
    """A command that records that it was called, then runs `then` (or exits `status`)."""
    rest = f"exec {then}" if then else f"exit {status}"
    return shlex.join(["sh", "-c", f"echo called >> {shlex.quote(str(log))}; {rest}"])


def calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def served_eventually(nginx: NginxInstance, slot: str) -> str:
    """Right after a reload an old worker may answer once more; give it a bounded moment."""
    served = nginx.slot_served()
    for _ in range(20):
        if served == slot:
            break
        time.sleep(0.05)
        served = nginx.slot_served()
    return served


def start_switch(argv: list[str], stderr: int = subprocess.DEVNULL) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "nocturna_infra.switch", *argv],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )


def wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
