"""The watch window's parts: access-log lines, following the log, counting and judging."""

from __future__ import annotations

import json
import time

from nocturna_infra.traffic.watch import LogTail, Thresholds, Watch, parse_line, run_window

GREEN = "nocturna-img-production-green"
BLUE = "nocturna-img-production-blue"
LIMITS = Thresholds(error_percent=10, min_requests=20, failed_probes=3)


def line(
    status: int,
    group: str = GREEN,
    at: float = 1000.5,
    rt: float = 0.004,
    method: str = "GET",
    uri: str = "/",
    upstream_status: str | None = None,
) -> str:
    fields = {"time": at, "group": group, "upstream": "127.0.0.1:3012", "status": status}
    upstream = str(status) if upstream_status is None else upstream_status
    return json.dumps(
        {**fields, "upstreamStatus": upstream, "requestTime": rt, "method": method, "uri": uri}
    )


def test_parse_line_reads_the_shipped_format_and_skips_others() -> None:
    record = parse_line(line(502, rt=0.25))

    assert record is not None
    assert (record.group, record.status, record.request_time, record.failed) == (
        GREEN,
        502,
        0.25,
        True,
    )
    assert parse_line('127.0.0.1 - - [30/Nov/2026] "GET / HTTP/1.1" 200') is None
    assert parse_line('{"time": 1, "group": "g"}') is None


def test_tail_reads_only_lines_written_after_start_and_holds_partial_lines(tmp_path) -> None:
    log = tmp_path / "slots.log"
    log.write_text("old line\n")
    tail = LogTail(log)
    tail.start()
    with log.open("a") as handle:
        handle.write("first\nsecond-part")

    assert tail.read_lines() == ["first"]
    with log.open("a") as handle:
        handle.write("-end\n")
    assert tail.read_lines() == ["second-part-end"]


def test_tail_follows_rename_rotation_without_losing_the_old_files_end(tmp_path) -> None:
    log = tmp_path / "slots.log"
    log.write_text("")
    tail = LogTail(log)
    tail.start()
    with log.open("a") as handle:
        handle.write("before rotation\n")
    log.rename(tmp_path / "slots.log.1")
    assert tail.read_lines() == ["before rotation"]  # the new file does not exist yet
    (tmp_path / "slots.log").write_text("after rotation\n")

    assert tail.read_lines() == ["after rotation"]


def test_tail_rereads_a_file_truncated_in_place(tmp_path) -> None:
    log = tmp_path / "slots.log"
    log.write_text("x" * 100 + "\n")
    tail = LogTail(log)
    tail.start()
    log.write_text("after truncate\n")  # shorter than the offset: copytruncate

    assert tail.read_lines() == ["after truncate"]


def test_tail_of_a_missing_file_reads_it_from_the_start_once_created(tmp_path) -> None:
    log = tmp_path / "slots.log"
    tail = LogTail(log)
    tail.start()
    assert tail.read_lines() == []
    log.write_text("first\n")

    assert tail.read_lines() == ["first"]


def feed(watch: Watch, *statuses: int, group: str = GREEN) -> None:
    for status in statuses:
        record = parse_line(line(status, group=group))
        assert record is not None
        watch.add(record)


def test_error_rate_is_judged_only_after_the_minimum_number_of_requests() -> None:
    watch = Watch(GREEN, started=1000.0)
    feed(watch, *([500] * 19))
    assert watch.verdict(LIMITS) is None

    feed(watch, 200)

    assert watch.verdict(LIMITS) == "GET *: 19 of 20 requests through Nginx failed (95% >= 10%)"


def test_other_groups_and_4xx_do_not_count_as_failures() -> None:
    watch = Watch(GREEN, started=1000.0)
    feed(watch, *([500] * 30), group=BLUE)
    feed(watch, *([404] * 30))

    assert (watch.requests, watch.failed, watch.verdict(LIMITS)) == (30, 0, None)


