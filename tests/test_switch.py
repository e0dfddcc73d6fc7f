"""The switch against a real Nginx (the shipped config) and real HTTP backends on 127.0.0.1.

Every failure test asserts the exit code, the stderr line, the upstream file bytes and that
traffic through Nginx still reaches the previous slot.
"""

from __future__ import annotations

import fcntl
import os
import re
import shlex
import shutil
import signal
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

from nocturna_infra.switch import ExitCode, UsageError, backoff, main, parse_options
from nocturna_infra.upstream import parse_upstream, render_upstream, routing_text
from tests.backends import Backend
from tests.nginx_instance import UPSTREAM_NAME, NginxInstance, switch_argv

pytestmark = pytest.mark.nginx

BEFORE = datetime(2026, 11, 26, 9, 0, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 26, 20, 40, 5, tzinfo=UTC)
REPO = Path(__file__).resolve().parent.parent


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
def prefix() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="nocturna-nginx-"))
    yield path
    subprocess.run(["chattr", "-R", "-i", str(path)], capture_output=True, check=False)
    shutil.rmtree(path)


@pytest.fixture
def nginx(prefix: Path, blue: Backend, green: Backend) -> Iterator[NginxInstance]:
    """Nginx routing to blue, as after an earlier switch."""
    instance = NginxInstance(prefix, blue.port, green.port)
    instance.write_config()
    instance.upstream_file.write_text(render_upstream(UPSTREAM_NAME, "blue", [blue.server], BEFORE))
    instance.start()
    yield instance
    instance.stop()


def green_file(green: Backend) -> str:
    return (
        "# Managed by nocturna_infra.switch; rewritten whole on every switch, do not edit.\n"
        "# live-slot: green\n"
        "# switched-at: 2026-11-26T20:40:05Z\n"
        "upstream nocturna-img-production {\n"
        f"    server 127.0.0.1:{green.port};\n"
        "    keepalive 32;\n"
        "    keepalive_timeout 60s;\n"
        "}\n"
    )


def call_recorder(log: Path, status: int) -> str:
    """A reload command that only records that it was called."""
    return shlex.join(["sh", "-c", f"echo called >> {shlex.quote(str(log))}; exit {status}"])


def served_eventually(nginx: NginxInstance, slot: str) -> str:
    """Right after a reload an old worker may answer once more; give it a bounded moment."""
    served = nginx.slot_served()
    for _ in range(20):
        if served == slot:
            break
        time.sleep(0.05)
        served = nginx.slot_served()
    return served


# --- happy path and idempotency -----------------------------------------------------------


def test_switch_blue_to_green_writes_exact_file_and_moves_traffic(nginx, green, capsys) -> None:
    code = main(switch_argv(nginx, green), now=lambda: NOW)

    out = capsys.readouterr()
    assert (code, out.err) == (ExitCode.OK, "")
    assert nginx.upstream_file.read_text() == green_file(green)
    assert served_eventually(nginx, "green") == "green"
    assert [nginx.slot_served() for _ in range(5)] == ["green"] * 5


def test_switch_prints_one_line_per_step_and_a_summary(nginx, green, capsys) -> None:
    main(switch_argv(nginx, green), now=lambda: NOW)

    lines = capsys.readouterr().out.splitlines()
    steps = [re.sub(r"^\[\d+\.\d\ds\] ", "", line) for line in lines[:-1]]
    assert steps[:6] == [
        f"switch nocturna-img-production to green (127.0.0.1:{green.port})",
        f"probe {green.url('/health')}: 200",
        f"lock {nginx.upstream_file}.lock: held",
        f"write {nginx.upstream_file}: green -> 127.0.0.1:{green.port} "
        f"(was blue -> 127.0.0.1:{nginx.blue_port})",
        "nginx test: ok",
        "nginx reload: ok",
    ]
    assert steps[-1] == f"verify {nginx.verify_url('/health')}: 200 from 127.0.0.1:{green.port}"
    assert re.fullmatch(
        rf"switch: switched to green -> 127\.0\.0\.1:{green.port} \(nocturna-img-production\) "
        r"in \d+\.\d\ds",
        lines[-1],
    )


