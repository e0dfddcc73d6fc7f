"""The switch end to end (`orchestration`: probe, smoke, lock, flip, verify) against a real
Nginx (the shipped config) and real HTTP backends on 127.0.0.1: the happy path, and every
failure before anything changes. Failure tests assert the exit code, the stderr line, the
upstream file and selection afterwards, and that traffic still reaches the previous slot."""

from __future__ import annotations

import fcntl
import http.client
import json
import re
import shutil
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from nocturna_infra.traffic.exits import ExitCode
from nocturna_infra.traffic.switch import main
from tests.nginx_instance import switch_argv
from tests.traffic.switch_helpers import (
    BLUE_SELECTED,
    GREEN_SELECTED,
    NO_WAIT,
    NOW,
    call_recorder,
    calls,
    selection,
    state,
)

pytestmark = pytest.mark.nginx


# --- happy path: no reload, the very next request on the new slot ---------------------------


def test_switch_flips_the_selection_without_rewriting_or_reloading(
    nginx, green, tmp_path, capsys
) -> None:
    before = nginx.upstream_file.read_bytes()
    log = tmp_path / "reloads.log"

    code = main(
        switch_argv(nginx, green, "--nginx-reload", call_recorder(log, 1), *NO_WAIT),
        now=lambda: NOW,
    )

    out = capsys.readouterr()
    assert (code, out.err) == (ExitCode.OK, "")
    assert state(nginx) == (before, GREEN_SELECTED)
    assert calls(log) == 0
    assert (nginx.selection_dir / "nocturna-img-production.green").read_text() == "green\n"
    assert [nginx.slot_served() for _ in range(5)] == ["green"] * 5


def test_the_next_request_after_each_switch_reaches_the_new_slot(nginx, blue, green) -> None:
    served = []
    for index in range(10):
        target = green if index % 2 == 0 else blue
        assert main(switch_argv(nginx, target), now=lambda: NOW) == ExitCode.OK
        served.append((target.slot, nginx.slot_served()))

    assert served == [(slot, slot) for slot, _ in served]


def test_switch_prints_one_line_per_step_and_a_summary(nginx, green, capsys) -> None:
    main(switch_argv(nginx, green), now=lambda: NOW)

    lines = capsys.readouterr().out.splitlines()
    steps = [re.sub(r"^\[\d+\.\d\ds\] ", "", line) for line in lines[:-1]]
    assert steps == [
        f"switch nocturna-img-production to green (127.0.0.1:{green.port})",
        f"probe {green.url('/health')}: 200",
        f"lock {nginx.upstream_file}.lock: held",
        f"{nginx.upstream_file}: servers unchanged; not rewritten, no reload",
        f"select green in {nginx.selection_dir} (was blue)",
        f"verify {nginx.verify_url('/health')}: 200 from 127.0.0.1:{green.port}",
    ]
    assert re.fullmatch(
        rf"switch: switched to green -> 127\.0\.0\.1:{green.port} \(nocturna-img-production\) "
        r"in \d+\.\d\ds",
        lines[-1],
    )


def test_repeat_switch_to_live_slot_rewrites_nothing_and_does_not_reload(
    nginx, green, tmp_path, capsys
) -> None:
    assert main(switch_argv(nginx, green), now=lambda: NOW) == ExitCode.OK
    before = (state(nginx), nginx.upstream_file.stat().st_mtime_ns)
    log = tmp_path / "reloads.log"
    capsys.readouterr()

    code = main(
        switch_argv(nginx, green, "--nginx-reload", call_recorder(log, 0), *NO_WAIT),
        now=lambda: datetime(2027, 1, 1, tzinfo=UTC),
    )

    out = capsys.readouterr()
    assert (code, out.err) == (ExitCode.OK, "")
    assert (state(nginx), nginx.upstream_file.stat().st_mtime_ns) == before
    assert calls(log) == 0
    assert out.out.splitlines()[-1].startswith(f"switch: already live: green -> {green.server} ")


def test_nginx_restart_keeps_the_selected_slot(nginx, green) -> None:
    assert main(switch_argv(nginx, green), now=lambda: NOW) == ExitCode.OK

    nginx.stop()
    nginx.start()

    assert [nginx.slot_served() for _ in range(3)] == ["green"] * 3


