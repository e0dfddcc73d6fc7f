"""Smoke checks: definitions, and real requests against a local HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from nocturna_infra.traffic.smoke import (
    SmokeCheck,
    SmokeDefinitionError,
    checks_json,
    missing_variables,
    parse_checks,
    run_checks,
)

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ"


class RenderServer(ThreadingHTTPServer):
    """POST /render answers like the chart service; `mode` makes it fail in several ways."""

    mode = "ok"
    seen: list[dict[str, Any]]


class Handler(BaseHTTPRequestHandler):
    server: RenderServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.seen.append({"method": "GET", "path": self.path})
        self._reply(200, b'{"status":"healthy"}')

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode()
        auth = self.headers.get("Authorization")
        self.server.seen.append(
            {
                "method": "POST",
                "path": self.path,
                "body": body,
                "auth": auth,
                "type": self.headers.get("Content-Type"),
            }
        )
        mode = self.server.mode
        if mode == "render-error":
            self._reply(500, b'{"status":"error","error":{"code":"RENDER_ERROR"}}')
        elif mode == "echo-auth":  # a careless service quoting the request in its error
            self._reply(401, json.dumps({"error": f"bad header {auth}"}).encode())
        elif mode == "html":
            self._reply(200, b"<html>maintenance</html>", "text/html")
        else:
            payload = {"status": "success", "data": {"image": PNG_B64, "format": "png"}}
            self._reply(200, json.dumps(payload).encode())


@pytest.fixture
def server() -> Iterator[RenderServer]:
    httpd = RenderServer(("127.0.0.1", 0), Handler)
    httpd.seen = []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def base(server: RenderServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def render_check(**changes: Any) -> SmokeCheck:
    definition = {
        "name": "render",
        "method": "POST",
        "path": "/render",
        "headers": {"Authorization": "Bearer ${API_KEY}"},
        "body": {"type": "natal"},
        "expectContains": "iVBORw0KGgo",
        **changes,
    }
    (check,) = parse_checks([definition], "smokeChecks", None)
    return check


def test_passing_render_sends_method_body_and_resolved_secret(server) -> None:
    results = run_checks([render_check()], base(server), {"API_KEY": "s3cret-key"})

    assert [(r.ok, r.status) for r in results] == [(True, 200)]
    assert server.seen == [
        {
            "method": "POST",
            "path": "/render",
            "body": '{"type":"natal"}',
            "auth": "Bearer s3cret-key",
            "type": "application/json",
        }
    ]


def test_render_error_names_check_status_and_first_bytes_of_body(server) -> None:
    server.mode = "render-error"

    (result,) = run_checks([render_check()], base(server), {"API_KEY": "k"})

    assert not result.ok
    assert result.describe() == (
        f"smoke check 'render' (POST {base(server)}/render) returned 500, expected 200: "
        """'{"status":"error","error":{"code":"RENDER_ERROR"}}'"""
    )


def test_first_failure_stops_the_run(server) -> None:
    server.mode = "html"
    health = parse_checks([{"name": "health", "path": "/health"}], "k", None)[0]

    results = run_checks([health, render_check(), health], base(server), {"API_KEY": "k"})

    assert [(r.check.name, r.ok) for r in results] == [("health", True), ("render", False)]
    assert results[-1].detail == "returned 200 without 'iVBORw0KGgo': '<html>maintenance</html>'"


def test_secret_echoed_by_the_service_is_masked_in_the_failure(server) -> None:
    server.mode = "echo-auth"

    (result,) = run_checks([render_check()], base(server), {"API_KEY": "s3cret-key"})

    assert "s3cret-key" not in result.describe()
    assert result.detail == """returned 401, expected 200: '{"error": "bad header Bearer ***"}'"""


def test_json_field_and_value_expectations(server) -> None:
    ok = render_check(expectJsonField="data.format", expectJsonValue="png")
    wrong = render_check(expectJsonField="data.format", expectJsonValue="svg")
    absent = render_check(expectJsonField="data.chart")

    results = [run_checks([c], base(server), {"API_KEY": "k"})[0] for c in (ok, wrong, absent)]

    assert [r.ok for r in results] == [True, False, False]
    assert results[1].detail == 'returned 200 with data.format="png", expected "svg"'
    assert results[2].detail.startswith("returned 200 without JSON field 'data.chart': ")


def test_unreachable_target_is_reported_without_raising() -> None:
    check = parse_checks([{"name": "health", "path": "/health"}], "k", None)[0]

    (result,) = run_checks([check], "http://127.0.0.1:9", {})

    assert (result.ok, result.detail) == (False, "refused the connection")


def test_definitions_carry_templates_never_values() -> None:
    check = render_check()

    text = checks_json([check])

    assert "${API_KEY}" in text
    assert parse_checks(json.loads(text), "k", None) == (check,)
    assert missing_variables([check], {}) == ["API_KEY"]
    assert missing_variables([check], {"API_KEY": "x"}) == []


def test_body_file_is_read_from_the_base_directory_and_passed_on_by_its_path(
    tmp_path: Path,
) -> None:
    (tmp_path / "chart.json").write_text('{"planets": []}')

    (check,) = parse_checks(
        [{"name": "r", "method": "POST", "path": "/r", "bodyFile": "chart.json"}], "k", tmp_path
    )

    assert check.body == '{"planets": []}'
    assert checks_json([check]) == (
        '[{"name":"r","method":"POST","path":"/r","bodyFile":"chart.json","expectStatus":200,'
        '"timeoutSeconds":10.0}]'
    )


@pytest.mark.parametrize(
    ("definition", "message"),
    [
        pytest.param(
            {"name": "r", "path": "/r", "body": "{}"},
            "k[0].method: cannot send a body; use POST, PUT or PATCH; got 'GET'",
            id="get-with-body",
        ),
        pytest.param(
            {"name": "r", "path": "/r", "headers": {"Host": "x"}},
            "k[0].headers.Host: must be a header name the switch does not set itself (not Host, "
            "Content-Length, Connection, Transfer-Encoding); got 'Host'",
            id="reserved-header",
        ),
        pytest.param(
            {"name": "r", "path": "/r", "expectJsonValue": 1},
            "k[0].expectJsonValue: needs expectJsonField; got 1",
            id="value-without-field",
        ),
        pytest.param(
            {"name": "r", "method": "POST", "path": "/r", "body": "{}", "bodyFile": "b.json"},
            "k[0].bodyFile: cannot be combined with body; got 'b.json'",
            id="body-and-file",
        ),
        pytest.param(
            {"path": "/r"},
            "k[0].name: is required: letters, digits, '_', '.' or '-' (at most 63); got None",
            id="no-name",
        ),
    ],
)
def test_bad_definitions_name_index_and_field(definition: dict[str, Any], message: str) -> None:
    with pytest.raises(SmokeDefinitionError) as raised:
        parse_checks([definition], "k", None)

    assert str(raised.value) == message
