"""Requests in flight: seen starting, not yet completed.

Nginx writes an access-log line when a request completes, so a hung renderer is invisible
until `proxy_read_timeout`, long after a short window has passed it. The shipped site also
logs each request as it starts (a `mirror` subrequest to an internal location, its own
`log_format` with `$request_id`); a start line without its completion line is a request in
flight. One in flight longer than the request timeout is a failure of its class, and after
the window the watch waits for the rest (bounded by that timeout).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Final

MIRROR_PATH: Final = "/_nocturna_started"
"""The internal location the mirror subrequests go to; a client asking for it directly gets
404 there and its start line is ignored (it never completes in the main log)."""


@dataclass(frozen=True)
class StartRecord:
    """One request's start, as the shipped `nocturna_production_started` format writes it."""

    time: float
    group: str
    request_id: str
    method: str
    path: str


def parse_start(line: str) -> StartRecord | None:
    """The start record of one line, or None for another shape or a direct mirror hit."""
    try:
        data = json.loads(line)
        record = StartRecord(
            time=float(data["time"]),
            group=str(data["group"]),
            request_id=str(data["requestId"]),
            method=str(data["method"]),
            path=str(data["uri"]).split("?", 1)[0],
        )
    except (ValueError, KeyError, TypeError):
        return None
    if not record.request_id or record.path == MIRROR_PATH:
        return None
    return record


@dataclass
class InFlight:
    """Requests started and not (yet) seen completing; ids seen completing first are kept
    so a start line read late is not taken for a request in flight."""

    pending: dict[str, tuple[StartRecord, str]] = field(default_factory=dict)
    """request id -> (start, class key)."""
    completed: set[str] = field(default_factory=set)

    def started(self, record: StartRecord, key: str) -> None:
        if record.request_id in self.completed:
            self.completed.discard(record.request_id)
            return
        self.pending[record.request_id] = (record, key)

    def done(self, request_id: str) -> None:
        if not request_id:
            return
        if self.pending.pop(request_id, None) is None:
            self.completed.add(request_id)

    def overdue(self, now: float, timeout: float) -> list[tuple[StartRecord, str]]:
        """Remove and return the requests in flight for longer than `timeout` seconds."""
        late = [item for item in self.pending.values() if now - item[0].time > timeout]
        for record, _ in late:
            del self.pending[record.request_id]
        return late
