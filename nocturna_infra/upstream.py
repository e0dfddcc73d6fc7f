"""The Nginx upstream file the switch owns: rendered whole from scratch, parsed back for status.

Rendering the whole file (instead of editing one line with sed, as the original did) means a
hand edit or an unexpected format can never make a switch silently change nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

HEADER: Final = "# Managed by nocturna_infra.switch; rewritten whole on every switch, do not edit."
SLOT_PREFIX: Final = "# live-slot: "
SWITCHED_AT_PREFIX: Final = "# switched-at: "
KEEPALIVE: Final = 32
"""Idle keepalive connections each worker keeps to the upstream."""
KEEPALIVE_TIMEOUT: Final = "60s"
"""Shorter than the test backends' idle timeout, so Nginx closes idle connections first."""

_UPSTREAM_RE: Final = re.compile(r"^\s*upstream\s+([A-Za-z0-9_.-]+)\s*\{\s*$")
_SERVER_RE: Final = re.compile(r"^\s*server\s+([^\s;]+)[^;]*;")


class UpstreamParseError(ValueError):
    """The text is not an upstream file this module can read."""


@dataclass(frozen=True)
class UpstreamState:
    """Where an upstream file routes: its name, the recorded live slot and its servers."""

    name: str
    slot: str | None
    servers: tuple[str, ...]


def render_upstream(
    name: str, slot: str, servers: Sequence[str], switched_at: datetime, keepalive: int = KEEPALIVE
) -> str:
    """The complete upstream file routing `name` to `servers`, recording the live slot."""
    stamp = switched_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    lines = [
        HEADER,
        f"{SLOT_PREFIX}{slot}",
        f"{SWITCHED_AT_PREFIX}{stamp}",
        f"upstream {name} {{",
        *(f"    server {server};" for server in servers),
        f"    keepalive {keepalive};",
        f"    keepalive_timeout {KEEPALIVE_TIMEOUT};",
        "}",
    ]
    return "\n".join(lines) + "\n"


def routing_text(text: str) -> str:
    """The file without its switch time: two files route the same way iff these are equal."""
    kept = [line for line in text.splitlines() if not line.startswith(SWITCHED_AT_PREFIX)]
    return "\n".join(kept)


def parse_upstream(text: str) -> UpstreamState:
    """Read back which servers (and recorded slot) an upstream file routes to.

    Also reads hand-written files such as the original `server localhost:3014;  # ACTIVE: blue`:
    commented-out servers are ignored, and the slot is None when no `# live-slot:` line exists.
    """
    slot: str | None = None
    name: str | None = None
    servers: list[str] = []
    closed = False
    for line in text.splitlines():
        if line.startswith(SLOT_PREFIX) and slot is None:
            slot = line.removeprefix(SLOT_PREFIX).strip() or None
        elif name is None:
            match = _UPSTREAM_RE.match(line)
            if match:
                name = match.group(1)
        elif not closed:
            server = _SERVER_RE.match(line)
            if server:
                servers.append(server.group(1))
            elif line.strip().startswith("}"):
                closed = True
    if name is None:
        msg = "no `upstream NAME {` line found"
        raise UpstreamParseError(msg)
    if not closed:
        msg = f"upstream {name}: block is not closed with `}}`"
        raise UpstreamParseError(msg)
    if not servers:
        msg = f"upstream {name}: no `server` lines"
        raise UpstreamParseError(msg)
    return UpstreamState(name=name, slot=slot, servers=tuple(servers))