def test_switch_keeps_previous_file_as_prev_backup(nginx, green) -> None:
    before = nginx.upstream_file.read_bytes()

    assert main(switch_argv(nginx, green), now=lambda: NOW) == ExitCode.OK

    assert Path(f"{nginx.upstream_file}.prev").read_bytes() == before


def test_repeat_switch_to_live_slot_rewrites_nothing_and_does_not_reload(
    nginx, green, tmp_path, capsys
) -> None:
    assert main(switch_argv(nginx, green), now=lambda: NOW) == ExitCode.OK
    served_eventually(nginx, "green")
    before = (nginx.upstream_file.read_bytes(), nginx.upstream_file.stat().st_mtime_ns)
    log = tmp_path / "reloads.log"
    capsys.readouterr()

    code = main(
        switch_argv(nginx, green, "--nginx-reload", call_recorder(log, 0)),
        now=lambda: datetime(2027, 1, 1, tzinfo=UTC),
    )

    out = capsys.readouterr()
    assert (code, out.err) == (ExitCode.OK, "")
    assert (nginx.upstream_file.read_bytes(), nginx.upstream_file.stat().st_mtime_ns) == before
    assert not log.exists()
    assert out.out.splitlines()[-1].startswith(f"switch: already live: green -> {green.server} ")


def test_target_that_becomes_healthy_after_a_delay_is_switched(nginx, green) -> None:
    green.healthy_after = 0.8
    green.start_clock()

    code = main(switch_argv(nginx, green, "--attempts", "40", "--interval", "0.2"), now=lambda: NOW)

    assert code == ExitCode.OK
    assert nginx.upstream_file.read_text() == green_file(green)
    assert served_eventually(nginx, "green") == "green"


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
    before = nginx.upstream_file.read_bytes()

    code = main(switch_argv(nginx, green), now=lambda: NOW)

    err = capsys.readouterr().err
    assert code == ExitCode.UNHEALTHY
    assert re.fullmatch(
        rf"switch: green not healthy after \d+\.\ds \({re.escape(green.url('/health'))} "
        r"returned 503, expected 200\)\n",
        err,
    )
    assert nginx.upstream_file.read_bytes() == before
    assert nginx.slot_served() == "blue"


def test_wrong_service_on_target_port_exits_3(nginx, green, capsys) -> None:
    green.wrong_service = True
    before = nginx.upstream_file.read_bytes()

    code = main(
        switch_argv(nginx, green, "--health-contains", '"status":"healthy"'), now=lambda: NOW
    )

    err = capsys.readouterr().err
    assert code == ExitCode.UNHEALTHY
    assert err.endswith(f'({green.url("/health")} returned 200 without \'"status":"healthy"\')\n')
    assert nginx.upstream_file.read_bytes() == before
    assert nginx.slot_served() == "blue"


def test_failing_smoke_request_exits_3_although_health_is_200(nginx, green, capsys) -> None:
    green.render_status = 500
    before = nginx.upstream_file.read_bytes()

    code = main(
        switch_argv(nginx, green, "--smoke-url", green.url("/render"), "--smoke-method", "POST"),
        now=lambda: NOW,
    )

    err = capsys.readouterr().err
    assert code == ExitCode.UNHEALTHY
    assert err.endswith(f"(POST {green.url('/render')} returned 500, expected 200)\n")
    assert nginx.upstream_file.read_bytes() == before
    assert nginx.slot_served() == "blue"


def test_nothing_listening_on_target_exits_3(nginx, green, capsys) -> None:
    green.stop()
    before = nginx.upstream_file.read_bytes()

    code = main(switch_argv(nginx, green), now=lambda: NOW)

    assert code == ExitCode.UNHEALTHY
    assert capsys.readouterr().err.endswith(f"({green.url('/health')} refused the connection)\n")
    assert nginx.upstream_file.read_bytes() == before
    assert nginx.slot_served() == "blue"


def test_lock_held_by_another_switch_exits_7_at_once(nginx, green, capsys) -> None:
    before = nginx.upstream_file.read_bytes()
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
    assert nginx.upstream_file.read_bytes() == before
    assert nginx.slot_served() == "blue"


def test_lock_wait_proceeds_once_the_other_switch_finishes(nginx, green) -> None:
    lock = Path(f"{nginx.upstream_file}.lock")
    handle = lock.open("a+")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    threading.Timer(0.3, handle.close).start()

    code = main(switch_argv(nginx, green, "--lock-wait", "5"), now=lambda: NOW)

    assert code == ExitCode.OK
    assert nginx.upstream_file.read_text() == green_file(green)


