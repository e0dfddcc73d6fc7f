"""What `python -m nocturna_infra.status` reports, as plain data, and how it is judged and shown.

Pure: the CLI gathers the facts (stack file, upstream file, `docker inspect`) into a
`StatusReport`; `assess`, `render_status` and `status_json` only read it, so tests compare
their whole output exactly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any, Final

from nocturna_infra.settings import Environment
from nocturna_infra.slot import Slot
from nocturna_infra.traffic import baseline
from nocturna_infra.traffic.upstream import UpstreamState

MISSING: Final = "missing"
"""Container state when Docker has no container of that name."""
UNKNOWN: Final = "unknown"
"""Container state when Docker could not be asked."""
NO_VALUE: Final = "-"
SHORT_ID_LENGTH: Final = 12


class Outcome(IntEnum):
    """Exit codes of the status command; `--help` and docs/operations.md list them."""

    OK = 0
    DRIFT = 1
    USAGE = 2
    DEGRADED = 3


EXIT_CODES_HELP: Final = """\
exit codes:
  0  as configured: Nginx routes to the configured live slot, every slot running and healthy
  1  drift: Nginx routes to another slot than activeSlot, to a server no slot publishes, or
     the upstream file is missing, unreadable or not an upstream file, or the selection is
     missing or unreadable, or Nginx's verification server answers from another server
     than the selection names
  2  bad usage or invalid configuration (the message names the flag or key)
  3  degraded: routing as configured, but a slot container is missing, not running, not
     healthy or not published on its configured port (or Docker could not be asked)
"""


@dataclass(frozen=True)
class ContainerFacts:
    """What Docker says about one slot's container."""

    name: str
    state: str
    """Docker's State.Status (running, exited, created, paused, restarting, dead...),
    `missing` or `unknown`."""
    health: str = NO_VALUE
    """healthy, unhealthy, starting, none (no health check), or `-` without a container."""
    image_id: str = ""
    image_created: datetime | None = None
    published: tuple[str, ...] = ()
    """Host bindings as `address:port`."""


@dataclass(frozen=True)
class SlotStatus:
    slot: Slot
    port: int
    """The host port configured for the slot."""
    server: str
    """The `host:port` an upstream file names for this slot (render.slot_server)."""
    container: ContainerFacts
    host: str = ""
    """The Docker host (`hosts[].name`) when the stack has several; empty with one."""

    @property
    def label(self) -> str:
        """How problem lines name the slot: `blue`, or `blue on h2` with several hosts."""
        return f"{self.slot} on {self.host}" if self.host else str(self.slot)


@dataclass(frozen=True)
class Routing:
    """The upstream file as read: its parsed state, or why it could not be read."""

    upstream_file: str
    upstream_name: str
    """The configured upstream name."""
    state: UpstreamState | None
    problem: str = ""
    selection: str = ""
    """Where the selection files point (`selection.describe`), empty for a single-group file."""
    selection_problem: str = ""
    """Why the selection is missing or unreadable: Nginx then uses its fallback slot."""
    answered: str | None = None
    """The server Nginx's verification server answered from, if it was asked and answered."""
    verify_problem: str = ""
    """Why the verification server could not be asked (a note, not drift)."""


@dataclass(frozen=True)
class StatusReport:
    stack: str
    environment: Environment
    live_slot: Slot
    """The slot that is live per config: activeSlot, or staging."""
    slots: tuple[SlotStatus, ...]
    routing: Routing
    checked_at: datetime
    docker_problem: str = ""
    watch: Mapping[str, Any] | None = None
    """The last watch window's record (`gates.record_path`), if there is one."""
    host_problems: tuple[tuple[str, str], ...] = ()
    """(host name, why its Docker could not be asked), with several hosts."""
    canary: Mapping[str, Any] | None = None
    """The last progressive switch's record (`canary.record_path`), if there is one."""


@dataclass(frozen=True)
class Assessment:
    outcome: Outcome
    problems: tuple[str, ...]
    """One line each, prefixed `drift:` or `degraded:`."""
    notes: tuple[str, ...]
    """Worth knowing, without changing the outcome."""


