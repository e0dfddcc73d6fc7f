"""Health-gated, transactional switch of Nginx to a slot, without a reload.

    python -m nocturna_infra.switch --upstream-file F --upstream-name N --selection-dir D \
        --slot S --server HOST:PORT [--standby OTHER=HOST:PORT] --health-url URL \
        [--verify-url URL] ...

Order: validate every flag, probe the target directly, run the smoke checks against it, take
the lock; only if a slot's servers change: atomically replace the upstream file (one group per
slot), `nginx -t`, reload. Then flip the selection file (see `selection`), which Nginx reads on
the next request, and verify through Nginx. Any failure after the first write puts the previous
selection and file back (atomically) and, once Nginx may have loaded the new file, reloads
again. With `--watch-seconds`, the lock is released and the new slot watched through Nginx
(see `gates`); if it fails, the switch re-takes the lock and switches back, health-gated.
"""

from __future__ import annotations

import argparse
import fcntl
import ipaddress
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Final, NoReturn
from urllib.parse import urlsplit, urlunsplit

from nocturna_infra.cli import RaisingArgumentParser, UsageError
from nocturna_infra.traffic import gates, safe_files
from nocturna_infra.traffic.gates import WatchOptions
from nocturna_infra.traffic.probe import (
    Check,
    CheckResult,
    run_check,
    upstream_addresses,
    verify_routed,
)
from nocturna_infra.traffic.safe_files import UnsafeFileError
from nocturna_infra.traffic.selection import (
    describe,
    marker,
    nginx_choice,
    read_markers,
    write_markers,
)
from nocturna_infra.traffic.smoke import (
    SmokeCheck,
    SmokeDefinitionError,
    missing_variables,
    parse_checks,
)
from nocturna_infra.traffic.upstream import (
    KEEPALIVE,
    UpstreamParseError,
    group_name,
    parse_upstream_groups,
    render_upstreams,
    routing_text,
    slot_groups,
)
from nocturna_infra.traffic.watch import LogTail, Outcome, Thresholds, Watch


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
    WATCH_SWITCHED_BACK = 9
    WATCH_STILL_LIVE = 10


EXIT_CODES_HELP: Final = """\
exit codes:
  0  switched, or the target was already live (nothing rewritten, no reload)
  2  bad usage: a flag is missing or invalid; nothing was touched
  3  target not healthy (probe, smoke URL or a --smoke-checks check failed); nothing was
     changed
  4  nginx -t rejected the new upstream file; the previous file was restored byte for byte
  5  reload failed; the previous file was restored and a reload retried with it
  6  verification through Nginx failed; the previous selection (and upstream file, if the
     servers changed) was restored
  7  another switch holds the lock; nothing was changed
  8  a file or directory could not be written, or is unsafe (a symlink, or a directory others
     may write to); nothing was changed, or what was written was restored
  9  the watch saw the new slot fail and switched back to the previous slot (health-gated)
  10 the watch saw the new slot fail, but switching back failed or was refused: the new
     slot is still live
  143/130/129  stopped by SIGTERM/SIGINT/SIGHUP (128 + signal); after the first write the
     previous selection and file were restored first, before it nothing was changed; during
     the watch the new slot stays live
"""

NAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]+")
HOSTNAME_RE: Final = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
METHOD_RE: Final = re.compile(r"[A-Z]{3,10}")
NGINX_COMMAND_TIMEOUT: Final = 60.0
INTERRUPTS: Final = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
DEFAULT_FALLBACK: Final = "blue"


class SwitchError(Exception):
    """The switch stopped; `code` says how far it got and what was put back."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Interrupted(BaseException):
    """SIGTERM, SIGINT or SIGHUP arrived; raised so a half-done switch can put things back."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class SignalGuard:
    """Turns a signal into `Interrupted`, except while a restore runs: then it is only noted,
    so a second Ctrl-C or a dropped SSH session (SIGHUP) cannot abort putting things back."""

    def __init__(self) -> None:
        self.restoring = False
        self.raised = False
        self.deferred: list[int] = []

    def handle(self, signum: int, _frame: object) -> None:
        # Only the first signal interrupts: later ones would land in the restore it starts.
        if self.restoring or self.raised:
            self.deferred.append(signum)
            return
        self.raised = True
        raise Interrupted(signum)

    @contextmanager
    def shielded(self) -> Iterator[None]:
        previous, self.restoring = self.restoring, True
        try:
            yield
        finally:
            self.restoring = previous

    @contextmanager
    def installed(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.handle) for sig in INTERRUPTS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@dataclass(frozen=True)
