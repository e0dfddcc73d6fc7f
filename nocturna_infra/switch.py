"""Health-gated, transactional switch of the Nginx upstream to a new slot.

    python -m nocturna_infra.switch --upstream-file F --upstream-name N --slot S \
        --server HOST:PORT --health-url URL [--verify-url URL] ...

Order: validate every flag, probe the target directly, take the lock, atomically replace the
upstream file, `nginx -t`, reload, verify through Nginx. Any failure after the replace puts the
previous file back (atomically) and, once Nginx may have loaded the new file, reloads again.
"""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Final, NoReturn
from urllib.parse import urlsplit

from nocturna_infra.cli import RaisingArgumentParser, UsageError
from nocturna_infra.probe import Check, CheckResult, run_check, verify_routed
from nocturna_infra.upstream import (
    KEEPALIVE,
    UpstreamParseError,
    parse_upstream,
    render_upstream,
    routing_text,
)


class ExitCode(IntEnum):
    """Process exit codes; the table in `--help` and docs/switch.md documents them."""

    OK = 0
    USAGE = 2
    UNHEALTHY = 3
    CONFIG_REJECTED = 4
    RELOAD_FAILED = 5
    VERIFY_FAILED = 6
    LOCKED = 7
    FILESYSTEM = 8


EXIT_CODES_HELP: Final = """\
exit codes:
  0  switched, or the target was already live (file unchanged, no reload)
  2  bad usage: a flag is missing or invalid; nothing was touched
  3  target not healthy (probe or smoke failed); nothing was changed
  4  nginx -t rejected the new file; the previous file was restored byte for byte
  5  reload failed; the previous file was restored and a reload retried with it
  6  verification through Nginx failed; the previous file was restored and reloaded
  7  another switch holds the lock; nothing was changed
  8  the upstream file, its backup or the lock could not be written; nothing was changed
  143/130  stopped by SIGTERM/SIGINT (128 + signal); after the file swap the previous
     file was restored and reloaded first, before it nothing was changed
"""

NAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]+")
HOSTNAME_RE: Final = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
METHOD_RE: Final = re.compile(r"[A-Z]{3,10}")
NGINX_COMMAND_TIMEOUT: Final = 60.0
INTERRUPTS: Final = (signal.SIGTERM, signal.SIGINT)


