"""Issue 21's acceptance: a watch window real traffic can trust, against a real Nginx running
the shipped site and fixture backends, under mixed client traffic.

Each case names what the watch did before issue 21, so each test can fail on that code.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Sequence

import requests

from nocturna_infra.traffic.exits import ExitCode
from nocturna_infra.traffic.switch import main
from tests.nginx_instance import NginxInstance, switch_argv
from tests.traffic.test_gates import NOW, record, selection, watch_flags

RENDER_PATH = "/api/v2/chart/render"
RENDER_CLASS = json.dumps([{"method": "POST", "pathPrefix": RENDER_PATH, "minRequests": 3}])


class MixedLoad:
    """Keep-alive clients through Nginx, each repeating one (method, path, pause); every answer
    is kept as (slot, method path, status)."""

    def __init__(self, nginx: NginxInstance, routes: Sequence[tuple[str, str, float]]) -> None:
        self.nginx = nginx
        self.answers: list[tuple[str, str, int | str]] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=route, daemon=True) for route in routes
        ]

    def _run(self, method: str, path: str, pause: float) -> None:
        with requests.Session() as session:
            session.trust_env = False
            while not self._stop.is_set():
                try:
                    body = b"{}" if method == "POST" else None
                    response = session.request(method, self.nginx.url(path), data=body, timeout=30)
                    slot = response.headers.get("X-Slot", "?")
                    self.answers.append((slot, f"{method} {path}", response.status_code))
                except requests.RequestException as error:
                    self.answers.append(("error", f"{method} {path}", type(error).__name__))
                time.sleep(pause)

    def __enter__(self) -> MixedLoad:
        for thread in self._threads:
            thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=40)

    def counts(self) -> Counter[tuple[str, str, int | str]]:
        return Counter(self.answers)

    def blue_failures(self) -> list[tuple[str, str, int | str]]:
        return [a for a in self.answers if a[0] != "green" and a[2] not in (200, 404)]


FLOOD = [("GET", "/", 0.002)] * 3


def test_release_failing_only_its_render_route_under_a_cheap_flood_is_switched_back(
    nginx, blue, green, capsys
) -> None:
    """Before: renders 500 among thousands of 200s stayed under the 5 % share; kept live."""
    green.fail_routes = (RENDER_PATH,)
    # Judged in aggregate only after 200 requests (the flood brings them in a second); the
    # render class has its own minimum, 3.
    flags = watch_flags(nginx, "30", "--watch-min-requests", "200", "--watch-routes", RENDER_CLASS)
    argv = switch_argv(nginx, green, *flags)

    with MixedLoad(nginx, [*FLOOD, ("POST", RENDER_PATH, 0.3)]) as load:
        code = main(argv, now=lambda: NOW)
        time.sleep(0.3)

    err = capsys.readouterr().err
    assert code == ExitCode.WATCH_SWITCHED_BACK, err
    assert f"POST {RENDER_PATH}: " in err
    assert selection(nginx) == ["nocturna-img-production.blue"]
    assert load.blue_failures() == []
    counts = load.counts()
    assert counts[("green", f"POST {RENDER_PATH}", 500)] >= 3
    saved = record(nginx)
    assert saved["reason"].startswith(f"POST {RENDER_PATH}: ")
    assert saved["seen"]["classes"]["GET *"]["failed"] == 0


def test_404_flood_during_a_failing_release_is_switched_back(nginx, blue, green, capsys) -> None:
    """Before: 404s counted in the denominator and diluted the failures below the share."""
    green.fail_routes = ("/chart",)
    argv = switch_argv(nginx, green, *watch_flags(nginx, "30"))

    with MixedLoad(nginx, [("GET", "/missing", 0.001)] * 3 + [("GET", "/chart", 0.3)]) as load:
        code = main(argv, now=lambda: NOW)
        time.sleep(0.3)

    err = capsys.readouterr().err
    assert code == ExitCode.WATCH_SWITCHED_BACK, err
    assert "GET *: " in err
    assert selection(nginx) == ["nocturna-img-production.blue"]
    assert load.blue_failures() == []
    assert record(nginx)["seen"]["classes"]["GET *"]["clientErrors"] > 0


def test_release_hanging_one_route_past_the_window_is_switched_back(
    nginx, blue, green, capsys
) -> None:
    """Before: a hung request writes no log line until Nginx gives up (60 s), so a 2 s window
    saw "0 failed" and kept the release."""
    green.hang_routes = (RENDER_PATH,)
    green.hang_seconds = 8
    routes = json.dumps([{"method": "POST", "pathPrefix": RENDER_PATH, "minRequests": 2}])
    flags = watch_flags(nginx, "2", "--watch-routes", routes, "--watch-request-timeout", "4")
    argv = switch_argv(nginx, green, *flags)

    with MixedLoad(nginx, [*FLOOD, *[("POST", RENDER_PATH, 0.0)] * 3]) as load:
        code = main(argv, now=lambda: NOW)

    out = capsys.readouterr()
    assert code == ExitCode.WATCH_SWITCHED_BACK, out.err
    assert f"POST {RENDER_PATH}: " in out.err
    assert "no answer after 4s" in out.err
    assert "waiting for " in out.out  # the window was over; the requests in flight were not
    assert selection(nginx) == ["nocturna-img-production.blue"]
    assert load.blue_failures() == []
    saved = record(nginx)["seen"]
    assert saved["hung"] >= 2
    assert saved["inFlightWaitSeconds"] > 0


def test_probes_answered_429_by_a_healthy_slot_pass_the_watch(nginx, blue, green, capsys) -> None:
    """Before: the service's shared rate limit answered the probes 429 and a healthy release
    was switched back (or refused at verification)."""
    green.throttle_after = 1  # the direct health probe passes; everything later is limited
    argv = switch_argv(nginx, green, *watch_flags(nginx, "3", "--watch-probe-interval", "0.2"))

    code = main(argv, now=lambda: NOW)

    out = capsys.readouterr()
    assert code == ExitCode.OK, out.err
    assert "(rate-limited) from " in out.out
    assert selection(nginx) == ["nocturna-img-production.green"]
    seen = record(nginx)["seen"]
    assert (seen["failedProbes"], seen["inconclusiveProbes"] > 0) == (0, True)


def test_good_release_under_mixed_traffic_is_kept(nginx, blue, green, capsys) -> None:
    routes = [
        *FLOOD,
        ("POST", RENDER_PATH, 0.1),
        ("GET", "/missing", 0.05),
        ("GET", "/health", 0.05),
    ]
    argv = switch_argv(nginx, green, *watch_flags(nginx, "3", "--watch-routes", RENDER_CLASS))

    with MixedLoad(nginx, routes) as load:
        code = main(argv, now=lambda: NOW)

    out = capsys.readouterr()
    assert code == ExitCode.OK, out.err
    assert selection(nginx) == ["nocturna-img-production.green"]
    assert load.blue_failures() == []
    assert [a for a in load.answers if a[2] not in (200, 404)] == []
    seen = record(nginx)["seen"]
    assert seen["classes"][f"POST {RENDER_PATH}"]["requests"] > 0
    assert seen["excluded"] > 0  # the /health polls


def test_release_much_worse_than_the_previous_slot_is_switched_back_showing_the_table(
    nginx, blue, green, capsys
) -> None:
    """10 % of green's answers fail: under a 50 % absolute share, but 10x blue's (0 %, counted
    as 1 %) in the minutes before the switch: a clear regression (factor 3)."""
    green.fail_every = 10
    flags = watch_flags(
        nginx, "4", "--watch-error-percent", "50", "--watch-min-requests", "50",
        "--watch-routes", RENDER_CLASS,
    )  # fmt: skip
    argv = switch_argv(nginx, green, *flags)

    with MixedLoad(nginx, [*FLOOD, ("POST", RENDER_PATH, 0.05)]) as load:
        time.sleep(1.5)  # blue's traffic before the switch: the baseline
        code = main(argv, now=lambda: NOW)
        time.sleep(0.3)

    out = capsys.readouterr()
    assert code == ExitCode.WATCH_SWITCHED_BACK, out.err
    assert "GET *: 5xx share " in out.err
    assert "% on the previous slot (>= 3x)" in out.err
    assert "class                      blue n   5xx     p50     p95  green n" in out.out
    assert load.blue_failures() == []
    rows = {row["class"]: row for row in record(nginx)["comparison"]}
    assert rows["GET *"]["before"]["failedPercent"] == 0
    assert rows["GET *"]["after"]["failedPercent"] >= 3
    assert rows[f"POST {RENDER_PATH}"]["before"]["requests"] > 0
