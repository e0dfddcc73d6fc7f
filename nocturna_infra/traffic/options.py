"""The switch's command line: every flag parsed and validated into one frozen `SwitchOptions`
before anything is touched. Pure: each error names the flag, the problem and the bad value."""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from nocturna_infra.cli import RaisingArgumentParser, UsageError
from nocturna_infra.traffic.canary import CanaryOptions
from nocturna_infra.traffic.exits import EXIT_CODES_HELP
from nocturna_infra.traffic.flags import (
    METHOD_RE,
    flag_error,
    parse_command,
    parse_host_header,
    parse_int,
    parse_json_flag,
    parse_name,
    parse_pid_file,
    parse_seconds,
    parse_server,
    parse_url,
)
from nocturna_infra.traffic.gates import WatchOptions
from nocturna_infra.traffic.probe import Check
from nocturna_infra.traffic.routes import (
    PREFIX_PATTERN,
    RouteDefinitionError,
    RouteRules,
    parse_excluded,
    parse_route_classes,
)
from nocturna_infra.traffic.smoke import (
    SmokeCheck,
    SmokeDefinitionError,
    missing_variables,
    parse_checks,
)
from nocturna_infra.traffic.split import SplitKeyError, parse_shares, split_key
from nocturna_infra.traffic.upstream import KEEPALIVE
from nocturna_infra.traffic.watch import Thresholds