def test_keepalive_clients_lose_nothing_across_switches(nginx, blue, green) -> None:
    """Persistent connections that never retry (like wrk): a failure or a reconnect would
    show. Each client keeps one connection for the whole test."""
    stop = threading.Event()
    failures: list[str] = []
    served: list[str] = []
    lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", nginx.listen_port, timeout=10)
        connection.connect()
        first_socket = connection.sock
        try:
            while not stop.is_set():
                connection.request("GET", "/")
                response = connection.getresponse()
                response.read()
                with lock:
                    served.append(response.getheader("X-Slot", ""))
                    if response.status != 200:
                        failures.append(f"status {response.status}")
                    if connection.sock is not first_socket:
                        failures.append("connection was closed and reopened")
        except (OSError, http.client.HTTPException) as error:
            with lock:
                failures.append(repr(error))
        finally:
            connection.close()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.3)
        for index in range(10):
            target = green if index % 2 == 0 else blue
            assert main(switch_argv(nginx, target), now=lambda: NOW) == ExitCode.OK
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)

    assert failures == []
    assert {"blue", "green"} <= set(served)


def test_target_that_becomes_healthy_after_a_delay_is_switched(nginx, green) -> None:
    green.healthy_after = 0.8
    green.start_clock()

    code = main(switch_argv(nginx, green, "--attempts", "40", "--interval", "0.2"), now=lambda: NOW)

    assert code == ExitCode.OK
    assert selection(nginx) == GREEN_SELECTED
    assert nginx.slot_served() == "green"


def test_smoke_probe_that_passes_lets_the_switch_proceed(nginx, green) -> None:
    smoke = [
        "--smoke-url", green.url("/render"),
        "--smoke-method", "POST",
        "--smoke-body", '{"width":100}',
        "--smoke-content-type", "image/png",
    ]  # fmt: skip

    assert main(switch_argv(nginx, green, *smoke), now=lambda: NOW) == ExitCode.OK


def test_host_header_is_sent_with_probes(nginx, green) -> None:
    code = main(switch_argv(nginx, green, "--host-header", "charts.example.com"), now=lambda: NOW)

    assert code == ExitCode.OK
    assert green.last_host == "charts.example.com"


# --- failures before anything changes -------------------------------------------------------


def test_unhealthy_target_exits_3_and_changes_nothing(nginx, green, capsys) -> None:
    green.health_status = 503
    before = state(nginx)

    code = main(switch_argv(nginx, green), now=lambda: NOW)

    err = capsys.readouterr().err
    assert code == ExitCode.UNHEALTHY
    assert re.fullmatch(
        rf"switch: green not healthy after \d+\.\ds \({re.escape(green.url('/health'))} "
        r"returned 503, expected 200\)\n",
        err,
    )
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


@pytest.mark.parametrize("part", ["headers", "body"])
def test_trickling_target_is_refused_within_the_timeout(nginx, green, capsys, part) -> None:
    """A slot sending one byte every 0.2 s keeps every read short: only a total deadline
    stops the probe (issue 17, finding 5)."""
    green.trickle, green.trickle_part = 0.2, part
    before = state(nginx)
    started = time.monotonic()

    code = main(switch_argv(nginx, green, "--timeout", "1", "--attempts", "1"), now=lambda: NOW)

    took = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == ExitCode.UNHEALTHY
    assert re.fullmatch(
        rf"switch: green not healthy after \d+\.\ds \({re.escape(green.url('/health'))} "
        r"timed out after 1s\)\n",
        err,
    )
    assert took < 2.5
    assert state(nginx) == before


def test_trickling_smoke_answer_is_cut_at_the_checks_timeout(
    nginx, green, capsys, monkeypatch
) -> None:
    monkeypatch.setenv("API_KEY", "trickle-test-key")
    checks = json.dumps(
        [{"name": "render", "method": "POST", "path": "/render", "body": {}, "timeoutSeconds": 1}]
    )
    before = state(nginx)
    green.trickle, green.trickle_health = 0.2, False  # /render takes ~5 s, byte by byte
    started = time.monotonic()

    code = main(switch_argv(nginx, green, "--smoke-checks", checks), now=lambda: NOW)

    took = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == ExitCode.UNHEALTHY
    assert err == (
        f"switch: green failed smoke check 'render' (POST http://{green.server}/render) "
        "timed out after 1s; nothing changed\n"
    )
    assert took < 2.5
    assert state(nginx) == before


