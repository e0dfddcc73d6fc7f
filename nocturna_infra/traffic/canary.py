"""The progressive switch: before the full flip, send each canary step's share of requests to
the new slot (a step marker, no reload; see `split`), and judge the new slot against the old
one on the same minutes, per route class, from the access log. A regression removes the step
marker (0 %: the old slot takes everything) and exits 11; each passed step widens, and after
the last one the ordinary flip and watch follow.

A step ends when every route class of the step's traffic, either slot's, was served by the
new slot `min_requests` times and its own judging minimum (judged then), or at
`step_seconds` (judged on what came: a quiet service still moves on, and the watch after the
flip judges the new slot alone).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from nocturna_infra.traffic import baseline
from nocturna_infra.traffic.watch import Thresholds, Watch, WatchLogs, parse_line

POLL_SECONDS: Final = 0.2


@dataclass(frozen=True)
class CanaryOptions:
    """The steps and how each is judged."""

    shares: tuple[int, ...]
    key: str
    min_requests: int
    """Requests of each route class the new slot must serve before a step can pass early."""
    step_seconds: float
    """The longest a step lasts."""
    live_variable: str
    """The site's variable that `proxy_pass` uses (the steps file sets it)."""


def longest(options: CanaryOptions) -> float:
    """The most the steps take before the flip (said up front: `pulumi up` waits that long)."""
    return options.step_seconds * len(options.shares)


@dataclass
class StepJudge:
    """One step: both slots' requests since the step began, per route class."""

    share: int
    old: Watch
    new: Watch
    started: float = field(default_factory=time.time)

    def add_line(self, line: str) -> None:
        record = parse_line(line)
        if record is not None:
            self.old.add(record)
            self.new.add(record)

    def rows(self) -> list[baseline.Row]:
        return baseline.compare(self.old.classes, self.new.classes)

    def regression(self, limits: Thresholds, factor: float) -> str | None:
        """Why the new slot is worse than the old on these minutes, or None: its own error
        share over the watch's threshold, or `factor` times the old slot's (errors, p95)."""
        absolute = self.new.verdict(limits)
        if absolute is not None:
            return absolute

        def minimum(key: str) -> int:
            return limits.rules.limits(key, limits.min_requests, limits.error_percent)[0]

        return baseline.regression(self.rows(), factor, minimum)

    def enough(self, min_requests: int, limits: Thresholds) -> bool:
        """Every route class in this step's traffic, either slot's, has been served by the new
        slot often enough to be judged: `min_requests` and the class's own watch minimum. A
        class the new slot has not served yet keeps the step open (until `step_seconds`):
        judging only what the new slot happened to serve first let a cheap flood pass a step
        before a single request of the failing class reached it."""
        keys = set(self.old.classes) | set(self.new.classes)

        def needed(key: str) -> int:
            own = limits.rules.limits(key, limits.min_requests, limits.error_percent)[0]
            return max(min_requests, own)

        return bool(keys) and all(
            key in self.new.classes and self.new.classes[key].judged >= needed(key) for key in keys
        )

    def to_json(self, result: str, reason: str) -> dict[str, Any]:
        return {
            "share": self.share,
            "started": self.started,
            "ended": time.time(),
            "result": result,
            "reason": reason,
            "comparison": baseline.rows_json(self.rows()),
        }


@dataclass(frozen=True)
class StepOutcome:
    judge: StepJudge
    result: str
    """`passed` (enough requests, no regression), `timed-out` (step_seconds, no regression)
    or `regressed`."""
    reason: str


def run_step(
    judge: StepJudge,
    options: CanaryOptions,
    limits: Thresholds,
    factor: float,
    logs: WatchLogs,
    step: Callable[[str], None],
) -> StepOutcome:
    """Read the log until the step is judged; a regression ends it at once."""
    deadline = judge.started + options.step_seconds
    while True:
        for line in logs.done.read_lines():
            judge.add_line(line)
        reason = judge.regression(limits, factor)
        if reason is not None:
            return StepOutcome(judge, "regressed", reason)
        if judge.enough(options.min_requests, limits):
            return StepOutcome(judge, "passed", f">= {options.min_requests} requests per class")
        if time.time() >= deadline:
            return StepOutcome(judge, "timed-out", f"{options.step_seconds:g}s, no regression")
        time.sleep(POLL_SECONDS)


def step_table(outcome: StepOutcome, slots: tuple[str, str]) -> str:
    """The step's comparison, old slot first, as printed and kept in switchOutput."""
    return baseline.comparison_table(outcome.judge.rows(), *slots)


def record_path(upstream_file: Path) -> Path:
    return upstream_file.with_name(f"{upstream_file.name}.canary.json")


def read_record(upstream_file: Path) -> dict[str, Any] | None:
    """The last progressive switch's record; None if absent or unreadable."""
    try:
        data = json.loads(record_path(upstream_file).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def stepped_back(
    canary: Mapping[str, Any] | None, watch: Mapping[str, Any] | None
) -> tuple[str, str] | None:
    """(new slot, old slot) if the newest of the two records (by `started`) says traffic
    went back to the old slot: a canary aborted or stopped before its flip, or a watch that
    switched back. The program then plans as if the old slot were recorded live."""
    newest = max(
        (r for r in (canary, watch) if r),
        key=lambda r: str(r.get("started") or ""),
        default=None,
    )
    if newest is None:
        return None
    back = newest is canary and newest.get("result") in ("aborted", "interrupted")
    if not back and newest.get("result") != "switched-back":
        return None
    slot, previous = newest.get("slot"), newest.get("previous")
    if isinstance(slot, str) and isinstance(previous, str):
        return slot, previous
    return None