def test_immutable_upstream_directory_exits_8_and_changes_nothing(
    nginx, green, tmp_path, capsys
) -> None:
    before = nginx.upstream_file.read_bytes()
    immutable = subprocess.run(
        ["chattr", "+i", str(nginx.upstream_file.parent)], capture_output=True, check=False
    )
    if immutable.returncode != 0:
        pytest.skip(f"chattr +i unsupported here: {immutable.stderr.decode().strip()}")
    try:
        code = main(
            switch_argv(nginx, green, "--lock-file", str(tmp_path / "switch.lock")),
            now=lambda: NOW,
        )
    finally:
        subprocess.run(["chattr", "-i", str(nginx.upstream_file.parent)], check=True)

    assert code == ExitCode.FILESYSTEM
    assert capsys.readouterr().err == (
        f"switch: cannot write {nginx.upstream_file}: Operation not permitted; nothing changed\n"
    )
    assert nginx.upstream_file.read_bytes() == before
    assert nginx.slot_served() == "blue"


def test_upstream_directory_that_is_a_file_exits_8(nginx, green, tmp_path, capsys) -> None:
    not_a_dir = tmp_path / "upstreams"
    not_a_dir.write_text("a file where a directory should be\n")
    argv = switch_argv(nginx, green, "--upstream-file", str(not_a_dir / "x.conf"))

    code = main(argv, now=lambda: NOW)

    assert code == ExitCode.FILESYSTEM
    assert capsys.readouterr().err == (
        f"switch: cannot open lock file {not_a_dir}/x.conf.lock: Not a directory\n"
    )
    assert nginx.slot_served() == "blue"


# --- failures after the swap: the previous file comes back ----------------------------------


def test_nginx_t_rejection_exits_4_and_restores_file_byte_for_byte(nginx, green, capsys) -> None:
    before = nginx.upstream_file.read_bytes()
    nginx.extra_conf.write_text("this_is_not_a_directive on;\n")  # an unrelated broken vhost

    code = main(switch_argv(nginx, green), now=lambda: NOW)

    err = capsys.readouterr().err
    assert code == ExitCode.CONFIG_REJECTED
    assert err.startswith("switch: nginx -t rejected the new file (exit 1: ")
    assert err.endswith("; previous file restored\n")
    assert 'unknown directive "this_is_not_a_directive"' in err
    assert nginx.upstream_file.read_bytes() == before
    assert nginx.slot_served() == "blue"


def test_first_deploy_rejected_by_nginx_t_leaves_no_file(nginx, green, capsys) -> None:
    nginx.upstream_file.unlink()
    nginx.extra_conf.write_text("this_is_not_a_directive on;\n")

    code = main(switch_argv(nginx, green), now=lambda: NOW)

    assert code == ExitCode.CONFIG_REJECTED
    assert not nginx.upstream_file.exists()
    assert nginx.slot_served() == "blue"  # the running Nginx never loaded anything new


def test_reload_failure_exits_5_restores_and_reloads_previous(nginx, green, tmp_path, capsys):
    before = nginx.upstream_file.read_bytes()
    log = tmp_path / "reloads.log"

    code = main(switch_argv(nginx, green, "--nginx-reload", call_recorder(log, 1)), now=lambda: NOW)

    assert code == ExitCode.RELOAD_FAILED
    assert capsys.readouterr().err == (
        "switch: reload failed (exit 1: no output); previous file restored"
        "; reload with the previous file also failed (exit 1: no output)\n"
    )
    assert log.read_text() == "called\ncalled\n"
    assert nginx.upstream_file.read_bytes() == before
    assert nginx.slot_served() == "blue"


def test_nginx_not_running_exits_5_and_restores_file(nginx, green, capsys) -> None:
    before = nginx.upstream_file.read_bytes()
    nginx.stop()

    code = main(switch_argv(nginx, green), now=lambda: NOW)

    err = capsys.readouterr().err
    assert code == ExitCode.RELOAD_FAILED
    assert err.startswith("switch: reload failed (exit 1: ")
    assert "nginx.pid" in err
    assert nginx.upstream_file.read_bytes() == before