def routed_to(report: StatusReport) -> tuple[str, ...]:
    """The slot behind each server of the upstream file, or `unknown (host:port)`."""
    if report.routing.state is None:
        return ()
    by_server = {status.server: status.slot.value for status in report.slots}
    return tuple(
        by_server.get(server, f"unknown ({server})") for server in report.routing.state.servers
    )


def _config_word(report: StatusReport) -> str:
    if report.environment is Environment.STAGING:
        return "this staging stack's container is staging"
    return f"activeSlot is {report.live_slot}"


def _drift(report: StatusReport) -> list[str]:
    routing = report.routing
    if routing.state is None:
        return [f"{routing.upstream_file}: {routing.problem}; where Nginx routes is unknown"]
    problems = []
    if routing.selection_problem:
        problems.append(f"selection: {routing.selection_problem}")
    if routing.answered is not None and routing.answered not in routing.state.servers:
        problems.append(
            f"the selection says {routing.state.slot} ({', '.join(routing.state.servers)}), "
            f"but Nginx's verification server answered from {routing.answered}"
        )
    slot_group = f"{routing.upstream_name}-{routing.state.slot}"
    if routing.selection and routing.state.name != slot_group:
        problems.append(f"{routing.upstream_file} defines no upstream {slot_group}")
    elif not routing.selection and routing.state.name != routing.upstream_name:
        problems.append(
            f"{routing.upstream_file} defines upstream {routing.state.name}, "
            f"but upstreamName is {routing.upstream_name}"
        )
    routed = routed_to(report)
    unknown = [
        server
        for server, slot in zip(routing.state.servers, routed, strict=True)
        if slot.startswith("unknown")
    ]
    if unknown:
        expected = ", ".join(f"{s.slot} {s.server}" for s in report.slots)
        problems.append(
            f"Nginx routes to {', '.join(unknown)}, which no slot publishes "
            f"(configured: {expected})"
        )
    elif set(routed) != {report.live_slot.value}:
        servers = ", ".join(routing.state.servers)
        problems.append(
            f"Nginx routes to {' + '.join(routed)} ({servers}), but {_config_word(report)}"
        )
    return problems


def _degraded(report: StatusReport) -> list[str]:
    problems = []
    if report.docker_problem:
        problems.append(f"docker: {report.docker_problem}")
    problems += [
        f"host {name} unreachable: {problem}; its slots' state is unknown"
        for name, problem in report.host_problems
    ]
    for status in report.slots:
        facts = status.container
        if facts.state == UNKNOWN:
            continue
        if facts.state == MISSING:
            problems.append(f"{status.label}: container {facts.name} is missing")
            continue
        if facts.state != "running":
            problems.append(f"{status.label}: {facts.name} is {facts.state}, not running")
        elif facts.health != "healthy":
            what = "has no health check" if facts.health == "none" else f"is {facts.health}"
            problems.append(f"{status.label}: {facts.name} {what}")
        ports = [binding.rpartition(":")[2] for binding in facts.published]
        if str(status.port) not in ports:
            where = ", ".join(facts.published) or "no port"
            problems.append(
                f"{status.label}: {facts.name} publishes {where}, not the configured {status.port}"
            )
    return problems


def _notes(report: StatusReport) -> list[str]:
    state = report.routing.state
    if report.routing.verify_problem:
        return [f"verification server: {report.routing.verify_problem}"]
    if state is None or state.slot is None or report.routing.selection:
        return []
    routed = routed_to(report)
    if routed and set(routed) != {state.slot}:
        return [
            f"{report.routing.upstream_file} records live-slot {state.slot}, but its servers "
            f"belong to {' + '.join(routed)}; the servers are what Nginx uses"
        ]
    return []


