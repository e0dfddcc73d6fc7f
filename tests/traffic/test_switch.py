"""The switch against a real Nginx (the shipped config) and real HTTP backends on 127.0.0.1.

Every failure test asserts the exit code, the stderr line, the upstream file and selection
afterwards, and that traffic through Nginx still reaches the previous slot.
"""

from __future__ import annotations

import fcntl
import http.client
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

from nocturna_infra.traffic import switch as switch_module
from nocturna_infra.traffic.switch import ExitCode, UsageError, backoff, main, parse_options
from nocturna_infra.traffic.upstream import render_upstream
from tests.backends import Backend
from tests.nginx_instance import UPSTREAM_NAME, NginxInstance, switch_argv

pytestmark = pytest.mark.nginx

BEFORE = datetime(2026, 11, 26, 9, 0, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 26, 20, 40, 5, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[2]


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


# --- happy path: no reload, the very next request on the new slot ---------------------------


def test_switch_flips_the_selection_without_rewriting_or_reloading(
    nginx, green, tmp_path, capsys
) -> None:
    before = nginx.upstream_file.read_bytes()
    log = tmp_path / "reloads.log"

    code = main(switch_argv(nginx, green, "--nginx-reload", call_recorder(log, 1)), now=lambda: NOW)

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
        switch_argv(nginx, green, "--nginx-reload", call_recorder(log, 0)),
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


# --- servers change: the one case that rewrites the file, tests and reloads -----------------


@pytest.fixture
def green2() -> Iterator[Backend]:
    """Green again, on another port: a slot whose address changed."""
    backend = Backend("green").start()
    yield backend
    backend.stop()


def test_server_change_rewrites_the_file_with_one_test_and_one_reload(
    nginx, blue, green2, tmp_path, capsys
) -> None:
    log_test, log_reload = tmp_path / "tests.log", tmp_path / "reloads.log"
    argv = switch_argv(
        nginx,
        green2,
        "--nginx-test", call_recorder(log_test, 0, nginx.test_command),
        "--nginx-reload", call_recorder(log_reload, 0, nginx.reload_command),
    )  # fmt: skip
    old = nginx.upstream_file.read_bytes()

    code = main(argv, now=lambda: NOW)

    out = capsys.readouterr().out
    assert code == ExitCode.OK
    assert nginx.upstream_file.read_text() == both_groups(blue.server, green2.server)
    assert Path(f"{nginx.upstream_file}.prev").read_bytes() == old
    assert (calls(log_test), calls(log_reload)) == (1, 1)
    assert f"write {nginx.upstream_file}: blue -> {blue.server}, green -> {green2.server} " in out
    assert selection(nginx) == GREEN_SELECTED
    assert served_eventually(nginx, "green") == "green"
    assert green2.requests_seen > 1  # the new port answers, not the old green


def test_first_switch_writes_both_groups_and_the_selection(nginx, blue, green) -> None:
    nginx.upstream_file.unlink()
    for path in nginx.selection_dir.iterdir():
        path.unlink()

    code = main(switch_argv(nginx, green, other=blue), now=lambda: NOW)

    assert code == ExitCode.OK
    assert state(nginx) == (both_groups(blue.server, green.server).encode(), GREEN_SELECTED)
    assert served_eventually(nginx, "green") == "green"


def test_first_switch_without_the_fallback_slot_exits_2_and_writes_nothing(
    nginx, green, capsys
) -> None:
    nginx.upstream_file.unlink()

    code = main(switch_argv(nginx, green), now=lambda: NOW)

    assert code == ExitCode.USAGE
    assert capsys.readouterr().err == (
        "switch: --fallback-slot blue: no servers known for it (the site config proxies to "
        "nocturna-img-production-blue when no other slot is selected); pass --standby "
        "blue=HOST:PORT\n"
    )
    assert not nginx.upstream_file.exists()
    assert selection(nginx) == BLUE_SELECTED


def test_server_change_rejected_by_nginx_t_exits_4_and_restores_byte_for_byte(
    nginx, green2, capsys
) -> None:
    before = state(nginx)
    nginx.extra_conf.write_text("this_is_not_a_directive on;\n")  # an unrelated broken vhost

    code = main(switch_argv(nginx, green2), now=lambda: NOW)

    err = capsys.readouterr().err
    assert code == ExitCode.CONFIG_REJECTED
    assert err.startswith("switch: nginx -t rejected the new file (exit 1: ")
    assert err.endswith("; previous file restored\n")
    assert 'unknown directive "this_is_not_a_directive"' in err
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


def test_first_deploy_rejected_by_nginx_t_leaves_no_file(nginx, blue, green, capsys) -> None:
    nginx.upstream_file.unlink()
    nginx.extra_conf.write_text("this_is_not_a_directive on;\n")

    code = main(switch_argv(nginx, green, other=blue), now=lambda: NOW)

    assert code == ExitCode.CONFIG_REJECTED
    assert not nginx.upstream_file.exists()
    assert selection(nginx) == BLUE_SELECTED
    assert nginx.slot_served() == "blue"  # the running Nginx never loaded anything new


def test_reload_failure_exits_5_restores_and_reloads_previous(
    nginx, green2, tmp_path, capsys
) -> None:
    before = state(nginx)
    log = tmp_path / "reloads.log"

    code = main(
        switch_argv(nginx, green2, "--nginx-reload", call_recorder(log, 1)), now=lambda: NOW
    )

    assert code == ExitCode.RELOAD_FAILED
    assert capsys.readouterr().err == (
        "switch: reload failed (exit 1: no output); previous file restored"
        "; reload with the previous file also failed (exit 1: no output)\n"
    )
    assert calls(log) == 2
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


def test_nginx_not_running_exits_5_and_restores_file(nginx, green2, capsys) -> None:
    before = state(nginx)
    nginx.stop()

    code = main(switch_argv(nginx, green2), now=lambda: NOW)

    err = capsys.readouterr().err
    assert code == ExitCode.RELOAD_FAILED
    assert err.startswith("switch: reload failed (exit 1: ")
    assert "nginx.pid" in err
    assert state(nginx) == before


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


# --- verification: a failed one puts the previous selection back ----------------------------


def test_site_that_ignores_the_selection_fails_verification_exit_6_and_restores(
    nginx, green, capsys
) -> None:
    site = nginx.prefix / "nocturna-chart.conf"
    # A site still proxying to blue's group, whatever the selection says.
    site.write_text(
        site.read_text().replace("set $nocturna_production_live nocturna-img-production-green;", "")
    )
    subprocess.run(nginx.command("-s", "reload"), check=True, capture_output=True, timeout=30)
    time.sleep(0.3)
    before = state(nginx)

    code = main(switch_argv(nginx, green), now=lambda: NOW)

    assert code == ExitCode.VERIFY_FAILED
    assert capsys.readouterr().err == (
        f"switch: verification through Nginx failed ({nginx.verify_url('/health')} was "
        f"answered by 127.0.0.1:{nginx.blue_port}, not by {green.server})"
        "; previous selection restored\n"
    )
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


def test_server_change_failing_verification_restores_file_selection_and_reloads(
    nginx, green2, capsys
) -> None:
    before = state(nginx)
    # A reload that does nothing: like a stale single-file bind mount, Nginx keeps the old
    # upstream although the command succeeded.
    code = main(switch_argv(nginx, green2, "--nginx-reload", "true"), now=lambda: NOW)

    assert code == ExitCode.VERIFY_FAILED
    err = capsys.readouterr().err
    assert err.startswith("switch: verification through Nginx failed (")
    assert err.endswith("; previous selection restored and previous file restored and reloaded\n")
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


# --- signals and SIGKILL: restored, or old/new complete files, never "nothing changed" -------


def _start_switch(argv: list[str], stderr: int = subprocess.DEVNULL) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "nocturna_infra.switch", *argv],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )


