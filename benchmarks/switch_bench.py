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
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nocturna_infra.upstream import render_upstream  # noqa: E402 (after the sys.path entry)
from tests.backends import Backend  # noqa: E402 (after the sys.path entry)
from tests.nginx_instance import UPSTREAM_NAME, NginxInstance  # noqa: E402 (same)

PACE_LUA = "function delay()\n  return {delay_ms}\nend\n"


def switch_argv(nginx: NginxInstance, target: Backend) -> list[str]:
    return [
        sys.executable, "-m", "nocturna_infra.switch",
        "--upstream-file", str(nginx.upstream_file),
        "--upstream-name", UPSTREAM_NAME,
        "--slot", target.slot,
        "--server", target.server,
        "--health-url", target.url("/health"),
        "--verify-url", nginx.verify_url("/health"),
        "--nginx-test", nginx.test_command,
        "--nginx-reload", nginx.reload_command,
        "--attempts", "30", "--interval", "0.5", "--timeout", "5",
    ]  # fmt: skip


class SlowClients:
    """Threads that keep 2-second requests in flight through Nginx until stopped."""

    def __init__(self, url: str, count: int) -> None:
        self.url = url
        self.ok = 0
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self) -> None:
        with requests.Session() as session:
            session.trust_env = False
            while not self._stop.is_set():
                try:
                    response = session.get(self.url, timeout=10)
                    good = response.status_code == 200
                    detail = f"status {response.status_code}"
                except requests.RequestException as error:
                    good, detail = False, repr(error)
                with self._lock:
                    if good:
                        self.ok += 1
                    else:
                        self.failed.append(detail)


def parse_wrk(output: str) -> dict[str, float]:
    figures: dict[str, float] = {"non2xx": 0, "connect": 0, "read": 0, "write": 0, "timeout": 0}
    if match := re.search(r"(\d+) requests in ([\d.]+)(m?s)", output):
        figures["requests"] = int(match.group(1))
        figures["seconds"] = float(match.group(2)) * (60 if match.group(3) == "m" else 1)
    if match := re.search(r"Requests/sec:\s+([\d.]+)", output):
        figures["rps"] = float(match.group(1))
    if match := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        figures["non2xx"] = int(match.group(1))
    errors = r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)"
    if match := re.search(errors, output):
        for key, value in zip(("connect", "read", "write", "timeout"), match.groups(), strict=True):
            figures[key] = int(value)
    return figures


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


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
    pace = prefix / "pace.lua"
    pace.write_text(PACE_LUA.format(delay_ms=args.delay_ms))
    wrk_cmd = [
        "wrk", "-t2", f"-c{args.connections}", f"-d{args.max_seconds}s",
        *(["-s", str(pace)] if args.delay_ms > 0 else []),
        *([] if args.client_keepalive else ["-H", "Connection: close"]),
        nginx.url("/"),
    ]  # fmt: skip
    slow = SlowClients(nginx.url("/slow?s=2"), args.slow_clients)
    wall: list[float] = []
    reported: list[float] = []
    codes: Counter[int] = Counter()
    wrk = subprocess.Popen(wrk_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
                switch_argv(nginx, target), cwd=REPO, capture_output=True, text=True, check=False
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
        wrk.send_signal(signal.SIGINT)  # wrk prints its summary on SIGINT
        wrk_output, _ = wrk.communicate(timeout=30)
        slow.stop()
        nginx.stop()
        blue.stop()
        green.stop()
        shutil.rmtree(prefix)

    figures = parse_wrk(wrk_output)
    errors = sum(int(figures[key]) for key in ("connect", "read", "write", "timeout"))
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    keepalive = "keepalive" if args.client_keepalive else "Connection: close"
    print(f"wrk ({keepalive}, paced {args.delay_ms} ms per request): {' '.join(wrk_cmd)}")
    print(f"switches done: {codes[0]} ok of {sum(codes.values())} (exit codes {dict(codes)})")
    print(
        f"total requests (wrk): {int(figures.get('requests', 0))} in "
        f"{figures.get('seconds', 0):.1f}s = {figures.get('rps', 0):.0f} rps"
    )
    print(f"non-2xx responses (wrk): {int(figures['non2xx'])}")
    print(
        f"socket errors (wrk): {errors} (connect {int(figures['connect'])}, read "
        f"{int(figures['read'])}, write {int(figures['write'])}, timeout {int(figures['timeout'])})"
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
