"""The canary's options and step judgment (`canary`, `options`): exact messages, and a step
that regresses, passes or waits, from access-log lines."""

from __future__ import annotations

import json

import pytest

from nocturna_infra.cli import UsageError
from nocturna_infra.traffic.canary import CanaryOptions, StepJudge, longest, stepped_back
from nocturna_infra.traffic.options import parse_options
from nocturna_infra.traffic.routes import RouteClass, RouteRules
from nocturna_infra.traffic.watch import Thresholds, Watch
from tests.traffic.test_switch_options import BASE

WATCH = ["--watch-seconds", "30", "--watch-log", "/var/log/nginx/nocturna-slots.log"]
WATCH += ["--verify-url", "http://127.0.0.1:8099/health"]


def test_canary_is_off_unless_steps_are_given() -> None:
    assert parse_options([*BASE, *WATCH]).canary is None


def test_canary_steps_parse_into_options() -> None:
    opts = parse_options([*BASE, *WATCH, "--canary-steps", "5,25", "--canary-key", "client"])

    assert opts.canary == CanaryOptions(
        (5, 25), "${remote_addr}", 20, 300.0, "nocturna_production_live"
    )
    assert longest(opts.canary) == 600.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        pytest.param(
            ["--canary-steps", "5,150"],
            "--canary-steps: each step must be a whole percent from 1 to 99; got '150' in '5,150'",
            id="share",
        ),
        pytest.param(
            ["--canary-steps", "5", "--canary-key", "header:x"],
            "--canary-key: must be request, client or cookie:<name> (name of letters, digits, "
            "_); got 'header:x'",
            id="key",
        ),
        pytest.param(
            ["--canary-steps", "5", "--canary-min-requests", "0"],
            "--canary-min-requests: expected an integer >= 1; got '0'",
            id="min-requests",
        ),
        pytest.param(
            ["--canary-steps", "5", "--canary-live-variable", "$live"],
            "--canary-live-variable: expected an Nginx variable name without $; got '$live'",
            id="variable",
        ),
    ],
)
def test_bad_canary_flags_are_named_with_their_value(extra: list[str], message: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse_options([*BASE, *WATCH, *extra])

    assert str(raised.value) == message


def test_canary_needs_the_watch_log() -> None:
    with pytest.raises(UsageError) as raised:
        parse_options([*BASE, "--canary-steps", "5"])

    assert str(raised.value) == (
        "--canary-steps: needs --watch-seconds and --watch-log (steps are judged from it)"
    )


RULES = RouteRules((RouteClass("GET", "/chart", min_requests=3),))
LIMITS = Thresholds(error_percent=5, min_requests=10, failed_probes=3, rules=RULES)


def line(group: str, path: str, status: int, at: float = 100.0, took: float = 0.01) -> str:
    return json.dumps({
        "time": at, "group": f"nocturna-img-production-{group}", "upstream": "127.0.0.1:1",
        "status": status, "upstreamStatus": str(status), "requestTime": took, "method": "GET",
        "uri": path, "requestId": f"{group}{path}{at}", "upstreamTime": str(took),
    })  # fmt: skip


def judge() -> StepJudge:
    return StepJudge(
        5,
        Watch("nocturna-img-production-blue", 0.0, RULES),
        Watch("nocturna-img-production-green", 0.0, RULES),
        started=0.0,
    )


def test_a_step_regresses_on_the_route_only_the_new_slot_fails() -> None:
    step = judge()
    for n in range(40):
        step.add_line(line("blue", "/chart", 200, at=n))
        step.add_line(line("blue", "/", 200, at=n))
    for n in range(3):
        step.add_line(line("green", "/chart", 500, at=n))
        step.add_line(line("green", "/", 200, at=n))

    assert step.regression(LIMITS, 3.0) == (
        "GET /chart: 3 of 3 requests through Nginx failed (100% >= 5%)"
    )


def test_a_step_with_the_old_slots_error_share_passes_once_each_class_has_enough() -> None:
    step = judge()
    for n in range(200):
        step.add_line(line("blue", "/chart", 500 if n % 10 == 0 else 200, at=n))
    for n in range(20):
        step.add_line(line("green", "/chart", 200, at=n))

    assert step.regression(LIMITS, 3.0) is None
    assert not step.enough(21, LIMITS)
    assert step.enough(20, LIMITS)


def test_a_step_stays_open_until_the_new_slot_served_every_class_of_the_traffic() -> None:
    """A cheap flood reaches the new slot first: the step must not pass before the class the
    old slot also serves (here renders, failing on the new slot) was judged there."""
    step = judge()
    for n in range(100):
        step.add_line(line("blue", "/", 200, at=n))
        step.add_line(line("green", "/", 200, at=n))
    for n in range(20):
        step.add_line(line("blue", "/chart", 200, at=n))

    assert not step.enough(3, LIMITS)  # GET /chart: none on green yet

    for n in range(2):
        step.add_line(line("green", "/chart", 500, at=n))
    assert not step.enough(1, LIMITS)  # the class's own minimum (3) is not reached either
    step.add_line(line("green", "/chart", 500, at=3))
    assert step.regression(LIMITS, 3.0) is not None


def test_a_step_slower_than_the_old_slot_on_the_same_minutes_regresses() -> None:
    step = judge()
    for n in range(40):
        step.add_line(line("blue", "/", 200, at=n, took=0.2))
    for n in range(12):
        step.add_line(line("green", "/", 200, at=n, took=0.9))

    assert step.regression(LIMITS, 3.0) == (
        "GET *: p95 0.900s against 0.200s on the previous slot (>= 3x)"
    )


def test_lines_from_before_the_step_are_not_judged() -> None:
    step = StepJudge(
        5,
        Watch("nocturna-img-production-blue", 50.0, RULES),
        Watch("nocturna-img-production-green", 50.0, RULES),
    )
    for n in range(5):
        step.add_line(line("green", "/chart", 500, at=n))

    assert step.regression(LIMITS, 3.0) is None
    assert not step.enough(1, LIMITS)


ABORTED = {"slot": "green", "previous": "blue", "result": "aborted",
           "started": "2026-12-07T15:40:00.000+00:00"}  # fmt: skip
WATCH_PASSED = {"slot": "blue", "previous": "green", "result": "passed",
                "started": "2026-12-06T10:00:00.000+00:00"}  # fmt: skip


@pytest.mark.parametrize(
    ("canary", "watch", "expected"),
    [
        pytest.param(ABORTED, WATCH_PASSED, ("green", "blue"), id="aborted-newest"),
        pytest.param(
            ABORTED,
            {**WATCH_PASSED, "started": "2026-12-08T00:00:00.000+00:00"},
            None,
            id="a-later-watch-passed",
        ),
        pytest.param({**ABORTED, "result": "passed"}, None, None, id="canary-passed"),
        pytest.param(
            None, {**WATCH_PASSED, "result": "switched-back"}, ("blue", "green"), id="watch"
        ),
        pytest.param(None, None, None, id="none"),
    ],
)
def test_the_program_sees_traffic_went_back_after_an_aborted_canary(
    canary: dict | None, watch: dict | None, expected: tuple[str, str] | None
) -> None:
    """After exit 11 Nginx routes to blue while the last run asked for green: like a watch
    that switched back, not drift (the next `up` retries the switch)."""
    assert stepped_back(canary, watch) == expected
