from __future__ import annotations

import pytest

from nocturna_infra.provider_form import (
    cpus_form,
    go_duration,
    go_duration_ns,
    nano_cpus_read_back,
    parse_cpus,
)


@pytest.mark.parametrize(
    ("nano", "expected"),
    [
        # The provider's own table: TestNanoInt64ToDecimalString (helpers_test.go).
        (0, "0"),
        (1_000_000_000, "1.0"),
        (1_500_000_000, "1.5"),
        (2_000_000_000, "2.0"),
        (2_250_000_000, "2.25"),
        # Consequences of its "exactly nine zeros" rule, worked by hand from the Go code.
        (900_000_000, "0.9"),
        (50_000_000, "0.1"),
        (10_000_000, "0.0"),
        (10_000_000_000, "10."),
        (10_500_000_000, "10.5"),
        (1_000_000_001, "1.000000001"),
    ],
)
def test_read_back_matches_nano_int64_to_decimal_string(nano: int, expected: str) -> None:
    assert nano_cpus_read_back(nano) == expected


@pytest.mark.parametrize(
    ("text", "nano"),
    [("1", 10**9), ("0.9", 9 * 10**8), ("10.", None), ("1e3", None), ("0.0000000001", None)],
)
def test_parse_cpus_takes_plain_decimals_docker_accepts(text: str, nano: int | None) -> None:
    assert parse_cpus(text) == nano


@pytest.mark.parametrize(
    ("text", "form"),
    [("1", "1.0"), ("0.9", "0.9"), ("1.25", "1.25"), ("10", "10."), ("0.05", None),
     ("0.01", None), ("10.01", None), ("0", None)],
)  # fmt: skip
def test_cpus_form_is_the_read_back_text_or_none_when_the_value_changes(
    text: str, form: str | None
) -> None:
    assert cpus_form(text) == form


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (1, "1s"), (59, "59s"), (60, "1m0s"), (90, "1m30s"), (3600, "1h0m0s"),
     (3661, "1h1m1s"), (90000, "25h0m0s")],
)  # fmt: skip
def test_go_duration_matches_time_duration_string(seconds: int, text: str) -> None:
    assert go_duration(seconds) == text


@pytest.mark.parametrize(
    ("nanoseconds", "text"),
    [(0, "0s"), (1, "1ns"), (1500, "1.5µs"), (10**6, "1ms"), (1_200_000, "1.2ms"),
     (1_500_000_000, "1.5s"), (61_000_000_001, "1m1.000000001s"), (3_600_000_000_000, "1h0m0s")],
)  # fmt: skip
def test_go_duration_ns_matches_time_duration_string(nanoseconds: int, text: str) -> None:
    assert go_duration_ns(nanoseconds) == text
