"""Release gates around the switch: smoke checks before it, the watch window after it.

The switch calls `smoke_failure` after the target's health probes and before it takes the
lock: a failure there stops it with exit 3 and nothing changed. After a switch that moved
traffic, `watch_then_decide` holds no lock while it watches (a break-glass switch or a
rollback is never blocked); the caller re-takes the lock before switching back and does
nothing if the selection no longer names the watched slot.

The outcome is kept in `<upstream file>.watch.json`, for `status`, for the
program's drift guard (a switch back is expected routing, not drift) and for people.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from nocturna_infra.traffic import baseline
from nocturna_infra.traffic.probe import Check, verify_routed
from nocturna_infra.traffic.routes import ClassStats
from nocturna_infra.traffic.smoke import SmokeCheck, run_checks
from nocturna_infra.traffic.watch import Outcome, Thresholds, Watch, WatchLogs, run_window

RECORD_SUFFIX: Final = ".watch.json"


@dataclass(frozen=True)
class WatchOptions:
    """How long to watch, where the access log is, and when to switch back."""

    seconds: float
    log: Path
    thresholds: Thresholds
    probe_interval: float = 2.0
    probe_path: str = ""
    """Light check probed through Nginx during the window; empty: the verification URL."""
    started_log: Path | None = None
    """The site's request-start log (requests in flight); None: completions only."""
    baseline_seconds: float = 300.0
    """How much of the previous slot's traffic before the switch is compared; 0: none."""
    regression_factor: float = 3.0
    """A class this many times worse than on the previous slot fails; 0: no comparison."""


def smoke_failure(
    checks: Sequence[SmokeCheck],
    servers: Sequence[str],
    environ: Mapping[str, str],
    host_header: str | None,
    step: Callable[[str], None],
) -> str | None:
    """Run every check against every target server directly; the first failure, or None."""
    for server in servers:
        for result in run_checks(checks, f"http://{server}", environ, host_header):
            step(result.describe())
            if not result.ok:
                return result.describe()
    return None


def nginx_probe(
    verify: Check, servers: Sequence[str], timeout: float, path: str = ""
) -> Callable[[], tuple[bool | None, str]]:
    """One cheap probe through Nginx's verification server: the verification URL, or `path`
    on it (a light check the service owner names). Never the smoke checks: a heavy request
    in a loop can wedge the slot it watches. It must be answered by one of `servers`; a
    rate-limited answer is inconclusive (None), not a failure."""
    check = verify
    if path:
        parts = urlsplit(verify.url)
        check = replace(verify, url=urlunsplit((parts.scheme, parts.netloc, path, "", "")))

    def probe() -> tuple[bool | None, str]:
        result = verify_routed(check, timeout, servers)
        if result.throttled:
            return None, f"{check.url} {result.detail}"
        return result.ok, f"{check.url} {result.detail}"

    return probe


def previous_traffic(options: WatchOptions, group: str, started: float) -> dict[str, ClassStats]:
    """The previous slot's requests per class in the minutes before the switch."""
    if options.baseline_seconds <= 0:
        return {}
    since = started - options.baseline_seconds
    return baseline.read_baseline(options.log, group, since, started, options.thresholds.rules)


def judge_against_previous(
    outcome: Outcome,
    before: Mapping[str, ClassStats],
    options: WatchOptions,
    slots: tuple[str, str],
    step: Callable[[str], None],
) -> tuple[Outcome, list[baseline.Row]]:
    """Show the per-class comparison; a passed window fails on a clear regression."""
    rows = baseline.compare(before, outcome.watch.classes)
    if rows:
        step(
            f"watch: by route class, {slots[0]} in the {options.baseline_seconds:g}s before the "
            f"switch against {slots[1]} in the window:\n" + baseline.comparison_table(rows, *slots)
        )
    if outcome.result != "passed" or not before:
        return outcome, rows
    limits = options.thresholds

    def minimum(key: str) -> int:
        return limits.rules.limits(key, limits.min_requests, limits.error_percent)[0]

    reason = baseline.regression(rows, options.regression_factor, minimum)
    if reason is None:
        return outcome, rows
    return Outcome("failed", reason, outcome.watch), rows


def record_path(upstream_file: Path) -> Path:
    """Where the last watch's outcome is kept: beside the upstream file, like .lock/.prev."""
    return upstream_file.with_name(upstream_file.name + RECORD_SUFFIX)


def read_record(path: Path) -> dict[str, Any] | None:
    """The record, or None if there is none or it cannot be read as a JSON object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def switched_back(record: Mapping[str, Any] | None) -> tuple[str, str] | None:
    """(watched slot, restored slot) if the last watch switched traffic back, else None."""
    if not record or record.get("result") != "switched-back":
        return None
    slot, previous = record.get("slot"), record.get("previous")
    if isinstance(slot, str) and isinstance(previous, str):
        return slot, previous
    return None


def iso(moment: float | None) -> str | None:
    """A wall-clock time as an ISO 8601 UTC string (ms)."""
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")


def new_record(slot: str, previous: str, options: WatchOptions, started: float) -> dict[str, Any]:
    """The record written when the watch begins (result `watching`)."""
    return {
        "slot": slot,
        "previous": previous,
        "result": "watching",
        "reason": "",
        "started": iso(started),
        "ended": None,
        "watchSeconds": options.seconds,
        "thresholds": {
            "errorPercent": options.thresholds.error_percent,
            "minRequests": options.thresholds.min_requests,
            "failedProbes": options.thresholds.failed_probes,
            "requestTimeoutSeconds": options.thresholds.request_timeout,
            "baselineSeconds": options.baseline_seconds,
            "regressionFactor": options.regression_factor,
            "routeClasses": [route.name for route in options.thresholds.rules.classes],
            "excludedPaths": list(options.thresholds.rules.excluded),
        },
    }


def run_watch(
    watch: Watch,
    options: WatchOptions,
    tail: WatchLogs,
    probe: Callable[[], tuple[bool | None, str]],
    still_selected: Callable[[], bool],
    step: Callable[[str], None],
) -> Outcome:
    """The window itself (no lock held); see `watch.run_window`."""
    step(
        f"watch {watch.group} through Nginx for {options.seconds:g}s (switch back at "
        f">= {options.thresholds.error_percent}% 5xx of >= {options.thresholds.min_requests} "
        f"requests in any route class, or {options.thresholds.failed_probes} failed probes "
        "in a row)"
    )
    try:
        outcome = run_window(
            watch,
            options.seconds,
            tail.done,
            options.thresholds,
            probe,
            still_selected,
            step,
            probe_interval=options.probe_interval,
            starts=tail.started,
        )
    finally:
        tail.close()
    step(f"watch {outcome.result}: {outcome.reason}; saw {watch.summary()}")
    return outcome


def ended(
    result: str, reason: str, watch: Watch, switched_back_at: float | None = None
) -> dict[str, Any]:
    """The fields a finished watch adds to its record."""
    fields: dict[str, Any] = {
        "result": result,
        "reason": reason,
        "ended": iso(time.time()),
        "seen": watch.to_json(),
        "firstFailure": iso(watch.first_failure),
    }
    if switched_back_at is not None:
        fields["switchedBack"] = iso(switched_back_at)
        if watch.first_failure is not None:
            fields["secondsFromFirstFailureToSwitchBack"] = round(
                switched_back_at - watch.first_failure, 3
            )
    return fields