def test_verification_failure_exits_6_restores_and_reloads(nginx, green, capsys) -> None:
    before = nginx.upstream_file.read_bytes()
    # A reload that does nothing: like a stale single-file bind mount, Nginx keeps the old
    # upstream although the command succeeded.
    code = main(switch_argv(nginx, green, "--nginx-reload", "true"), now=lambda: NOW)

    assert code == ExitCode.VERIFY_FAILED
    assert capsys.readouterr().err == (
        f"switch: verification through Nginx failed ({nginx.verify_url('/health')} was "
        f"answered by 127.0.0.1:{nginx.blue_port}, not by {green.server})"
        "; previous file restored and reloaded\n"
    )
    assert nginx.upstream_file.read_bytes() == before
    assert nginx.slot_served() == "blue"


# --- SIGKILL: old or new complete file, never a partial one ---------------------------------


def _start_switch(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "nocturna_infra.switch", *argv],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.mark.parametrize("kill_point", ["probe", "nginx-test"])
def test_sigkill_during_switch_leaves_a_complete_file_and_no_stale_lock(
    nginx, green, tmp_path, kill_point
) -> None:
    before = nginx.upstream_file.read_bytes()
    marker = tmp_path / "nginx-test-started"
    slow_test = shlex.join(["sh", "-c", f"touch {shlex.quote(str(marker))}; sleep 30"])
    if kill_point == "probe":
        green.healthy_after = 60.0
        green.start_clock()
        argv = switch_argv(nginx, green, "--attempts", "100", "--interval", "0.1")
        reached = lambda: green.requests_seen > 0  # noqa: E731 (one-line condition)
    else:
        argv = switch_argv(nginx, green, "--nginx-test", slow_test)
        reached = marker.exists
    process = _start_switch(argv)
    try:
        _wait_for(reached)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    after = nginx.upstream_file.read_text()
    complete_new = routing_text(after) == routing_text(green_file(green))
    assert after.encode() == before or complete_new
    assert parse_upstream(after).slot == ("blue" if kill_point == "probe" else "green")

    # A rerun is not blocked by a stale lock and leaves Nginx really routing to green, even
    # when the killed run had already written the file but never reloaded.
    green.healthy_after = 0.0
    assert main(switch_argv(nginx, green), now=lambda: NOW) == ExitCode.OK
    assert served_eventually(nginx, "green") == "green"


def test_sigterm_after_the_swap_restores_previous_file(nginx, green, tmp_path) -> None:
    before = nginx.upstream_file.read_bytes()
    marker = tmp_path / "nginx-test-started"
    slow_test = shlex.join(["sh", "-c", f"touch {shlex.quote(str(marker))}; sleep 30"])
    process = subprocess.Popen(
        [sys.executable, "-m", "nocturna_infra.switch",
         *switch_argv(nginx, green, "--nginx-test", slow_test)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for(marker.exists)

    process.terminate()
    _, err = process.communicate(timeout=20)

    assert process.returncode == 128 + signal.SIGTERM
    assert err == "switch: interrupted by SIGTERM; previous file restored and reloaded\n"
    assert nginx.upstream_file.read_bytes() == before
    assert served_eventually(nginx, "blue") == "blue"


# --- usage errors: exact messages, nothing touched ------------------------------------------

BASE = [
    "--upstream-file", "/etc/nginx/upstreams/nocturna-img-production.conf",
    "--upstream-name", "nocturna-img-production",
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
        "--server, --health-url\n"
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


def test_temp_file_left_by_a_killed_switch_is_removed(nginx, green) -> None:
    stale = nginx.upstream_file.with_name(f".{nginx.upstream_file.name}.tmp.99999")
    stale.write_text("upstream half-writ")

    assert main(switch_argv(nginx, green), now=lambda: NOW) == ExitCode.OK
    assert not stale.exists()


def test_public_server_never_reports_the_upstream_address(nginx) -> None:
    with requests.Session() as session:
        session.trust_env = False  # loopback only, whatever the proxy variables say
        public = session.get(nginx.url("/health"), timeout=5)
        internal = session.get(nginx.verify_url("/health"), timeout=5)

    assert "X-Nocturna-Upstream" not in public.headers
    assert internal.headers["X-Nocturna-Upstream"] == f"127.0.0.1:{nginx.blue_port}"
