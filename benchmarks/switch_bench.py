"""Switch back and forth under load and count every failed request.

Runs a private Nginx with the shipped config and two Python backends on 127.0.0.1, drives
paced load with `wrk` through Nginx, keeps 2-second requests in flight through Nginx, and
meanwhile switches blue <-> green with the real CLI (`python -m nocturna_infra.switch`).
A script, not a test: the machine is noisy, so it prints figures and asserts nothing.

    venv/bin/python benchmarks/switch_bench.py [--switches 60]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nocturna_infra.upstream import render_upstream  # noqa: E402 (after the sys.path entry)
from tests.backends import Backend  # noqa: E402 (after the sys.path entry)
from tests.load import SlowClients, WrkLoad, percentile  # noqa: E402 (same)
from tests.nginx_instance import UPSTREAM_NAME, NginxInstance, switch_argv  # noqa: E402 (same)


def bench_switch_argv(nginx: NginxInstance, target: Backend) -> list[str]:
    """The real CLI, with production-like retries."""
    args = switch_argv(nginx, target, "--attempts", "30", "--interval", "0.5", "--timeout", "5")
    return [sys.executable, "-m", "nocturna_infra.switch", *args, "--verify-attempts", "20"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switches", type=int, default=60)
    parser.add_argument("--connections", type=int, default=12, help="wrk connections")
    parser.add_argument("--delay-ms", type=int, default=25, help="wrk pause per request")
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between switches")
    parser.add_argument("--slow-clients", type=int, default=4)
    parser.add_argument("--max-seconds", type=int, default=300, help="hard cap on the run")
    parser.add_argument(
        "--client-keepalive",
        action="store_true",
        help="let wrk reuse connections (it counts each connection a reload closes as a read "
        "error); default: Connection: close, one request per connection",
    )
    args = parser.parse_args()

    blue, green = Backend("blue").start(), Backend("green").start()
    prefix = Path(tempfile.mkdtemp(prefix="nocturna-bench-"))
    nginx = NginxInstance(prefix, blue.port, green.port)
    nginx.write_config()
    nginx.upstream_file.write_text(
        render_upstream(UPSTREAM_NAME, "blue", [blue.server], datetime.now(UTC))
    )
    nginx.start()
    wrk = WrkLoad(
        nginx.url("/"),
        prefix,
        connections=args.connections,
        delay_ms=args.delay_ms,
        max_seconds=args.max_seconds,
        keepalive=args.client_keepalive,
    )
    slow = SlowClients(nginx.url("/slow?s=2"), args.slow_clients)
    wall: list[float] = []
    reported: list[float] = []
    codes: Counter[int] = Counter()
    wrk.start()
    try:
        slow.start()
        time.sleep(2.5)  # slow requests in flight and load steady before the first switch
        deadline = time.monotonic() + args.max_seconds - 10
        for index in range(args.switches):
            if time.monotonic() > deadline:
                break
            target = green if index % 2 == 0 else blue
            started = time.monotonic()
            done = subprocess.run(
                bench_switch_argv(nginx, target),
                cwd=REPO,
                capture_output=True,
                text=True,
                check=False,
            )
            wall.append(time.monotonic() - started)
            codes[done.returncode] += 1
            if match := re.search(r" in ([\d.]+)s$", done.stdout.strip()):
                reported.append(float(match.group(1)))
            if done.returncode != 0:
                print(f"switch {index} exited {done.returncode}: {done.stderr.strip()}")
            time.sleep(args.gap)
        time.sleep(2.5)  # let the last slow requests finish
    finally:
        figures = wrk.stop()
        slow.stop()
        nginx.stop()
        blue.stop()
        green.stop()
        shutil.rmtree(prefix)

    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    keepalive = "keepalive" if args.client_keepalive else "Connection: close"
    print(f"wrk ({keepalive}, paced {args.delay_ms} ms per request): {' '.join(wrk.argv)}")
    print(f"switches done: {codes[0]} ok of {sum(codes.values())} (exit codes {dict(codes)})")
    print(
        f"total requests (wrk): {figures.requests} in {figures.seconds:.1f}s = "
        f"{figures.rps:.0f} rps"
    )
    print(f"non-2xx responses (wrk): {figures.non_2xx}")
    print(
        f"socket errors (wrk): {figures.socket_errors} (connect {figures.connect_errors}, read "
        f"{figures.read_errors}, write {figures.write_errors}, timeout {figures.timeouts})"
    )
    print(f"slow 2 s requests through Nginx: {slow.ok} ok, {len(slow.failed)} failed")
    for detail in slow.failed[:5]:
        print(f"  slow failure: {detail}")
    if wall:
        print(
            f"switch duration, CLI wall time incl. Python start-up: median "
            f"{statistics.median(wall):.3f}s, p95 {percentile(wall, 0.95):.3f}s"
        )
    if reported:
        print(
            f"switch duration, as reported by the switch: median "
            f"{statistics.median(reported):.3f}s, p95 {percentile(reported, 0.95):.3f}s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
