"""The watch window: after a switch, judge the new slot by what it does through Nginx.

Two sources, both through Nginx, so they see what clients see:

- real traffic: the shipped public site writes one JSON line per request to a dedicated
  access log (`log_format ... escape=json` with the selected group, `$upstream_addr`,
  `$status`, `$request_time`); `LogTail` follows it from where it ended when the switch
  began, across rename rotation (the old file is drained first) and truncation;
- probes: every few seconds the smoke checks (or the verification URL) go through Nginx's
  loopback verification server, which has no access log, so a quiet window is judged too
  and probes are never counted as traffic.

`Watch` counts, and `verdict` says when failures cross the thresholds: an error rate once
enough requests were seen, or several failed probes in a row. The switch acts on it.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from nocturna_infra.traffic.inflight import InFlight, StartRecord, parse_start
from nocturna_infra.traffic.routes import ClassStats, RouteRules

SAMPLES: Final = 5
"""Failed requests quoted in the outcome."""


@dataclass(frozen=True)
class AccessRecord:
    """One request as the shipped `log_format` writes it."""

    time: float
    group: str
    upstream: str
    status: int
    request_time: float
    method: str = "*"
    path: str = "/"
    upstream_status: str = ""
    """Empty or `-` when no server of the slot was asked (the slot did not serve it)."""
    request_id: str = ""
    upstream_time: float | None = None
    """Seconds the slot took (the longest attempt), None when not logged."""

    @property
    def failed(self) -> bool:
        """A 5xx reached the client: the slot failed it (or Nginx could not reach the slot)."""
        return self.status >= 500

    @property
    def served(self) -> bool:
        """A server of the slot was asked (Nginx logged an upstream status)."""
        return self.upstream_status not in ("", "-")


def parse_line(line: str) -> AccessRecord | None:
    """The record of one log line, or None for a line of another shape (skipped, not fatal)."""
    try:
        data = json.loads(line)
        return AccessRecord(
            time=float(data["time"]),
            group=str(data["group"]),
            upstream=str(data["upstream"]),
            status=int(data["status"]),
            request_time=float(data["requestTime"]),
            # Lines of the format before issue 21 have no method/uri: one class for them.
            method=str(data.get("method", "*")),
            path=str(data.get("uri", "/")),
            upstream_status=str(data.get("upstreamStatus", "")),
            request_id=str(data.get("requestId", "")),
            upstream_time=_longest(str(data.get("upstreamTime", ""))),
        )
    except (ValueError, KeyError, TypeError):
        return None


def _longest(text: str) -> float | None:
    """The longest of `$upstream_response_time`'s attempts ("0.5, 60.0 : 1.2"), or None."""
    times = [float(part) for part in text.replace(":", ",").split(",") if _is_number(part)]
    return max(times) if times else None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class LogTail:
    """Lines appended to a file after `start()`; survives rotation and truncation.

    Rotation by rename: the open descriptor still reads the old file to its end, then the
    new file is followed from its start. Truncation in place (copytruncate): read again
    from the start. A file that does not exist yet is followed from its start once it does.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] | None = None
        self._inode: int | None = None
        self._partial = b""

    def start(self) -> None:
        self._open(at_end=True)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self, *, at_end: bool) -> None:
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            self._file = None
            return
        if at_end:
            handle.seek(0, os.SEEK_END)
        self._file = handle
        self._inode = os.fstat(handle.fileno()).st_ino
        self._partial = b""

    def _drain(self) -> list[str]:
        assert self._file is not None
        if os.fstat(self._file.fileno()).st_size < self._file.tell():
            self._file.seek(0)  # truncated in place
            self._partial = b""
        data = self._partial + self._file.read()
        *complete, self._partial = data.split(b"\n")
        return [line.decode("utf-8", "replace") for line in complete if line]

    def read_lines(self) -> list[str]:
        """Every complete line written since the last call."""
        if self._file is None:
            self._open(at_end=False)
            if self._file is None:
                return []
        lines = self._drain()
        try:
            current = os.stat(self.path).st_ino
        except FileNotFoundError:
            return lines  # rotated, the new file not created yet
        if current != self._inode:
            self.close()
            self._open(at_end=False)
            if self._file is not None:
                lines += self._drain()
        return lines


@dataclass(frozen=True)
class WatchLogs:
    """The completion log and, when the site writes one, the request-start log."""

    done: LogTail
    started: LogTail | None = None

    def close(self) -> None:
        self.done.close()
        if self.started is not None:
            self.started.close()


@dataclass(frozen=True)
class Thresholds:
    """When the watch switches back."""

    error_percent: int
    min_requests: int
    failed_probes: int
    rules: RouteRules = field(default_factory=RouteRules)
    """How requests are grouped into classes; each class is judged on its own."""
    request_timeout: float = 60.0
    """A request in flight this long, or a slot taking this long to answer, is a failure of
    its class (the site's proxy_read_timeout); also the bound of the wait for requests in
    flight after the window."""


@dataclass
class Watch:
    """What was seen of one slot's group during the window."""

    group: str
    started: float
    """Wall-clock time the window began (also the earliest request counted)."""
    rules: RouteRules = field(default_factory=RouteRules)
    request_timeout: float = 60.0
    requests: int = 0
    """Requests of the slot's group the slot served, excluded paths left out."""
    inflight: InFlight = field(default_factory=InFlight)
    hung: int = 0
    """Requests in flight longer than `request_timeout` (counted as failed)."""
    inflight_wait: float = 0.0
    """Seconds waited after the window for requests in flight."""
    ended: float | None = None
    """Wall-clock time the window ended: requests starting later are not waited for."""
    classes: dict[str, ClassStats] = field(default_factory=dict)
    not_served: int = 0
    """Requests of the group no server of the slot was asked for (not the slot's doing)."""
    excluded: int = 0
    failed: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    slowest: float = 0.0
    total_time: float = 0.0
    samples: list[str] = field(default_factory=list)
    first_failure: float | None = None
    """Wall-clock time of the first failed request or probe."""
    probes: int = 0
    failed_probes: int = 0
    inconclusive_probes: int = 0
    """Probes answered 429 or 503 with Retry-After: the service's rate limit, not a failure."""
    failed_in_a_row: int = 0
    last_probe: str = ""

    def add(self, record: AccessRecord) -> None:
        if record.group == self.group:
            self.inflight.done(record.request_id)
        if record.group != self.group or record.time < self.started:
            return
        if not record.served:
            self.not_served += 1
            return
        key = self.rules.key(record.method, record.path)
        if key is None:
            self.excluded += 1
            return
        timed_out = (
            record.upstream_time is not None and record.upstream_time >= self.request_timeout
        )
        self.requests += 1
        stats = self.classes.setdefault(key, ClassStats())
        stats.add(record.status, record.request_time, timed_out=timed_out)
        self.statuses[record.status] += 1
        self.total_time += record.request_time
        self.slowest = max(self.slowest, record.request_time)
        if record.failed or timed_out:
            self.failed += 1
            self._first(record.time)
            if len(self.samples) < SAMPLES:
                self.samples.append(
                    f"{key} {record.status} from {record.upstream or 'no upstream'} in "
                    f"{record.request_time:.3f}s at +{record.time - self.started:.1f}s"
                )

    def add_start(self, record: StartRecord) -> None:
        """A request of this slot started during the window: in flight until it completes."""
        if record.group != self.group or record.time < self.started:
            return
        if self.ended is not None and record.time > self.ended:
            return
        key = self.rules.key(record.method, record.path)
        if key is not None:
            self.inflight.started(record, key)

    def check_hung(self, now: float) -> None:
        """Requests in flight longer than the request timeout fail their class."""
        for record, key in self.inflight.overdue(now, self.request_timeout):
            self.hung += 1
            self.failed += 1
            self.requests += 1
            stats = self.classes.setdefault(key, ClassStats())
            stats.failed += 1
            stats.times.append(now - record.time)
            self._first(now)
            if len(self.samples) < SAMPLES:
                self.samples.append(
                    f"{key} no answer after {self.request_timeout:g}s "
                    f"(started at +{record.time - self.started:.1f}s)"
                )

    def add_probe(self, ok: bool | None, detail: str, at: float) -> None:
        """One probe's result; None is inconclusive (rate-limited) and changes no count."""
        self.probes += 1
        self.last_probe = detail
        if ok is None:
            self.inconclusive_probes += 1
            return
        if ok:
            self.failed_in_a_row = 0
            return
        self.failed_probes += 1
        self.failed_in_a_row += 1
        self._first(at)

    def _first(self, at: float) -> None:
        if self.first_failure is None or at < self.first_failure:
            self.first_failure = at

    def verdict(self, limits: Thresholds) -> str | None:
        """Why the slot must be switched back, or None while it is within the thresholds."""
        for key, stats in sorted(self.classes.items()):
            minimum, percent = limits.rules.limits(key, limits.min_requests, limits.error_percent)
            if stats.judged >= minimum and stats.failed * 100 >= percent * stats.judged:
                return (
                    f"{key}: {stats.failed} of {stats.judged} requests through Nginx failed "
                    f"({stats.share():.0f}% >= {percent}%)"
                )
        if self.failed_in_a_row >= limits.failed_probes:
            return (
                f"{self.failed_in_a_row} probes through Nginx failed in a row "
                f"(last: {self.last_probe})"
            )
        return None

    def summary(self) -> str:
        """Counts, statuses, timings and samples in one line."""
        statuses = ", ".join(f"{status}x{n}" for status, n in sorted(self.statuses.items()))
        mean = self.total_time / self.requests if self.requests else 0.0
        text = (
            f"{self.requests} requests ({self.failed} failed; statuses {statuses or 'none'}; "
            f"mean {mean:.3f}s, slowest {self.slowest:.3f}s"
            + (f", {self.hung} hung" if self.hung else "")
            + "), "
            f"{self.probes} probes ({self.failed_probes} failed"
            + (f", {self.inconclusive_probes} rate-limited" if self.inconclusive_probes else "")
            + ")"
        )
        if len(self.classes) > 1:
            text += "; by class " + ", ".join(
                f"{key} {stats.failed}/{stats.judged} failed"
                for key, stats in sorted(self.classes.items())
            )
        if self.samples:
            text += "; failed: " + "; ".join(self.samples)
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failed": self.failed,
            "statuses": {str(status): n for status, n in sorted(self.statuses.items())},
            "slowestSeconds": round(self.slowest, 3),
            "probes": self.probes,
            "failedProbes": self.failed_probes,
            "inconclusiveProbes": self.inconclusive_probes,
            "hung": self.hung,
            "inFlightWaitSeconds": round(self.inflight_wait, 3),
            "notServed": self.not_served,
            "excluded": self.excluded,
            "classes": {
                key: {
                    "requests": stats.judged,
                    "failed": stats.failed,
                    "clientErrors": stats.client_errors,
                }
                for key, stats in sorted(self.classes.items())
            },
            "samples": list(self.samples),
            "firstFailure": self.first_failure,
        }