def test_oversized_probe_answer_is_refused(nginx, green, capsys) -> None:
    big = green.url("/big?n=9000000")  # above the 8 MiB cap

    code = main(switch_argv(nginx, green, "--health-url", big, "--attempts", "1"), now=lambda: NOW)

    err = capsys.readouterr().err
    assert code == ExitCode.UNHEALTHY
    assert err.endswith(f"({big} answered more than 8388608 bytes)\n")
    assert selection(nginx) == BLUE_SELECTED


def test_wrong_service_on_target_port_exits_3(nginx, green, capsys) -> None:
    green.wrong_service = True
    before = state(nginx)

    code = main(
        switch_argv(nginx, green, "--health-contains", '"status":"healthy"'), now=lambda: NOW
    )

    err = capsys.readouterr().err
    assert code == ExitCode.UNHEALTHY
    assert err.endswith(f'({green.url("/health")} returned 200 without \'"status":"healthy"\')\n')
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


def test_failing_smoke_request_exits_3_although_health_is_200(nginx, green, capsys) -> None:
    green.render_status = 500
    before = state(nginx)

    code = main(
        switch_argv(nginx, green, "--smoke-url", green.url("/render"), "--smoke-method", "POST"),
        now=lambda: NOW,
    )

    err = capsys.readouterr().err
    assert code == ExitCode.UNHEALTHY
    assert err.endswith(f"(POST {green.url('/render')} returned 500, expected 200)\n")
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


def test_nothing_listening_on_target_exits_3(nginx, green, capsys) -> None:
    green.stop()
    before = state(nginx)

    code = main(switch_argv(nginx, green), now=lambda: NOW)

    assert code == ExitCode.UNHEALTHY
    assert capsys.readouterr().err.endswith(f"({green.url('/health')} refused the connection)\n")
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


def test_lock_held_by_another_switch_exits_7_at_once(nginx, green, capsys) -> None:
    before = state(nginx)
    lock = Path(f"{nginx.upstream_file}.lock")
    with lock.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        handle.write("pid 1 switching to blue\n")
        handle.flush()

        code = main(switch_argv(nginx, green), now=lambda: NOW)

    assert code == ExitCode.LOCKED
    assert capsys.readouterr().err == (
        f"switch: another switch holds {lock} (pid 1 switching to blue)\n"
    )
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


def test_lock_wait_proceeds_once_the_other_switch_finishes(nginx, green) -> None:
    lock = Path(f"{nginx.upstream_file}.lock")
    handle = lock.open("a+")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    threading.Timer(0.3, handle.close).start()

    code = main(switch_argv(nginx, green, "--lock-wait", "5"), now=lambda: NOW)

    assert code == ExitCode.OK
    assert selection(nginx) == GREEN_SELECTED


def _immutable(path: Path) -> None:
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"chattr +i unsupported here: {done.stderr.decode().strip()}")


def test_selection_not_writable_exits_8_and_changes_nothing(nginx, green, capsys) -> None:
    before = state(nginx)
    _immutable(nginx.selection_dir)
    try:
        code = main(switch_argv(nginx, green), now=lambda: NOW)
    finally:
        subprocess.run(["chattr", "-i", str(nginx.selection_dir)], check=True)

    assert code == ExitCode.FILESYSTEM
    assert capsys.readouterr().err == (
        f"switch: cannot write the selection in {nginx.selection_dir}: Operation not permitted"
        "; nothing changed\n"
    )
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


