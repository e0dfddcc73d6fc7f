"""The release gates' settings: smoke checks before the switch, the watch window after it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from nocturna_infra.settings.reader import ConfigError, Reader
from nocturna_infra.traffic.routes import (
    PREFIX_PATTERN,
    RouteClass,
    RouteDefinitionError,
    parse_excluded,
    parse_route_classes,
)
from nocturna_infra.traffic.smoke import (
    TEMPLATE_RE,
    SmokeCheck,
    SmokeDefinitionError,
    parse_checks,
)
from nocturna_infra.traffic.split import SplitKeyError, parse_shares, split_key

LOG_PATH: Final = re.compile(r"/[A-Za-z0-9._/-]*[A-Za-z0-9._-]")


@dataclass(frozen=True)
class GateSettings:
    """Release gates: smoke checks before the switch, the watch after it."""

    smoke_checks: tuple[SmokeCheck, ...]
    watch_seconds: int
    watch_error_percent: int
    watch_min_requests: int
    watch_failed_probes: int
    watch_log: str
    watch_routes: tuple[RouteClass, ...] = ()
    """Route classes judged on their own (traffic.routes)."""
    watch_exclude_paths: tuple[str, ...] = ("/health",)
    watch_probe_path: str = ""
    """Light check the watch probes through Nginx; empty: the verification URL's path."""
    watch_started_log: str = ""
    watch_request_timeout_seconds: int = 60
    watch_baseline_seconds: int = 300
    watch_regression_factor: int = 3
    canary_steps: tuple[int, ...] = ()
    """Progressive switch shares (traffic.split); empty: off."""
    canary_key: str = "request"
    canary_min_requests: int = 20
    canary_step_seconds: int = 300


def smoke_templates(read: Reader, checks: tuple[SmokeCheck, ...], env: Mapping[str, str]) -> None:
    """A header template may name only what the router hands the switch in its own secret
    environment: API_KEY and the stack's `env` variables (the live slot's values). Anything
    else would come from the environment `pulumi up` runs in, with its passphrase and cloud
    credentials, and go to the slot."""
    allowed = {"API_KEY", *env}
    for index, check in enumerate(checks):
        for name, value in check.headers:
            unknown = sorted(set(TEMPLATE_RE.findall(value)) - allowed)
            if unknown:
                read.fail(
                    f"smokeChecks[{index}].headers.{name}",
                    f"names ${{{unknown[0]}}}, but a template may name only ${{API_KEY}} and "
                    "the variables of env (the router hands the switch only those)",
                    value,
                    f"Declare it with `pulumi config set --secret --path env.{unknown[0]} ...` "
                    "if the service should have it too.",
                )


def parse_gates(read: Reader, project_dir: Path | None) -> GateSettings:
    text = read.string("smokeChecks")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        read.fail("smokeChecks", "must be a list of checks (objects)", text)
    try:
        checks = parse_checks(value, read.key("smokeChecks"), project_dir)
    except SmokeDefinitionError as error:
        msg = f"{error}."
        raise ConfigError(msg) from None
    watch_log = read.string("watchLog")
    if not re.fullmatch(r"/[A-Za-z0-9._/-]*[A-Za-z0-9._-]", watch_log) or ".." in watch_log.split(
        "/"
    ):
        read.fail("watchLog", "must be an absolute file path without '..'", watch_log)
    started_log = read.string("watchStartedLog")
    if started_log and (not LOG_PATH.fullmatch(started_log) or ".." in started_log.split("/")):
        read.fail(
            "watchStartedLog", "must be empty or an absolute file path without '..'", started_log
        )
    try:
        routes = parse_route_classes(
            read.json_value("watchRoutes", "a list of route classes (objects)"),
            read.key("watchRoutes"),
        )
        excluded = parse_excluded(
            read.json_value("watchExcludePaths", "a list of URL paths"),
            read.key("watchExcludePaths"),
        )
    except RouteDefinitionError as error:
        msg = f"{error}."
        raise ConfigError(msg) from None
    regression_factor = read.integer("watchRegressionFactor", 0, 100)
    if regression_factor == 1:
        read.fail(
            "watchRegressionFactor",
            "must be 0 (compare, never fail) or at least 2 (1 would fail on any noise)",
            regression_factor,
        )
    probe_path = read.string("watchProbePath")
    if probe_path and not PREFIX_PATTERN.fullmatch(probe_path):
        read.fail(
            "watchProbePath",
            "must be empty or a URL path starting with / (a light GET, e.g. /health)",
            probe_path,
        )
    canary_text = read.string("canarySteps")
    try:
        canary_steps = parse_shares(canary_text) if canary_text else ()
    except ValueError:
        read.fail(
            "canarySteps",
            "must be empty (off) or rising whole percents from 1 to 99, e.g. 5,25,50",
            canary_text,
        )
    canary_key = read.string("canaryKey")
    try:
        split_key(canary_key)
    except SplitKeyError:
        read.fail("canaryKey", "must be request, client or cookie:<name>", canary_key)
    watch_seconds = read.integer("watchSeconds", 0, 3600)
    if canary_steps and not watch_seconds:
        read.fail(
            "canarySteps",
            "needs watchSeconds above 0 (the steps are judged from the watch log)",
            canary_text,
        )
    return GateSettings(
        smoke_checks=checks,
        watch_seconds=watch_seconds,
        watch_error_percent=read.integer("watchErrorPercent", 1, 100),
        watch_min_requests=read.integer("watchMinRequests", 1, 1_000_000),
        watch_failed_probes=read.integer("watchFailedProbes", 1, 100),
        watch_log=watch_log,
        watch_routes=routes,
        watch_exclude_paths=excluded,
        watch_probe_path=probe_path,
        watch_started_log=started_log,
        watch_request_timeout_seconds=read.integer("watchRequestTimeoutSeconds", 1, 3600),
        watch_baseline_seconds=read.integer("watchBaselineSeconds", 0, 86400),
        watch_regression_factor=regression_factor,
        canary_steps=canary_steps,
        canary_key=canary_key,
        canary_min_requests=read.integer("canaryMinRequests", 1, 1_000_000),
        canary_step_seconds=read.integer("canaryStepSeconds", 1, 86400),
    )
