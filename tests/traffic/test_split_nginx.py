"""Canary steps through a real Nginx running the shipped site: the share each step sends to
the new slot, measured over thousands of requests, stepping under keep-alive load with no
reload and no failed request."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from nocturna_infra.traffic.selection import write_markers
from nocturna_infra.traffic.split import Steps, render_splits, render_steps, split_key, write_step
from tests.backends import Backend
from tests.load import WrkLoad
from tests.nginx_instance import NginxInstance
from tests.traffic.switch_helpers import BEFORE

pytestmark = pytest.mark.nginx

SHARES = (5, 25, 50)
SLOTS = ("blue", "green")
LIVE_VARIABLE = "nocturna_production_live"
REQUESTS_PER_STEP = 5000
"""Per-request keys are random: at 50 %, 5,000 requests put ±2 points at 2.8 sigma."""
TOLERANCE = 2.0


def start_with_steps(prefix: Path, blue: Backend, green: Backend, steps: Steps) -> NginxInstance:
    """The shipped site with blue live and the splits and steps files a progressive switch
    writes (before Nginx starts: stepping later needs no reload)."""
    instance = NginxInstance(prefix, blue.port, green.port)
    instance.write_config()
    instance.write_routing("blue", {"blue": blue.server, "green": green.server}, BEFORE)
    name = instance.site.upstream_name
    with instance.upstream_file.open("a") as upstream:
        upstream.write(render_splits(name, SLOTS, steps))
    instance.steps_file.write_text(
        render_steps(name, SLOTS, steps, instance.selection_dir, LIVE_VARIABLE)
    )
    instance.start()
    return instance


def go_to(instance: NginxInstance, percent: int) -> None:
    """Green at `percent` (0: blue alone, 100: green alone), as the progressive switch does."""
    name = instance.site.upstream_name
    directory = instance.selection_dir
    if percent == 100:
        write_markers(directory, name, SLOTS, frozenset({"green"}))
        write_step(directory, name, "green", SHARES, None)
    elif percent == 0:
        write_markers(directory, name, SLOTS, frozenset({"blue"}))
        write_step(directory, name, "green", SHARES, None)
    else:
        write_step(directory, name, "green", SHARES, percent)


def served_by(url: str, count: int, clients: int = 4, cookies: bool = False) -> Counter[str]:
    """Which slot answered each of `count` GETs, over `clients` kept-alive connections; with
    `cookies`, request i carries cookie uid=i (one client each)."""
    slots: Counter[str] = Counter()
    lock = threading.Lock()

    def run(offset: int) -> None:
        seen: Counter[str] = Counter()
        with requests.Session() as session:
            session.trust_env = False
            for index in range(offset, count, clients):
                headers = {"Cookie": f"uid={index}"} if cookies else {}
                response = session.get(url, headers=headers, timeout=10)
                seen[response.headers["X-Slot"] if response.ok else str(response.status_code)] += 1
        with lock:
            slots.update(seen)

    threads = [threading.Thread(target=run, args=(offset,)) for offset in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return slots


def reloads(instance: NginxInstance) -> int:
    return (instance.prefix / "error.log").read_text().count("reconfiguring")


@pytest.fixture
def per_request(prefix: Path, blue: Backend, green: Backend) -> Iterator[NginxInstance]:
    instance = start_with_steps(prefix, blue, green, Steps(SHARES))
    yield instance
    instance.stop()


def test_each_step_sends_its_share_to_green_under_keepalive_load_without_reload(
    per_request: NginxInstance, prefix: Path
) -> None:
    load = WrkLoad(per_request.url("/"), prefix, connections=8, delay_ms=5, keepalive=True)
    load.start()
    table: list[tuple[int, float, Counter[str]]] = []
    for percent in (0, 5, 25, 50, 100, 0):
        go_to(per_request, percent)
        slots = served_by(per_request.url("/"), REQUESTS_PER_STEP)
        table.append((percent, 100 * slots["green"] / REQUESTS_PER_STEP, slots))
    figures = load.stop()

    print("\nstep  green %  counts")
    for percent, measured, slots in table:
        print(f"{percent:>4}  {measured:7.2f}  {dict(slots)}")
    for percent, measured, slots in table:
        assert sum(slots.values()) == slots["green"] + slots["blue"] == REQUESTS_PER_STEP
        assert abs(measured - percent) <= TOLERANCE, (percent, measured)
    assert figures.failed == 0, figures
    assert figures.requests > 0
    assert reloads(per_request) == 0


def test_a_cookie_key_keeps_each_client_on_its_slot_and_widening_never_moves_one_back(
    prefix: Path, blue: Backend, green: Backend
) -> None:
    """Sticky: the same 4,000 clients (cookie uid) at each step, the first 400 asking again;
    green's clients at 5 % are still green at 25 % and 50 %."""
    instance = start_with_steps(prefix, blue, green, Steps(SHARES, split_key("cookie:uid")))
    try:
        greens: dict[int, set[int]] = {}
        for percent in SHARES:
            go_to(instance, percent)
            greens[percent] = green_clients(instance, range(4000))
            again = green_clients(instance, range(400))
            assert again == {uid for uid in greens[percent] if uid < 400}
    finally:
        instance.stop()

    for percent in SHARES:
        assert abs(100 * len(greens[percent]) / 4000 - percent) <= TOLERANCE, percent
    assert greens[5] < greens[25] < greens[50]


def green_clients(instance: NginxInstance, uids: range) -> set[int]:
    """The cookie values (clients) green answered, one request each."""
    found: set[int] = set()
    with requests.Session() as session:
        session.trust_env = False
        for index in uids:
            response = session.get(
                instance.url("/"), headers={"Cookie": f"uid={index}"}, timeout=10
            )
            assert response.ok
            if response.headers["X-Slot"] == "green":
                found.add(index)
    return found