def assess(report: StatusReport) -> Assessment:
    """Drift (exit 1) outranks degraded (exit 3): traffic going to the wrong place is worse."""
    drift = [f"drift: {line}" for line in _drift(report)]
    degraded = [f"degraded: {line}" for line in _degraded(report)]
    if drift:
        outcome = Outcome.DRIFT
    elif degraded:
        outcome = Outcome.DEGRADED
    else:
        outcome = Outcome.OK
    return Assessment(outcome, tuple(drift + degraded), tuple(_notes(report)))


def short_id(image_id: str) -> str:
    """`sha256:0123…` -> the 12 hex digits `docker ps`/`docker images` show."""
    return image_id.removeprefix("sha256:")[:SHORT_ID_LENGTH] or NO_VALUE


def format_age(created: datetime | None, now: datetime) -> str:
    """A coarse age: 45s, 12m, 5h 3m, 2d 4h."""
    if created is None:
        return NO_VALUE
    seconds = max(0, int((now - created).total_seconds()))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 60:
        return f"{seconds}s"
    if hours < 1:
        return f"{minutes}m"
    if days < 1:
        return f"{hours}h {minutes % 60}m"
    return f"{days}d {hours % 24}h"


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart, no trailing spaces."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (header, *rows)
    ]


TABLE_HEADER: Final = (
    "SLOT",
    "CONTAINER",
    "STATE",
    "HEALTH",
    "IMAGE",
    "IMAGE AGE",
    "PUBLISHED",
    "LIVE (CONFIG)",
    "LIVE (NGINX)",
)


def _routing_line(report: StatusReport) -> str:
    routing = report.routing
    if routing.state is None:
        return f"Nginx:  {routing.upstream_file}: {routing.problem}"
    targets = ", ".join(
        f"{slot} ({server})"
        for slot, server in zip(routed_to(report), routing.state.servers, strict=True)
    )
    line = f"Nginx:  upstream {routing.state.name} in {routing.upstream_file} routes to {targets}"
    if routing.selection:
        line += f"; selection: {routing.selection}"
    if routing.answered is not None:
        line += f"; verification server answered from {routing.answered}"
    return line


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def render_status(report: StatusReport) -> str:
    """The human report: where traffic goes, one row per slot, then the verdict."""
    routed = set(routed_to(report))
    multi = any(status.host for status in report.slots)
    rows = [
        (
            *((status.host,) if multi else ()),
            status.slot.value,
            status.container.name,
            status.container.state,
            status.container.health,
            short_id(status.container.image_id),
            format_age(status.container.image_created, report.checked_at),
            ", ".join(status.container.published) or NO_VALUE,
            _yes_no(status.slot is report.live_slot),
            _yes_no(status.slot.value in routed),
        )
        for status in report.slots
    ]
    config = (
        f"Config: activeSlot {report.live_slot}"
        if report.environment is Environment.PRODUCTION
        else "Config: staging (one slot)"
    )
    verdict = assess(report)
    lines = [
        f"Stack {report.stack} ({report.environment}), checked {_stamp(report.checked_at)}",
        _routing_line(report),
        config,
        *([watch_line(report.watch)] if report.watch else []),
        *(comparison_lines(report.watch) if report.watch else []),
        *(canary_lines(report.canary) if report.canary else []),
        "",
        *table((("HOST",) if multi else ()) + TABLE_HEADER, rows),
        "",
        f"Result: {_outcome_word(verdict.outcome)} (exit {int(verdict.outcome)})",
        *(f"  - {line}" for line in verdict.problems),
        *(f"  note: {line}" for line in verdict.notes),
    ]
    return "\n".join(lines) + "\n"


def watch_line(record: Mapping[str, Any]) -> str:
    """One line on the last watch window: its slot, how it ended, why, and what it saw."""
    seen = record.get("seen") if isinstance(record.get("seen"), Mapping) else {}
    slot, result = record.get("slot", "?"), record.get("result", "?")
    when = record.get("ended") or record.get("started") or "?"
    line = f"Last watch: {slot} {result} (ended {when})"
    if result == "watching":
        line = f"Last watch: {slot} being watched since {record.get('started', '?')}"
    if record.get("reason"):
        line += f": {record['reason']}"
    if seen:
        line += (
            f"; {seen.get('requests', 0)} requests ({seen.get('failed', 0)} failed), "
            f"{seen.get('probes', 0)} probes ({seen.get('failedProbes', 0)} failed)"
        )
    if result == "switched-back":
        line += f"; back on {record.get('previous', '?')}"
        seconds = record.get("secondsFromFirstFailureToSwitchBack")
        if isinstance(seconds, int | float):
            line += f" {seconds:.1f}s after the first failure"
    return line