class SwitchOptions:
    """Every validated input of one switch."""

    upstream_file: Path
    upstream_name: str
    selection_dir: Path
    slot: str
    servers: tuple[str, ...]
    standby: Mapping[str, tuple[str, ...]]
    fallback_slot: str
    health: tuple[Check, ...]
    smoke: tuple[Check, ...]
    """One smoke request per server of the target (`--smoke-url`, repeatable)."""
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
    smoke_checks: tuple[SmokeCheck, ...] = ()
    environ: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Values for the checks' ${VAR} templates (only the variables they name)."""
    watch: WatchOptions | None = None


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
        description="Route Nginx to a healthy slot: probe (and smoke-check) every server of "
        "the target, flip the selection file (rewrite, test and reload the upstream file only "
        "when servers change), verify through Nginx, restore on failure, then watch. Never "
        "prompts.",
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
    add(
        "--selection-dir",
        required=True,
        metavar="DIR",
        help="root-owned directory holding the selection files the site config tests",
    )
    add("--slot", required=True, metavar="NAME", help="slot to make live")
    add(
        "--server",
        action="append",
        required=True,
        metavar="HOST:PORT",
        help="HOST:PORT of the target (repeatable)",
    )
    add(
        "--standby",
        action="append",
        default=[],
        metavar="SLOT=HOST:PORT",
        help="servers of another slot's group (repeatable); slots not given keep the servers "
        "the upstream file already defines",
    )
    add(
        "--fallback-slot",
        default=DEFAULT_FALLBACK,
        metavar="NAME",
        help="slot the site config uses when no other slot's selection file exists "
        "(default: %(default)s)",
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
        "--smoke-url",
        action="append",
        default=[],
        metavar="URL",
        help="optional smoke request proving the service really works (repeatable: one per server)",
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
    add(
        "--smoke-checks",
        metavar="JSON",
        help="JSON list of smoke checks run against the target after its health probes (the "
        "smokeChecks stack key's format; header values may name ${VAR} environment variables)",
    )
    add(
        "--watch-seconds",
        default="0",
        help="after a switch, watch the new slot through Nginx this long and switch back if it "
        "fails (default: %(default)s, no watch); needs --watch-log and --verify-url",
    )
    add(
        "--watch-log",
        metavar="PATH",
        help="the JSON access log the shipped site writes (log_format nocturna_production_slots)",
    )
    add("--watch-error-percent", default="5", help="5xx share that fails the watch (default: 5)")
    add(
        "--watch-min-requests",
        default="20",
        help="requests seen before the share is judged (default: %(default)s)",
    )
    add(
        "--watch-failed-probes",
        default="3",
        help="failed probes in a row that fail the watch (default: %(default)s)",
    )
    add(
        "--watch-probe-interval",
        default="2",
        help="seconds between probes through Nginx during the watch (default: %(default)s)",
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
    smoke: tuple[Check, ...] = ()
    if ns.smoke_url:
        if not METHOD_RE.fullmatch(ns.smoke_method):
            _usage(
                "--smoke-method", "an upper-case HTTP method such as GET or POST", ns.smoke_method
            )
        status = parse_int(ns.smoke_status, "--smoke-status", 100, 599)
        token = _bearer_token(ns.smoke_auth_env, environ)
        smoke = tuple(
            Check(
                parse_url(url, "--smoke-url"),
                method=ns.smoke_method,
                body=ns.smoke_body,
                status=status,
                content_type=ns.smoke_content_type,
                host_header=host,
                bearer_token=token,
            )
            for url in ns.smoke_url
        )
    elif any(v is not None for v in (ns.smoke_body, ns.smoke_content_type, ns.smoke_auth_env)):
        msg = "--smoke-body/--smoke-content-type/--smoke-auth-env: given without --smoke-url"
        raise UsageError(msg)
    standby: dict[str, list[str]] = {}
    for entry in ns.standby:
        other, sep, server = entry.partition("=")
        if not sep:
            _usage("--standby", "SLOT=HOST:PORT", entry)
        other = parse_name(other, "--standby")
        if other == slot:
            _usage("--standby", f"a slot other than --slot {slot}", entry)
        standby.setdefault(other, []).append(parse_server(server, "--standby"))
    verify = None
    if ns.verify_url is not None:
        verify = Check(parse_url(ns.verify_url, "--verify-url"), host_header=host)
    upstream_file = Path(ns.upstream_file)
    if not upstream_file.name:
        _usage("--upstream-file", "a file path", ns.upstream_file)
    lock_file = Path(ns.lock_file) if ns.lock_file else Path(f"{upstream_file}.lock")
    smoke_checks, wanted = _smoke_checks(ns.smoke_checks, environ)
    watch = _watch_options(ns, verify)
    if not ns.selection_dir or not Path(ns.selection_dir).is_absolute():
        _usage("--selection-dir", "an absolute directory path", ns.selection_dir)
    return SwitchOptions(
        upstream_file=upstream_file,
        upstream_name=name,
        selection_dir=Path(ns.selection_dir),
        slot=slot,
        servers=servers,
        standby={other: tuple(found) for other, found in standby.items()},
        fallback_slot=parse_name(ns.fallback_slot, "--fallback-slot"),
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
        smoke_checks=smoke_checks,
        environ=wanted,
        watch=watch,
    )


def _smoke_checks(
    text: str | None, environ: Mapping[str, str]
) -> tuple[tuple[SmokeCheck, ...], dict[str, str]]:
    """The checks, and the environment values their templates name (all must be set)."""
    if text is None:
        return (), {}
    try:
        value = json.loads(text)
    except ValueError:
        _usage("--smoke-checks", "a JSON list of checks", text)
    try:
        checks = parse_checks(value, "--smoke-checks", Path.cwd())
    except SmokeDefinitionError as error:
        raise UsageError(str(error)) from None
    missing = missing_variables(checks, environ)
    if missing:
        msg = (
            f"--smoke-checks: environment variable {', '.join(missing)} is unset or empty "
            "(named by a ${VAR} header template)"
        )
        raise UsageError(msg)
    names = set().union(*(check.variables for check in checks))
    return checks, {name: environ[name] for name in names}


def _watch_options(ns: argparse.Namespace, verify: Check | None) -> WatchOptions | None:
    seconds = parse_seconds(ns.watch_seconds, "--watch-seconds", positive=False)
    thresholds = Thresholds(
        error_percent=parse_int(ns.watch_error_percent, "--watch-error-percent", 1, 100),
        min_requests=parse_int(ns.watch_min_requests, "--watch-min-requests", 1),
        failed_probes=parse_int(ns.watch_failed_probes, "--watch-failed-probes", 1),
    )
    interval = parse_seconds(ns.watch_probe_interval, "--watch-probe-interval", positive=True)
    if seconds == 0:
        return None
    if not ns.watch_log or not Path(ns.watch_log).is_absolute():
        _usage("--watch-log", "an absolute file path (needed by --watch-seconds)", ns.watch_log)
    if verify is None:
        msg = "--watch-seconds: needs --verify-url (the watch probes through it)"
        raise UsageError(msg)
    return WatchOptions(seconds, Path(ns.watch_log), thresholds, interval)


# --- running: progress, probes, lock, writes, nginx -----------------------------------------


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
    checks = (*opts.health, *opts.smoke)
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
    """Non-blocking exclusive flock on an owner-only file (the kernel drops it if we die)."""
    try:
        safe_files.check_directory(path.parent)
        fd = safe_files.open_lock(path)
    except UnsafeFileError as error:
        raise SwitchError(ExitCode.FILESYSTEM, f"lock file: {error}") from None
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
                    msg = f"another switch holds {path} ({holder or 'unknown'})"
                    raise SwitchError(ExitCode.LOCKED, msg) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (owner + "\n").encode(), 0)
        yield
    finally:
        os.close(fd)


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
    """None once Nginx routes to a target server, else why not after bounded retries."""
    if opts.verify is None:
        progress.step("verify: skipped (no --verify-url)")
        return None
    detail = ""
    for attempt in range(1, opts.verify_attempts + 1):
        result = verify_routed(opts.verify, opts.timeout, opts.servers)
        progress.step(f"verify {opts.verify.url}: {result.detail}")
        if result.ok:
            if len(opts.servers) > 1 and result.upstream is not None:
                _see_every_server(opts, progress, {result.upstream})
            return None
        detail = result.detail
        if attempt < opts.verify_attempts:
            time.sleep(backoff(attempt, 0.5, first=0.05))
    return f"{opts.verify.url} {detail}"


def _see_every_server(opts: SwitchOptions, progress: Progress, seen: set[str]) -> None:
    """With a server per host: ask again until every one has answered through Nginx (its
    round robin), and say which did not. A note, not a failure: each was probed directly."""
    if opts.verify is None:
        return
    expected = {server: upstream_addresses([server]) for server in opts.servers}
    for attempt in range(1, 2 * opts.verify_attempts + 1):
        missing = [server for server, addresses in expected.items() if not addresses & seen]
        if not missing:
            progress.step(
                f"verify: every server answered through Nginx ({', '.join(opts.servers)})"
            )
            return
        # Spaced out: right after a reload, the old workers may still take new connections.
        time.sleep(backoff(attempt, 0.25, first=0.02))
        result = verify_routed(opts.verify, opts.timeout, opts.servers)
        if result.upstream is not None:
            seen.add(result.upstream)
    progress.step(
        f"verify: NOT SEEN answering through Nginx: {', '.join(missing)} (probed healthy "
        "directly; Nginx passes over a server that fails)"
    )


def _describe_groups(slot_servers: Mapping[str, Sequence[str]]) -> str:
    return ", ".join(f"{slot} -> {' '.join(servers)}" for slot, servers in slot_servers.items())


class _StepFailedError(Exception):
    """A step failed after the transaction began; the transaction restores, then reports."""

    def __init__(self, code: ExitCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass
class Plan:
    """What one switch will write, decided under the lock before the first write."""

    old_file: bytes | None
    old_mode: int | None
    old_groups: dict[str, tuple[str, ...]]
    new_groups: dict[str, tuple[str, ...]]
    new_text: str
    old_markers: frozenset[str]

    @property
    def slots(self) -> list[str]:
        return list(self.new_groups)

    @property
    def servers_change(self) -> bool:
        return self.old_file is None or routing_text(
            self.old_file.decode("utf-8", "replace")
        ) != routing_text(self.new_text)


def make_plan(opts: SwitchOptions, now: datetime) -> Plan:
    """Read the upstream file and the selection; refuse what cannot be switched safely."""
    safe_files.check_directory(opts.upstream_file.parent)
    # Searchable by the Nginx workers' group only (www-data on Debian; see docs/switch.md).
    safe_files.check_directory(opts.selection_dir, "install -d -o root -g www-data -m 0750")
    old = safe_files.read_file(opts.upstream_file)
    old_groups: dict[str, tuple[str, ...]] = {}
    if old is not None:
        try:
            old_groups = slot_groups(
                parse_upstream_groups(old[0].decode("utf-8", "replace")), opts.upstream_name
            )
        except UpstreamParseError:
            old_groups = {}  # e.g. the single-group file of a host being migrated
    merged = {**old_groups, **opts.standby, opts.slot: opts.servers}
    if opts.fallback_slot not in merged:
        msg = (
            f"--fallback-slot {opts.fallback_slot}: no servers known for it (the site config "
            f"proxies to {group_name(opts.upstream_name, opts.fallback_slot)} when no other slot "
            f"is selected); pass --standby {opts.fallback_slot}=HOST:PORT"
        )
        raise SwitchError(ExitCode.USAGE, msg)
    order = sorted(merged, key=lambda slot: (slot != opts.fallback_slot, slot))
    new_groups = {slot: merged[slot] for slot in order}
    for path in (opts.upstream_file, Path(f"{opts.upstream_file}.prev")):
        safe_files.remove_temps(path)
    for slot in new_groups:
        safe_files.remove_temps(marker(opts.selection_dir, opts.upstream_name, slot))
    return Plan(
        old_file=old[0] if old else None,
        old_mode=old[1] if old else None,
        old_groups=old_groups,
        new_groups=new_groups,
        new_text=render_upstreams(opts.upstream_name, new_groups, now, opts.keepalive),
        old_markers=read_markers(opts.selection_dir, opts.upstream_name, list(new_groups)),
    )


class Transaction:
    """Writes in order and, on any failure or signal after the first write, puts back exactly
    what it touched. Flags are set *before* each write: a signal arriving mid-write must be
    answered with a restore, never with "nothing changed"."""

    def __init__(
        self, opts: SwitchOptions, plan: Plan, progress: Progress, guard: SignalGuard
    ) -> None:
        self.opts = opts
        self.plan = plan
        self.progress = progress
        self.guard = guard
        self.file_touched = False
        self.reload_started = False
        self.selection_touched = False

    @property
    def touched(self) -> bool:
        return self.file_touched or self.selection_touched

    def run(self) -> bool:
        """True if anything changed; raises SwitchError after restoring on failure."""
        try:
            return self._steps()
        except _StepFailedError as failed:
            self.guard.restoring = True  # from here on a signal cannot cut the restore short
            raise SwitchError(failed.code, failed.reason + self._restore()) from None
        except Interrupted as interrupted:
            name = signal.Signals(interrupted.signum).name
            done = self._restore() if self.touched else "; nothing changed"
            raise SwitchError(128 + interrupted.signum, f"interrupted by {name}{done}") from None

    def _steps(self) -> bool:
        opts, plan, step = self.opts, self.plan, self.progress.step
        path = opts.upstream_file
        if plan.servers_change:
            self.file_touched = True
            try:
                if plan.old_file is not None:
                    safe_files.write_atomic(
                        Path(f"{path}.prev"), plan.old_file, safe_files.kept_mode(plan.old_mode)
                    )
                safe_files.write_atomic(
                    path, plan.new_text.encode(), safe_files.kept_mode(plan.old_mode)
                )
            except OSError as error:
                self.file_touched = self._file_differs()
                msg = f"cannot write {path}: {error.strerror}"
                raise _StepFailedError(ExitCode.FILESYSTEM, msg) from None
            was = _describe_groups(plan.old_groups) if plan.old_groups else "no slot groups"
            step(f"write {path}: {_describe_groups(plan.new_groups)} (was {was})")
            self._test_and_reload()
        else:
            step(f"{path}: servers unchanged; not rewritten, no reload")
        want = frozenset({opts.slot})
        before = describe(plan.old_markers, plan.slots, opts.fallback_slot)
        if plan.old_markers != want:
            self.selection_touched = True
            try:
                write_markers(opts.selection_dir, opts.upstream_name, plan.slots, want)
            except (OSError, UnsafeFileError) as error:
                self.selection_touched = self._selection_differs()
                reason = getattr(error, "strerror", None) or str(error)
                msg = f"cannot write the selection in {opts.selection_dir}: {reason}"
                raise _StepFailedError(ExitCode.FILESYSTEM, msg) from None
            step(f"select {opts.slot} in {opts.selection_dir} (was {before})")
        else:
            step(f"selection: already {before}")
        problem = verify_through_nginx(opts, self.progress)
        if problem is None:
            return self.touched
        if not self.file_touched:
            # The upstream file is as wanted but Nginx may not have loaded it (an earlier
            # switch was killed between its write and its reload): test and reload it as it
            # is, once, before giving up.
            step(f"{path}: reloading it as it is, in case Nginx never loaded it")
            self._test_and_reload()
            problem = verify_through_nginx(opts, self.progress)
            if problem is None:
                return True
        raise _StepFailedError(
            ExitCode.VERIFY_FAILED, f"verification through Nginx failed ({problem})"
        )

    def _file_differs(self) -> bool:
        """After a failed write: did the upstream file change anyway (it is atomic, so
        normally not)? Unknown counts as changed, so it is restored."""
        try:
            now = safe_files.read_file(self.opts.upstream_file)
        except UnsafeFileError:
            return True
        return (now[0] if now else None) != self.plan.old_file

    def _selection_differs(self) -> bool:
        opts = self.opts
        try:
            now = read_markers(opts.selection_dir, opts.upstream_name, self.plan.slots)
        except UnsafeFileError:
            return True
        return now != self.plan.old_markers

    def _test_and_reload(self) -> None:
        problem = run_nginx(self.opts.nginx_test)
        self.progress.step(f"nginx test: {problem or 'ok'}")
        if problem is not None:
            raise _StepFailedError(
                ExitCode.CONFIG_REJECTED, f"nginx -t rejected the new file ({problem})"
            )
        self.reload_started = True
        problem = run_nginx(self.opts.nginx_reload)
        self.progress.step(f"nginx reload: {problem or 'ok'}")
        if problem is not None:
            raise _StepFailedError(ExitCode.RELOAD_FAILED, f"reload failed ({problem})")

    def _restore(self) -> str:
        """Put back what was touched, with signals deferred; returns the tail of the reason."""
        opts, plan, step = self.opts, self.plan, self.progress.step
        done: list[str] = []
        failed: list[str] = []
        with self.guard.shielded():
            if self.selection_touched:
                try:
                    write_markers(
                        opts.selection_dir, opts.upstream_name, plan.slots, plan.old_markers
                    )
                    before = describe(plan.old_markers, plan.slots, opts.fallback_slot)
                    step(f"restore selection: {before}")
                    done.append("previous selection restored")
                except (OSError, UnsafeFileError) as error:
                    step(f"restore selection: FAILED ({error})")
                    failed.append(f"RESTORE FAILED ({error}): fix {opts.selection_dir} by hand")
            if self.file_touched:
                try:
                    safe_files.write_atomic(
                        opts.upstream_file, plan.old_file, safe_files.kept_mode(plan.old_mode)
                    )
                    restored = "previous file" if plan.old_file else "absent again"
                    step(f"restore {opts.upstream_file}: {restored}")
                    done.append("previous file restored")
                except (OSError, UnsafeFileError) as error:
                    step(f"restore {opts.upstream_file}: FAILED ({error})")
                    failed.append(f"RESTORE FAILED ({error}): fix {opts.upstream_file} by hand")
            if self.reload_started and self.file_touched:
                error_line = run_nginx(opts.nginx_reload)
                step(f"reload with previous file: {error_line or 'ok'}")
                if error_line:
                    failed.append(f"reload with the previous file also failed ({error_line})")
                else:
                    done.append("reloaded")
        text = " and ".join(done) if done else "nothing changed"
        return "; " + "; ".join([text, *failed])


def run(
    opts: SwitchOptions, now: Callable[[], datetime], progress: Progress, guard: SignalGuard
) -> str:
    """The whole switch after validation; returns the summary line."""
    targets = ", ".join(opts.servers)
    progress.step(f"switch {opts.upstream_name} to {opts.slot} ({targets})")
    probe_target(opts, progress)
    smoke_gate(opts, progress)
    tail = None
    if opts.watch is not None:
        # From where the log ends now: the new slot's requests all come after this point.
        tail = LogTail(opts.watch.log)
        try:
            tail.start()
        except OSError as error:
            msg = f"--watch-log {opts.watch.log}: unreadable ({error.strerror}); nothing changed"
            raise SwitchError(ExitCode.FILESYSTEM, msg) from None
        if not opts.watch.log.exists():
            progress.step(f"watch log {opts.watch.log}: not there yet (read once Nginx writes it)")
    started = time.time()
    plan, changed = switch_locked(opts, now, progress, guard)
    summary = (
        f"{'switched to' if changed else 'already live:'} {opts.slot} -> {targets} "
        f"({opts.upstream_name}) in {progress.elapsed:.2f}s"
    )
    if tail is None or opts.watch is None:
        return summary
    previous = previous_slot(opts, plan)
    if not changed or previous is None:
        tail.close()
        why = "nothing changed" if not changed else "no previous slot to switch back to"
        progress.step(f"watch: skipped ({why})")
        return summary
    progress.step(f"switch: {summary}")
    watch_or_switch_back(opts, plan, previous, tail, started, now, progress, guard)
    return f"{summary}; {opts.slot} passed the {opts.watch.seconds:g}s watch"


def smoke_gate(opts: SwitchOptions, progress: Progress) -> None:
    """Every smoke check, against every target server directly; exit 3 on the first failure."""
    if not opts.smoke_checks:
        return
    host = opts.health[0].host_header if opts.health else None
    failure = gates.smoke_failure(
        opts.smoke_checks, opts.servers, opts.environ, host, progress.step
    )
    if failure is not None:
        raise SwitchError(ExitCode.UNHEALTHY, f"{opts.slot} failed {failure}; nothing changed")


def switch_locked(
    opts: SwitchOptions, now: Callable[[], datetime], progress: Progress, guard: SignalGuard
) -> tuple[Plan, bool]:
    """Take the lock, plan, and run the transaction; the lock is released on return."""
    owner = (
        f"pid {os.getpid()} switching to {opts.slot} since {now().isoformat(timespec='seconds')}"
    )
    with held_lock(opts.lock_file, opts.lock_wait, owner):
        progress.step(f"lock {opts.lock_file}: held")
        try:
            plan = make_plan(opts, now())
        except UnsafeFileError as error:
            raise SwitchError(ExitCode.FILESYSTEM, f"{error}; nothing changed") from None
        return plan, Transaction(opts, plan, progress, guard).run()


def previous_slot(opts: SwitchOptions, plan: Plan) -> str | None:
    """The slot Nginx used before this switch, if it had servers and was another slot."""
    if plan.old_file is None:
        return None
    before = nginx_choice(plan.old_markers, plan.slots, opts.fallback_slot)
    if before == opts.slot or before not in plan.old_groups:
        return None
    return before


def watch_or_switch_back(
    opts: SwitchOptions,
    plan: Plan,
    previous: str,
    tail: LogTail,
    started: float,
    now: Callable[[], datetime],
    progress: Progress,
    guard: SignalGuard,
) -> None:
    """Watch the new slot with no lock held; switch back if it fails. Raises SwitchError with
    exit 9 (switched back) or 10 (still live); the record says what happened either way."""
    assert opts.watch is not None and opts.verify is not None
    path = gates.record_path(opts.upstream_file)
    record = gates.new_record(opts.slot, previous, opts.watch, started)
    _save_record(path, record, progress)
    watch = Watch(group_name(opts.upstream_name, opts.slot), started)
    probe = gates.nginx_probe(
        opts.smoke_checks, opts.verify, opts.servers, opts.environ, opts.timeout
    )

    def still_selected() -> bool:
        return _selected_now(opts, plan) == opts.slot

    try:
        outcome = gates.run_watch(watch, opts.watch, tail, probe, still_selected, progress.step)
        _judge(opts, plan, previous, path, record, watch, outcome, now, progress, guard)
    except Interrupted as interrupted:  # during the watch or before the switch back's writes
        name = signal.Signals(interrupted.signum).name
        _save_record(path, {**record, **gates.ended("interrupted", f"by {name}", watch)}, progress)
        raise SwitchError(
            128 + interrupted.signum,
            f"interrupted by {name} during the watch; {opts.slot} stays live "
            f"(saw {watch.summary()})",
        ) from None


def _judge(
    opts: SwitchOptions,
    plan: Plan,
    previous: str,
    path: Path,
    record: Mapping[str, object],
    watch: Watch,
    outcome: Outcome,
    now: Callable[[], datetime],
    progress: Progress,
    guard: SignalGuard,
) -> None:
    """Act on the watch's outcome: keep the new slot, or switch back and say so."""
    assert opts.watch is not None
    if outcome.result != "failed":
        _save_record(
            path, {**record, **gates.ended(outcome.result, outcome.reason, watch)}, progress
        )
        return
    seen = f"saw {watch.summary()}"
    try:
        back = switch_back(opts, plan, previous, now, progress, guard)
    except SwitchError as failure:
        ended = gates.ended("switch-back-failed", f"{outcome.reason}; {failure.reason}", watch)
        _save_record(path, {**record, **ended}, progress)
        raise SwitchError(
            ExitCode.WATCH_STILL_LIVE,
            f"watch: {opts.slot} failed ({outcome.reason}) but switching back to {previous} "
            f"failed: {failure.reason}; {opts.slot} is still live. {seen}",
        ) from None
    if back is None:
        reason = f"{outcome.reason}; someone switched meanwhile, so nothing was switched back"
        _save_record(path, {**record, **gates.ended("superseded", reason, watch)}, progress)
        progress.step(f"watch: {reason}")
        return
    ended = gates.ended("switched-back", outcome.reason, watch, switched_back_at=time.time())
    _save_record(path, {**record, **ended}, progress)
    raise SwitchError(
        ExitCode.WATCH_SWITCHED_BACK,
        f"watch: {opts.slot} failed within {opts.watch.seconds:g}s ({outcome.reason}); "
        f"switched back to {previous} ({back}). {seen}. Fix the release, or run "
        f"`pulumi config set activeSlot {previous}`.",
    )


def _selected_now(opts: SwitchOptions, plan: Plan) -> str | None:
    try:
        return selected_slot(opts.selection_dir, opts.upstream_name, plan.slots, opts.fallback_slot)
    except UnsafeFileError:
        return None


def _save_record(path: Path, record: Mapping[str, object], progress: Progress) -> None:
    try:
        safe_files.write_atomic(path, (json.dumps(record, indent=2) + "\n").encode())
    except (OSError, UnsafeFileError) as error:
        progress.step(f"watch record {path}: not written ({error})")


def switch_back(
    opts: SwitchOptions,
    plan: Plan,
    previous: str,
    now: Callable[[], datetime],
    progress: Progress,
    guard: SignalGuard,
) -> str | None:
    """Switch to `previous` through the same health-gated path, under the lock, only if the
    selection still names the watched slot. Returns how it went, or None if superseded."""
    servers = plan.new_groups[previous]
    template = urlsplit(opts.health[0].url)
    health = tuple(
        replace(opts.health[0], url=urlunsplit(template._replace(netloc=server)))
        for server in servers
    )
    standby = {slot: found for slot, found in plan.new_groups.items() if slot != previous}
    back = replace(
        opts,
        slot=previous,
        servers=servers,
        standby=standby,
        health=health,
        smoke=(),
        smoke_checks=(),
        watch=None,
        lock_wait=max(opts.lock_wait, 30.0),
    )
    progress.step(f"switch back to {previous} ({', '.join(servers)})")
    probe_target(back, progress)
    since = now().isoformat(timespec="seconds")
    owner = f"pid {os.getpid()} switching back to {previous} since {since}"
    with held_lock(back.lock_file, back.lock_wait, owner):
        progress.step(f"lock {back.lock_file}: held")
        if _selected_now(opts, plan) != opts.slot:
            return None
        try:
            back_plan = make_plan(back, now())
        except UnsafeFileError as error:
            raise SwitchError(ExitCode.FILESYSTEM, f"{error}; nothing changed") from None
        Transaction(back, back_plan, progress, guard).run()
    return f"in {progress.elapsed:.2f}s since the switch began"


def selected_slot(
    selection_dir: Path, upstream_name: str, slots: Sequence[str], fallback: str
) -> str:
    """The slot Nginx proxies to per the selection files (for status and the program)."""
    return nginx_choice(read_markers(selection_dir, upstream_name, slots), slots, fallback)


def main(argv: Sequence[str] | None = None, now: Callable[[], datetime] | None = None) -> int:
    """CLI entry point; the clock is injectable so tests can pin the recorded write time."""
    guard = SignalGuard()
    # Handlers first: a signal from here on is answered by restoring, or "nothing changed".
    with guard.installed():
        try:
            opts = parse_options(sys.argv[1:] if argv is None else argv)
        except UsageError as error:
            print(f"switch: {error}", file=sys.stderr)
            return ExitCode.USAGE
        except SystemExit as done:  # --help
            return int(done.code or 0)
        progress = Progress()
        try:
            summary = run(opts, now or (lambda: datetime.now(UTC)), progress, guard)
        except SwitchError as failure:
            print(f"switch: {failure.reason}", file=sys.stderr)
            return failure.code
        except Interrupted as interrupted:  # before the first write: nothing to put back
            name = signal.Signals(interrupted.signum).name
            print(f"switch: interrupted by {name}; nothing changed", file=sys.stderr)
            return 128 + interrupted.signum
    print(f"switch: {summary}", flush=True)
    return ExitCode.OK


if __name__ == "__main__":
    sys.exit(main())
