"""Requests in flight: start lines matched with completion lines by request id."""

from __future__ import annotations

import json
import threading
import time

from nocturna_infra.traffic.inflight import InFlight, StartRecord, parse_start
from nocturna_infra.traffic.routes import RouteClass, RouteRules
from nocturna_infra.traffic.watch import LogTail, Thresholds, Watch, parse_line, run_window
from tests.traffic.test_watch import GREEN, line

RULES = RouteRules((RouteClass("POST", "/render", min_requests=1),))
LIMITS = Thresholds(error_percent=5, min_requests=20, failed_probes=3, rules=RULES)


def start(request_id: str, at: float = 1000.5, uri: str = "/render", method: str = "POST") -> str:
    fields = {"time": at, "group": GREEN, "requestId": request_id, "method": method, "uri": uri}
    return json.dumps(fields)


def done(request_id: str, status: int = 200, at: float = 1001.0) -> str:
    fields = json.loads(line(status, at=at, method="POST", uri="/render"))
    return json.dumps({**fields, "requestId": request_id})


def test_start_lines_keep_the_path_without_the_query_and_skip_direct_mirror_hits() -> None:
    assert parse_start(start("a1", uri="/render?token=x")) == StartRecord(
        1000.5, GREEN, "a1", "POST", "/render"
    )
    assert parse_start(start("a2", uri="/_nocturna_started?x")) is None
    assert parse_start('{"time": 1}') is None


def test_a_completion_read_before_its_start_leaves_nothing_in_flight() -> None:
    flight = InFlight()
    flight.done("a1")
    record = parse_start(start("a1"))
    assert record is not None
    flight.started(record, "POST /render")

    assert flight.pending == {}


def test_a_request_in_flight_past_the_timeout_fails_its_class() -> None:
    watch = Watch(GREEN, 1000.0, RULES, request_timeout=4)
    record = parse_start(start("a1", at=1000.5))
    assert record is not None
    watch.add_start(record)
    watch.check_hung(1004.0)
    assert watch.verdict(LIMITS) is None

    watch.check_hung(1004.6)

    assert watch.verdict(LIMITS) == (
        "POST /render: 1 of 1 requests through Nginx failed (100% >= 5%)"
    )
    assert watch.samples == ["POST /render no answer after 4s (started at +0.5s)"]


def test_an_answer_taking_the_whole_timeout_fails_its_class_even_with_200() -> None:
    watch = Watch(GREEN, 1000.0, RULES, request_timeout=4)
    fields = json.loads(done("a1"))
    record = parse_line(json.dumps({**fields, "upstreamTime": "0.002, 4.001"}))
    assert record is not None
    watch.add(record)

    assert watch.verdict(LIMITS) == (
        "POST /render: 1 of 1 requests through Nginx failed (100% >= 5%)"
    )


def test_after_the_window_the_watch_waits_for_requests_in_flight_and_says_so(tmp_path) -> None:
    log, started = tmp_path / "slots.log", tmp_path / "started.log"
    log.write_text("")
    started.write_text("")
    tail, starts = LogTail(log), LogTail(started)
    tail.start()
    starts.start()
    steps: list[str] = []
    now = time.time()
    started.write_text(start("a1", at=now) + "\n")
    watch = Watch(GREEN, now - 1, RULES, request_timeout=30)
    # It completes after the 0.2 s window.
    later = threading.Timer(0.6, lambda: log.write_text(done("a1", at=time.time()) + "\n"))
    later.start()

    outcome = run_window(
        watch, 0.2, tail, LIMITS, lambda: (True, "200"), lambda: True, steps.append,
        probe_interval=0.1, starts=starts,
    )  # fmt: skip
    later.join()

    assert outcome.result == "passed"
    assert outcome.reason.startswith("no threshold crossed in 0.2s; waited ")
    assert outcome.reason.endswith("s after the window for requests in flight")
    assert watch.inflight.pending == {}
    assert "watch: window over; waiting for 1 requests in flight (at most 30s each)" in steps
