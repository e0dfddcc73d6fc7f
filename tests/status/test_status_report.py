from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nocturna_infra.settings import Environment
from nocturna_infra.slot import Slot
from nocturna_infra.status.report import (
    Assessment,
    ContainerFacts,
    Outcome,
    Routing,
    SlotStatus,
    StatusReport,
    assess,
    format_age,
    render_status,
    routed_to,
    short_id,
    status_data,
)
from nocturna_infra.traffic.upstream import UpstreamState

NOW = datetime(2026, 11, 26, 21, 0, 0, tzinfo=UTC)
UPSTREAM = "/etc/nginx/upstreams/nocturna-img-production.conf"
BLUE_ID = "sha256:" + "b1" * 32
GREEN_ID = "sha256:" + "9e" * 32


def running(name: str, image_id: str, age: timedelta, port: int) -> ContainerFacts:
    return ContainerFacts(
        name=name,
        state="running",
        health="healthy",
        image_id=image_id,
        image_created=NOW - age,
        published=(f"127.0.0.1:{port}",),
    )


BLUE = SlotStatus(
    Slot.BLUE,
    3014,
    "127.0.0.1:3014",
    running("nocturna-chart-blue", BLUE_ID, timedelta(days=2, hours=3, minutes=5), 3014),
)
GREEN = SlotStatus(
    Slot.GREEN,
    3012,
    "127.0.0.1:3012",
    running("nocturna-chart-green", GREEN_ID, timedelta(minutes=42), 3012),
)


def routing(slot: str, *servers: str, name: str = "nocturna-img-production") -> Routing:
    return Routing(UPSTREAM, "nocturna-img-production", UpstreamState(name, slot, servers))


HEALTHY = StatusReport(
    stack="production",
    environment=Environment.PRODUCTION,
    live_slot=Slot.BLUE,
    slots=(BLUE, GREEN),
    routing=routing("blue", "127.0.0.1:3014"),
    checked_at=NOW,
)


def with_green(**changes: object) -> StatusReport:
    container = replace(GREEN.container, **changes)  # type: ignore[arg-type]
    return replace(HEALTHY, slots=(BLUE, replace(GREEN, container=container)))


def test_both_slots_healthy_and_routed_as_configured_renders_ok() -> None:
    assert render_status(HEALTHY) == (
        "Stack production (production), checked 2026-11-26T21:00:00Z\n"
        "Nginx:  upstream nocturna-img-production in "
        "/etc/nginx/upstreams/nocturna-img-production.conf routes to blue (127.0.0.1:3014)\n"
        "Config: activeSlot blue\n"
        "\n"
        "SLOT   CONTAINER             STATE    HEALTH   IMAGE         IMAGE AGE  PUBLISHED"
        "       LIVE (CONFIG)  LIVE (NGINX)\n"
        "blue   nocturna-chart-blue   running  healthy  b1b1b1b1b1b1  2d 3h      127.0.0.1:3014"
        "  yes            yes\n"
        "green  nocturna-chart-green  running  healthy  9e9e9e9e9e9e  42m        127.0.0.1:3012"
        "  no             no\n"
        "\n"
        "Result: ok, as configured (exit 0)\n"
    )
    assert assess(HEALTHY).outcome is Outcome.OK


def test_missing_standby_is_degraded_and_its_row_says_missing() -> None:
    report = with_green(state="missing", health="-", image_id="", image_created=None, published=())
    assert render_status(report).splitlines()[4:] == [
        "SLOT   CONTAINER             STATE    HEALTH   IMAGE         IMAGE AGE  PUBLISHED"
        "       LIVE (CONFIG)  LIVE (NGINX)",
        "blue   nocturna-chart-blue   running  healthy  b1b1b1b1b1b1  2d 3h      127.0.0.1:3014"
        "  yes            yes",
        "green  nocturna-chart-green  missing  -        -             -          -"
        "               no             no",
        "",
        "Result: degraded (exit 3)",
        "  - degraded: green: container nocturna-chart-green is missing",
    ]
    assert assess(report).outcome is Outcome.DEGRADED


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        pytest.param(
            {"state": "exited", "health": "unhealthy"},
            "green: nocturna-chart-green is exited, not running",
            id="exited",
        ),
        pytest.param(
            {"health": "unhealthy"}, "green: nocturna-chart-green is unhealthy", id="unhealthy"
        ),
        pytest.param(
            {"health": "starting"}, "green: nocturna-chart-green is starting", id="starting"
        ),
        pytest.param(
            {"health": "none"}, "green: nocturna-chart-green has no health check", id="no-check"
        ),
        pytest.param(
            {"published": ("0.0.0.0:3999",)},
            "green: nocturna-chart-green publishes 0.0.0.0:3999, not the configured 3012",
            id="wrong-port",
        ),
    ],
)
def test_standby_not_running_healthy_and_published_is_degraded(
    changes: dict[str, object], problem: str
) -> None:
    assert assess(with_green(**changes)) == Assessment(
        Outcome.DEGRADED, (f"degraded: {problem}",), ()
    )