def comparison_lines(record: Mapping[str, Any]) -> list[str]:
    """The last watch's per-class table (previous slot before the switch, new slot in the
    window), indented under its line; none if the record has no comparison."""
    rows = baseline.rows_from_json(record.get("comparison"))
    if not rows:
        return []
    table_text = baseline.comparison_table(
        rows, str(record.get("previous", "before")), str(record.get("slot", "after"))
    )
    return ["  " + line for line in table_text.splitlines()]


def canary_lines(record: Mapping[str, Any]) -> list[str]:
    """The last progressive switch: in progress (`green 25 %`, since when) or how it ended,
    then its latest step's table (old slot against new on the same minutes)."""
    slot, result = record.get("slot", "?"), record.get("result", "?")
    steps = record.get("steps") if isinstance(record.get("steps"), list) else []
    if result == "stepping":
        line = f"Canary: {slot} {record.get('share', '?')} % since {record.get('stepStarted')}"
    else:
        line = f"Last canary: {slot} {result}"
        if record.get("reason"):
            line += f" ({record['reason']})"
    if not steps or not isinstance(steps[-1], Mapping):
        return [line]
    latest = steps[-1]
    line += f"; latest comparison at {latest.get('share', '?')} %: {latest.get('result', '?')}"
    rows = baseline.rows_from_json(latest.get("comparison"))
    table_text = baseline.comparison_table(rows, str(record.get("previous", "old")), str(slot))
    return [line, *("  " + text for text in table_text.splitlines() if rows)]


def _outcome_word(outcome: Outcome) -> str:
    return "ok, as configured" if outcome is Outcome.OK else outcome.name.lower()


def status_data(report: StatusReport) -> dict[str, Any]:
    """The report as JSON-able data, for `--json`."""
    verdict = assess(report)
    routed = routed_to(report)
    state = report.routing.state
    return {
        "stack": report.stack,
        "environment": report.environment.value,
        "checkedAt": _stamp(report.checked_at),
        "liveSlot": report.live_slot.value,
        "nginx": {
            "upstreamFile": report.routing.upstream_file,
            "upstreamName": state.name if state else None,
            "servers": list(state.servers) if state else [],
            "routedSlots": list(routed),
            "recordedSlot": state.slot if state else None,
            "problem": report.routing.problem or None,
            "selection": report.routing.selection or None,
            "selectionProblem": report.routing.selection_problem or None,
            "answeredFrom": report.routing.answered,
        },
        "slots": [
            {
                **({"host": status.host} if status.host else {}),
                "slot": status.slot.value,
                "container": status.container.name,
                "state": status.container.state,
                "health": status.container.health,
                "imageId": status.container.image_id or None,
                "imageCreated": (
                    _stamp(status.container.image_created)
                    if status.container.image_created
                    else None
                ),
                "published": list(status.container.published),
                "port": status.port,
                "liveConfig": status.slot is report.live_slot,
                "liveNginx": status.slot.value in routed,
            }
            for status in report.slots
        ],
        "dockerProblem": report.docker_problem or None,
        "lastWatch": dict(report.watch) if report.watch else None,
        "lastCanary": dict(report.canary) if report.canary else None,
        **(
            {"unreachableHosts": {name: problem for name, problem in report.host_problems}}
            if report.host_problems
            else {}
        ),
        "outcome": verdict.outcome.name.lower(),
        "exitCode": int(verdict.outcome),
        "problems": list(verdict.problems),
        "notes": list(verdict.notes),
    }


def status_json(report: StatusReport) -> str:
    return json.dumps(status_data(report), indent=2) + "\n"