DEFAULT_FALLBACK: Final = "blue"
DEFAULT_NGINX_START: Final = "nginx"


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
    nginx_start: tuple[str, ...] | None
    """Starts Nginx when the reload failed because none is running (a fresh host); None: never."""
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
    canary: CanaryOptions | None = None
    """Canary steps before the flip (`canary`); None: the whole flip at once."""
    nginx_pid_file: Path | None = None
    """The master's pid file: after a reload, the flip waits for the old workers (reload.py);
    None: flip at once."""
    reload_timeout: float = 30.0

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every value masked in what the switch prints and records: the template values and
        the `--smoke-auth-env` token."""
        tokens = (check.bearer_token for check in self.smoke if check.bearer_token)
        return (*self.environ.values(), *tokens)


# --- validation: pure, each error names the flag, the problem and the bad value -------------


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
    add(
        "--watch-routes",
        metavar="JSON",
        default="[]",
        help="route classes judged on their own (the watchRoutes stack key's format: "
        '[{"method": "POST", "pathPrefix": "/render", "minRequests": 5, "errorPercent": 5}]); '
        "other requests are classed by method alone (default: %(default)s)",
    )
    add(
        "--watch-exclude-paths",
        metavar="JSON",
        default='["/health"]',
        help="path prefixes the watch ignores (default: %(default)s)",
    )
    add(
        "--watch-started-log",
        metavar="PATH",
        default="",
        help="the site's request-start log (log_format nocturna_production_started): requests "
        "in flight are judged too, and waited for after the window (default: none)",
    )
    add(
        "--watch-request-timeout",
        default="60",
        help="a request in flight this long, or a slot answering this slowly, fails its class; "
        "the bound of the wait after the window (the site's proxy_read_timeout; "
        "default: %(default)s)",
    )
    add(
        "--watch-baseline-seconds",
        default="300",
        help="how much of the previous slot's traffic before the switch (same log) is compared "
        "per route class with the window (default: %(default)s; 0: no comparison)",
    )
    add(
        "--watch-regression-factor",
        default="3",
        help="a class whose 5xx share or p95 is this many times the previous slot's fails the "
        "watch (default: %(default)s; 0: report only)",
    )
    add(
        "--watch-probe-path",
        default="",
        metavar="PATH",
        help="light check probed through the verification server during the watch, instead "
        "of the --verify-url path (never a heavy request: it runs in a loop)",
    )
    add(
        "--canary-steps",
        default="",
        metavar="SHARES",
        help="progressive switch: percent of requests sent to the new slot at each step before "
        "the full flip, e.g. 5,25,50; each step judged against the old slot (default: none)",
    )
    add("--canary-key", default="request", help="request (default), client or cookie:<name>")
    add(
        "--canary-min-requests",
        default="20",
        help="requests per route class on the new slot that end a step (default: %(default)s)",
    )
    add("--canary-step-seconds", default="300", help="longest step (default: %(default)s)")
    add(
        "--canary-live-variable",
        default="nocturna_production_live",
        help="the site's proxy_pass variable the steps set (default: %(default)s)",
    )
    add("--host-header", help="Host header for probes and verification")
    add("--verify-url", metavar="URL", help="URL on Nginx's loopback verification server")
    # Old workers may still answer for a moment after a reload, hence several attempts.
    add("--verify-attempts", default="20", help="verification attempts (default: %(default)s)")
    add("--nginx-test", default="nginx -t", help="default: %(default)s")
    add("--nginx-reload", default="nginx -s reload", help="default: %(default)s")
    add(
        "--nginx-start",
        default=DEFAULT_NGINX_START,
        help="starts Nginx when the reload fails because none runs (a fresh host: the upstream "
        "file it includes is written and tested first); empty: never (default: %(default)s)",
    )
    add(
        "--nginx-pid-file",
        default="/run/nginx.pid",
        metavar="PATH",
        help="Nginx master's pid file: after a reload the selection is flipped only once every "
        "old worker has exited or is shutting down (default: %(default)s; empty: flip at once)",
    )
    add(
        "--reload-timeout",
        default="30",
        help="seconds to wait for that before the switch fails and restores (default: %(default)s)",
    )
    add("--attempts", default="30", help="probe attempts (default: %(default)s)")
    add("--interval", default="2", help="max seconds between probe attempts (default: 2)")
    add(
        "--timeout",
        default="5",
        help="seconds for each whole request, answer included (default: %(default)s)",
    )
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
            flag_error(
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
            flag_error("--standby", "SLOT=HOST:PORT", entry)
        other = parse_name(other, "--standby")
        if other == slot:
            flag_error("--standby", f"a slot other than --slot {slot}", entry)
        standby.setdefault(other, []).append(parse_server(server, "--standby"))
    verify = None
    if ns.verify_url is not None:
        verify = Check(parse_url(ns.verify_url, "--verify-url"), host_header=host)
    upstream_file = Path(ns.upstream_file)
    if not upstream_file.name:
        flag_error("--upstream-file", "a file path", ns.upstream_file)
    lock_file = Path(ns.lock_file) if ns.lock_file else Path(f"{upstream_file}.lock")
    smoke_checks, wanted = _smoke_checks(ns.smoke_checks, environ)
    watch = _watch_options(ns, verify)
    canary = _canary_options(ns, watch)
    if not ns.selection_dir or not Path(ns.selection_dir).is_absolute():
        flag_error("--selection-dir", "an absolute directory path", ns.selection_dir)
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
        nginx_start=parse_command(ns.nginx_start, "--nginx-start") if ns.nginx_start else None,
        attempts=parse_int(ns.attempts, "--attempts", 1),
        interval=parse_seconds(ns.interval, "--interval", positive=False),
        timeout=parse_seconds(ns.timeout, "--timeout", positive=True),
        lock_file=lock_file,
        lock_wait=parse_seconds(ns.lock_wait, "--lock-wait", positive=False),
        keepalive=parse_int(ns.keepalive, "--keepalive", 1),
        smoke_checks=smoke_checks,
        environ=wanted,
        watch=watch,
        canary=canary,
        nginx_pid_file=parse_pid_file(ns.nginx_pid_file),
        reload_timeout=parse_seconds(ns.reload_timeout, "--reload-timeout", positive=True),
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
        flag_error("--smoke-checks", "a JSON list of checks", text)
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
        rules=_route_rules(ns),
        request_timeout=parse_seconds(
            ns.watch_request_timeout, "--watch-request-timeout", positive=True
        ),
    )
    interval = parse_seconds(ns.watch_probe_interval, "--watch-probe-interval", positive=True)
    if seconds == 0:
        return None
    if not ns.watch_log or not Path(ns.watch_log).is_absolute():
        flag_error("--watch-log", "an absolute file path (needed by --watch-seconds)", ns.watch_log)
    if verify is None:
        msg = "--watch-seconds: needs --verify-url (the watch probes through it)"
        raise UsageError(msg)
    probe_path = ns.watch_probe_path
    if probe_path and not PREFIX_PATTERN.fullmatch(probe_path):
        flag_error("--watch-probe-path", "a URL path starting with /", probe_path)
    started_log = None
    if ns.watch_started_log:
        if not Path(ns.watch_started_log).is_absolute():
            flag_error(
                "--watch-started-log", "an absolute file path, or empty", ns.watch_started_log
            )
        started_log = Path(ns.watch_started_log)
    return WatchOptions(seconds, Path(ns.watch_log), thresholds, interval, probe_path, started_log)


def _canary_options(ns: argparse.Namespace, watch: WatchOptions | None) -> CanaryOptions | None:
    if not ns.canary_steps:
        return None
    try:
        shares = parse_shares(ns.canary_steps)
    except ValueError as error:
        msg = f"--canary-steps: {error}"
        raise UsageError(msg) from None
    try:
        key = split_key(ns.canary_key)
    except SplitKeyError as error:
        msg = f"--canary-key: {error}"
        raise UsageError(msg) from None
    if watch is None:
        msg = "--canary-steps: needs --watch-seconds and --watch-log (steps are judged from it)"
        raise UsageError(msg)
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ns.canary_live_variable):
        flag_error(
            "--canary-live-variable", "an Nginx variable name without $", ns.canary_live_variable
        )
    return CanaryOptions(
        shares,
        key,
        parse_int(ns.canary_min_requests, "--canary-min-requests", 1),
        parse_seconds(ns.canary_step_seconds, "--canary-step-seconds", positive=True),
        ns.canary_live_variable,
    )


def _route_rules(ns: argparse.Namespace) -> RouteRules:
    try:
        classes = parse_route_classes(
            parse_json_flag(ns.watch_routes, "--watch-routes"), "--watch-routes"
        )
        excluded = parse_excluded(
            parse_json_flag(ns.watch_exclude_paths, "--watch-exclude-paths"),
            "--watch-exclude-paths",
        )
    except RouteDefinitionError as error:
        raise UsageError(str(error)) from None
    return RouteRules(classes, excluded)