def test_routing_to_green_while_active_slot_is_blue_is_drift_naming_both() -> None:
    report = replace(HEALTHY, routing=routing("green", "127.0.0.1:3012"))
    text = render_status(report)
    assert "routes to green (127.0.0.1:3012)\n" in text
    assert text.endswith(
        "Result: drift (exit 1)\n"
        "  - drift: Nginx routes to green (127.0.0.1:3012), but activeSlot is blue\n"
    )
    assert [line.split()[-2:] for line in text.splitlines()[5:7]] == [
        ["yes", "no"],
        ["no", "yes"],
    ]


def test_drift_outranks_a_degraded_standby() -> None:
    report = replace(
        with_green(state="missing", health="-", published=()),
        routing=routing("green", "127.0.0.1:3012"),
    )
    assert assess(report) == Assessment(
        Outcome.DRIFT,
        (
            "drift: Nginx routes to green (127.0.0.1:3012), but activeSlot is blue",
            "degraded: green: container nocturna-chart-green is missing",
        ),
        (),
    )


def test_missing_upstream_file_is_drift_with_a_clear_line() -> None:
    report = replace(
        HEALTHY,
        routing=Routing(UPSTREAM, "nocturna-img-production", None, "missing (no such file)"),
    )
    text = render_status(report)
    assert text.splitlines()[1] == (
        "Nginx:  /etc/nginx/upstreams/nocturna-img-production.conf: missing (no such file)"
    )
    assert text.endswith(
        "Result: drift (exit 1)\n"
        "  - drift: /etc/nginx/upstreams/nocturna-img-production.conf: missing (no such file); "
        "where Nginx routes is unknown\n"
    )


def test_server_no_slot_publishes_is_shown_as_unknown_and_is_drift() -> None:
    report = replace(HEALTHY, routing=routing("blue", "localhost:3014"))
    assert routed_to(report) == ("unknown (localhost:3014)",)
    assert assess(report).problems == (
        "drift: Nginx routes to localhost:3014, which no slot publishes "
        "(configured: blue 127.0.0.1:3014, green 127.0.0.1:3012)",
    )
    assert "routes to unknown (localhost:3014) (localhost:3014)" in render_status(report)


def test_other_upstream_name_in_the_file_is_drift() -> None:
    report = replace(HEALTHY, routing=routing("blue", "127.0.0.1:3014", name="other"))
    assert assess(report).problems == (
        f"drift: {UPSTREAM} defines upstream other, but upstreamName is nocturna-img-production",
    )


def test_routing_to_both_slots_is_drift() -> None:
    report = replace(HEALTHY, routing=routing("blue", "127.0.0.1:3014", "127.0.0.1:3012"))
    assert assess(report).problems == (
        "drift: Nginx routes to blue + green (127.0.0.1:3014, 127.0.0.1:3012), "
        "but activeSlot is blue",
    )


def test_recorded_slot_disagreeing_with_servers_is_a_note_only() -> None:
    report = replace(HEALTHY, routing=routing("green", "127.0.0.1:3014"))
    verdict = assess(report)
    assert verdict.outcome is Outcome.OK
    assert verdict.notes == (
        f"{UPSTREAM} records live-slot green, but its servers belong to blue; "
        "the servers are what Nginx uses",
    )
    assert render_status(report).endswith(f"  note: {verdict.notes[0]}\n")


def test_docker_unreachable_is_degraded_and_every_slot_still_listed() -> None:
    unknown = ContainerFacts(name="nocturna-chart-blue", state="unknown")
    report = replace(
        HEALTHY,
        slots=(
            replace(BLUE, container=unknown),
            replace(GREEN, container=replace(unknown, name="nocturna-chart-green")),
        ),
        docker_problem="container inspect exited 1: Cannot connect to the Docker daemon",
    )
    text = render_status(report)
    assert "blue   nocturna-chart-blue   unknown" in text
    assert "green  nocturna-chart-green  unknown" in text
    assert assess(report) == Assessment(
        Outcome.DEGRADED,
        ("degraded: docker: container inspect exited 1: Cannot connect to the Docker daemon",),
        (),
    )