def _wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.mark.parametrize("kill_point", ["probe", "nginx-test"])
def test_sigkill_during_switch_leaves_complete_files_and_no_stale_lock(
    nginx, blue, green2, tmp_path, kill_point
) -> None:
    before = nginx.upstream_file.read_bytes()
    marker = tmp_path / "nginx-test-started"
    slow_test = shlex.join(["sh", "-c", f"touch {shlex.quote(str(marker))}; sleep 30"])
    if kill_point == "probe":
        green2.healthy_after = 60.0
        green2.start_clock()
        argv = switch_argv(nginx, green2, "--attempts", "100", "--interval", "0.1")
        reached = lambda: green2.requests_seen > 0  # noqa: E731 (one-line condition)
    else:
        argv = switch_argv(nginx, green2, "--nginx-test", slow_test)
        reached = marker.exists
    process = _start_switch(argv)
    try:
        _wait_for(reached)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    after = nginx.upstream_file.read_text()
    new = both_groups(blue.server, green2.server).split("\n", 2)[2]
    assert after.encode() == before if kill_point == "probe" else after.endswith(new)
    assert selection(nginx) == BLUE_SELECTED

    # A rerun is not blocked by a stale lock and leaves Nginx really routing to the new green,
    # even when the killed run had already written the file but never reloaded.
    green2.healthy_after = 0.0
    assert main(switch_argv(nginx, green2), now=lambda: NOW) == ExitCode.OK
    assert served_eventually(nginx, "green") == "green"
    assert green2.requests_seen > 1


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_after_the_first_write_restores_previous_file(
    nginx, green2, tmp_path, signum
) -> None:
    before = state(nginx)
    marker = tmp_path / "nginx-test-started"
    slow_test = shlex.join(["sh", "-c", f"touch {shlex.quote(str(marker))}; sleep 30"])
    process = _start_switch(
        switch_argv(nginx, green2, "--nginx-test", slow_test), stderr=subprocess.PIPE
    )
    _wait_for(marker.exists)

    process.send_signal(signum)
    _, err = process.communicate(timeout=20)

    name = signal.Signals(signum).name
    assert process.returncode == 128 + signum
    assert err == f"switch: interrupted by {name}; previous file restored\n"
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