class SwitchError(Exception):
    """The switch stopped; `code` says how far it got and what was put back."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived; raised so a half-done switch can put the old file back."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


@dataclass(frozen=True)
class SwitchOptions:
    """Every validated input of one switch."""

    upstream_file: Path
    upstream_name: str
    slot: str
    servers: tuple[str, ...]
    health: tuple[Check, ...]
    smoke: Check | None
    verify: Check | None
    verify_attempts: int
    nginx_test: tuple[str, ...]
    nginx_reload: tuple[str, ...]
    attempts: int
    interval: float
    timeout: float
    lock_file: Path
    lock_wait: float
    keepalive: int


# --- validation: pure, each error names the flag, the problem and the bad value -------------


def _usage(flag: str, expected: str, value: object) -> NoReturn:
    msg = f"{flag}: expected {expected}; got {value!r}"
    raise UsageError(msg)


def parse_server(value: str, flag: str = "--server") -> str:
    """`HOST:PORT` for an Nginx `server` line; `localhost` is refused (it may mean ::1)."""
    expected = "HOST:PORT (IPv4 address, [IPv6] address or hostname; port 1-65535)"
    host, sep, port = value.rpartition(":")
    if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
        _usage(flag, expected, value)
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            _usage(flag, expected, value)
    elif re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            _usage(flag, expected, value)
    elif not HOSTNAME_RE.fullmatch(host):
        _usage(flag, expected, value)
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        msg = (
            f"{flag}: {value!r} may resolve to ::1, where the slot does not listen; "
            f"use 127.0.0.1:{int(port)}"
        )
        raise UsageError(msg)
    return f"{host}:{int(port)}"


def parse_url(value: str, flag: str) -> str:
    """An absolute http(s) URL with a host and, if given, a valid port."""
    expected = "an http:// or https:// URL with a host"
    parts = urlsplit(value)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        _usage(flag, expected, value)
    if any(char.isspace() for char in value):
        _usage(flag, expected, value)
    return value


def parse_name(value: str, flag: str) -> str:
    """A name written into the Nginx file: letters, digits, `_`, `.`, `-` only."""
    if not NAME_RE.fullmatch(value):
        _usage(flag, "letters, digits, '_', '.' or '-'", value)
    return value


def parse_int(value: str, flag: str, minimum: int, maximum: int | None = None) -> int:
    """A whole number within bounds."""
    expected = f"an integer >= {minimum}" if maximum is None else f"{minimum}-{maximum}"
    try:
        number = int(value)
    except ValueError:
        _usage(flag, expected, value)
    if number < minimum or (maximum is not None and number > maximum):
        _usage(flag, expected, value)
    return number


def parse_seconds(value: str, flag: str, *, positive: bool) -> float:
    """A finite number of seconds, > 0 or >= 0."""
    expected = "a number of seconds > 0" if positive else "a number of seconds >= 0"
    try:
        number = float(value)
    except ValueError:
        _usage(flag, expected, value)
    if not number < float("inf") or number < 0 or (positive and number == 0):
        _usage(flag, expected, value)
    return number


def parse_command(value: str, flag: str) -> tuple[str, ...]:
    """A command line split like a shell would, to run without one."""
    try:
        argv = shlex.split(value)
    except ValueError as error:
        _usage(flag, f"a command line ({error})", value)
    if not argv:
        _usage(flag, "a non-empty command line", value)
    return tuple(argv)


def parse_host_header(value: str) -> str:
    """A `Host` header value: hostname or IP, optionally with a port."""
    host, _, port = value.rpartition(":") if ":" in value else (value, "", "")
    if port and not (re.fullmatch(r"[0-9]{1,5}", port) and 1 <= int(port) <= 65535):
        _usage("--host-header", "HOST or HOST:PORT", value)
    if not (HOSTNAME_RE.fullmatch(host) or re.fullmatch(r"\[[0-9A-Fa-f:.]+\]", host)):
        _usage("--host-header", "HOST or HOST:PORT", value)
    return value


def build_parser() -> argparse.ArgumentParser:
    """The CLI; every value stays a string here and is validated in `parse_options`."""
    parser = RaisingArgumentParser(
        prog="python -m nocturna_infra.switch",
        description="Switch the Nginx upstream to a healthy slot, with test, reload, verify "
        "and restore on failure. Never prompts.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--upstream-file",
        required=True,
        metavar="PATH",
        help="upstream file the switch owns and rewrites",
    )
    add("--upstream-name", required=True, metavar="NAME", help="name of the Nginx upstream block")
    add("--slot", required=True, metavar="NAME", help="slot name recorded in the file and output")
    add(
        "--server",
        action="append",
        required=True,
        metavar="HOST:PORT",
        help="HOST:PORT of the target (repeatable)",
    )
    add(
        "--health-url",
        action="append",
        required=True,
        metavar="URL",
        help="must answer 200 (repeatable)",
    )
    add("--health-contains", help="text every health response body must contain")
    add(
        "--smoke-url", metavar="URL", help="optional smoke request proving the service really works"
    )
    add("--smoke-method", default="GET")
    add("--smoke-body", help="request body (sent as application/json)")
    add("--smoke-status", default="200")
    add("--smoke-content-type", help="required Content-Type prefix, e.g. image/png")
    add(
        "--smoke-auth-env",
        metavar="VAR",
        help="environment variable holding a bearer token for the smoke request "
        "(kept off the command line)",
    )
    add("--host-header", help="Host header for probes and verification")
    add("--verify-url", metavar="URL", help="URL on Nginx's loopback verification server")
    # Old workers may still answer for a moment after a reload, hence several attempts.
    add("--verify-attempts", default="20", help="verification attempts (default: %(default)s)")
    add("--nginx-test", default="nginx -t", help="default: %(default)s")
    add("--nginx-reload", default="nginx -s reload", help="default: %(default)s")
    add("--attempts", default="30", help="probe attempts (default: %(default)s)")
    add("--interval", default="2", help="max seconds between probe attempts (default: 2)")
    add("--timeout", default="5", help="seconds per request (default: %(default)s)")
    add("--lock-file", help="default: <upstream-file>.lock")
    add("--lock-wait", default="0", help="seconds to wait for the lock (default: fail fast)")
    add("--keepalive", default=str(KEEPALIVE), help="idle upstream connections per worker")
    return parser


def _bearer_token(variable: str | None, environ: Mapping[str, str]) -> str | None:
    if variable is None:
        return None
    token = environ.get(variable, "")
    if not token:
        msg = f"--smoke-auth-env: environment variable {variable!r} is unset or empty"
        raise UsageError(msg)
    return token


def parse_options(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> SwitchOptions:
    """Validate the whole command line before anything is touched."""
    ns = build_parser().parse_args(list(argv))
    name = parse_name(ns.upstream_name, "--upstream-name")
    slot = parse_name(ns.slot, "--slot")
    servers = tuple(parse_server(server) for server in ns.server)
    host = parse_host_header(ns.host_header) if ns.host_header else None
    health = tuple(
        Check(parse_url(url, "--health-url"), contains=ns.health_contains, host_header=host)
        for url in ns.health_url
    )
    smoke = None
    if ns.smoke_url is not None:
        if not METHOD_RE.fullmatch(ns.smoke_method):
            _usage(
                "--smoke-method", "an upper-case HTTP method such as GET or POST", ns.smoke_method
            )
        smoke = Check(
            parse_url(ns.smoke_url, "--smoke-url"),
            method=ns.smoke_method,
            body=ns.smoke_body,
            status=parse_int(ns.smoke_status, "--smoke-status", 100, 599),
            content_type=ns.smoke_content_type,
            host_header=host,
            bearer_token=_bearer_token(ns.smoke_auth_env, environ),
        )
    elif any(v is not None for v in (ns.smoke_body, ns.smoke_content_type, ns.smoke_auth_env)):
        msg = "--smoke-body/--smoke-content-type/--smoke-auth-env: given without --smoke-url"
        raise UsageError(msg)
    verify = None
    if ns.verify_url is not None:
        verify = Check(parse_url(ns.verify_url, "--verify-url"), host_header=host)
    upstream_file = Path(ns.upstream_file)
    if not upstream_file.name:
        _usage("--upstream-file", "a file path", ns.upstream_file)
    lock_file = Path(ns.lock_file) if ns.lock_file else Path(f"{upstream_file}.lock")
    return SwitchOptions(
        upstream_file=upstream_file,
        upstream_name=name,
        slot=slot,
        servers=servers,
        health=health,
        smoke=smoke,
        verify=verify,
        verify_attempts=parse_int(ns.verify_attempts, "--verify-attempts", 1),
        nginx_test=parse_command(ns.nginx_test, "--nginx-test"),
        nginx_reload=parse_command(ns.nginx_reload, "--nginx-reload"),
        attempts=parse_int(ns.attempts, "--attempts", 1),
        interval=parse_seconds(ns.interval, "--interval", positive=False),
        timeout=parse_seconds(ns.timeout, "--timeout", positive=True),
        lock_file=lock_file,
        lock_wait=parse_seconds(ns.lock_wait, "--lock-wait", positive=False),
        keepalive=parse_int(ns.keepalive, "--keepalive", 1),
    )


# --- running: progress, probes, lock, file swap, nginx ---------------------------------------


class Progress:
    """One stdout line per step, prefixed with the time since the switch started."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def step(self, message: str) -> None:
        print(f"[{self.elapsed:.2f}s] {message}", flush=True)


