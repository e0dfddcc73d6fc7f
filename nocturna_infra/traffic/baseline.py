"""Compare the new slot with the old one, per route class.

An absolute 5xx share misses a release that is merely much worse than the one it replaces
(1 % to 4 % renders failing) and blames a release for errors the old slot had too. Before
the switch, the watch reads the same access log for the minutes before it (the old slot's
traffic), and after the window it sets each class's error share and latency (p50/p95 of
`$request_time`) beside the new slot's. A class seen often enough in both periods fails on
a clear regression: an error share or a p95 `factor` times the old one (with floors, so one
5xx against a clean baseline, or 2 ms against 1 ms, is not "a regression").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from nocturna_infra.traffic.routes import ClassStats, RouteRules
from nocturna_infra.traffic.watch import Watch, parse_line

MAX_BASELINE_BYTES: Final = 64 * 1024 * 1024
"""At most this much of the log's end is read for the baseline (a busy day's log is big)."""
SHARE_FLOOR: Final = 1.0
"""Percent: an old share below it counts as this much when judging a regression."""
LATENCY_FLOOR: Final = 0.1
"""Seconds: an old p95 below it counts as this much."""


def read_baseline(
    path: Path, group: str, since: float, until: float, rules: RouteRules
) -> dict[str, ClassStats]:
    """Per-class stats of `group`'s requests completed between `since` and `until`, from the
    end of the log as it is now (before the switch)."""
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(0, size - MAX_BASELINE_BYTES))
            data = handle.read()
    except OSError:
        return {}
    seen = Watch(group, since, rules)
    for raw in data.split(b"\n"):
        record = parse_line(raw.decode("utf-8", "replace"))
        if record is not None and record.time <= until:
            seen.add(record)
    return seen.classes


@dataclass(frozen=True)
class Period:
    """One class in one period, as shown and recorded."""

    requests: int
    failed_percent: float
    p50: float | None
    p95: float | None

    @staticmethod
    def of(stats: ClassStats | None) -> Period:
        if stats is None:
            return Period(0, 0.0, None, None)
        return Period(stats.judged, stats.share(), stats.percentile(50), stats.percentile(95))

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failedPercent": round(self.failed_percent, 2),
            "p50Seconds": self.p50,
            "p95Seconds": self.p95,
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Period:
        return Period(
            int(data.get("requests", 0)),
            float(data.get("failedPercent", 0.0)),
            data.get("p50Seconds"),
            data.get("p95Seconds"),
        )


@dataclass(frozen=True)
class Row:
    key: str
    before: Period
    after: Period


def compare(before: Mapping[str, ClassStats], after: Mapping[str, ClassStats]) -> list[Row]:
    """One row per class seen in either period, by class name."""
    keys = sorted(set(before) | set(after))
    return [Row(key, Period.of(before.get(key)), Period.of(after.get(key))) for key in keys]


def regression(
    rows: Sequence[Row], factor: float, min_requests: Callable[[str], int]
) -> str | None:
    """Why the new slot is clearly worse than the old in some class, or None."""
    if factor <= 0:
        return None
    for row in rows:
        old, new = row.before, row.after
        if old.requests < min_requests(row.key) or new.requests < min_requests(row.key):
            continue
        share_limit = factor * max(old.failed_percent, SHARE_FLOOR)
        if new.failed_percent >= share_limit:
            return (
                f"{row.key}: 5xx share {new.failed_percent:.1f}% against {old.failed_percent:.1f}% "
                f"on the previous slot (>= {factor:g}x)"
            )
        if old.p95 is not None and new.p95 is not None:
            latency_limit = factor * max(old.p95, LATENCY_FLOOR)
            if new.p95 >= latency_limit:
                return (
                    f"{row.key}: p95 {new.p95:.3f}s against {old.p95:.3f}s on the previous "
                    f"slot (>= {factor:g}x)"
                )
    return None


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def comparison_table(rows: Sequence[Row], before: str, after: str) -> str:
    """The rows as an aligned text table, old slot's columns first."""
    header = (
        "class",
        f"{before} n",
        "5xx",
        "p50",
        "p95",
        f"{after} n",
        "5xx",
        "p50",
        "p95",
    )
    cells = [header] + [
        (
            row.key,
            str(row.before.requests),
            f"{row.before.failed_percent:.1f}%",
            _seconds(row.before.p50),
            _seconds(row.before.p95),
            str(row.after.requests),
            f"{row.after.failed_percent:.1f}%",
            _seconds(row.after.p50),
            _seconds(row.after.p95),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        for line in cells
    ]
    return "\n".join(lines)


def rows_json(rows: Sequence[Row]) -> list[dict[str, Any]]:
    return [
        {"class": row.key, "before": row.before.to_json(), "after": row.after.to_json()}
        for row in rows
    ]


def rows_from_json(data: object) -> list[Row]:
    """Rows from a record (for status); anything malformed is skipped."""
    rows: list[Row] = []
    if not isinstance(data, list):
        return rows
    for item in data:
        try:
            rows.append(
                Row(
                    str(item["class"]),
                    Period.from_json(item["before"]),
                    Period.from_json(item["after"]),
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return rows
