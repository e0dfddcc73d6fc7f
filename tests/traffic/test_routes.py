"""Route classes: each kind of request is judged on its own, and only on what the slot did."""

from __future__ import annotations

import pytest

from nocturna_infra.traffic.routes import (
    ClassStats,
    RouteClass,
    RouteDefinitionError,
    RouteRules,
    parse_excluded,
    parse_route_classes,
    routes_json,
)
from nocturna_infra.traffic.watch import Thresholds, Watch, parse_line
from tests.traffic.test_watch import GREEN, line

RENDER = RouteClass("POST", "/api/v2/chart/render", min_requests=5, error_percent=5)
RULES = RouteRules((RENDER,))
LIMITS = Thresholds(error_percent=5, min_requests=20, failed_probes=3, rules=RULES)


def feed(watch: Watch, count: int, status: int, method: str = "GET", uri: str = "/", **kw) -> None:
    for _ in range(count):
        record = parse_line(line(status, method=method, uri=uri, **kw))
        assert record is not None
        watch.add(record)


@pytest.mark.parametrize(
    ("method", "path", "key"),
    [
        pytest.param("POST", "/api/v2/chart/render", "POST /api/v2/chart/render", id="render"),
        pytest.param("POST", "/api/v2/chart/render/x", "POST /api/v2/chart/render", id="below"),
        pytest.param("POST", "/api/v2/chart/renderer", "POST *", id="not-a-prefix-match"),
        pytest.param("GET", "/api/v2/chart/render", "GET *", id="other-method"),
        pytest.param("GET", "/health", None, id="health-excluded"),
        pytest.param("GET", "/health/ready", None, id="below-health-excluded"),
        pytest.param("GET", "/healthz", "GET *", id="healthz-not-excluded"),
    ],
)
def test_requests_are_classed_by_method_and_path_prefix(method, path, key) -> None:
    assert RULES.key(method, path) == key


def test_failing_render_is_caught_while_cheap_requests_flood() -> None:
    """Issue 21, finding 1: 302 of 307 renders failed among 47,162 requests, and it passed."""
    watch = Watch(GREEN, 1000.0, RULES)
    feed(watch, 5000, 200)
    feed(watch, 6, 500, method="POST", uri="/api/v2/chart/render")

    assert watch.verdict(LIMITS) == (
        "POST /api/v2/chart/render: 6 of 6 requests through Nginx failed (100% >= 5%)"
    )


def test_a_class_below_its_minimum_is_not_judged_yet() -> None:
    watch = Watch(GREEN, 1000.0, RULES)
    feed(watch, 4, 500, method="POST", uri="/api/v2/chart/render")

    assert watch.verdict(LIMITS) is None


def test_404_flood_neither_hides_a_failing_release_nor_fails_a_good_one() -> None:
    failing = Watch(GREEN, 1000.0, RULES)
    feed(failing, 10000, 404, uri="/no-such-page")
    feed(failing, 20, 500, uri="/chart")
    good = Watch(GREEN, 1000.0, RULES)
    feed(good, 10000, 404, uri="/no-such-page")
    feed(good, 20, 200, uri="/chart")

    assert failing.verdict(LIMITS) == "GET *: 20 of 20 requests through Nginx failed (100% >= 5%)"
    assert good.verdict(LIMITS) is None


def test_429_from_the_service_is_not_the_slot_failing() -> None:
    watch = Watch(GREEN, 1000.0, RULES)
    feed(watch, 100, 429)
    feed(watch, 20, 200)

    assert (watch.verdict(LIMITS), watch.classes["GET *"].client_errors) == (None, 100)


def test_requests_the_slot_never_served_do_not_count() -> None:
    """A 502/503 Nginx made up without asking a server (no upstream status) is not the slot's."""
    watch = Watch(GREEN, 1000.0, RULES)
    feed(watch, 50, 503, upstream_status="")
    feed(watch, 50, 502, upstream_status="-")

    assert (watch.requests, watch.not_served, watch.verdict(LIMITS)) == (0, 100, None)


def test_health_polls_are_excluded_and_counted_apart() -> None:
    watch = Watch(GREEN, 1000.0, RULES)
    feed(watch, 100, 500, uri="/health")

    assert (watch.requests, watch.excluded, watch.verdict(LIMITS)) == (0, 100, None)


def test_a_gateway_timeout_from_the_slot_fails_its_class() -> None:
    watch = Watch(GREEN, 1000.0, RULES)
    feed(watch, 5, 504, method="POST", uri="/api/v2/chart/render", rt=60.0)

    assert watch.verdict(LIMITS) == (
        "POST /api/v2/chart/render: 5 of 5 requests through Nginx failed (100% >= 5%)"
    )


def test_percentiles_are_nearest_rank_over_judged_requests() -> None:
    stats = ClassStats()
    for index in range(1, 101):
        stats.add(200, index / 100)
    stats.add(404, 99.0)

    assert (stats.percentile(50), stats.percentile(95), stats.judged) == (0.5, 0.95, 100)
    assert ClassStats().percentile(50) is None


def test_definitions_round_trip_through_the_command_line_format() -> None:
    classes = parse_route_classes(
        [{"method": "POST", "pathPrefix": "/render", "minRequests": 5}, {"pathPrefix": "/a"}],
        "watchRoutes",
    )

    assert classes == (RouteClass("POST", "/render", 5, None), RouteClass("*", "/a"))
    assert routes_json(classes) == (
        '[{"method":"POST","pathPrefix":"/render","minRequests":5},'
        '{"method":"*","pathPrefix":"/a"}]'
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(
            {"pathPrefix": "/"},
            "watchRoutes: must be a list of route classes (objects); got {'pathPrefix': '/'}",
            id="not-a-list",
        ),
        pytest.param(
            [{"method": "FETCH", "pathPrefix": "/render"}],
            "watchRoutes[0].method: must be one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS "
            "or *; got 'FETCH'",
            id="method",
        ),
        pytest.param(
            [{"method": "POST", "pathPrefix": "render"}],
            "watchRoutes[0].pathPrefix: must be a URL path starting with /; got 'render'",
            id="prefix",
        ),
        pytest.param(
            [{"pathPrefix": "/r", "errorPercent": 0}],
            "watchRoutes[0].errorPercent: must be a whole number between 1 and 100; got 0",
            id="percent",
        ),
        pytest.param(
            [{"pathPrefix": "/r", "minRequest": 5}],
            "watchRoutes[0].minRequest: unknown field; allowed are method, pathPrefix, "
            "minRequests, errorPercent",
            id="typo",
        ),
        pytest.param(
            [{"pathPrefix": "/r"}, {"pathPrefix": "/r", "minRequests": 2}],
            "watchRoutes[1]: * /r is defined twice; got {'pathPrefix': '/r', 'minRequests': 2}",
            id="twice",
        ),
    ],
)
def test_bad_definitions_name_the_field_the_value_and_what_is_allowed(value, message) -> None:
    with pytest.raises(RouteDefinitionError) as error:
        parse_route_classes(value, "watchRoutes")
    assert str(error.value) == message


def test_bad_exclusions_are_refused() -> None:
    with pytest.raises(RouteDefinitionError) as error:
        parse_excluded(["health"], "watchExcludePaths")
    assert str(error.value) == (
        "watchExcludePaths: must be a list of URL paths starting with /; got ['health']"
    )
