"""The reload window (issue 21): when a slot's servers change, the switch reloads Nginx and
flips. Old workers still starting requests on their keep-alive connections read the new
selection with the old upstream groups, so a flip before they are done sends requests to the
target slot's *previous* servers. The switch flips only once every old worker has exited or
is shutting down; these tests run it under keep-alive load with a real Nginx."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from nocturna_infra.traffic import reload
from nocturna_infra.traffic.exits import ExitCode
from nocturna_infra.traffic.switch import main
from tests.backends import Backend
from tests.nginx_instance import NginxInstance, switch_argv
from tests.traffic.switch_helpers import BEFORE, NOW, selection

pytestmark = pytest.mark.nginx
CYCLES = 5


@pytest.fixture
def replaced() -> Iterator[Backend]:
    """Green's previous server: healthy, but every other request fails (a bad release)."""
    backend = Backend("green-previous", fail_after=0).start()
    yield backend
    backend.stop()


class KeepAliveLoad:
    """Clients on keep-alive connections through Nginx; (X-Slot, status) of every answer."""

    def __init__(self, url: str, clients: int = 6) -> None:
        self.url = url
        self.answers: Counter[tuple[str, int | str]] = Counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        with requests.Session() as session:
            session.trust_env = False
            while not self._stop.is_set():
                try:
                    response = session.get(self.url, timeout=10)
                    self.answers[(response.headers.get("X-Slot", "?"), response.status_code)] += 1
                except requests.RequestException as error:
                    self.answers[("error", type(error).__name__)] += 1

    def __enter__(self) -> KeepAliveLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)


def settle(nginx: NginxInstance) -> None:
    """Wait until this Nginx has no worker left from an earlier reload."""
    master = nginx.master_pid()
    assert master is not None
    deadline = time.monotonic() + 30
    while any(reload.SHUTTING_DOWN in t for t in reload.workers(master).values()):
        assert time.monotonic() < deadline, "old workers never exited"
        time.sleep(0.05)


def test_flip_after_a_server_change_waits_for_old_workers_under_keepalive_load(
    nginx, blue, green, replaced, capsys
) -> None:
    with KeepAliveLoad(nginx.url("/")) as load:
        for _ in range(CYCLES):
            # Green's group names the previous (failing) server, blue is live and loaded.
            nginx.write_routing("blue", {"blue": blue.server, "green": replaced.server}, BEFORE)
            (nginx.selection_dir / "nocturna-img-production.green").unlink(missing_ok=True)
            subprocess.run(nginx.command("-s", "reload"), check=True, capture_output=True)
            settle(nginx)
            time.sleep(0.2)  # load on every new worker's keep-alive connections

            code = main(switch_argv(nginx, green), now=lambda: NOW)

            assert code == ExitCode.OK, capsys.readouterr().err
            settle(nginx)

    out = capsys.readouterr().out
    assert selection(nginx) == ["nocturna-img-production.green"]
    assert out.count("nginx reload: in effect in every worker after ") == CYCLES
    assert [key for key in load.answers if key[0] == "green-previous"] == []
    # Every HTTP answer is a 200 from the live slot. (A reload closes idle keep-alive
    # connections, which a client may see as a reset: a known cost of reloads, README.)
    assert [key for key in load.answers if key[0] != "error" and key[1] != 200] == []
    assert load.answers[("green", 200)] > 0


def test_a_reload_the_workers_never_take_fails_and_restores(nginx, green2, capsys) -> None:
    """A reload command that signals another Nginx (or none): the old workers never go, so
    the switch must not flip; it restores after --reload-timeout."""
    before = (nginx.upstream_file.read_bytes(), selection(nginx))
    argv = switch_argv(nginx, green2, "--nginx-reload", "true", "--reload-timeout", "1")

    code = main(argv, now=lambda: NOW)

    err = capsys.readouterr().err
    assert code == ExitCode.RELOAD_FAILED
    assert err.startswith("switch: reload did not take effect in every worker within 1s (2 of ")
    assert (nginx.upstream_file.read_bytes(), selection(nginx)) == before
    assert nginx.slot_served() == "blue"


def test_workers_are_read_from_proc_with_their_titles(nginx) -> None:
    master = nginx.master_pid()
    assert master is not None

    titles = reload.workers(master)

    assert sorted(titles.values()) == ["nginx: worker process"] * 2
    assert all(Path(f"/proc/{pid}").exists() for pid in titles)
    assert os.getpid() not in titles
