"""The switch's command line (`options`): every flag validated before anything is touched,
with exact messages naming the flag and the bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from nocturna_infra.cli import UsageError
from nocturna_infra.traffic.exits import ExitCode
from nocturna_infra.traffic.options import parse_options
from nocturna_infra.traffic.switch import main

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
            "--verify-url",
            "http://localhost:8099/nocturna-verify",
            "--verify-url: 'http://localhost:8099/nocturna-verify' names localhost, which may "
            "resolve to ::1, where any local user may listen (and receive the probes' bearer "
            "key); use 127.0.0.1",
            id="verify-url-localhost",
        ),
        pytest.param(
            "--health-url",
            "http://app.localhost:3012/health",
            "--health-url: 'http://app.localhost:3012/health' names localhost, which may "
            "resolve to ::1, where any local user may listen (and receive the probes' bearer "
            "key); use 127.0.0.1",
            id="health-url-localhost",
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


def test_smoke_body_file_outside_the_working_directory_is_refused(tmp_path, monkeypatch) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "outside.json").write_text("{}")
    monkeypatch.chdir(project)
    checks = '[{"name": "r", "method": "POST", "path": "/r", "bodyFile": "../outside.json"}]'

    with pytest.raises(UsageError) as raised:
        parse_options([*BASE, "--smoke-checks", checks])

    assert str(raised.value) == (
        "--smoke-checks[0].bodyFile: must be a file path inside the project directory "
        "(relative, no '..'); got '../outside.json'"
    )
