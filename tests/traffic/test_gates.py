"""Release gates against a real Nginx (the shipped config) and HTTP backends, under load.

Smoke checks refuse a release before any traffic moves; the watch window switches back a
release that fails after the switch, judged by real traffic in the site's JSON access log or,
with no traffic, by probes through Nginx.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from nocturna_infra.traffic import gates
from nocturna_infra.traffic.exits import ExitCode
from nocturna_infra.traffic.switch import main
from tests.backends import Backend
from tests.nginx_instance import NginxInstance, switch_argv

pytestmark = pytest.mark.nginx

BEFORE = datetime(2026, 11, 26, 9, 0, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 26, 20, 40, 5, tzinfo=UTC)
RENDER = {
    "name": "render",
    "method": "POST",
    "path": "/render",
    "headers": {"Authorization": "Bearer ${API_KEY}"},
    "body": {"planets": {}},
    "expectStatus": 200,
}
API_KEY = "gate-test-key-5d1e"


@pytest.fixture
def nginx(blue: Backend, green: Backend) -> Iterator[NginxInstance]:
    prefix = Path(tempfile.mkdtemp(prefix="nocturna-gates-"))
    instance = NginxInstance(prefix, blue.port, green.port)
    instance.write_config()
    instance.write_routing("blue", {"blue": blue.server, "green": green.server}, BEFORE)
    instance.start()
    yield instance
    instance.stop()
    shutil.rmtree(prefix)


class SlotLoad:
    """Keep-alive clients through Nginx, recording which slot answered each request and how."""

    def __init__(self, url: str, clients: int = 3) -> None:
        self.url = url
        self.clients = clients
        self.answers: list[tuple[str, int]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        with requests.Session() as session:
            session.trust_env = False
            while not self._stop.is_set():
                try:
                    response = session.get(self.url, timeout=10)
                    slot = response.headers.get("X-Slot") or response.json().get("slot", "?")
                    self.answers.append((slot, response.status_code))
                except (requests.RequestException, ValueError) as error:
                    self.answers.append(("error", type(error).__name__))  # type: ignore[arg-type]
                time.sleep(0.005)

    def __enter__(self) -> SlotLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def counts(self) -> Counter[tuple[str, int]]:
        return Counter(self.answers)


def watch_flags(nginx: NginxInstance, seconds: str = "20", *extra: str) -> list[str]:
    return [
        "--watch-seconds", seconds,
        "--watch-log", str(nginx.slots_log),
        "--watch-started-log", str(nginx.started_log),
        "--watch-min-requests", "10",
        "--watch-probe-interval", "0.5",
        *extra,
    ]  # fmt: skip


def selection(nginx: NginxInstance) -> list[str]:
    return sorted(p.name for p in nginx.selection_dir.iterdir())


def record(nginx: NginxInstance) -> dict:
    data = gates.read_record(gates.record_path(nginx.upstream_file))
    assert data is not None
    return data


def test_release_failing_its_smoke_check_is_refused_while_live_serves_load(
    nginx, blue, green, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("API_KEY", API_KEY)
    green.render_status = 500
    before = (nginx.upstream_file.read_bytes(), selection(nginx))
    argv = switch_argv(nginx, green, "--smoke-checks", json.dumps([RENDER]))

    with SlotLoad(nginx.url("/")) as load:
        time.sleep(0.3)
        code = main(argv, now=lambda: NOW)
        time.sleep(0.3)

    err = capsys.readouterr().err
    assert code == ExitCode.UNHEALTHY
    assert err.startswith(
        f"switch: green failed smoke check 'render' (POST http://{green.server}/render) "
        "returned 500, expected 200: "
    )
    assert err.strip().endswith("; nothing changed")
    assert (nginx.upstream_file.read_bytes(), selection(nginx)) == before
    counts = load.counts()
    assert set(counts) == {("blue", 200)}, counts
    assert green.last_authorization == f"Bearer {API_KEY}"


def test_smoke_secret_never_appears_in_argv_or_output(nginx, green, capsys, monkeypatch) -> None:
    monkeypatch.setenv("API_KEY", API_KEY)
    argv = switch_argv(nginx, green, "--smoke-checks", json.dumps([RENDER]))

    code = main(argv, now=lambda: NOW)

    out = capsys.readouterr()
    assert code == ExitCode.OK
    assert green.last_authorization == f"Bearer {API_KEY}"
    assert API_KEY not in " ".join(argv) + out.out + out.err
    assert "smoke check 'render'" in out.out


def test_smoke_checks_naming_an_unset_variable_are_refused_before_anything(
    nginx, green, capsys, monkeypatch
) -> None:
    monkeypatch.delenv("API_KEY", raising=False)

    code = main(switch_argv(nginx, green, "--smoke-checks", json.dumps([RENDER])))

    assert code == ExitCode.USAGE
    assert capsys.readouterr().err == (
        "switch: --smoke-checks: environment variable API_KEY is unset or empty "
        "(named by a ${VAR} header template)\n"
    )
    assert green.requests_seen == 0


def test_bad_check_definition_is_refused_naming_index_and_field(nginx, green, capsys) -> None:
    checks = json.dumps([{"name": "render", "path": "/render", "method": "FETCH"}])

    code = main(switch_argv(nginx, green, "--smoke-checks", checks))

    assert code == ExitCode.USAGE
    assert capsys.readouterr().err == (
        "switch: --smoke-checks[0].method: must be one of GET, HEAD, POST, PUT, PATCH, DELETE, "
        "OPTIONS; got 'FETCH'\n"
    )


def test_release_turning_to_500s_is_switched_back_within_the_window_under_load(
    nginx, blue, green, capsys
) -> None:
    green.fail_after = 40  # healthy at the switch, broken a moment later
    argv = switch_argv(nginx, green, *watch_flags(nginx, "30"))

    with SlotLoad(nginx.url("/")) as load:
        time.sleep(0.3)
        code = main(argv, now=lambda: NOW)
        time.sleep(0.3)

    out = capsys.readouterr()
    assert code == ExitCode.WATCH_SWITCHED_BACK, out  # 9 only comes from inside the window
    assert "switched back to blue" in out.err
    assert selection(nginx) == ["nocturna-img-production.blue"]
    assert nginx.slot_served() == "blue"
    counts = load.counts()
    assert {key for key in counts if key[0] == "blue"} == {("blue", 200)}, counts
    assert counts[("green", 500)] > 0
    assert not [key for key in counts if key[0] not in ("blue", "green")], counts
    saved = record(nginx)
    assert (saved["slot"], saved["previous"], saved["result"]) == ("green", "blue", "switched-back")
    assert saved["seen"]["requests"] >= 10  # --watch-min-requests: judged on enough traffic
    assert saved["seen"]["failed"] >= 1
    assert saved["secondsFromFirstFailureToSwitchBack"] >= 0


def test_healthy_release_passes_the_watch(nginx, blue, green, capsys) -> None:
    argv = switch_argv(nginx, green, *watch_flags(nginx, "2"))

    with SlotLoad(nginx.url("/")) as load:
        code = main(argv, now=lambda: NOW)

    out = capsys.readouterr().out
    assert code == ExitCode.OK
    assert out.splitlines()[-1].endswith("green passed the 2s watch")
    assert selection(nginx) == ["nocturna-img-production.green"]
    assert not [key for key in load.counts() if key[1] != 200], load.counts()
    saved = record(nginx)
    assert saved["result"] == "passed"
    assert saved["seen"]["requests"] > 0
    assert saved["seen"]["failed"] == 0


def test_quiet_window_is_judged_by_probes_through_nginx(nginx, blue, green, capsys) -> None:
    green.fail_after = 0  # /health stays 200; every other request fails
    flags = watch_flags(nginx, "30", "--watch-probe-path", "/ping")
    argv = switch_argv(nginx, green, *flags)

    code = main(argv, now=lambda: NOW)

    err = capsys.readouterr().err
    assert code == ExitCode.WATCH_SWITCHED_BACK, err
    assert "3 probes through Nginx failed in a row" in err
    assert "/ping returned 500, expected 200" in err
    assert selection(nginx) == ["nocturna-img-production.blue"]
    saved = record(nginx)
    assert (saved["seen"]["requests"], saved["seen"]["failedProbes"]) == (0, 3)


def test_heavy_smoke_check_runs_once_before_the_flip_never_during_the_watch(
    nginx, blue, green, capsys, monkeypatch
) -> None:
    """Issue 21, finding 3: a render every 2 s as the watch probe overlapped with clients'
    renders and wedged the slot it watched. The watch probes /health; the render ran once."""
    monkeypatch.setenv("API_KEY", API_KEY)
    checks = json.dumps([RENDER])
    flags = watch_flags(nginx, "2", "--watch-probe-interval", "0.1")
    argv = switch_argv(nginx, green, "--smoke-checks", checks, *flags)

    code = main(argv, now=lambda: NOW)

    assert code == ExitCode.OK, capsys.readouterr().err
    assert green.served == 1  # the smoke render, before the flip
    assert record(nginx)["seen"]["probes"] >= 3


def test_watch_holds_no_lock_and_leaves_a_break_glass_switch_alone(nginx, blue, green) -> None:
    green.fail_after = 0  # every request fails, but the error rate needs 50 requests first
    flags = watch_flags(nginx, "30", "--watch-min-requests", "50", "--watch-failed-probes", "99")
    watching = subprocess.Popen(
        [sys.executable, "-m", "nocturna_infra.switch", *switch_argv(nginx, green, *flags)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while "watch nocturna-img-production-green" not in next_line(watching, deadline):
        pass

    # Break glass while the watch runs: the lock is free, the switch goes through at once.
    code = main(switch_argv(nginx, blue), now=lambda: NOW)
    out, err = watching.communicate(timeout=60)

    assert code == ExitCode.OK
    assert watching.returncode == ExitCode.OK, err
    assert "watch superseded: the selection no longer names the watched slot" in out
    assert selection(nginx) == ["nocturna-img-production.blue"]
    assert record(nginx)["result"] == "superseded"


def next_line(process: subprocess.Popen[str], deadline: float) -> str:
    """The next line the watching switch printed (fails the test after the deadline)."""
    assert time.monotonic() < deadline, "the switch never started watching"
    assert process.stdout is not None
    return process.stdout.readline()


def test_unreadable_watch_log_is_refused_before_anything_changes(nginx, green, capsys) -> None:
    nginx.slots_log.unlink(missing_ok=True)
    nginx.slots_log.mkdir()  # a directory cannot be read as a log
    before = (nginx.upstream_file.read_bytes(), selection(nginx))

    code = main(switch_argv(nginx, green, *watch_flags(nginx, "5")), now=lambda: NOW)

    assert code == ExitCode.FILESYSTEM
    assert capsys.readouterr().err == (
        f"switch: --watch-log {nginx.slots_log}: unreadable (Is a directory); nothing changed\n"
    )
    assert (nginx.upstream_file.read_bytes(), selection(nginx)) == before


def test_sigterm_during_the_watch_leaves_the_new_slot_live_and_says_so(nginx, green) -> None:
    flags = watch_flags(nginx, "30")
    watching = subprocess.Popen(
        [sys.executable, "-m", "nocturna_infra.switch", *switch_argv(nginx, green, *flags)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while "watch nocturna-img-production-green" not in next_line(watching, deadline):
        pass

    watching.terminate()
    _, err = watching.communicate(timeout=30)

    assert watching.returncode == 128 + 15
    assert err.startswith("switch: interrupted by SIGTERM during the watch; green stays live")
    assert selection(nginx) == ["nocturna-img-production.green"]
    assert record(nginx)["result"] == "interrupted"


# --- the key never leaks (issue 17, finding 1) -------------------------------------------------

FORMAT_PNG = {**RENDER, "expectJsonField": "data.format", "expectJsonValue": "png"}


def test_key_echoed_into_the_expected_json_value_is_masked_in_the_refusal(
    nginx, green, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("API_KEY", API_KEY)
    green.echo_authorization = "json"  # answers {"data": {"format": "Bearer <key>"}}

    code = main(
        switch_argv(nginx, green, "--smoke-checks", json.dumps([FORMAT_PNG])), now=lambda: NOW
    )

    out = capsys.readouterr()
    assert code == ExitCode.UNHEALTHY
    assert out.err == (
        f"switch: green failed smoke check 'render' (POST http://{green.server}/render) "
        'returned 200 with data.format="Bearer ***", expected "png"; nothing changed\n'
    )
    assert API_KEY[:9] not in out.out + out.err


def test_key_crossing_the_cut_of_the_quoted_body_leaves_no_part_readable(
    nginx, green, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("API_KEY", API_KEY)
    green.echo_authorization = "body"  # a 500 quoting the header, the key from byte 190 on
    green.echo_offset = 183

    code = main(switch_argv(nginx, green, "--smoke-checks", json.dumps([RENDER])), now=lambda: NOW)

    out = capsys.readouterr()
    assert code == ExitCode.UNHEALTHY
    assert out.err == (
        f"switch: green failed smoke check 'render' (POST http://{green.server}/render) "
        f"returned 500, expected 200: '{'e' * 183}Bearer ***'; nothing changed\n"
    )
    assert API_KEY[:9] not in out.out + out.err


def test_watch_record_is_owner_only_and_the_watch_never_sends_the_key_again(
    nginx, green, capsys, monkeypatch
) -> None:
    """Before issue 21 the watch re-ran the smoke checks (with the key) as its probe and the
    record quoted their answers, masked. Now the probe is a plain GET without the key: the
    release cannot echo it into the record at all."""
    monkeypatch.setenv("API_KEY", API_KEY)
    green.render_json = True
    green.echo_authorization = "json"
    green.echo_after = 1  # would echo the key from the second render on
    green.fail_after = 1  # ... and fail every request after the smoke check
    checks = json.dumps([FORMAT_PNG])
    flags = watch_flags(nginx, "30", "--watch-probe-path", "/ping")
    argv = switch_argv(nginx, green, "--smoke-checks", checks, *flags)

    code = main(argv, now=lambda: NOW)

    out = capsys.readouterr()
    path = gates.record_path(nginx.upstream_file)
    saved = path.read_text()
    assert code == ExitCode.WATCH_SWITCHED_BACK, out.err
    assert green.last_authorization == f"Bearer {API_KEY}"  # the smoke check's, once
    assert API_KEY[:9] not in saved + out.out + out.err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- a signal between the flip and the watch (issue 17, finding 6) -----------------------------


@pytest.mark.parametrize("hook", ["new_record", "nginx_probe"])
def test_sigterm_after_the_flip_before_the_watch_reports_the_move_and_closes_the_record(
    nginx, green, capsys, monkeypatch, hook
) -> None:
    """The flip is done, the watch has not started: SIGTERM must not say "nothing changed"
    (traffic moved) nor leave a record saying "watching"."""
    real = getattr(gates, hook)
    calls = []

    def signal_then_call(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(hook)
        result = real(*args, **kwargs)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return result

    monkeypatch.setattr(gates, hook, signal_then_call)

    code = main(switch_argv(nginx, green, *watch_flags(nginx, "30")), now=lambda: NOW)

    assert code == 128 + signal.SIGTERM
    assert capsys.readouterr().err == (
        "switch: interrupted by SIGTERM after the switch; traffic moved to green, the watch did "
        "not run (switch to blue to go back)\n"
    )
    assert selection(nginx) == ["nocturna-img-production.green"]
    assert nginx.slot_served() == "green"
    saved = record(nginx)
    assert (saved["slot"], saved["previous"], saved["result"]) == ("green", "blue", "interrupted")
    assert saved["reason"] == "by SIGTERM after the switch, before the watch"