def test_upstream_directory_not_writable_on_a_server_change_exits_8(
    nginx, green2, tmp_path, capsys
) -> None:
    before = state(nginx)
    _immutable(nginx.upstream_file.parent)
    try:
        code = main(
            switch_argv(nginx, green2, "--lock-file", str(tmp_path / "switch.lock")),
            now=lambda: NOW,
        )
    finally:
        subprocess.run(["chattr", "-i", str(nginx.upstream_file.parent)], check=True)

    assert code == ExitCode.FILESYSTEM
    assert capsys.readouterr().err == (
        f"switch: cannot write {nginx.upstream_file}: Operation not permitted; nothing changed\n"
    )
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


def test_missing_selection_directory_exits_8_saying_how_to_create_it(nginx, green, capsys) -> None:
    before = nginx.upstream_file.read_bytes()
    shutil.rmtree(nginx.selection_dir)

    code = main(switch_argv(nginx, green), now=lambda: NOW)

    assert code == ExitCode.FILESYSTEM
    assert capsys.readouterr().err == (
        f"switch: {nginx.selection_dir}: no such directory; create it with "
        f"`install -d -o root -g www-data -m 0750 {nginx.selection_dir}`; nothing changed\n"
    )
    assert nginx.upstream_file.read_bytes() == before
    assert nginx.slot_served() == "blue"


def test_upstream_directory_that_is_a_file_exits_8(nginx, green, tmp_path, capsys) -> None:
    not_a_dir = tmp_path / "upstreams"
    not_a_dir.write_text("a file where a directory should be\n")
    argv = switch_argv(nginx, green, "--upstream-file", str(not_a_dir / "x.conf"))

    code = main(argv, now=lambda: NOW)

    assert code == ExitCode.FILESYSTEM
    assert capsys.readouterr().err == f"switch: lock file: {not_a_dir}: not a directory\n"
    assert nginx.slot_served() == "blue"


def test_smoke_request_carries_bearer_token_from_environment(nginx, green, monkeypatch) -> None:
    monkeypatch.setenv("NOCTURNA_TEST_API_KEY", "s3cret")
    smoke = [
        "--smoke-url", green.url("/render"),
        "--smoke-method", "POST",
        "--smoke-auth-env", "NOCTURNA_TEST_API_KEY",
    ]  # fmt: skip

    assert main(switch_argv(nginx, green, *smoke), now=lambda: NOW) == ExitCode.OK
    assert green.last_authorization == "Bearer s3cret"


# --- the shipped site around the switch ------------------------------------------------------


def test_public_server_never_reports_the_upstream_address(nginx) -> None:
    with requests.Session() as session:
        session.trust_env = False  # loopback only, whatever the proxy variables say
        public = session.get(nginx.url("/health"), timeout=5)
        internal = session.get(nginx.verify_url("/health"), timeout=5)

    assert "X-Nocturna-Upstream" not in public.headers
    assert internal.headers["X-Nocturna-Upstream"] == f"127.0.0.1:{nginx.blue_port}"


def test_shipped_site_hides_the_version(nginx) -> None:
    with requests.Session() as session:
        session.trust_env = False
        response = session.get(nginx.url("/no-such-page"), timeout=5)

    assert response.headers["Server"] == "nginx"


def test_unmatched_host_reaches_the_site_not_another_default(nginx, prefix) -> None:
    """A distribution's default site, included first, would win unmatched hosts if the
    shipped site did not claim `default_server`."""
    nginx.extra_conf.write_text(
        f"server {{ listen 127.0.0.1:{nginx.listen_port}; server_name distro.example; "
        "return 418; }\n"
    )
    subprocess.run(nginx.command("-s", "reload"), check=True, capture_output=True, timeout=30)
    time.sleep(0.3)

    with requests.Session() as session:
        session.trust_env = False
        unmatched = session.get(nginx.url("/"), headers={"Host": "unknown.example"}, timeout=5)
        named = session.get(nginx.url("/"), headers={"Host": "distro.example"}, timeout=5)

    assert (unmatched.status_code, unmatched.headers.get("X-Slot")) == (200, "blue")
    assert named.status_code == 418


def test_client_supplied_forwarding_headers_are_replaced(nginx, blue) -> None:
    with requests.Session() as session:
        session.trust_env = False
        session.get(
            nginx.url("/"),
            headers={"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"},
            timeout=5,
        )

    assert blue.last_forwarded == ("127.0.0.1", "127.0.0.1")
