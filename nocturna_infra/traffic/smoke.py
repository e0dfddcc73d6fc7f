"""Smoke checks: real requests a release must answer correctly before any traffic moves to it.

A check list is plain JSON (the `smokeChecks` stack key, the switch's `--smoke-checks`):

    [{"name": "render", "method": "POST", "path": "/api/v2/chart/render",
      "headers": {"Authorization": "Bearer ${API_KEY}"}, "bodyFile": "smoke/chart.json",
      "expectStatus": 200, "expectContains": "iVBORw0KGgo", "timeoutSeconds": 15}]

Secrets never sit in a definition: a header value may name environment variables as
`${NAME}`, resolved only inside the process that sends the request (the router passes the
API key through pulumi-command's secret `environment`). So the definitions stay plain and
visible in `pulumi preview`, and the command line, the state's `create` text and the output
carry the template, never the value; a response body quoted in a failure has every resolved
value masked.

`parse_checks` validates (errors name `<key>[<index>].<field>`); `run_checks` sends them to a
base URL (the target slot directly, or Nginx's verification server during the watch).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn

from nocturna_infra.traffic.fetch import FetchError, Reply, fetch
from nocturna_infra.traffic.masking import excerpt
from nocturna_infra.traffic.probe import VERIFY_HEADER

FIELDS: Final = (
    "name",
    "method",
    "path",
    "headers",
    "body",
    "bodyFile",
    "expectStatus",
    "expectContains",
    "expectJsonField",
    "expectJsonValue",
    "timeoutSeconds",
)
METHODS: Final = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
PATH_RE: Final = re.compile(r"/[!-~]*")
HEADER_NAME_RE: Final = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
TEMPLATE_RE: Final = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
JSON_FIELD_RE: Final = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
RESERVED_HEADERS: Final = frozenset({"host", "content-length", "connection", "transfer-encoding"})
MAX_BODY_BYTES: Final = 64 * 1024
MAX_CHECKS: Final = 20
DEFAULT_TIMEOUT: Final = 10.0
BODY_HEAD_BYTES: Final = 200


class SmokeDefinitionError(ValueError):
    """A check definition is invalid; the message starts with `<key>[<index>].<field>`."""


@dataclass(frozen=True)
class SmokeCheck:
    """One request and what its answer must look like. Header values may hold `${VAR}`."""

    name: str
    path: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: str | None = None
    body_file: str | None = None
    """Where `body` came from (relative to the project): `to_json` passes the path, not the
    content, so a body never sits on the switch's command line."""
    status: int = 200
    contains: str | None = None
    json_field: str | None = None
    json_value: Any = None
    has_json_value: bool = False
    timeout: float = DEFAULT_TIMEOUT

    @property
    def variables(self) -> frozenset[str]:
        """Environment variables the header templates name."""
        return frozenset(name for _, value in self.headers for name in TEMPLATE_RE.findall(value))

    def to_json(self) -> dict[str, Any]:
        """The definition as `--smoke-checks` takes it (a body file by its path, read by the
        switch in the project directory; templates unresolved)."""
        data: dict[str, Any] = {"name": self.name, "method": self.method, "path": self.path}
        if self.headers:
            data["headers"] = dict(self.headers)
        if self.body_file is not None:
            data["bodyFile"] = self.body_file
        elif self.body is not None:
            data["body"] = self.body
        data["expectStatus"] = self.status
        if self.contains is not None:
            data["expectContains"] = self.contains
        if self.json_field is not None:
            data["expectJsonField"] = self.json_field
        if self.has_json_value:
            data["expectJsonValue"] = self.json_value
        data["timeoutSeconds"] = self.timeout
        return data


def checks_json(checks: Sequence[SmokeCheck]) -> str:
    """Compact JSON of `checks`, for one command-line argument."""
    return json.dumps([check.to_json() for check in checks], separators=(",", ":"))


# --- validation ------------------------------------------------------------------------------


def _fail(where: str, problem: str, value: object) -> NoReturn:
    msg = f"{where}: {problem}; got {value!r}"
    raise SmokeDefinitionError(msg)


def parse_checks(value: object, key: str, base_dir: Path | None) -> tuple[SmokeCheck, ...]:
    """Validate a JSON check list. `bodyFile` is read relative to `base_dir` and inlined
    (None: only its form is checked and the body left out, for tools that only read)."""
    if not isinstance(value, list):
        _fail(key, "must be a list of checks (objects)", value)
    if len(value) > MAX_CHECKS:
        _fail(key, f"must hold at most {MAX_CHECKS} checks", len(value))
    checks = tuple(
        _parse_check(item, f"{key}[{index}]", base_dir) for index, item in enumerate(value)
    )
    seen: set[str] = set()
    for index, check in enumerate(checks):
        if check.name in seen:
            _fail(f"{key}[{index}].name", "must be unique among the checks", check.name)
        seen.add(check.name)
    return checks


