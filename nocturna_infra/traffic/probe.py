"""HTTP checks the switch relies on: health and smoke probes of the target, and verification
through Nginx. Each check is one request on a fresh connection with a total deadline (`fetch`);
retry loops live in the caller.

Fresh connections matter for verification: a kept-alive connection would stay with an old Nginx
worker and keep reporting the old upstream after a reload.
"""

from __future__ import annotations

import socket
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Final

from nocturna_infra.traffic.fetch import FetchError, Reply, fetch

VERIFY_HEADER: Final = "X-Nocturna-Upstream"
"""Response header in which Nginx's loopback verification server reports `$upstream_addr`."""


@dataclass(frozen=True)
class Check:
    """One HTTP request and what its response must look like to pass."""

    url: str
    method: str = "GET"
    body: str | None = None
    status: int = 200
    content_type: str | None = None
    contains: str | None = None
    host_header: str | None = None
    bearer_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one request: `detail` completes "URL ..." in progress and error lines."""

    ok: bool
    detail: str
    status: int | None = None
    upstream: str | None = None
    throttled: bool = False
    """Answered 429, or 503 with Retry-After: the service's rate limit or overload guard."""


def is_throttled(status: int, headers: Mapping[str, str]) -> bool:
    """429, or 503 with Retry-After: the service asks to come back later; says nothing about
    whether it works."""
    return status == 429 or (status == 503 and "retry-after" in headers)


def _send(check: Check, timeout: float) -> Reply:
    headers = {"Connection": "close", "User-Agent": "nocturna-switch"}
    if check.host_header:
        headers["Host"] = check.host_header
    if check.bearer_token:
        headers["Authorization"] = f"Bearer {check.bearer_token}"
    if check.body is not None:
        headers["Content-Type"] = "application/json"
    body = check.body.encode() if check.body is not None else None
    return fetch(check.method, check.url, headers, body, deadline=timeout)


def run_check(check: Check, timeout: float) -> CheckResult:
    """Send `check` once (all of it within `timeout` seconds) and judge the response by
    status, content type and body text."""
    try:
        response = _send(check, timeout)
    except FetchError as error:
        return CheckResult(ok=False, detail=str(error))
    status = response.status
    upstream = response.headers.get(VERIFY_HEADER.lower())
    if status != check.status:
        throttled = is_throttled(status, response.headers)
        detail = f"returned {status}, expected {check.status}" + (
            " (rate-limited)" if throttled else ""
        )
        return CheckResult(False, detail, status, upstream, throttled)
    if check.content_type is not None:
        got = response.headers.get("content-type", "")
        if not got.startswith(check.content_type):
            detail = f"returned Content-Type {got!r}, expected {check.content_type!r}"
            return CheckResult(False, detail, status, upstream)
    if check.contains is not None and check.contains not in response.text:
        return CheckResult(False, f"returned {status} without {check.contains!r}", status, upstream)
    return CheckResult(True, f"{status}", status, upstream)


def last_upstream(header: str) -> str:
    """The address that answered: `$upstream_addr` lists every attempt, the last one won."""
    return header.replace(" : ", ", ").split(",")[-1].strip()


def upstream_addresses(servers: Collection[str]) -> frozenset[str]:
    """Every `IP:PORT` Nginx may report for `servers` (hostnames resolved as Nginx would)."""
    addresses: set[str] = set()
    for server in servers:
        host, _, port = server.rpartition(":")
        if host.startswith("["):
            addresses.add(server)
            continue
        try:
            infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except OSError:
            addresses.add(server)
            continue
        for family, _, _, _, sockaddr in infos:
            ip = str(sockaddr[0])
            addresses.add(f"[{ip}]:{port}" if family == socket.AF_INET6 else f"{ip}:{port}")
    return frozenset(addresses)


def verify_routed(check: Check, timeout: float, servers: Collection[str]) -> CheckResult:
    """One request through Nginx that must be answered by one of `servers`. A rate-limited
    answer (429, 503 with Retry-After) from one of them proves the routing too: the address
    is Nginx's, the status the service's."""
    result = run_check(check, timeout)
    if not result.ok and not (result.throttled and result.upstream is not None):
        return result
    if result.upstream is None:
        detail = f"returned {result.status} without an {VERIFY_HEADER} header"
        return CheckResult(False, detail, result.status)
    answered = last_upstream(result.upstream)
    if answered not in upstream_addresses(servers):
        detail = f"was answered by {answered}, not by {', '.join(servers)}"
        return CheckResult(False, detail, result.status, answered)
    if result.throttled:
        detail = f"{result.status} (rate-limited) from {answered}: routed"
        return CheckResult(True, detail, result.status, answered, throttled=True)
    return CheckResult(True, f"{result.status} from {answered}", result.status, answered)
