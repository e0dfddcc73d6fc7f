"""The Nginx upstream file the switch owns: one `upstream` group per slot, rendered whole.

Each slot is its own named group (`<name>-<slot>`) with its own keepalive pool; the site
proxies to the group named by the selection (see `selection`), so choosing the live slot never
touches this file. It is rewritten, tested and reloaded only when a slot's servers change.

Rendering the whole file (instead of editing one line with sed, as the original did) means a
hand edit or an unexpected format can never make a switch silently change nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

HEADER: Final = (
    "# Managed by nocturna_infra.switch; rewritten whole when a slot's servers change, do not edit."
)
SLOT_PREFIX: Final = "# live-slot: "
"""Only in files written before the selection file existed (one group, slot recorded here)."""
SWITCHED_AT_PREFIX: Final = "# switched-at: "
WRITTEN_AT_PREFIX: Final = "# written-at: "
KEEPALIVE: Final = 32
"""Idle keepalive connections each worker keeps to each slot's group."""
KEEPALIVE_TIMEOUT: Final = "60s"
"""Shorter than the test backends' idle timeout, so Nginx closes idle connections first."""

_UPSTREAM_RE: Final = re.compile(r"^\s*upstream\s+([A-Za-z0-9_.-]+)\s*\{\s*$")
_SERVER_RE: Final = re.compile(r"^\s*server\s+([^\s;]+)[^;]*;")
_TIME_PREFIXES: Final = (SWITCHED_AT_PREFIX, WRITTEN_AT_PREFIX)


class UpstreamParseError(ValueError):
    """The text is not an upstream file this module can read."""


@dataclass(frozen=True)
class UpstreamState:
    """Where Nginx routes: the group's name, the live slot (if known) and its servers."""

    name: str
    slot: str | None
    servers: tuple[str, ...]


def group_name(name: str, slot: str) -> str:
    """The upstream group of one slot, e.g. `nocturna-img-production-green`."""
    return f"{name}-{slot}"


def render_upstreams(
    name: str,
    slot_servers: Mapping[str, Sequence[str]],
    written_at: datetime,
    keepalive: int = KEEPALIVE,
) -> str:
    """The complete upstream file: one group per slot, in the order given."""
    stamp = written_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    lines = [HEADER, f"{WRITTEN_AT_PREFIX}{stamp}"]
    for slot, servers in slot_servers.items():
        lines += [
            f"upstream {group_name(name, slot)} {{",
            *(f"    server {server};" for server in servers),
            f"    keepalive {keepalive};",
            f"    keepalive_timeout {KEEPALIVE_TIMEOUT};",
            "}",
        ]
    return "\n".join(lines) + "\n"


def render_upstream(
    name: str, slot: str, servers: Sequence[str], switched_at: datetime, keepalive: int = KEEPALIVE
) -> str:
    """The single-group file of the reload-based switch (before the selection file): the
    format a host runs before its migration, kept for migration tests and the benchmark."""
    stamp = switched_at.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    lines = [
        "# Managed by nocturna_infra.switch; rewritten whole on every switch, do not edit.",
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
    """The file without its time stamp: two files route the same way iff these are equal."""
    kept = [line for line in text.splitlines() if not line.startswith(_TIME_PREFIXES)]
    return "\n".join(kept)


def parse_upstream_groups(text: str) -> dict[str, tuple[str, ...]]:
    """Every `upstream NAME { server ...; }` group in the file, in order: NAME -> servers.

    Commented-out servers are ignored; parameters after the address are dropped.
    """
    groups: dict[str, tuple[str, ...]] = {}
    name: str | None = None
    servers: list[str] = []
    for line in text.splitlines():
        if name is None:
            match = _UPSTREAM_RE.match(line)
            if match:
                name, servers = match.group(1), []
            continue
        server = _SERVER_RE.match(line)
        if server:
            servers.append(server.group(1))
        elif line.strip().startswith("}"):
            if not servers:
                msg = f"upstream {name}: no `server` lines"
                raise UpstreamParseError(msg)
            groups[name] = tuple(servers)
            name = None
    if name is not None:
        msg = f"upstream {name}: block is not closed with `}}`"
        raise UpstreamParseError(msg)
    if not groups:
        msg = "no `upstream NAME {` line found"
        raise UpstreamParseError(msg)
    return groups


def slot_groups(groups: Mapping[str, tuple[str, ...]], name: str) -> dict[str, tuple[str, ...]]:
    """The slots (`<name>-<slot>` groups) a file defines: slot -> servers."""
    prefix = f"{name}-"
    return {
        group.removeprefix(prefix): servers
        for group, servers in groups.items()
        if group.startswith(prefix) and len(group) > len(prefix)
    }


def parse_upstream(text: str) -> UpstreamState:
    """Read back the first group and the recorded slot of a single-group file.

    Also reads hand-written files such as the original `server localhost:3014;  # ACTIVE: blue`:
    the slot is None when no `# live-slot:` line exists.
    """
    groups = parse_upstream_groups(text)
    slot = next(
        (line.removeprefix(SLOT_PREFIX).strip() or None)
        for line in [*text.splitlines(), SLOT_PREFIX]
        if line.startswith(SLOT_PREFIX)
    )
    name, servers = next(iter(groups.items()))
    return UpstreamState(name=name, slot=slot, servers=servers)
