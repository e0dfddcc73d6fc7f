"""A progressive switch and an aborted one under load, per kind of client (issue 18).

One private Nginx with the shipped site and two Python backends on 127.0.0.1; `wrk` on `/`
and a second `wrk` on `/chart` through Nginx, keep-alive or `Connection: close`; meanwhile the
real CLI (`python -m nocturna_infra.switch --canary-steps 5,25,50`) steps blue -> green:

- `progressive`: a good green; each step lasts `--step-seconds` (its minimum is set out of
  reach, so every step sees thousands of requests), then the flip and a short watch;
- `aborted`: green answers 500 on `/chart` only; the switch must stop at the first step.

Counts: wrk's non-2xx and socket errors on each URL, green's own 500s on `/chart` (from the
site's JSON log: the broken release's answers), and the share each step measured (the
canary record's per-step requests of each slot). A script: prints figures, asserts nothing.

    PYTHONPATH=. venv/bin/python benchmarks/canary_bench.py [--step-seconds 8] [--unpaced]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nocturna_infra.traffic.canary import record_path  # noqa: E402 (after the sys.path entry)
from tests.backends import Backend  # noqa: E402 (same)
from tests.load import WrkFigures, WrkLoad  # noqa: E402 (same)
from tests.nginx_instance import NginxInstance, switch_argv  # noqa: E402 (same)

CHART_CLASS = json.dumps([{"method": "GET", "pathPrefix": "/chart", "minRequests": 3}])
CLIENTS = {"keepalive": True, "close": False}


def canary_argv(nginx: NginxInstance, target: Backend, other: Backend, step: int) -> list[str]:
    args = switch_argv(nginx, target, "--attempts", "30", "--interval", "0.5", other=other)
    return [
        sys.executable, "-m", "nocturna_infra.switch", *args,
        "--watch-seconds", "3", "--watch-log", str(nginx.slots_log),
        "--watch-started-log", str(nginx.started_log), "--watch-probe-interval", "0.5",
        "--watch-routes", CHART_CLASS,
        "--canary-steps", "5,25,50", "--canary-min-requests", "1000000",
        "--canary-step-seconds", str(step), "--verify-attempts", "20",
    ]  # fmt: skip


@dataclass
class Run:
    case: str
    clients: str
    code: int
    root: WrkFigures
    chart: WrkFigures
    green_chart_500: int
    logged: Counter[tuple[str, str, int]]
    shares: list[tuple[int, int, int]]
    """(target share, old slot's requests, new slot's requests) per step."""
    summary: str


def non_2xx(nginx: NginxInstance, since: float) -> Counter[tuple[str, str, int]]:
    """Every answer other than 2xx in the site's JSON log: (group, path, status)."""
    seen: Counter[tuple[str, str, int]] = Counter()
    for line in nginx.slots_log.read_text().splitlines():
        entry = json.loads(line)
        if entry["time"] >= since and not 200 <= entry["status"] < 300:
            seen[(entry["group"].rsplit("-", 1)[-1], entry["uri"], entry["status"])] += 1
    return seen


def run_one(args: argparse.Namespace, case: str, clients: str) -> Run:
    blue, green = Backend("blue").start(), Backend("green").start()
    if case == "aborted":
        green.fail_routes = ("/chart",)
    prefix = Path(tempfile.mkdtemp(prefix="nocturna-canary-bench-"))
    nginx = NginxInstance(prefix, blue.port, green.port)
    try:
        nginx.write_config()
        nginx.write_routing("blue", {"blue": blue.server, "green": green.server}, datetime.now(UTC))
        nginx.start()
        # As on a host where an earlier progressive switch ran: maps loaded, no reload now.
        ready = subprocess.run(
            canary_argv(nginx, blue, green, args.step_seconds),
            cwd=REPO, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert ready.returncode == 0, ready.stderr
        loads = [
            WrkLoad(
                nginx.url(path), prefix, connections=args.connections,
                delay_ms=None if args.unpaced else args.delay_ms, keepalive=CLIENTS[clients],
            )
            for path in ("/", "/chart")
        ]  # fmt: skip
        since = time.time()
        for load in loads:
            load.start()
        time.sleep(1.5)
        done = subprocess.run(
            canary_argv(nginx, green, blue, args.step_seconds),
            cwd=REPO, capture_output=True, text=True, check=False,
        )  # fmt: skip
        time.sleep(1.0)
        root, chart = (load.stop() for load in loads)
        record = json.loads(record_path(nginx.upstream_file).read_text())
        shares = [
            (
                step["share"],
                sum(row["before"]["requests"] for row in step["comparison"]),
                sum(row["after"]["requests"] for row in step["comparison"]),
            )
            for step in record["steps"]
        ]
        summary = (done.stderr.strip() or done.stdout.strip().splitlines()[-1])[:300]
        logged = non_2xx(nginx, since)
        return Run(case, clients, done.returncode, root, chart,
                   logged[("green", "/chart", 500)], logged, shares, summary)  # fmt: skip
    finally:
        nginx.stop()
        blue.stop()
        green.stop()
        shutil.rmtree(prefix, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--step-seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=8, help="wrk connections per URL")
    parser.add_argument("--delay-ms", type=int, default=5, help="wrk pause per request")
    parser.add_argument("--unpaced", action="store_true")
    parser.add_argument("--case", choices=("progressive", "aborted"), action="append")
    parser.add_argument("--clients", choices=tuple(CLIENTS), action="append")
    args = parser.parse_args()
    runs = [
        run_one(args, case, clients)
        for clients in args.clients or CLIENTS
        for case in args.case or ("progressive", "aborted")
    ]
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    for run in runs:
        other_failed = (
            run.root.failed + run.chart.socket_errors + (run.chart.non_2xx - run.green_chart_500)
        )
        print(
            f"\n{run.case} / {run.clients}: exit {run.code}; wrk / {run.root.requests} requests "
            f"({run.root.non_2xx} non-2xx, {run.root.socket_errors} socket errors), wrk /chart "
            f"{run.chart.requests} ({run.chart.non_2xx} non-2xx, {run.chart.socket_errors} "
            f"socket errors); green's own /chart 500s: {run.green_chart_500}; failed other than "
            f"the broken release's own answers: {other_failed}"
        )
        print(f"  non-2xx in the site's log (slot, path, status): {dict(run.logged)}")
        for share, old, new in run.shares:
            total = old + new
            measured = 100 * new / total if total else 0.0
            print(f"  step {share:>2} %: {total:>6} requests, green {measured:6.2f} %")
        print(f"  {run.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