def _parse_check(item: object, where: str, base_dir: Path | None) -> SmokeCheck:
    if not isinstance(item, dict):
        _fail(where, "must be an object with name, path and expectations", item)
    unknown = sorted(set(item) - set(FIELDS))
    if unknown:
        _fail(
            f"{where}.{unknown[0]}",
            f"unknown field; allowed: {', '.join(FIELDS)}",
            item[unknown[0]],
        )
    name = item.get("name")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        _fail(f"{where}.name", "is required: letters, digits, '_', '.' or '-' (at most 63)", name)
    method = item.get("method", "GET")
    if method not in METHODS:
        _fail(f"{where}.method", f"must be one of {', '.join(METHODS)}", method)
    path = item.get("path")
    if not isinstance(path, str) or not PATH_RE.fullmatch(path):
        _fail(f"{where}.path", "is required: a URL path starting with / (no spaces)", path)
    headers = _headers(item.get("headers", {}), f"{where}.headers")
    body = _body(item, where, base_dir)
    body_file = item.get("bodyFile")
    if ("body" in item or "bodyFile" in item) and method in ("GET", "HEAD"):
        _fail(f"{where}.method", "cannot send a body; use POST, PUT or PATCH", method)
    status = item.get("expectStatus", 200)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        _fail(f"{where}.expectStatus", "must be an HTTP status 100-599", status)
    contains = item.get("expectContains")
    if contains is not None and (not isinstance(contains, str) or not contains):
        _fail(f"{where}.expectContains", "must be non-empty text", contains)
    json_field = item.get("expectJsonField")
    if json_field is not None and (
        not isinstance(json_field, str) or not JSON_FIELD_RE.fullmatch(json_field)
    ):
        _fail(
            f"{where}.expectJsonField", "must be a dotted field path such as data.chart", json_field
        )
    has_value = "expectJsonValue" in item
    if has_value and json_field is None:
        _fail(f"{where}.expectJsonValue", "needs expectJsonField", item["expectJsonValue"])
    timeout = item.get("timeoutSeconds", DEFAULT_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= 300:
        _fail(f"{where}.timeoutSeconds", "must be a number of seconds > 0 and <= 300", timeout)
    return SmokeCheck(
        name=name,
        path=path,
        method=method,
        headers=headers,
        body=body,
        body_file=body_file,
        status=status,
        contains=contains,
        json_field=json_field,
        json_value=item.get("expectJsonValue"),
        has_json_value=has_value,
        timeout=float(timeout),
    )


def _headers(value: object, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        _fail(where, "must be an object of header name -> value", value)
    headers: list[tuple[str, str]] = []
    for name, text in value.items():
        if not HEADER_NAME_RE.fullmatch(name) or name.lower() in RESERVED_HEADERS:
            _fail(
                f"{where}.{name}",
                "must be a header name the switch does not set itself (not Host, "
                "Content-Length, Connection, Transfer-Encoding)",
                name,
            )
        if not isinstance(text, str) or not text.isprintable():
            _fail(f"{where}.{name}", "must be printable text on one line", text)
        leftover = TEMPLATE_RE.sub("", text)
        if "${" in leftover:
            _fail(f"{where}.{name}", "may only hold ${NAME} templates (letters, digits, _)", text)
        headers.append((name, text))
    return tuple(headers)


def _body(item: dict[str, Any], where: str, base_dir: Path | None) -> str | None:
    if "body" in item and "bodyFile" in item:
        _fail(f"{where}.bodyFile", "cannot be combined with body", item["bodyFile"])
    text: str | None = None
    if "body" in item:
        body = item["body"]
        text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    elif "bodyFile" in item:
        text = _read_body_file(item["bodyFile"], f"{where}.bodyFile", base_dir)
    if text is None:
        return None
    if len(text.encode()) > MAX_BODY_BYTES:
        _fail(f"{where}.body", f"must be at most {MAX_BODY_BYTES} bytes", len(text.encode()))
    return text


def _read_body_file(value: object, where: str, base_dir: Path | None) -> str | None:
    """The file's text; it must stay inside `base_dir` (the project): its content goes to the
    slot, and a path out of it (`../../etc/passwd`, a symlink) would send any file there."""
    allowed = "a file path inside the project directory (relative, no '..')"
    if not isinstance(value, str) or not value or value.startswith("/"):
        _fail(where, f"must be {allowed}", value)
    if ".." in Path(value).parts:
        _fail(where, f"must be {allowed}", value)
    if base_dir is None:
        return None
    root = base_dir.resolve()
    path = (root / value).resolve()
    if not path.is_relative_to(root):
        _fail(where, f"must stay inside {root} (it resolves to {path})", value)
    if path.exists() and not path.is_file():
        _fail(
            where, f"must name a readable UTF-8 file under {base_dir} (not a regular file)", value
        )
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "not UTF-8 text"
    _fail(where, f"must name a readable UTF-8 file under {base_dir} ({reason})", value)


def missing_variables(checks: Sequence[SmokeCheck], environ: Mapping[str, str]) -> list[str]:
    """Template variables that are unset or empty in `environ`, sorted."""
    needed = set().union(*(check.variables for check in checks)) if checks else set()
    return sorted(name for name in needed if not environ.get(name))


# --- running ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SmokeResult:
    """The outcome of one check: `detail` completes "smoke check 'NAME' (METHOD URL) ..."."""

    check: SmokeCheck
    url: str
    ok: bool
    detail: str
    status: int | None = None
    upstream: str | None = None
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"smoke check {self.check.name!r} ({self.check.method} {self.url})"

    def describe(self) -> str:
        return f"{self.label} {self.detail}"


def _resolve(text: str, environ: Mapping[str, str], secrets: list[str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        value = environ.get(match.group(1), "")
        if value:
            secrets.append(value)
        return value

    return TEMPLATE_RE.sub(substitute, text)


def _judge(check: SmokeCheck, response: Reply, secrets: list[str]) -> str | None:
    """None if the response meets every expectation, else why not (body quoted, masked before
    it is cut: a key crossing the cut must not leave its first part readable)."""
    status = response.status
    head = excerpt(response.text, BODY_HEAD_BYTES, secrets)
    quoted = f": {head!r}" if head else " (empty body)"
    if status != check.status:
        return f"returned {status}, expected {check.status}{quoted}"
    if check.contains is not None and check.contains not in response.text:
        return f"returned {status} without {check.contains!r}{quoted}"
    if check.json_field is not None:
        try:
            value: Any = response.json()
        except ValueError:
            return f"returned {status}, not JSON{quoted}"
        for part in check.json_field.split("."):
            if not isinstance(value, dict) or part not in value:
                return f"returned {status} without JSON field {check.json_field!r}{quoted}"
            value = value[part]
        if check.has_json_value and value != check.json_value:
            return (
                f"returned {status} with {check.json_field}="
                f"{excerpt(json.dumps(value), 80, secrets)}, "
                f"expected {json.dumps(check.json_value)}"
            )
        if not check.has_json_value and value in (None, "", [], {}):
            return f"returned {status} with an empty {check.json_field!r}{quoted}"
    return None


def run_check(
    check: SmokeCheck,
    base_url: str,
    environ: Mapping[str, str],
    host_header: str | None = None,
) -> SmokeResult:
    """Send `check` once on a fresh connection to `base_url` + its path, all of it within
    its `timeoutSeconds`."""
    url = base_url.rstrip("/") + check.path
    secrets: list[str] = []
    headers = {"Connection": "close", "User-Agent": "nocturna-switch"}
    if host_header:
        headers["Host"] = host_header
    if check.body is not None:
        headers["Content-Type"] = "application/json"
    headers.update({name: _resolve(value, environ, secrets) for name, value in check.headers})
    body = check.body.encode() if check.body is not None else None
    try:
        response = fetch(check.method, url, headers, body, deadline=check.timeout)
    except FetchError as error:
        return SmokeResult(check, url, False, str(error))
    seconds = response.seconds
    upstream = response.headers.get(VERIFY_HEADER.lower())
    problem = _judge(check, response, secrets)
    if problem is not None:
        return SmokeResult(check, url, False, problem, response.status, upstream, seconds)
    detail = f"{response.status} in {seconds:.2f}s"
    return SmokeResult(check, url, True, detail, response.status, upstream, seconds)


def run_checks(
    checks: Sequence[SmokeCheck],
    base_url: str,
    environ: Mapping[str, str],
    host_header: str | None = None,
) -> list[SmokeResult]:
    """Run `checks` in order, stopping at the first failure (the last result is it)."""
    results: list[SmokeResult] = []
    for check in checks:
        result = run_check(check, base_url, environ, host_header)
        results.append(result)
        if not result.ok:
            break
    return results