def test_staging_stack_reports_its_one_slot() -> None:
    staging = SlotStatus(
        Slot.STAGING,
        3013,
        "127.0.0.1:3013",
        running("nocturna-chart-staging", BLUE_ID, timedelta(seconds=30), 3013),
    )
    report = StatusReport(
        stack="staging",
        environment=Environment.STAGING,
        live_slot=Slot.STAGING,
        slots=(staging,),
        routing=Routing(
            "/etc/nginx/upstreams/nocturna-img-staging.conf",
            "nocturna-img-staging",
            UpstreamState("nocturna-img-staging", "staging", ("127.0.0.1:3013",)),
        ),
        checked_at=NOW,
    )
    assert render_status(report) == (
        "Stack staging (staging), checked 2026-11-26T21:00:00Z\n"
        "Nginx:  upstream nocturna-img-staging in "
        "/etc/nginx/upstreams/nocturna-img-staging.conf routes to staging (127.0.0.1:3013)\n"
        "Config: staging (one slot)\n"
        "\n"
        "SLOT     CONTAINER               STATE    HEALTH   IMAGE         IMAGE AGE  PUBLISHED"
        "       LIVE (CONFIG)  LIVE (NGINX)\n"
        "staging  nocturna-chart-staging  running  healthy  b1b1b1b1b1b1  30s        "
        "127.0.0.1:3013  yes            yes\n"
        "\n"
        "Result: ok, as configured (exit 0)\n"
    )
    wrong = replace(
        report,
        routing=replace(
            report.routing,
            state=UpstreamState("nocturna-img-staging", "blue", ("127.0.0.1:3014",)),
        ),
    )
    assert assess(wrong).problems[0] == (
        "drift: Nginx routes to 127.0.0.1:3014, which no slot publishes "
        "(configured: staging 127.0.0.1:3013)"
    )


def test_json_holds_the_same_facts_and_exit_code() -> None:
    data = status_data(with_green(state="exited", health="unhealthy"))
    assert json.loads(json.dumps(data)) == data
    assert data["liveSlot"] == "blue"
    assert data["nginx"] == {
        "upstreamFile": UPSTREAM,
        "upstreamName": "nocturna-img-production",
        "servers": ["127.0.0.1:3014"],
        "routedSlots": ["blue"],
        "recordedSlot": "blue",
        "problem": None,
        "selection": None,
        "selectionProblem": None,
        "answeredFrom": None,
    }
    assert data["slots"][1] == {
        "slot": "green",
        "container": "nocturna-chart-green",
        "state": "exited",
        "health": "unhealthy",
        "imageId": GREEN_ID,
        "imageCreated": "2026-11-26T20:18:00Z",
        "published": ["127.0.0.1:3012"],
        "port": 3012,
        "liveConfig": False,
        "liveNginx": False,
    }
    assert (data["outcome"], data["exitCode"]) == ("degraded", 3)
    assert data["problems"] == ["degraded: green: nocturna-chart-green is exited, not running"]


@pytest.mark.parametrize(
    ("age", "text"),
    [
        pytest.param(timedelta(seconds=5), "5s", id="seconds"),
        pytest.param(timedelta(minutes=59, seconds=59), "59m", id="minutes"),
        pytest.param(timedelta(hours=5, minutes=3), "5h 3m", id="hours"),
        pytest.param(timedelta(days=40, hours=1), "40d 1h", id="days"),
        pytest.param(timedelta(seconds=-3), "0s", id="clock-skew"),
    ],
)
def test_image_age_is_coarse(age: timedelta, text: str) -> None:
    assert format_age(NOW - age, NOW) == text


def test_short_id_is_twelve_hex_digits_like_docker_ps() -> None:
    assert short_id(BLUE_ID) == "b1b1b1b1b1b1"
    assert short_id("") == "-"


def test_the_example_in_docs_operations_is_real_output() -> None:
    checked = NOW + timedelta(minutes=4, seconds=12)  # ages below are relative to NOW
    blue = replace(
        BLUE,
        container=running(
            "nocturna-chart-blue",
            "sha256:4c5495219d4c" + "0" * 52,
            timedelta(days=2, hours=3),
            3014,
        ),
    )
    green = replace(
        GREEN,
        container=replace(
            running(
                "nocturna-chart-green",
                "sha256:9e1f0a2b3c4d" + "0" * 52,
                timedelta(minutes=38),
                3012,
            ),
            state="exited",
            health="unhealthy",
        ),
    )
    selected = Routing(
        UPSTREAM,
        "nocturna-img-production",
        UpstreamState("nocturna-img-production-blue", "blue", ("127.0.0.1:3014",)),
        selection="blue",
        answered="127.0.0.1:3014",
    )
    report = replace(HEALTHY, slots=(blue, green), checked_at=checked, routing=selected)
    text = render_status(report)
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    assert f"```\n{text}```\n" in doc


