"""Single flag values of the switch's command line, validated one at a time. Pure: each
error names the flag, the problem and the bad value (a UsageError, exit 2)."""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from pathlib import Path
from typing import Final, NoReturn
from urllib.parse import urlsplit

from nocturna_infra.cli import UsageError

NAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]+")
HOSTNAME_RE: Final = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
METHOD_RE: Final = re.compile(r"[A-Z]{3,10}")


def flag_error(flag: str, expected: str, value: object) -> NoReturn:
    msg = f"{flag}: expected {expected}; got {value!r}"
    raise UsageError(msg)


def parse_server(value: str, flag: str = "--server") -> str:
    """`HOST:PORT` for an Nginx `server` line; `localhost` is refused (it may mean ::1)."""
    expected = "HOST:PORT (IPv4 address, [IPv6] address or hostname; port 1-65535)"
    host, sep, port = value.rpartition(":")
    if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
        flag_error(flag, expected, value)
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            flag_error(flag, expected, value)
    elif re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            flag_error(flag, expected, value)
    elif not HOSTNAME_RE.fullmatch(host):
        flag_error(flag, expected, value)
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        msg = (
            f"{flag}: {value!r} may resolve to ::1, where the slot does not listen; "
            f"use 127.0.0.1:{int(port)}"
        )
        raise UsageError(msg)
    return f"{host}:{int(port)}"


def parse_url(value: str, flag: str) -> str:
    """An absolute http(s) URL with a host and, if given, a valid port."""
    expected = "an http:// or https:// URL with a host"
    parts = urlsplit(value)
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
        flag_error(flag, expected, value)
    if any(char.isspace() for char in value):
        flag_error(flag, expected, value)
    host = parts.hostname.lower()
    if host == "localhost" or host.endswith(".localhost"):
        msg = (
            f"{flag}: {value!r} names localhost, which may resolve to ::1, where any local "
            "user may listen (and receive the probes' bearer key); use 127.0.0.1"
        )
        raise UsageError(msg)
    return value


def parse_name(value: str, flag: str) -> str:
    """A name written into the Nginx file: letters, digits, `_`, `.`, `-` only."""
    if not NAME_RE.fullmatch(value):
        flag_error(flag, "letters, digits, '_', '.' or '-'", value)
    return value


def parse_int(value: str, flag: str, minimum: int, maximum: int | None = None) -> int:
    """A whole number within bounds."""
    expected = f"an integer >= {minimum}" if maximum is None else f"{minimum}-{maximum}"
    try:
        number = int(value)
    except ValueError:
        flag_error(flag, expected, value)
    if number < minimum or (maximum is not None and number > maximum):
        flag_error(flag, expected, value)
    return number


def parse_seconds(value: str, flag: str, *, positive: bool) -> float:
    """A finite number of seconds, > 0 or >= 0."""
    expected = "a number of seconds > 0" if positive else "a number of seconds >= 0"
    try:
        number = float(value)
    except ValueError:
        flag_error(flag, expected, value)
    if not number < float("inf") or number < 0 or (positive and number == 0):
        flag_error(flag, expected, value)
    return number


def parse_command(value: str, flag: str) -> tuple[str, ...]:
    """A command line split like a shell would, to run without one."""
    try:
        argv = shlex.split(value)
    except ValueError as error:
        flag_error(flag, f"a command line ({error})", value)
    if not argv:
        flag_error(flag, "a non-empty command line", value)
    return tuple(argv)


def parse_host_header(value: str) -> str:
    """A `Host` header value: hostname or IP, optionally with a port."""
    host, _, port = value.rpartition(":") if ":" in value else (value, "", "")
    if port and not (re.fullmatch(r"[0-9]{1,5}", port) and 1 <= int(port) <= 65535):
        flag_error("--host-header", "HOST or HOST:PORT", value)
    if not (HOSTNAME_RE.fullmatch(host) or re.fullmatch(r"\[[0-9A-Fa-f:.]+\]", host)):
        flag_error("--host-header", "HOST or HOST:PORT", value)
    return value


def parse_factor(value: str) -> float:
    expected = "a factor of at least 1, or 0 to compare without failing"
    try:
        number = float(value)
    except ValueError:
        flag_error("--watch-regression-factor", expected, value)
    if not (number == 0 or 1 <= number < float("inf")):
        flag_error("--watch-regression-factor", expected, value)
    return number


def parse_pid_file(value: str) -> Path | None:
    if not value:
        return None
    if not Path(value).is_absolute():
        flag_error("--nginx-pid-file", "an absolute file path, or empty", value)
    return Path(value)


def parse_json_flag(value: str, flag: str) -> object:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        flag_error(flag, "JSON", value)