def backoff(attempt: int, ceiling: float, first: float = 0.1) -> float:
    """Delay after failed attempt `attempt` (1-based): doubling from `first`, capped."""
    return float(min(ceiling, first * 2 ** (attempt - 1)))


def _label(check: Check) -> str:
    return f"{check.method} {check.url}" if check.method != "GET" else check.url


def _first_failure(
    checks: Sequence[Check], timeout: float, progress: Progress
) -> tuple[Check, CheckResult] | None:
    for check in checks:
        result = run_check(check, timeout)
        progress.step(f"probe {_label(check)}: {result.detail}")
        if not result.ok:
            return check, result
    return None


def probe_target(opts: SwitchOptions, progress: Progress) -> None:
    """Every health URL and the smoke check must pass in one attempt; bounded retries."""
    checks = (*opts.health, *((opts.smoke,) if opts.smoke else ()))
    attempt = 0
    while True:
        attempt += 1
        failed = _first_failure(checks, opts.timeout, progress)
        if failed is None:
            return
        if attempt >= opts.attempts:
            break
        time.sleep(backoff(attempt, opts.interval))
    check, result = failed
    reason = (
        f"{opts.slot} not healthy after {progress.elapsed:.1f}s ({_label(check)} {result.detail})"
    )
    raise SwitchError(ExitCode.UNHEALTHY, reason)


