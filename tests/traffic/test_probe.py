from __future__ import annotations

from collections.abc import Iterator

import pytest

from nocturna_infra.traffic.probe import (
    Check,
    CheckResult,
    last_upstream,
    run_check,
    upstream_addresses,
    verify_routed,
)
from tests.backends import Backend


@pytest.fixture
def green() -> Iterator[Backend]:
    backend = Backend("green").start()
    yield backend
    backend.stop()


@pytest.mark.parametrize(
    ("header", "address"),
    [
        pytest.param("127.0.0.1:3012", "127.0.0.1:3012", id="one-attempt"),
        pytest.param("127.0.0.1:3014, 127.0.0.1:3012", "127.0.0.1:3012", id="retried"),
        pytest.param("127.0.0.1:3014 : 127.0.0.1:3012", "127.0.0.1:3012", id="internal-redirect"),
    ],
)
def test_last_upstream_is_the_address_that_answered(header: str, address: str) -> None:
    assert last_upstream(header) == address


def test_upstream_addresses_resolve_hostnames_like_nginx() -> None:
    assert "127.0.0.1:3012" in upstream_addresses(["localhost:3012"])


def test_upstream_addresses_keep_ip_literals() -> None:
    assert upstream_addresses(["127.0.0.1:3012", "[::1]:3012"]) == {"127.0.0.1:3012", "[::1]:3012"}


def test_health_check_passes_on_200(green: Backend) -> None:
    assert run_check(Check(green.url("/health")), timeout=2) == CheckResult(True, "200", 200)


def test_health_check_fails_on_503_with_the_status_seen(green: Backend) -> None:
    green.health_status = 503
    result = run_check(Check(green.url("/health")), timeout=2)
    assert result == CheckResult(False, "returned 503, expected 200", 503)


def test_redirect_is_not_followed(green: Backend) -> None:
    result = run_check(Check(green.url("/moved")), timeout=2)
    assert result == CheckResult(False, "returned 301, expected 200", 301)


def test_slow_response_times_out(green: Backend) -> None:
    result = run_check(Check(green.url("/slow?s=1")), timeout=0.2)
    assert result == CheckResult(False, "timed out after 0.2s")


def test_wrong_content_type_fails_smoke(green: Backend) -> None:
    check = Check(green.url("/health"), content_type="image/png")
    result = run_check(check, timeout=2)
    assert result.detail == "returned Content-Type 'application/json', expected 'image/png'"


def test_verify_without_upstream_header_fails(green: Backend) -> None:
    result = verify_routed(Check(green.url("/health")), 2, [green.server])
    assert result == CheckResult(False, "returned 200 without an X-Nocturna-Upstream header", 200)


def test_429_is_a_rate_limit_not_a_verdict(green: Backend) -> None:
    green.throttle_after = 0
    result = run_check(Check(green.url("/health")), timeout=2)
    assert result == CheckResult(
        False, "returned 429, expected 200 (rate-limited)", 429, throttled=True
    )


def test_503_is_a_rate_limit_only_with_retry_after(green: Backend) -> None:
    green.health_status = 503
    assert run_check(Check(green.url("/health")), timeout=2).throttled is False


@pytest.mark.nginx
def test_rate_limited_answer_through_nginx_from_the_target_proves_routing(nginx, green) -> None:
    green.throttle_after = 0
    (nginx.selection_dir / "nocturna-img-production.green").write_text("green\n")

    result = verify_routed(Check(nginx.verify_url("/health")), 2, [green.server])

    assert result == CheckResult(
        True, f"429 (rate-limited) from {green.server}: routed", 429, green.server, True
    )


@pytest.mark.nginx
def test_rate_limited_answer_from_another_server_proves_nothing(nginx, blue, green) -> None:
    blue.throttle_after = 0  # Nginx still routes to blue

    result = verify_routed(Check(nginx.verify_url("/health")), 2, [green.server])

    assert (result.ok, result.detail) == (
        False,
        f"was answered by {blue.server}, not by {green.server}",
    )
