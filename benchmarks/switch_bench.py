"""Switch back and forth under load and count every failed request, per switch method.

Runs one private Nginx with the shipped config and two Python backends on 127.0.0.1, and for
each switch method and each kind of client drives `wrk` through Nginx, keeps 2-second
requests in flight through Nginx, traces which backend answers each request, and meanwhile
switches blue <-> green with the real CLI (`python -m nocturna_infra.switch`):

- `selection`: the switch as shipped: flip the selection file, no reload;
- `reload`: the same CLI made to rewrite the upstream file and reload Nginx on every switch
  (the slot's group is pointed at the other backend), which is what the switch did before.

A script, not a test: the machine is noisy, so it prints figures and asserts nothing.

    venv/bin/python benchmarks/switch_bench.py [--switches 60] [--unpaced]
"""

from __future__ import annotations

import argparse
import http.client
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.backends import Backend  # noqa: E402 (after the sys.path entry)
from tests.load import SlowClients, WrkFigures, WrkLoad, percentile  # noqa: E402 (same)
from tests.nginx_instance import NginxInstance, switch_argv  # noqa: E402 (same)

METHODS = ("selection", "reload")
CLIENTS = {"keepalive": True, "close": False}


def cli(nginx: NginxInstance, argv: list[str]) -> list[str]:
    """The real CLI, with production-like retries."""
    return [sys.executable, "-m", "nocturna_infra.switch", *argv, "--verify-attempts", "20"]


def selection_argv(nginx: NginxInstance, target: Backend, other: Backend) -> list[str]:
    args = switch_argv(nginx, target, "--attempts", "30", "--interval", "0.5", "--timeout", "5")
    return cli(nginx, [*args, "--standby", f"{other.slot}={other.server}"])


def reload_argv(nginx: NginxInstance, target: Backend, green: Backend) -> list[str]:
    """Keep the selection on blue and point blue's group at `target`: every switch is a
    server change, so the CLI rewrites the file, runs nginx -t and reloads."""
    args = switch_argv(nginx, target, "--attempts", "30", "--interval", "0.5", "--timeout", "5")
    args[args.index("--slot") + 1] = "blue"
    return cli(nginx, [*args, "--standby", f"green={green.server}"])