@contextmanager
def held_lock(path: Path, wait: float, owner: str) -> Iterator[None]:
    """Non-blocking exclusive flock (the kernel drops it if we are killed)."""
    try:
        handle = path.open("a+")
    except OSError as error:
        msg = f"cannot open lock file {path}: {error.strerror}"
        raise SwitchError(ExitCode.FILESYSTEM, msg) from error
    with handle:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    handle.seek(0)
                    holder = handle.read().strip() or "unknown"
                    msg = f"another switch holds {path} ({holder})"
                    raise SwitchError(ExitCode.LOCKED, msg) from None
                time.sleep(0.1)
        handle.seek(0)
        handle.truncate()
        handle.write(owner + "\n")
        handle.flush()
        yield


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes | None) -> None:
    """Make `path` hold exactly `data` (None: absent) via a fsynced temp file and rename,
    so a crash at any point leaves the old or the new complete file, never a partial one."""
    if data is None:
        path.unlink(missing_ok=True)
        _fsync_dir(path.parent)
        return
    temp = path.with_name(f".{path.name}.tmp.{os.getpid()}")
    try:
        with temp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def run_nginx(argv: Sequence[str]) -> str | None:
    """Run an Nginx command without a shell; None on success, else its last error line."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=NGINX_COMMAND_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return str(error)
    if done.returncode == 0:
        return None
    lines = (done.stderr or done.stdout).strip().splitlines()
    # nginx -t ends with "test failed"; the line saying why is the first [emerg] one.
    reasons = [line for line in lines if "[emerg]" in line] or lines[-1:] or ["no output"]
    return f"exit {done.returncode}: {reasons[0]}"


def verify_through_nginx(opts: SwitchOptions, progress: Progress) -> str | None:
    """None once Nginx routes to a new server, else why not after bounded retries."""
    if opts.verify is None:
        progress.step("verify: skipped (no --verify-url)")
        return None
    detail = ""
    for attempt in range(1, opts.verify_attempts + 1):
        result = verify_routed(opts.verify, opts.timeout, opts.servers)
        progress.step(f"verify {opts.verify.url}: {result.detail}")
        if result.ok:
            return None
        detail = result.detail
        if attempt < opts.verify_attempts:
            time.sleep(backoff(attempt, 0.5, first=0.05))
    return f"{opts.verify.url} {detail}"


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        msg = f"cannot read {path}: {error.strerror}"
        raise SwitchError(ExitCode.FILESYSTEM, msg) from error


def _describe(data: bytes | None) -> str:
    if data is None:
        return "no file yet"
    try:
        state = parse_upstream(data.decode("utf-8", "replace"))
    except UpstreamParseError:
        return "unrecognised content"
    return f"{state.slot or 'unknown slot'} -> {', '.join(state.servers)}"


def _restore(opts: SwitchOptions, old: bytes | None, progress: Progress) -> str:
    """Put the previous file back; returns a note for the failure reason."""
    try:
        write_atomic(opts.upstream_file, old)
    except OSError as error:
        progress.step(f"restore {opts.upstream_file}: FAILED ({error})")
        return f"; RESTORE FAILED ({error.strerror}): fix {opts.upstream_file} by hand"
    progress.step(f"restore {opts.upstream_file}: {_describe(old)}")
    return ""


def _restore_and_reload(opts: SwitchOptions, old: bytes | None, progress: Progress) -> str:
    note = _restore(opts, old, progress)
    error = run_nginx(opts.nginx_reload)
    progress.step(f"reload with previous file: {error or 'ok'}")
    return note + (f"; reload with the previous file also failed ({error})" if error else "")


def apply_switch(opts: SwitchOptions, new_text: str, progress: Progress) -> bool:
    """The locked part: swap, test, reload, verify. True if the file changed."""
    path = opts.upstream_file
    old = _read(path)
    if old is not None and routing_text(old.decode("utf-8", "replace")) == routing_text(new_text):
        progress.step(f"{path}: already routes {_describe(old)}; not rewritten")
        problem = verify_through_nginx(opts, progress)
        if problem is None:
            return False
        # The file is right but Nginx is not (e.g. an earlier switch was killed before its
        # reload): test and reload the file as it is, without rewriting it.
        return _test_reload_verify(opts, old, progress, restore=False)
    _remove_stale_temps(path)
    try:
        if old is not None:
            write_atomic(path.with_name(path.name + ".prev"), old)
        write_atomic(path, new_text.encode())
    except OSError as error:
        msg = f"cannot write {path}: {error.strerror}; nothing changed"
        raise SwitchError(ExitCode.FILESYSTEM, msg) from error
    progress.step(f"write {path}: {opts.slot} -> {', '.join(opts.servers)} (was {_describe(old)})")
    try:
        return _test_reload_verify(opts, old, progress, restore=True)
    except Interrupted as interrupted:
        note = _restore_and_reload(opts, old, progress)
        name = signal.Signals(interrupted.signum).name
        msg = f"interrupted by {name}; previous file restored and reloaded{note}"
        raise SwitchError(128 + interrupted.signum, msg) from None


def _remove_stale_temps(path: Path) -> None:
    """Temp files of switches killed between write and rename; we hold the lock."""
    for stale in path.parent.glob(f".{path.name}.tmp.*"):
        stale.unlink(missing_ok=True)


def _test_reload_verify(
    opts: SwitchOptions, old: bytes | None, progress: Progress, *, restore: bool
) -> bool:
    problem = run_nginx(opts.nginx_test)
    progress.step(f"nginx test: {problem or 'ok'}")
    if problem is not None:
        note = _restore(opts, old, progress) if restore else ""
        done = "previous file restored" if restore else "file left as it was"
        raise SwitchError(
            ExitCode.CONFIG_REJECTED, f"nginx -t rejected the new file ({problem}); {done}{note}"
        )
    problem = run_nginx(opts.nginx_reload)
    progress.step(f"nginx reload: {problem or 'ok'}")
    if problem is not None:
        note = _restore_and_reload(opts, old, progress) if restore else ""
        done = "previous file restored" if restore else "file left as it was"
        raise SwitchError(ExitCode.RELOAD_FAILED, f"reload failed ({problem}); {done}{note}")
    problem = verify_through_nginx(opts, progress)
    if problem is not None:
        note = _restore_and_reload(opts, old, progress) if restore else ""
        done = "previous file restored and reloaded" if restore else "file left as it was"
        raise SwitchError(
            ExitCode.VERIFY_FAILED, f"verification through Nginx failed ({problem}); {done}{note}"
        )
    return True


def run(opts: SwitchOptions, now: Callable[[], datetime], progress: Progress) -> str:
    """The whole switch after validation; returns the summary line."""
    targets = ", ".join(opts.servers)
    progress.step(f"switch {opts.upstream_name} to {opts.slot} ({targets})")
    probe_target(opts, progress)
    owner = (
        f"pid {os.getpid()} switching to {opts.slot} since {now().isoformat(timespec='seconds')}"
    )
    with held_lock(opts.lock_file, opts.lock_wait, owner):
        progress.step(f"lock {opts.lock_file}: held")
        text = render_upstream(opts.upstream_name, opts.slot, opts.servers, now(), opts.keepalive)
        changed = apply_switch(opts, text, progress)
    verb = "switched to" if changed else "already live:"
    return f"{verb} {opts.slot} -> {targets} ({opts.upstream_name}) in {progress.elapsed:.2f}s"


def main(argv: Sequence[str] | None = None, now: Callable[[], datetime] | None = None) -> int:
    """CLI entry point; the clock is injectable so tests can pin the recorded switch time."""
    try:
        opts = parse_options(sys.argv[1:] if argv is None else argv)
    except UsageError as error:
        print(f"switch: {error}", file=sys.stderr)
        return ExitCode.USAGE
    except SystemExit as done:  # --help
        return int(done.code or 0)
    progress = Progress()
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in INTERRUPTS}
    try:
        summary = run(opts, now or (lambda: datetime.now(UTC)), progress)
    except SwitchError as failure:
        print(f"switch: {failure.reason}", file=sys.stderr)
        return failure.code
    except Interrupted as interrupted:  # before the swap: nothing to put back
        name = signal.Signals(interrupted.signum).name
        print(f"switch: interrupted by {name}; nothing changed", file=sys.stderr)
        return 128 + interrupted.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"switch: {summary}", flush=True)
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
