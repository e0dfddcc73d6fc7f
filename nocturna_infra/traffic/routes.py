"""Route classes: the watch judges each kind of request on its own.

In aggregate, cheap traffic hides a dead endpoint (thousands of `GET /health` polls around a
few hundred failed renders stay under any share) and clients steer the share (a flood of 404s
dilutes it). So every logged request gets a class key, the method and a route key: the first
configured path prefix that matches (e.g. `POST /api/v2/chart/render`), else `*`
(`GET *`). Paths in the exclusion list (`/health` by default) get no class and never count.

Within a class only what the slot decided counts: 2xx/3xx are good, 5xx are failures, and 4xx
(the client's fault, 429 included) are neither, so they cannot hide a failure nor cause one.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ANY_METHOD: Final = "*"
OTHER_ROUTE: Final = "*"
DEFAULT_EXCLUDED: Final = ("/health",)
PREFIX_PATTERN: Final = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")


class RouteDefinitionError(ValueError):
    """A route class definition is invalid; the message names the key path and the value."""


@dataclass(frozen=True)
class RouteClass:
    """A configured class: requests of `method` (or any) whose path starts at `prefix`."""

    method: str
    prefix: str
    min_requests: int | None = None
    """Requests the class needs before it is judged; None: the watch's default."""
    error_percent: int | None = None
    """5xx share that fails the watch; None: the watch's default."""

    @property
    def name(self) -> str:
        return f"{self.method} {self.prefix}"


def path_under(path: str, prefix: str) -> bool:
    """`path` is `prefix` or below it (`/health` covers `/health/ready`, not `/healthz`)."""
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


@dataclass(frozen=True)
class RouteRules:
    """How log lines are grouped into classes."""

    classes: tuple[RouteClass, ...] = ()
    excluded: tuple[str, ...] = DEFAULT_EXCLUDED

    def key(self, method: str, path: str) -> str | None:
        """The class of one request, or None for an excluded path."""
        if any(path_under(path, prefix) for prefix in self.excluded):
            return None
        for route in self.classes:
            if route.method in (ANY_METHOD, method) and path_under(path, route.prefix):
                return route.name
        return f"{method} {OTHER_ROUTE}"

    def limits(self, key: str, min_requests: int, error_percent: int) -> tuple[int, int]:
        """(minRequests, errorPercent) of a class: its own, else the defaults given."""
        for route in self.classes:
            if route.name == key:
                return (
                    route.min_requests if route.min_requests is not None else min_requests,
                    route.error_percent if route.error_percent is not None else error_percent,
                )
        return min_requests, error_percent


@dataclass
class ClassStats:
    """One class's requests in one period: good and failed answers, 4xx apart, timings."""

    good: int = 0
    failed: int = 0
    client_errors: int = 0
    times: list[float] = field(default_factory=list)
    """`$request_time` of every judged (non-4xx) request."""

    @property
    def judged(self) -> int:
        """Requests the slot decided: 2xx, 3xx and 5xx (4xx are left out)."""
        return self.good + self.failed

    def add(self, status: int, request_time: float, *, timed_out: bool = False) -> None:
        """One completed request; `timed_out`: the slot took the whole request timeout."""
        if 400 <= status < 500 and not timed_out:
            self.client_errors += 1
            return
        if status >= 500 or timed_out:
            self.failed += 1
        else:
            self.good += 1
        self.times.append(request_time)

    def share(self) -> float:
        """Failed share of judged requests, in percent (0 with none)."""
        return 100 * self.failed / self.judged if self.judged else 0.0

    def percentile(self, q: float) -> float | None:
        """The nearest-rank `q` percentile of the request times, None with no requests."""
        if not self.times:
            return None
        ordered = sorted(self.times)
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def parse_route_classes(value: object, key: str) -> tuple[RouteClass, ...]:
    """Definitions as JSON data (a list of objects) into classes; the first problem raises
    RouteDefinitionError naming `key[index].field`, the bad value and what is allowed."""
    if not isinstance(value, list):
        msg = f"{key}: must be a list of route classes (objects); got {value!r}"
        raise RouteDefinitionError(msg)
    classes: list[RouteClass] = []
    for index, item in enumerate(value):
        where = f"{key}[{index}]"
        if not isinstance(item, dict):
            msg = f"{where}: must be an object with method and pathPrefix; got {item!r}"
            raise RouteDefinitionError(msg)
        unknown = sorted(set(item) - {"method", "pathPrefix", "minRequests", "errorPercent"})
        if unknown:
            msg = (
                f"{where}.{unknown[0]}: unknown field; allowed are method, pathPrefix, "
                "minRequests, errorPercent"
            )
            raise RouteDefinitionError(msg)
        method = item.get("method", ANY_METHOD)
        if method not in (*METHODS, ANY_METHOD):
            msg = f"{where}.method: must be one of {', '.join(METHODS)} or *; got {method!r}"
            raise RouteDefinitionError(msg)
        prefix = item.get("pathPrefix")
        if not isinstance(prefix, str) or not PREFIX_PATTERN.fullmatch(prefix):
            msg = f"{where}.pathPrefix: must be a URL path starting with /; got {prefix!r}"
            raise RouteDefinitionError(msg)
        route = RouteClass(
            method,
            prefix,
            _optional_int(item, "minRequests", where, 1, 1_000_000),
            _optional_int(item, "errorPercent", where, 1, 100),
        )
        if route.name in {other.name for other in classes}:
            msg = f"{where}: {route.name} is defined twice; got {item!r}"
            raise RouteDefinitionError(msg)
        classes.append(route)
    return tuple(classes)


def parse_excluded(value: object, key: str) -> tuple[str, ...]:
    """A list of path prefixes whose requests the watch ignores."""
    if not isinstance(value, list) or not all(
        isinstance(item, str) and PREFIX_PATTERN.fullmatch(item) for item in value
    ):
        msg = f"{key}: must be a list of URL paths starting with /; got {value!r}"
        raise RouteDefinitionError(msg)
    return tuple(value)


def _optional_int(
    item: dict[str, object], name: str, where: str, low: int, high: int
) -> int | None:
    value = item.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        msg = f"{where}.{name}: must be a whole number between {low} and {high}; got {value!r}"
        raise RouteDefinitionError(msg)
    return value


def routes_json(classes: Sequence[RouteClass]) -> str:
    """The classes in the definition format (for the switch's command line)."""
    items = []
    for route in classes:
        item: dict[str, object] = {"method": route.method, "pathPrefix": route.prefix}
        if route.min_requests is not None:
            item["minRequests"] = route.min_requests
        if route.error_percent is not None:
            item["errorPercent"] = route.error_percent
        items.append(item)
    return json.dumps(items, separators=(",", ":"))