@dataclass(frozen=True)
class Outcome:
    """How a window ended: `passed`, `failed` (switch back) or `superseded` (someone else
    switched meanwhile: nothing to judge, nothing to do)."""

    result: str
    reason: str
    watch: Watch


def _read(watch: Watch, tail: LogTail, starts: LogTail | None) -> None:
    """Everything new in both logs, completions first, then requests gone overdue."""
    for line in tail.read_lines():
        record = parse_line(line)
        if record is not None:
            watch.add(record)
    if starts is not None:
        for line in starts.read_lines():
            start = parse_start(line)
            if start is not None:
                watch.add_start(start)
    watch.check_hung(time.time())


def run_window(
    watch: Watch,
    seconds: float,
    tail: LogTail,
    limits: Thresholds,
    probe: Callable[[], tuple[bool | None, str]],
    still_selected: Callable[[], bool],
    step: Callable[[str], None],
    probe_interval: float = 2.0,
    poll: float = 0.1,
    starts: LogTail | None = None,
) -> Outcome:
    """Watch until `seconds` pass or the verdict says switch back, then wait for the
    requests still in flight (see `drain`); holds no lock."""
    end = time.monotonic() + seconds
    next_probe = time.monotonic()
    next_report = time.monotonic() + 5.0
    while True:
        _read(watch, tail, starts)
        reason = watch.verdict(limits)
        if reason is not None:
            return Outcome("failed", reason, watch)
        if not still_selected():
            return Outcome("superseded", "the selection no longer names the watched slot", watch)
        now = time.monotonic()
        if now >= end:
            return drain(watch, seconds, tail, starts, limits, step, poll)
        if now >= next_probe:
            ok, detail = probe()
            watch.add_probe(ok, detail, time.time())
            if ok is not True:
                step(f"watch probe{' (inconclusive)' if ok is None else ''}: {detail}")
            next_probe = time.monotonic() + probe_interval
            continue  # judge the probe at once
        if now >= next_report:
            step(f"watch: {watch.summary()}")
            next_report = now + 5.0
        time.sleep(min(poll, max(0.0, end - now)))


def drain(
    watch: Watch,
    seconds: float,
    tail: LogTail,
    starts: LogTail | None,
    limits: Thresholds,
    step: Callable[[str], None],
    poll: float = 0.1,
) -> Outcome:
    """After the window: keep judging until every request the slot started during it has
    completed or been in flight for the request timeout (then it failed its class)."""
    began = time.monotonic()
    watch.ended = time.time()
    _read(watch, tail, starts)  # every start up to the end of the window
    if watch.inflight.pending:
        step(
            f"watch: window over; waiting for {len(watch.inflight.pending)} requests in flight "
            f"(at most {watch.request_timeout:g}s each)"
        )
    while watch.inflight.pending:
        time.sleep(poll)
        _read(watch, tail, starts)
        reason = watch.verdict(limits)
        watch.inflight_wait = time.monotonic() - began
        if reason is not None:
            return Outcome("failed", f"{reason}; {_waited(watch)}", watch)
    watch.inflight_wait = time.monotonic() - began
    waited = f"; {_waited(watch)}" if starts is not None else ""
    return Outcome("passed", f"no threshold crossed in {seconds:g}s{waited}", watch)


def _waited(watch: Watch) -> str:
    return f"waited {watch.inflight_wait:.1f}s after the window for requests in flight"