def test_failed_probes_in_a_row_switch_back_and_a_good_one_resets_them() -> None:
    watch = Watch(GREEN, started=1000.0)
    for ok in (False, False, True, False, False):
        watch.add_probe(ok, "returned 500", 1001.0)
    assert watch.verdict(LIMITS) is None

    watch.add_probe(False, "returned 500, expected 200", 1002.0)

    assert watch.verdict(LIMITS) == (
        "3 probes through Nginx failed in a row (last: returned 500, expected 200)"
    )
    assert watch.first_failure == 1001.0


def test_summary_gives_counts_statuses_timings_and_samples() -> None:
    watch = Watch(GREEN, started=1000.0)
    feed(watch, 200, 200, 500)
    watch.add_probe(True, "200", 1001.0)

    assert watch.summary() == (
        "3 requests (1 failed; statuses 200x2, 500x1; mean 0.004s, slowest 0.004s), "
        "1 probes (0 failed); failed: GET * 500 from 127.0.0.1:3012 in 0.004s at +0.5s"
    )


def test_window_fails_on_traffic_written_to_the_log(tmp_path) -> None:
    log = tmp_path / "slots.log"
    log.write_text("")
    tail = LogTail(log)
    tail.start()
    log.write_text("".join(line(500) + "\n" for _ in range(25)))
    steps: list[str] = []

    outcome = run_window(
        Watch(GREEN, 1000.0), 30, tail, LIMITS, lambda: (True, "200"), lambda: True, steps.append
    )

    assert (outcome.result, outcome.reason) == (
        "failed",
        "GET *: 25 of 25 requests through Nginx failed (100% >= 10%)",
    )


def test_quiet_window_is_judged_by_probes(tmp_path) -> None:
    tail = LogTail(tmp_path / "none.log")
    tail.start()

    outcome = run_window(
        Watch(GREEN, 1000.0),
        30,
        tail,
        LIMITS,
        lambda: (False, "returned 500"),
        lambda: True,
        lambda _: None,
        probe_interval=0.01,
    )

    assert outcome.result == "failed"
    assert outcome.watch.probes == 3


def test_window_passes_when_nothing_fails_and_stops_when_someone_switched(tmp_path) -> None:
    tail = LogTail(tmp_path / "none.log")
    tail.start()

    def window(selected: bool) -> str:
        return run_window(
            Watch(GREEN, 1000.0),
            0.3,
            tail,
            LIMITS,
            lambda: (True, "200"),
            lambda: selected,
            lambda _: None,
            probe_interval=0.05,
        ).result

    assert (window(True), window(False)) == ("passed", "superseded")


def test_rate_limited_probes_are_inconclusive_and_break_no_run_of_failures() -> None:
    watch = Watch(GREEN, started=1000.0)
    for ok in (False, None, False, None, None):
        watch.add_probe(ok, "returned 429 (rate-limited)", 1001.0)
    assert watch.verdict(LIMITS) is None
    assert (watch.failed_probes, watch.inconclusive_probes) == (2, 3)

    watch.add_probe(False, "returned 500, expected 200", 1002.0)

    assert watch.verdict(LIMITS) == (
        "3 probes through Nginx failed in a row (last: returned 500, expected 200)"
    )


def test_probes_never_overlap_the_next_starts_an_interval_after_the_last_ended(tmp_path) -> None:
    tail = LogTail(tmp_path / "none.log")
    tail.start()
    running: list[int] = []
    overlaps: list[int] = []

    def probe() -> tuple[bool | None, str]:
        running.append(1)
        if len(running) > 1:
            overlaps.append(1)
        time.sleep(0.05)  # a probe slower than the interval
        running.pop()
        return True, "200"

    run_window(
        Watch(GREEN, 1000.0), 0.5, tail, LIMITS, probe, lambda: True, lambda _: None,
        probe_interval=0.01,
    )  # fmt: skip

    assert overlaps == []