@dataclass
class Tracer:
    """Clients that record when each request was sent and which backend answered it, to
    count answers from the old slot after a switch returned. Persistent connections (or one
    per request) like the wrk clients; a closed connection is reopened, not counted here."""

    port: int
    keepalive: bool
    count: int = 2
    answers: list[tuple[float, float, str]] = field(default_factory=list)
    """(sent, answered, backend) per request."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._run) for _ in range(self.count)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def _run(self) -> None:
        headers = {} if self.keepalive else {"Connection": "close"}
        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            if connection is None:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            sent = time.monotonic()
            try:
                connection.request("GET", "/trace", headers=headers)
                response = connection.getresponse()
                response.read()
                slot = response.getheader("X-Slot", "?")
                self.answers.append((sent, time.monotonic(), slot))
                if not self.keepalive or response.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = None
            time.sleep(0.002)
        if connection is not None:
            connection.close()


@dataclass
class Switch:
    started: float
    returned: float
    target: str
    code: int
    reported: float | None


@dataclass
class Result:
    method: str
    clients: str
    wrk: WrkFigures
    switches: list[Switch]
    slow_ok: int
    slow_failed: int
    old_after_return: int
    first_on_new: int


def old_slot_answers(
    answers: list[tuple[float, float, str]], switches: list[Switch]
) -> tuple[int, int]:
    """Answers from the previous slot to requests sent after a switch returned and answered
    before the next switch started (later answers may rightly come from the next target), and
    how many switches had their first such request answered by the new slot."""
    old = first_on_new = 0
    for index, done in enumerate(switches):
        if done.code != 0:
            continue
        until = switches[index + 1].started if index + 1 < len(switches) else float("inf")
        after = sorted(a for a in answers if done.returned < a[0] and a[1] < until)
        old += sum(1 for _, _, slot in after if slot != done.target)
        first_on_new += bool(after) and after[0][2] == done.target
    return old, first_on_new


def run_one(
    args: argparse.Namespace,
    method: str,
    clients: str,
    nginx: NginxInstance,
    blue: Backend,
    green: Backend,
) -> Result:
    keepalive = CLIENTS[clients]
    wrk = WrkLoad(
        nginx.url("/"),
        nginx.prefix,
        connections=args.connections,
        delay_ms=None if args.unpaced else args.delay_ms,
        max_seconds=args.max_seconds,
        keepalive=keepalive,
    )
    slow = SlowClients(nginx.url("/slow?s=2"), args.slow_clients)
    tracer = Tracer(nginx.listen_port, keepalive)
    switches: list[Switch] = []
    wrk.start()
    try:
        slow.start()
        tracer.start()
        time.sleep(2.5)  # slow requests in flight and load steady before the first switch
        deadline = time.monotonic() + args.max_seconds - 10
        for index in range(args.switches):
            if time.monotonic() > deadline:
                break
            target, other = (green, blue) if index % 2 == 0 else (blue, green)
            argv = (
                selection_argv(nginx, target, other)
                if method == "selection"
                else reload_argv(nginx, target, green)
            )
            started = time.monotonic()
            done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
            returned = time.monotonic()
            match = re.search(r" in ([\d.]+)s$", done.stdout.strip())
            switches.append(
                Switch(
                    started,
                    returned,
                    target.slot,
                    done.returncode,
                    float(match.group(1)) if match else None,
                )
            )
            if done.returncode != 0:
                print(f"  {method}/{clients} switch {index} exited {done.returncode}: "
                      f"{done.stderr.strip()}")  # fmt: skip
            time.sleep(args.gap)
        time.sleep(2.5)  # let the last slow requests finish
    finally:
        figures = wrk.stop()
        slow.stop()
        tracer.stop()
    old, first = old_slot_answers(tracer.answers, switches)
    return Result(method, clients, figures, switches, slow.ok, len(slow.failed), old, first)


def reset(nginx: NginxInstance, blue: Backend, green: Backend) -> None:
    """Back to the same start for every run: both groups as shipped, blue selected."""
    ok = subprocess.run(
        selection_argv(nginx, blue, green), cwd=REPO, capture_output=True, check=False
    )
    assert ok.returncode == 0, ok.stderr


def render(results: list[Result]) -> str:
    header = ("method", "clients", "switches ok", "requests", "rps", "non-2xx",
              "socket errors (c/r/w/t)", "slow ok/failed", "switch median/p95 s",
              "old-slot answers after return", "1st request after return on new")  # fmt: skip
    rows = [header]
    for r in results:
        times = [s.reported for s in r.switches if s.reported is not None]
        ok = sum(1 for s in r.switches if s.code == 0)
        w = r.wrk
        rows.append((
            r.method, r.clients, f"{ok}/{len(r.switches)}", str(w.requests), f"{w.rps:.0f}",
            str(w.non_2xx),
            f"{w.socket_errors} ({w.connect_errors}/{w.read_errors}/{w.write_errors}/"
            f"{w.timeouts})",
            f"{r.slow_ok}/{r.slow_failed}",
            f"{statistics.median(times):.3f}/{percentile(times, 0.95):.3f}" if times else "-",
            str(r.old_after_return), f"{r.first_on_new}/{ok}",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switches", type=int, default=60, help="switches per method and client")
    parser.add_argument("--connections", type=int, default=12, help="wrk connections")
    parser.add_argument("--delay-ms", type=int, default=25, help="wrk pause per request")
    parser.add_argument(
        "--unpaced", action="store_true", help="no pause: as many requests as wrk can send"
    )
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between switches")
    parser.add_argument("--slow-clients", type=int, default=4)
    parser.add_argument("--max-seconds", type=int, default=300, help="hard cap on each run")
    parser.add_argument(
        "--client-keepalive",
        action="store_true",
        help="only clients that reuse connections (wrk counts each connection a reload closes "
        "as a read error); default: both keep-alive and Connection: close clients",
    )
    parser.add_argument(
        "--method", choices=METHODS, action="append", help="only this method (repeatable)"
    )
    args = parser.parse_args()

    blue, green = Backend("blue").start(), Backend("green").start()
    prefix = Path(tempfile.mkdtemp(prefix="nocturna-bench-"))
    nginx = NginxInstance(prefix, blue.port, green.port)
    nginx.write_config()
    nginx.write_routing("blue", {"blue": blue.server, "green": green.server}, datetime.now(UTC))
    nginx.start()
    results = []
    try:
        for method in args.method or METHODS:
            for clients in ("keepalive",) if args.client_keepalive else tuple(CLIENTS):
                reset(nginx, blue, green)
                time.sleep(1)
                print(f"running {method} switches with {clients} clients ...", flush=True)
                results.append(run_one(args, method, clients, nginx, blue, green))
    finally:
        nginx.stop()
        blue.stop()
        green.stop()
        shutil.rmtree(prefix)

    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    pace = "unpaced" if args.unpaced else f"paced {args.delay_ms} ms per request"
    print(
        f"wrk: {args.connections} connections, {pace}; {args.slow_clients} clients keeping "
        f"2 s requests in flight; {args.switches} switches per row, {args.gap} s apart; "
        "switch time as reported by the switch (excludes interpreter start-up)"
    )
    print(render(results))
    failures = Counter(s.code for r in results for s in r.switches if s.code != 0)
    if failures:
        print(f"failed switches by exit code: {dict(failures)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
