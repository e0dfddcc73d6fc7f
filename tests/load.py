"""Load through Nginx for the switch benchmark and the rehearsal: wrk plus slow requests.

`WrkLoad` drives a real load tool (Debian's wrk) against one URL until stopped and reports
its counts; `SlowClients` keeps 2-second requests in flight, so every switch happens with
requests open on the old slot. Both target 127.0.0.1 only and stop by themselves.
"""

from __future__ import annotations

import re
import signal
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import requests

PACE_LUA = """\
-- wrk pauses this long between requests on each connection, for a steady, bounded rate.
function delay()
  return {delay_ms}
end
"""


@dataclass(frozen=True)
class WrkFigures:
    requests: int
    seconds: float
    non_2xx: int
    connect_errors: int
    read_errors: int
    write_errors: int
    timeouts: int

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeouts

    @property
    def failed(self) -> int:
        return self.non_2xx + self.socket_errors

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def parse_wrk(output: str) -> WrkFigures:
    """The counts from wrk's summary; raises if wrk printed none (it did not run)."""
    totals = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)\b", output)
    if totals is None:
        msg = f"no wrk summary in its output:\n{output}"
        raise ValueError(msg)
    unit = {"ms": 0.001, "s": 1.0, "m": 60.0}[totals.group(3)]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    connect, read, write, timeout = (int(n) for n in errors.groups()) if errors else (0, 0, 0, 0)
    return WrkFigures(
        requests=int(totals.group(1)),
        seconds=float(totals.group(2)) * unit,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        connect_errors=connect,
        read_errors=read,
        write_errors=write,
        timeouts=timeout,
    )


class WrkLoad:
    """`wrk` against `url` from start() until stop(), at most `max_seconds`; paced by
    `delay_ms` per request and connection, or unpaced with None.

    Each request uses a new connection (`Connection: close`) unless `keepalive`: a reload
    makes Nginx's old workers close idle kept-alive connections, which wrk (unlike browsers
    and most HTTP clients) counts as read errors instead of retrying.
    """

    def __init__(
        self,
        url: str,
        workdir: Path,
        *,
        connections: int = 8,
        delay_ms: int | None = 20,
        max_seconds: int = 600,
        keepalive: bool = False,
    ) -> None:
        pacing: list[str] = []
        if delay_ms is not None:  # None: unpaced, as fast as wrk and the machine go
            pace = workdir / "pace.lua"
            pace.write_text(PACE_LUA.format(delay_ms=delay_ms))
            pacing = ["-s", str(pace)]
        self.argv = [
            "wrk", "-t2", f"-c{connections}", f"-d{max_seconds}s", *pacing,
            *([] if keepalive else ["-H", "Connection: close"]),
            url,
        ]  # fmt: skip
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def stop(self) -> WrkFigures:
        assert self._process is not None, "start() first"
        self._process.send_signal(signal.SIGINT)  # wrk prints its summary on SIGINT
        output, _ = self._process.communicate(timeout=30)
        return parse_wrk(output)


class SlowClients:
    """Threads that keep `delay`-second requests in flight through Nginx until stopped.

    Each response's JSON `version` is counted, so a caller sees which release answered.
    """

    def __init__(self, url: str, count: int = 4) -> None:
        self.url = url
        self.ok = 0
        self.failed: list[str] = []
        self.versions: Counter[str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def _run(self) -> None:
        with requests.Session() as session:
            session.trust_env = False
            while not self._stop.is_set():
                version = None
                try:
                    response = session.get(self.url, timeout=10)
                    good = response.status_code == 200
                    detail = f"status {response.status_code}"
                    if good and "json" in response.headers.get("Content-Type", ""):
                        version = response.json().get("version")
                except requests.RequestException as error:
                    good, detail = False, repr(error)
                with self._lock:
                    if good:
                        self.ok += 1
                        if version:
                            self.versions[str(version)] += 1
                    else:
                        self.failed.append(detail)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]
