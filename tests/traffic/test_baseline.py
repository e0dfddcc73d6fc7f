"""The previous slot's traffic against the new slot's, per route class."""

from __future__ import annotations

import json

from nocturna_infra.traffic.baseline import (
    Period,
    Row,
    compare,
    comparison_table,
    read_baseline,
    regression,
    rows_from_json,
    rows_json,
)
from nocturna_infra.traffic.routes import ClassStats, RouteClass, RouteRules
from tests.traffic.test_watch import BLUE, GREEN, line

RULES = RouteRules((RouteClass("POST", "/api/v2/chart/render"),))
ROWS = [
    Row("GET *", Period(4210, 0.0, 0.004, 0.012), Period(3987, 0.05, 0.004, 0.013)),
    Row(
        "POST /api/v2/chart/render",
        Period(31, 0.0, 4.01, 4.6),
        Period(0, 0.0, None, None),
    ),
]


def stats(good: int, failed: int, seconds: float = 0.01) -> ClassStats:
    result = ClassStats()
    for _ in range(good):
        result.add(200, seconds)
    for _ in range(failed):
        result.add(500, seconds)
    return result


def test_table_sets_the_previous_slots_columns_before_the_new_ones() -> None:
    assert comparison_table(ROWS, "blue", "green") == (
        "class                      blue n   5xx     p50     p95  green n   5xx     p50     p95\n"
        "GET *                        4210  0.0%  0.004s  0.012s     3987  0.1%  0.004s  0.013s\n"
        "POST /api/v2/chart/render      31  0.0%  4.010s  4.600s        0  0.0%       -       -"
    )


def test_rows_survive_the_record_for_status() -> None:
    assert rows_from_json(json.loads(json.dumps(rows_json(ROWS)))) == ROWS
    assert rows_from_json([{"class": "x"}, "junk"]) == []


def test_a_share_three_times_the_previous_slots_is_a_regression() -> None:
    rows = compare({"GET *": stats(95, 5)}, {"GET *": stats(85, 15)})

    assert regression(rows, 3, lambda _: 20) == (
        "GET *: 5xx share 15.0% against 5.0% on the previous slot (>= 3x)"
    )
    assert regression(rows, 0, lambda _: 20) is None  # report only


def test_one_5xx_against_a_clean_previous_slot_is_not_a_regression() -> None:
    rows = compare({"GET *": stats(100, 0)}, {"GET *": stats(199, 1)})

    assert regression(rows, 3, lambda _: 20) is None


def test_a_p95_three_times_the_previous_slots_is_a_regression() -> None:
    rows = compare({"GET *": stats(100, 0, 0.5)}, {"GET *": stats(100, 0, 1.6)})

    assert regression(rows, 3, lambda _: 20) == (
        "GET *: p95 1.600s against 0.500s on the previous slot (>= 3x)"
    )


def test_classes_seen_too_rarely_on_either_side_are_not_compared() -> None:
    rows = compare({"GET *": stats(5, 0)}, {"GET *": stats(10, 90)})

    assert regression(rows, 3, lambda _: 20) is None


def test_baseline_reads_the_previous_slots_classes_in_the_minutes_before(tmp_path) -> None:
    log = tmp_path / "slots.log"
    lines = [
        line(200, group=BLUE, at=900.0),  # before the baseline began
        line(500, group=BLUE, at=950.0, method="POST", uri="/api/v2/chart/render"),
        line(200, group=BLUE, at=960.0),
        line(200, group=GREEN, at=970.0),  # another slot
        line(200, group=BLUE, at=960.0, uri="/health"),  # excluded
        "not json",
    ]
    log.write_text("\n".join(lines) + "\n")

    before = read_baseline(log, BLUE, since=940.0, until=1000.0, rules=RULES)

    assert {key: (s.good, s.failed) for key, s in before.items()} == {
        "GET *": (1, 0),
        "POST /api/v2/chart/render": (0, 1),
    }