SWITCHED_BACK = {
    "slot": "green",
    "previous": "blue",
    "result": "switched-back",
    "reason": "34 of 40 requests through Nginx failed (85% >= 5%)",
    "started": "2026-11-26T20:58:01.000+00:00",
    "ended": "2026-11-26T20:58:09.120+00:00",
    "seen": {"requests": 40, "failed": 34, "probes": 4, "failedProbes": 1},
    "secondsFromFirstFailureToSwitchBack": 1.234,
}


def test_last_watch_line_says_what_the_watch_saw_and_did() -> None:
    report = replace(HEALTHY, watch=SWITCHED_BACK)

    assert render_status(report).splitlines()[3] == (
        "Last watch: green switched-back (ended 2026-11-26T20:58:09.120+00:00): 34 of 40 "
        "requests through Nginx failed (85% >= 5%); 40 requests (34 failed), 4 probes "
        "(1 failed); back on blue 1.2s after the first failure"
    )
    assert status_data(report)["lastWatch"] == SWITCHED_BACK
    assert "Last watch" not in render_status(HEALTHY)


def test_status_shows_the_last_watchs_per_class_comparison_under_its_line() -> None:
    from nocturna_infra.status.report import comparison_lines

    record = {
        "slot": "green",
        "previous": "blue",
        "comparison": [
            {
                "class": "POST /api/v2/chart/render",
                "before": {"requests": 31, "failedPercent": 0.0, "p50Seconds": 4.01,
                           "p95Seconds": 4.6},
                "after": {"requests": 6, "failedPercent": 100.0, "p50Seconds": 0.002,
                          "p95Seconds": 0.003},
            }
        ],
    }  # fmt: skip

    assert comparison_lines(record) == [
        "  class                      blue n   5xx     p50     p95  green n     5xx     p50"
        "     p95",
        "  POST /api/v2/chart/render      31  0.0%  4.010s  4.600s        6  100.0%  0.002s"
        "  0.003s",
    ]
    assert comparison_lines({"slot": "green"}) == []


CANARY_STEPPING = {
    "slot": "green",
    "previous": "blue",
    "shares": [5, 25, 50],
    "result": "stepping",
    "share": 25,
    "stepStarted": "2026-12-07T15:40:02.000+00:00",
    "reason": "",
    "steps": [
        {
            "share": 5,
            "result": "passed",
            "reason": ">= 20 requests per class",
            "comparison": [
                {
                    "class": "GET *",
                    "before": {"requests": 400, "failedPercent": 0.0, "p50Seconds": 0.01,
                               "p95Seconds": 0.02},
                    "after": {"requests": 21, "failedPercent": 0.0, "p50Seconds": 0.01,
                              "p95Seconds": 0.02},
                }
            ],
        }
    ],
}  # fmt: skip


def test_status_shows_a_canary_in_progress_with_its_latest_comparison() -> None:
    report = replace(HEALTHY, canary=CANARY_STEPPING)
    lines = render_status(report).splitlines()

    at = lines.index(
        "Canary: green 25 % since 2026-12-07T15:40:02.000+00:00; latest comparison at 5 %: passed"
    )
    assert lines[at + 1 : at + 3] == [
        "  class  blue n   5xx     p50     p95  green n   5xx     p50     p95",
        "  GET *     400  0.0%  0.010s  0.020s       21  0.0%  0.010s  0.020s",
    ]
    assert status_data(report)["lastCanary"] == CANARY_STEPPING
    assert "Canary" not in render_status(HEALTHY)


def test_status_says_where_an_aborted_canary_stopped() -> None:
    from nocturna_infra.status.report import canary_lines

    reason = "GET /chart: 3 of 3 requests through Nginx failed (100% >= 5%)"
    step = {**CANARY_STEPPING["steps"][0], "result": "regressed", "reason": reason}
    record = {
        **CANARY_STEPPING, "result": "aborted", "share": 0, "reason": f"at 5 %: {reason}",
        "steps": [step],
    }  # fmt: skip

    assert canary_lines(record)[0] == (
        "Last canary: green aborted (at 5 %: GET /chart: 3 of 3 requests through Nginx failed "
        "(100% >= 5%)); latest comparison at 5 %: regressed"
    )