def test_signal_arriving_right_after_the_rename_is_answered_with_a_restore(
    nginx, green, monkeypatch, capsys
) -> None:
    """The window between the atomic rename and the bookkeeping: the selection already
    routes to green when SIGTERM lands; "nothing changed" would be a lie."""
    before = state(nginx)
    real_replace = os.replace

    def replace_then_sigterm(src, dst):  # type: ignore[no-untyped-def]
        real_replace(src, dst)
        if str(dst).endswith(".green"):
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(os, "replace", replace_then_sigterm)

    code = main(switch_argv(nginx, green), now=lambda: NOW)

    assert code == 128 + signal.SIGTERM
    assert capsys.readouterr().err == (
        "switch: interrupted by SIGTERM; previous selection restored\n"
    )
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


def test_a_second_signal_does_not_abort_the_restore(nginx, green, monkeypatch, capsys) -> None:
    before = state(nginx)
    real_write = switch_module.write_markers
    writes = []

    def write_then_signal(*args):  # type: ignore[no-untyped-def]
        writes.append(args[-1])
        if len(writes) == 1:
            real_write(*args)
            os.kill(os.getpid(), signal.SIGTERM)  # the first signal, after the flip
        else:
            os.kill(os.getpid(), signal.SIGINT)  # a second one, as the restore starts
            real_write(*args)

    monkeypatch.setattr(switch_module, "write_markers", write_then_signal)

    code = main(switch_argv(nginx, green), now=lambda: NOW)

    assert code == 128 + signal.SIGTERM
    assert capsys.readouterr().err == (
        "switch: interrupted by SIGTERM; previous selection restored\n"
    )
    assert len(writes) == 2
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


