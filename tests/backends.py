"""Threaded HTTP backends on 127.0.0.1 standing in for a slot of the service.

HTTP/1.1 with keepalive, so Nginx's upstream keepalive is exercised as in production.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.ports import free_port

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
RENDER_JSON = {
    "status": "success",
    "data": {"image": base64.b64encode(PNG_BYTES).decode(), "format": "png"},
}
"""The chart service's answer to a render: the PNG base64-encoded inside JSON."""


@dataclass
class Backend:
    """One fake slot. Mutable knobs let a test make it sick, slow or the wrong service.

    - `health_status`: status of /health once it is up.
    - `healthy_after`: seconds after start during which /health answers 503.
    - `wrong_service`: /health answers 200 with another service's JSON.
    - `render_status`: status of POST /render (the smoke request).
    - `render_json`: POST /render answers the service's JSON (`RENDER_JSON`) instead of PNG bytes.
    - `render_path`: the path that renders (the real service's is `/api/v2/chart/render`).
    - `expect_authorization`: POST answers 401 unless the Authorization header is this.
    - `echo_authorization`: once `echo_after` requests other than /health were answered, POST
      /render quotes the request's Authorization header: `"json"` as `data.format`, `"body"`
      in a 500 body where it starts `echo_offset` bytes in (a careless release).
    - `fail_routes`: paths answering 500 at once, whatever the method (a release with one
      dead endpoint while the others and /health work).
    - `hang_routes`: paths answering only after `hang_seconds` (a wedged renderer).
    - `fail_every`: every n-th request other than /health answers 500 (a release worse than
      the one it replaces, under any absolute share).
    - `throttle_after`: once this many /health requests were answered, /health answers 429
      with Retry-After (the service's own rate limit, shared by every client behind Nginx).
    - `trickle`: /health and POST answers are sent one byte every `trickle` seconds
      (`trickle_part`: `"headers"` or `"body"` trickles; `trickle_health` False spares /health),
      as a wedged release might.
    """

    slot: str
    health_status: int = 200
    healthy_after: float = 0.0
    wrong_service: bool = False
    render_status: int = 200
    fail_after: int | None = None
    """Once this many requests other than /health were answered, those answer 500 (a release
    that breaks after the switch; /health stays 200)."""
    render_json: bool = False
    render_path: str = "/render"
    expect_authorization: str | None = None
    echo_authorization: str | None = None
    echo_after: int = 0
    echo_offset: int = 190
    fail_routes: tuple[str, ...] = ()
    hang_routes: tuple[str, ...] = ()
    hang_seconds: float = 0.0
    throttle_after: int | None = None
    fail_every: int = 0
    other_requests: int = 0
    health_answered: int = 0
    trickle: float = 0.0
    trickle_part: str = "body"
    trickle_health: bool = True
    served: int = 0
    requests_seen: int = 0
    last_host: str | None = None
    last_authorization: str | None = None
    last_forwarded: tuple[str | None, str | None] = (None, None)
    """X-Forwarded-For and X-Real-IP of the last request."""
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)
    _started: float = 0.0

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self, port: int = 0, host: str = "127.0.0.1") -> Backend:
        """Listen on `host` (inside a container: 0.0.0.0, so a published port reaches it)."""
        backend = self

        class Handler(_Handler):
            owner = backend

        server = _Server((host, port or free_port()), Handler, bind_and_activate=False)
        server.daemon_threads = True
        server.request_queue_size = 256
        server.allow_reuse_address = True
        server.server_bind()
        server.server_activate()
        self._server = server
        self._started = time.monotonic()
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def start_clock(self) -> None:
        """Count `healthy_after` from now."""
        self._started = time.monotonic()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def health(self) -> tuple[int, dict[str, Any]]:
        if self.wrong_service:
            return 200, {"status": "ok", "service": "some-other-app"}
        if time.monotonic() - self._started < self.healthy_after:
            return 503, {"status": "degraded", "slot": self.slot}
        status = self.health_status
        return status, {"status": "healthy" if status == 200 else "degraded", "slot": self.slot}


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # Nginx closing an idle upstream keepalive connection (old workers exiting after a
        # reload) is routine, not worth a traceback.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    owner: Backend
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes
    timeout = 120  # idle keepalive: longer than Nginx's upstream keepalive_timeout

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Slot", self.owner.slot)
        self.end_headers()
        self.wfile.write(body)

    def _trickled(self, status: int, body: bytes) -> None:
        """Headers or body one byte at a time, each after `trickle` seconds."""
        head = (
            f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        slow, fast = (head, b"") if self.owner.trickle_part == "headers" else (b"", head)
        self.close_connection = True
        try:
            self.wfile.write(fast)
            for index in range(len(slow)):
                time.sleep(self.owner.trickle)
                self.wfile.write(slow[index : index + 1])
            for index in range(len(body)):
                time.sleep(self.owner.trickle)
                self.wfile.write(body[index : index + 1])
        except OSError:
            pass  # the client gave up, as it should

    def _echo(self) -> bool:
        """Quote the Authorization header as `echo_authorization` says; False if not (yet)."""
        owner = self.owner
        if owner.echo_authorization is None or owner.served <= owner.echo_after:
            return False
        auth = self.headers.get("Authorization") or ""
        if owner.echo_authorization == "json":
            self._json(200, {"data": {"format": auth}})
        else:
            self._reply(500, b"e" * owner.echo_offset + auth.encode(), "text/plain")
        return True

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._reply(status, json.dumps(payload, separators=(",", ":")).encode(), "application/json")

    def _route_knobs(self, path: str) -> bool:
        """Answer per `fail_routes`, `hang_routes`, `throttle_after`; True if answered."""
        owner = self.owner
        if path != "/health" and owner.fail_every:
            owner.other_requests += 1
            if owner.other_requests % owner.fail_every == 0:
                self._json(500, {"error": {"code": "RENDER_ERROR"}, "slot": owner.slot})
                return True
        if path in owner.hang_routes:
            time.sleep(owner.hang_seconds)
            self._json(200, {"slot": owner.slot, "hung": owner.hang_seconds})
            return True
        if path in owner.fail_routes:
            self._json(500, {"error": {"code": "RENDER_ERROR"}, "slot": owner.slot})
            return True
        if path == "/health" and owner.throttle_after is not None:
            owner.health_answered += 1
            if owner.health_answered > owner.throttle_after:
                body = b'{"error":"Too many requests"}'
                self.send_response(429)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Retry-After", "60")
                self.end_headers()
                self.wfile.write(body)
                return True
        return False

    def _broken(self) -> bool:
        """Count a request other than /health; True once the backend's `fail_after` is used up."""
        owner = self.owner
        if owner.fail_after is not None and owner.served >= owner.fail_after:
            return True
        owner.served += 1
        return False

    def do_GET(self) -> None:
        self.owner.requests_seen += 1
        self.owner.last_host = self.headers.get("Host")
        self.owner.last_forwarded = (
            self.headers.get("X-Forwarded-For"),
            self.headers.get("X-Real-IP"),
        )
        parts = urlsplit(self.path)
        if self._route_knobs(parts.path):
            return
        if parts.path == "/health" and self.owner.trickle and self.owner.trickle_health:
            status, payload = self.owner.health()
            self._trickled(status, json.dumps(payload).encode())
        elif parts.path == "/health":
            self._json(*self.owner.health())
        elif self._broken():
            self._json(500, {"error": {"code": "RENDER_ERROR"}, "slot": self.owner.slot})
        elif parts.path.startswith("/missing"):  # a client asking for what does not exist
            self._json(404, {"error": "not found", "slot": self.owner.slot})
        elif parts.path == "/moved":
            self.send_response(301)
            self.send_header("Location", "/health")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif parts.path == "/big":  # an answer of `n` bytes
            size = int(parse_qs(parts.query).get("n", ["1024"])[0])
            self._reply(200, b"x" * size, "text/plain")
        elif parts.path == "/slow":
            seconds = float(parse_qs(parts.query).get("s", ["2"])[0])
            time.sleep(seconds)
            self._json(200, {"slot": self.owner.slot, "slept": seconds})
        else:
            self._json(200, {"slot": self.owner.slot, "path": parts.path})

    def do_POST(self) -> None:
        self.owner.requests_seen += 1
        self.owner.last_host = self.headers.get("Host")
        self.owner.last_authorization = self.headers.get("Authorization")
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self._route_knobs(urlsplit(self.path).path):
            return
        expected = self.owner.expect_authorization
        if expected is not None and self.owner.last_authorization != expected:
            self._json(401, {"error": "unauthorized"})
        elif self.owner.trickle:
            self._trickled(200, b'{"data":{"format":"png"}}')
        elif self._broken():
            self._json(500, {"error": {"code": "RENDER_ERROR"}, "slot": self.owner.slot})
        elif self._echo():
            pass
        elif urlsplit(self.path).path == self.owner.render_path and self.owner.render_status == 200:
            if self.owner.render_json:
                self._json(200, RENDER_JSON)
            else:
                self._reply(200, PNG_BYTES, "image/png")
        else:
            self._json(self.owner.render_status, {"error": "render failed"})
