"""One HTTP request with a total deadline and a cap on the answer's size.

Every request the switch sends (health and smoke probes of the target, verification and
watch probes through Nginx) goes through `fetch`. A per-read timeout is not enough: a slot
that trickles one byte a second keeps each read short and the request open for ever, which
would hang `pulumi up` and, during the watch, the switch back. So a timer shuts the socket
down when the deadline passes, whatever the request is waiting for, and an answer larger
than `max_bytes` is refused. Each request uses a fresh connection (`Connection: close`), no
proxy and no redirect.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

MAX_BODY_BYTES: Final = 8 * 1024 * 1024
"""Largest answer read (a rendered chart is a few hundred KiB)."""


@dataclass(frozen=True)
class Reply:
    """A complete answer."""

    status: int
    headers: Mapping[str, str] = field(repr=False)
    """Names in lower case."""
    body: bytes = field(repr=False)
    seconds: float

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


class FetchError(Exception):
    """No complete answer; the message completes "URL ..." (e.g. `timed out after 2s`)."""


def _cut(sock: socket.socket, fired: threading.Event) -> None:
    fired.set()
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked send or recv at once


def fetch(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    deadline: float,
    max_bytes: int = MAX_BODY_BYTES,
) -> Reply:
    """Send one request; the whole exchange (connect, send, headers, body) ends by
    `deadline` seconds. Raises FetchError."""
    parts = urlsplit(url)
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = parts.hostname or ""
    connection: http.client.HTTPConnection = (
        http.client.HTTPSConnection(host, port, timeout=deadline)
        if https
        else http.client.HTTPConnection(host, port, timeout=deadline)
    )
    start = time.monotonic()
    fired = threading.Event()
    timer: threading.Timer | None = None
    try:
        connection.connect()
        assert connection.sock is not None
        remaining = max(0.0, deadline - (time.monotonic() - start))
        timer = threading.Timer(remaining, _cut, (connection.sock, fired))
        timer.daemon = True
        timer.start()
        connection.request(method, target, body=body, headers=dict(headers))
        response = connection.getresponse()
        chunks: list[bytes] = []
        size = 0
        while chunk := response.read(65536):
            size += len(chunk)
            if size > max_bytes:
                msg = f"answered more than {max_bytes} bytes"
                raise FetchError(msg)
            chunks.append(chunk)
        if fired.is_set():
            raise TimeoutError
        answer = {name.lower(): value for name, value in response.getheaders()}
        return Reply(response.status, answer, b"".join(chunks), time.monotonic() - start)
    except FetchError:
        raise
    except (TimeoutError, OSError, http.client.HTTPException) as error:
        if fired.is_set() or isinstance(error, TimeoutError):
            msg = f"timed out after {deadline:g}s"
        elif isinstance(error, ConnectionRefusedError):
            msg = "refused the connection"
        else:
            msg = f"failed ({type(error).__name__})"
        raise FetchError(msg) from None
    finally:
        if timer is not None:
            timer.cancel()
        connection.close()