# --- a shared directory: no symlink followed, nothing unsafe accepted ------------------------


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A root-only file a local attacker would like the switch to overwrite or copy."""
    path = tmp_path / "shadow"
    path.write_text("root:secret-hash\n")
    path.chmod(0o600)
    return path


def test_symlinked_lock_file_is_refused_and_its_target_untouched(
    nginx, green, victim, capsys
) -> None:
    lock = Path(f"{nginx.upstream_file}.lock")
    lock.symlink_to(victim)
    before = state(nginx)

    code = main(switch_argv(nginx, green), now=lambda: NOW)

    assert code == ExitCode.FILESYSTEM
    assert capsys.readouterr().err == (
        f"switch: lock file: {lock}: is a symlink; refusing to follow it\n"
    )
    assert victim.read_text() == "root:secret-hash\n"
    assert state(nginx) == before


def test_symlinked_upstream_file_is_refused_and_nothing_leaks_into_prev(
    nginx, green2, victim, capsys
) -> None:
    nginx.upstream_file.unlink()
    nginx.upstream_file.symlink_to(victim)

    code = main(switch_argv(nginx, green2), now=lambda: NOW)

    assert code == ExitCode.FILESYSTEM
    assert capsys.readouterr().err == (
        f"switch: {nginx.upstream_file}: is a symlink; refusing to follow it; nothing changed\n"
    )
    assert not Path(f"{nginx.upstream_file}.prev").exists()
    assert victim.read_text() == "root:secret-hash\n"


def test_planted_prev_symlink_is_replaced_not_followed(nginx, green2, victim) -> None:
    prev = Path(f"{nginx.upstream_file}.prev")
    prev.symlink_to(victim)

    assert main(switch_argv(nginx, green2), now=lambda: NOW) == ExitCode.OK

    assert victim.read_text() == "root:secret-hash\n"
    assert not prev.is_symlink()
    assert stat.S_IMODE(prev.stat().st_mode) == 0o644


def test_every_temp_pattern_left_by_a_killed_switch_is_removed(nginx, green) -> None:
    stale = [
        nginx.upstream_file.with_name(f".{nginx.upstream_file.name}.tmp.99999"),
        nginx.upstream_file.with_name(f".{nginx.upstream_file.name}.prev.tmp.99999.ab12cd34"),
        nginx.selection_dir / ".nocturna-img-production.green.tmp.99999.ab12cd34",
        nginx.selection_dir / ".nocturna-img-production.blue.tmp.1.00000000",
    ]
    for path in stale:
        path.write_text("half-writ")

    assert main(switch_argv(nginx, green), now=lambda: NOW) == ExitCode.OK
    assert [path for path in stale if path.exists()] == []
    assert selection(nginx) == GREEN_SELECTED


@pytest.mark.parametrize(
    ("which", "mode", "owner", "problem"),
    [
        pytest.param("upstreams", 0o775, 0, "group- or world-writable (mode 775)", id="group-w"),
        pytest.param("selection", 0o1777, 0, "group- or world-writable (mode 1777)", id="sticky"),
        pytest.param("upstreams", 0o755, 1000, "owned by uid 1000, not by root", id="owner"),
    ],
)
def test_directory_others_could_write_is_refused_with_exit_8(
    nginx, green, capsys, which, mode, owner, problem
) -> None:
    directory = nginx.prefix / which
    os.chown(directory, owner, -1)
    directory.chmod(mode)
    before = state(nginx)

    code = main(switch_argv(nginx, green), now=lambda: NOW)

    err = capsys.readouterr().err
    assert code == ExitCode.FILESYSTEM
    assert err.startswith(f"switch: {'lock file: ' if which == 'upstreams' else ''}{directory}: ")
    assert problem in err
    assert state(nginx) == before
    assert nginx.slot_served() == "blue"


def test_lock_file_is_owner_only(nginx, green) -> None:
    old_umask = os.umask(0)
    try:
        assert main(switch_argv(nginx, green), now=lambda: NOW) == ExitCode.OK
    finally:
        os.umask(old_umask)

    lock = Path(f"{nginx.upstream_file}.lock")
    assert stat.S_IMODE(lock.stat().st_mode) == 0o600


@pytest.mark.parametrize("umask", [0o000, 0o077], ids=["umask-000", "umask-077"])
def test_files_get_an_explicit_mode_whatever_the_umask(nginx, green2, umask) -> None:
    """World-writable under umask 000; unreadable by the workers under 077."""
    old_umask = os.umask(umask)
    try:
        assert main(switch_argv(nginx, green2), now=lambda: NOW) == ExitCode.OK
    finally:
        os.umask(old_umask)

    marker = nginx.selection_dir / "nocturna-img-production.green"
    assert stat.S_IMODE(nginx.upstream_file.stat().st_mode) == 0o644
    assert stat.S_IMODE(marker.stat().st_mode) == 0o644


def test_the_old_files_mode_is_kept_without_world_write(nginx, green2) -> None:
    nginx.upstream_file.chmod(0o646)

    assert main(switch_argv(nginx, green2), now=lambda: NOW) == ExitCode.OK

    assert stat.S_IMODE(nginx.upstream_file.stat().st_mode) == 0o644
    nginx.upstream_file.chmod(0o640)
    green_port_again = Backend("green").start()
    try:
        assert main(switch_argv(nginx, green_port_again), now=lambda: NOW) == ExitCode.OK
    finally:
        green_port_again.stop()
    assert stat.S_IMODE(nginx.upstream_file.stat().st_mode) == 0o640


# --- usage errors: exact messages, nothing touched ------------------------------------------

BASE = [
    "--upstream-file", "/etc/nginx/upstreams/nocturna-img-production.conf",
    "--upstream-name", "nocturna-img-production",
    "--selection-dir", "/var/lib/nocturna/switch",
    "--slot", "green",
    "--server", "127.0.0.1:3012",
    "--health-url", "http://127.0.0.1:3012/health",
]  # fmt: skip


def with_flag(flag: str, value: str) -> list[str]:
    argv = list(BASE)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    return argv


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        pytest.param(
            "--server",
            "127.0.0.1",
            "--server: expected HOST:PORT (IPv4 address, [IPv6] "
            "address or hostname; port 1-65535); got '127.0.0.1'",
            id="server-without-port",
        ),
        pytest.param(
            "--server",
            "127.0.0.1:70000",
            "--server: expected HOST:PORT (IPv4 address, [IPv6] "
            "address or hostname; port 1-65535); got '127.0.0.1:70000'",
            id="port-out-of-range",
        ),
        pytest.param(
            "--server",
            "300.1.1.1:3012",
            "--server: expected HOST:PORT (IPv4 address, [IPv6] "
            "address or hostname; port 1-65535); got '300.1.1.1:3012'",
            id="bad-ipv4",
        ),
        pytest.param(
            "--server",
            "[::g]:3012",
            "--server: expected HOST:PORT (IPv4 address, [IPv6] "
            "address or hostname; port 1-65535); got '[::g]:3012'",
            id="bad-ipv6",
        ),
        pytest.param(
            "--server",
            "localhost:3012",
            "--server: 'localhost:3012' may resolve to ::1, where "
            "the slot does not listen; use 127.0.0.1:3012",
            id="localhost",
        ),
        pytest.param(
            "--health-url",
            "ftp://127.0.0.1/health",
            "--health-url: expected an http:// or "
            "https:// URL with a host; got 'ftp://127.0.0.1/health'",
            id="health-url-scheme",
        ),
        pytest.param(
            "--verify-url",
            "http:///health",
            "--verify-url: expected an http:// or https:// URL with a host; got 'http:///health'",
            id="verify-url-without-host",
        ),
        pytest.param(
            "--upstream-name",
            "nocturna img",
            "--upstream-name: expected letters, digits, '_', '.' or '-'; got 'nocturna img'",
            id="upstream-name-space",
        ),
        pytest.param(
            "--slot",
            "green\n",
            "--slot: expected letters, digits, '_', '.' or '-'; got 'green\\n'",
            id="slot-newline",
        ),
        pytest.param(
            "--standby",
            "blue:127.0.0.1:3014",
            "--standby: expected SLOT=HOST:PORT; got 'blue:127.0.0.1:3014'",
            id="standby-without-slot",
        ),
        pytest.param(
            "--standby",
            "green=127.0.0.1:3014",
            "--standby: expected a slot other than --slot green; got 'green=127.0.0.1:3014'",
            id="standby-is-the-target",
        ),
        pytest.param(
            "--standby",
            "blue=localhost:3014",
            "--standby: 'localhost:3014' may resolve to ::1, where the slot does not listen; "
            "use 127.0.0.1:3014",
            id="standby-localhost",
        ),
        pytest.param(
            "--selection-dir",
            "relative/dir",
            "--selection-dir: expected an absolute directory path; got 'relative/dir'",
            id="selection-dir-relative",
        ),
        pytest.param(
            "--fallback-slot",
            "blue;",
            "--fallback-slot: expected letters, digits, '_', '.' or '-'; got 'blue;'",
            id="fallback-slot",
        ),
        pytest.param(
            "--attempts", "0", "--attempts: expected an integer >= 1; got '0'", id="attempts-0"
        ),
        pytest.param(
            "--timeout",
            "0",
            "--timeout: expected a number of seconds > 0; got '0'",
            id="timeout-0",
        ),
        pytest.param(
            "--interval",
            "-1",
            "--interval: expected a number of seconds >= 0; got '-1'",
            id="interval-negative",
        ),
        pytest.param(
            "--nginx-reload",
            "nginx -s 'reload",
            "--nginx-reload: expected a command line "
            '(No closing quotation); got "nginx -s \'reload"',
            id="reload-unquoted",
        ),
        pytest.param(
            "--host-header",
            "bad host",
            "--host-header: expected HOST or HOST:PORT; got 'bad host'",
            id="host-header",
        ),
        pytest.param(
            "--smoke-body",
            "{}",
            "--smoke-body/--smoke-content-type/--smoke-auth-env: given without --smoke-url",
            id="smoke-body-without-url",
        ),
    ],
)
def test_invalid_flag_is_named_with_its_value(flag: str, value: str, message: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse_options(with_flag(flag, value))
    assert str(raised.value) == message


def test_bad_smoke_status_is_rejected() -> None:
    argv = [*BASE, "--smoke-url", "http://127.0.0.1:3012/render", "--smoke-status", "99"]
    with pytest.raises(UsageError) as raised:
        parse_options(argv)
    assert str(raised.value) == "--smoke-status: expected 100-599; got '99'"


def test_usage_error_exits_2_with_one_line_and_touches_nothing(tmp_path, capsys) -> None:
    upstream = tmp_path / "up.conf"
    argv = [*with_flag("--server", "localhost:3012"), "--upstream-file", str(upstream)]

    code = main(argv)

    out = capsys.readouterr()
    assert (code, out.out) == (ExitCode.USAGE, "")
    assert out.err == (
        "switch: --server: 'localhost:3012' may resolve to ::1, where the slot does not "
        "listen; use 127.0.0.1:3012\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_missing_required_flag_exits_2(capsys) -> None:
    code = main(["--slot", "green"])

    assert code == ExitCode.USAGE
    assert capsys.readouterr().err == (
        "switch: the following arguments are required: --upstream-file, --upstream-name, "
        "--selection-dir, --server, --health-url\n"
    )


def test_help_documents_exit_codes(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "  7  another switch holds the lock; nothing was changed\n" in out


def test_defaults_match_the_contract() -> None:
    opts = parse_options(BASE)
    assert opts.nginx_test == ("nginx", "-t")
    assert opts.nginx_reload == ("nginx", "-s", "reload")
    assert opts.lock_file == Path("/etc/nginx/upstreams/nocturna-img-production.conf.lock")
    assert opts.servers == ("127.0.0.1:3012",)
    assert (opts.fallback_slot, opts.standby) == ("blue", {})


def test_smoke_auth_env_must_name_a_set_variable() -> None:
    argv = [*BASE, "--smoke-url", "http://127.0.0.1:3012/render", "--smoke-auth-env", "API_KEY"]
    with pytest.raises(UsageError) as raised:
        parse_options(argv, environ={})
    assert str(raised.value) == (
        "--smoke-auth-env: environment variable 'API_KEY' is unset or empty"
    )


def test_smoke_request_carries_bearer_token_from_environment(nginx, green, monkeypatch) -> None:
    monkeypatch.setenv("NOCTURNA_TEST_API_KEY", "s3cret")
    smoke = [
        "--smoke-url", green.url("/render"),
        "--smoke-method", "POST",
        "--smoke-auth-env", "NOCTURNA_TEST_API_KEY",
    ]  # fmt: skip

    assert main(switch_argv(nginx, green, *smoke), now=lambda: NOW) == ExitCode.OK
    assert green.last_authorization == "Bearer s3cret"


@pytest.mark.parametrize(
    ("attempt", "ceiling", "first", "delay"),
    [
        pytest.param(1, 2.0, 0.1, 0.1, id="first-retry-is-quick"),
        pytest.param(3, 2.0, 0.1, 0.4, id="doubles"),
        pytest.param(8, 2.0, 0.1, 2.0, id="capped-at-interval"),
        pytest.param(1, 0.05, 0.1, 0.05, id="interval-below-first"),
    ],
)
def test_backoff_doubles_up_to_the_interval(attempt, ceiling, first, delay) -> None:
    assert backoff(attempt, ceiling, first) == pytest.approx(delay)


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


# --- moving a host from the reload-based single group to the selection ----------------------


def worker_pids(nginx: NginxInstance) -> set[int]:
    master = nginx.master_pid()
    assert master is not None
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return {int(pid) for pid in children}


def wait_until_gone(pids: set[int], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{pid}").exists() for pid in pids):
        assert time.monotonic() < deadline, f"old Nginx workers {sorted(pids)} did not exit"
        time.sleep(0.05)


def test_migration_from_the_single_group_include_takes_one_reload_then_none(
    prefix, blue, green, tmp_path
) -> None:
    """docs/operations.md, "Moving a host to the no-reload switch", with traffic flowing."""
    nginx = NginxInstance(prefix, blue.port, green.port)
    nginx.write_config()
    site = prefix / "nocturna-chart.conf"
    new_site = site.read_text()
    old_site = re.sub(r"\n    open_file_cache off;\n    set .*?\n(    if .*?\n.*?\n    }\n)?", "\n",
                      new_site, flags=re.DOTALL)  # fmt: skip
    old_site = old_site.replace("$nocturna_production_live", UPSTREAM_NAME)
    assert "if (-f" not in old_site and f"proxy_pass http://{UPSTREAM_NAME};" in old_site
    site.write_text(old_site)
    nginx.upstream_file.write_text(render_upstream(UPSTREAM_NAME, "blue", [blue.server], BEFORE))
    nginx.start()
    reloads = tmp_path / "reloads.log"
    stop = threading.Event()
    answers: list[str] = []

    def client() -> None:
        with requests.Session() as session:
            session.trust_env = False
            while not stop.is_set():
                try:
                    response = session.get(
                        nginx.url("/"), timeout=5, headers={"Connection": "close"}
                    )
                    answers.append(response.headers.get("X-Slot", str(response.status_code)))
                except requests.RequestException as error:
                    answers.append(repr(error))

    thread = threading.Thread(target=client)
    thread.start()
    try:
        # Step 2: new upstream file and selection for the live slot, no reload.
        prepare = ["--nginx-test", "true", "--nginx-reload", call_recorder(reloads, 0)]
        assert main(switch_argv(nginx, blue, *prepare, other=green), now=lambda: NOW) == 0
        assert calls(reloads) == 1  # the recorder stands for `true`: nothing was reloaded
        reloads.unlink()
        # Step 3: the new site config and the one reload.
        site.write_text(new_site)
        subprocess.run(nginx.command("-t", "-q"), check=True, capture_output=True)
        old_workers = worker_pids(nginx)
        subprocess.run(nginx.command("-s", "reload"), check=True, capture_output=True)
        assert served_eventually(nginx, "blue") == "blue"
        # Until the old workers exit they may still answer new connections from the old
        # site config (the reload's own window, not the switch's): let the reload finish.
        wait_until_gone(old_workers)
        # Step 4 and after: switches never reload.
        for target in (blue, green, blue, green):
            argv = switch_argv(nginx, target, "--nginx-reload", call_recorder(reloads, 0))
            assert main(argv, now=lambda: NOW) == ExitCode.OK
            assert nginx.slot_served() == target.slot
    finally:
        stop.set()
        thread.join(timeout=15)
        nginx.stop()

    assert calls(reloads) == 0
    assert set(answers) == {"blue", "green"}, sorted(set(answers))
    assert state(nginx) == (both_groups(blue.server, green.server).encode(), GREEN_SELECTED)
