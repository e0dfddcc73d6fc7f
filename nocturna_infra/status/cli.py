"""Where traffic really goes and what each slot runs, without the Pulumi CLI.

    python -m nocturna_infra.status [--stack production] [--project-dir DIR]
        [--upstream-file PATH] [--docker PATH] [--json]

Reads the stack's config from Pulumi.<stack>.yaml (plus the declared defaults), the Nginx
upstream file and the selection files the switch owns, asks Nginx's loopback verification
server which server it answers from, and `docker inspect` of every slot container, then prints a
table (or JSON) and exits 0, 1 (drift), 3 (degraded) or 2 (usage). It never stops at the first
problem: every slot is reported. Gathering is here; judging and rendering are the pure
functions in `status.report`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, NoReturn

import yaml

from nocturna_infra.cli import RaisingArgumentParser, UsageError
from nocturna_infra.hosts import HostSettings
from nocturna_infra.program import render
from nocturna_infra.settings import ConfigError, Environment, Settings, parse_settings
from nocturna_infra.settings import read_stack_file as _read_stack_file
from nocturna_infra.slot import Slot
from nocturna_infra.status.report import (
    EXIT_CODES_HELP,
    MISSING,
    UNKNOWN,
    ContainerFacts,
    Outcome,
    Routing,
    SlotStatus,
    StatusReport,
    assess,
    render_status,
    status_json,
)
from nocturna_infra.traffic import canary, gates
from nocturna_infra.traffic.probe import Check, last_upstream, run_check
from nocturna_infra.traffic.safe_files import UnsafeFileError
from nocturna_infra.traffic.selection import describe, nginx_choice, read_markers
from nocturna_infra.traffic.upstream import (
    UpstreamParseError,
    UpstreamState,
    group_name,
    parse_upstream,
    parse_upstream_groups,
    slot_groups,
)

DEFAULT_DOCKER: Final = "/usr/bin/docker"
DOCKER_TIMEOUT_SECONDS: Final = 30.0
"""Per docker command; a host gone dark (ssh hanging) is reported as unreachable after it."""
STACK_RE: Final = re.compile(r"[A-Za-z0-9_.-]+")


def _usage(flag: str, expected: str, value: object) -> NoReturn:
    msg = f"{flag}: expected {expected}; got {value!r}"
    raise UsageError(msg)


@dataclass(frozen=True)
class StatusOptions:
    stack: str
    project_dir: Path
    upstream_file: str | None
    docker: str
    as_json: bool


def build_parser() -> argparse.ArgumentParser:
    parser = RaisingArgumentParser(
        prog="python -m nocturna_infra.status",
        description="Show which slot Nginx routes to and, per slot, its container, state, "
        "health, image and port, compared with the stack's config. Read-only.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--stack", default="production", metavar="NAME", help="stack (default: %(default)s)")
    add(
        "--project-dir",
        metavar="DIR",
        help="directory holding Pulumi.<stack>.yaml (default: current directory)",
    )
    add("--upstream-file", metavar="PATH", help="read this upstream file instead of upstreamFile")
    add(
        "--docker",
        metavar="PATH",
        help=f"docker CLI (default: {DEFAULT_DOCKER}, else docker on PATH)",
    )
    add("--json", action="store_true", help="print JSON instead of the table")
    return parser


def _docker_path(value: str | None) -> str:
    if value is None:
        if os.access(DEFAULT_DOCKER, os.X_OK):
            return DEFAULT_DOCKER
        found = shutil.which("docker")
        if found is None:
            msg = f"--docker: no docker CLI at {DEFAULT_DOCKER} or on PATH; pass --docker PATH"
            raise UsageError(msg)
        return found
    found = shutil.which(value)
    if found is None:
        _usage("--docker", "an executable docker CLI", value)
    return found


def parse_options(argv: Sequence[str], cwd: Path | None = None) -> StatusOptions:
    ns = build_parser().parse_args(list(argv))
    if not STACK_RE.fullmatch(ns.stack):
        _usage("--stack", "a stack name (letters, digits, '_', '.', '-')", ns.stack)
    project_dir = Path(ns.project_dir) if ns.project_dir else (cwd or Path.cwd())
    if not project_dir.is_dir():
        _usage("--project-dir", "an existing directory", str(project_dir))
    if ns.upstream_file is not None and not ns.upstream_file:
        _usage("--upstream-file", "a file path", ns.upstream_file)
    return StatusOptions(
        stack=ns.stack,
        project_dir=project_dir,
        upstream_file=ns.upstream_file,
        docker=_docker_path(ns.docker),
        as_json=ns.json,
    )


def load_settings(project_dir: Path, stack: str) -> Settings:
    """The stack's settings from its stack file and the declared defaults (no secrets)."""
    path = project_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        stacks = sorted(
            p.name.removeprefix("Pulumi.").removesuffix(".yaml")
            for p in project_dir.glob("Pulumi.*.yaml")
        )
        msg = (
            f"--stack: no {path.name} in {project_dir}; got {stack!r}. "
            f"Stacks there: {', '.join(stacks) or 'none'}"
        )
        raise UsageError(msg)
    try:
        raw = _read_stack_file(project_dir, stack)
    except (OSError, ValueError, yaml.YAMLError) as error:
        msg = f"{path}: cannot be read as a stack file ({error})"
        raise UsageError(msg) from None
    try:
        return parse_settings(raw, api_key="", project_dir=None)
    except ConfigError as error:
        raise UsageError(str(error)) from None


# --- gathering: files and docker -------------------------------------------------------------


def read_routing(
    upstream_file: str,
    upstream_name: str,
    selection_dir: str = "",
    slots: Sequence[str] = (),
) -> Routing:
    """Where Nginx routes per the files: the group the selection names (the first slot is
    the site's fallback), or the single group of a file written before the selection."""
    path = Path(upstream_file)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return Routing(upstream_file, upstream_name, None, "missing (no such file)")
    except OSError as error:
        return Routing(upstream_file, upstream_name, None, f"unreadable ({error.strerror})")
    try:
        groups = slot_groups(parse_upstream_groups(text), upstream_name)
        state = parse_upstream(text)
    except UpstreamParseError as error:
        return Routing(upstream_file, upstream_name, None, f"not an upstream file ({error})")
    if not groups or not slots or not selection_dir:
        return Routing(upstream_file, upstream_name, state)
    fallback = slots[0]
    try:
        present = read_markers(Path(selection_dir), upstream_name, slots)
    except UnsafeFileError as error:
        present, problem = frozenset(), f"{error}; Nginx uses its fallback {fallback}"
    else:
        problem = "" if present else describe(present, slots, fallback)
    chosen = nginx_choice(present, slots, fallback)
    servers = groups.get(chosen)
    name = group_name(upstream_name, chosen)
    if servers is None:
        return Routing(
            upstream_file, upstream_name, None, f"defines no upstream {name} for slot {chosen}"
        )
    return Routing(
        upstream_file,
        upstream_name,
        UpstreamState(name=name, slot=chosen, servers=servers),
        selection=describe(present, slots, fallback),
        selection_problem=problem,
    )


def ask_nginx(verify_url: str) -> tuple[str | None, str]:
    """The server Nginx's loopback verification server answers from, or why not known."""
    if not verify_url:
        return None, ""
    result = run_check(Check(verify_url), timeout=5)
    if result.upstream is None:
        return None, f"{verify_url} {result.detail}, without an upstream address"
    return last_upstream(result.upstream), ""


Runner = Callable[[Sequence[str]], "subprocess.CompletedProcess[str]"]


def run_docker(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv), capture_output=True, text=True, timeout=DOCKER_TIMEOUT_SECONDS, check=False
    )


def inspect_all(
    docker: str, kind: str, names: Sequence[str], runner: Runner
) -> tuple[list[dict[str, Any]], str]:
    """`docker <kind> inspect NAMES...`: the objects found, and a problem if Docker failed.

    Missing objects are not a problem here (Docker still prints the others and exits 1).
    """
    if not names:
        return [], ""
    try:
        done = runner([docker, kind, "inspect", *names])
    except (OSError, subprocess.TimeoutExpired) as error:
        return [], f"{docker} {kind} inspect failed ({error})"
    try:
        found = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        found = None
    if not isinstance(found, list):
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        return [], f"{kind} inspect exited {done.returncode}: {lines[-1]}"
    unexplained = [
        line
        for line in done.stderr.strip().splitlines()
        if line.strip() and "no such" not in line.lower()
    ]
    if done.returncode != 0 and unexplained:
        return found, f"{kind} inspect exited {done.returncode}: {unexplained[-1]}"
    return found, ""


def parse_docker_time(text: str) -> datetime | None:
    """Docker's RFC 3339 times carry nanoseconds; Python reads up to microseconds."""
    match = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)", text)
    if not match:
        return None
    fraction = (match.group(2) or "")[:7]
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    return datetime.fromisoformat(f"{match.group(1)}{fraction}{zone}")


def _binding(host_ip: str, host_port: str) -> str:
    host = host_ip or "0.0.0.0"
    return f"[{host}]:{host_port}" if ":" in host else f"{host}:{host_port}"


def published_ports(container: Mapping[str, Any]) -> tuple[str, ...]:
    """Host bindings while running (NetworkSettings), else as configured (HostConfig)."""
    live = (container.get("NetworkSettings") or {}).get("Ports") or {}
    configured = (container.get("HostConfig") or {}).get("PortBindings") or {}
    ports = live if any(live.values()) else configured
    bindings = {
        _binding(item.get("HostIp", ""), item.get("HostPort", ""))
        for items in ports.values()
        for item in items or []
        if item.get("HostPort")
    }
    return tuple(sorted(bindings))


def container_facts(
    name: str, container: Mapping[str, Any] | None, image: Mapping[str, Any] | None
) -> ContainerFacts:
    """One slot's facts from its `docker container inspect` (None: no such container)."""
    if container is None:
        return ContainerFacts(name=name, state=MISSING)
    state = container.get("State") or {}
    health = (state.get("Health") or {}).get("Status") or "none"
    image_id = str(container.get("Image", ""))
    created = parse_docker_time(str(image.get("Created", ""))) if image else None
    return ContainerFacts(
        name=name,
        state=str(state.get("Status", UNKNOWN)),
        health=health,
        image_id=image_id,
        image_created=created,
        published=published_ports(container),
    )


def gather(
    settings: Settings,
    stack: str,
    docker: str,
    upstream_file: str | None = None,
    runner: Runner = run_docker,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    nginx: Callable[[str], tuple[str | None, str]] = ask_nginx,
) -> StatusReport:
    """Every fact the report needs; never stops early."""
    hosts = settings.hosts or (HostSettings("local", "", (), settings.bind_address, ""),)
    multi = len(hosts) > 1
    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        gathered = list(
            pool.map(lambda host: _gather_host(settings, host, docker, runner, multi), hosts)
        )
    slots = [status for host_slots, _ in gathered for status in host_slots]
    problems = [(host.name, problem) for host, (_, problem) in zip(hosts, gathered, strict=True)]
    docker_problem = "" if multi else problems[0][1]
    live = settings.active_slot if settings.environment is Environment.PRODUCTION else Slot.STAGING
    return StatusReport(
        stack=stack,
        environment=settings.environment,
        live_slot=live,
        slots=tuple(slots),
        routing=_with_answer(
            read_routing(
                upstream_file or settings.router.upstream_file,
                settings.router.upstream_name,
                settings.router.selection_dir,
                [slot.value for slot in settings.slots],
            ),
            *nginx(settings.router.verify_url),
        ),
        checked_at=now(),
        docker_problem=docker_problem,
        watch=gates.read_record(
            gates.record_path(Path(upstream_file or settings.router.upstream_file))
        ),
        host_problems=tuple((name, problem) for name, problem in problems if multi and problem),
        canary=canary.read_record(Path(upstream_file or settings.router.upstream_file)),
    )


def _gather_host(
    settings: Settings, host: HostSettings, docker: str, runner: Runner, multi: bool
) -> tuple[list[SlotStatus], str]:
    """One host's slots (`docker -H <dockerHost>` for a host that has one) and the problem
    asking its Docker, if any. A host that does not answer costs at most the timeout."""
    if host.docker_host:
        base = runner

        def runner(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
            return base([argv[0], "-H", host.docker_host, *argv[1:]])

    names = {slot: render.container_name(settings.service_name, slot) for slot in settings.slots}
    containers, container_problem = inspect_all(docker, "container", list(names.values()), runner)
    by_name = {str(c.get("Name", "")).lstrip("/"): c for c in containers}
    image_ids = sorted({str(c.get("Image")) for c in containers if c.get("Image")})
    images, image_problem = inspect_all(docker, "image", image_ids, runner)
    by_id = {str(i.get("Id")): i for i in images}
    slots = []
    for slot, name in names.items():
        if container_problem and name not in by_name:
            facts = ContainerFacts(name=name, state=UNKNOWN)
        else:
            container = by_name.get(name)
            image = by_id.get(str(container.get("Image"))) if container else None
            facts = container_facts(name, container, image)
        port = settings.slot_ports[slot]
        server = (
            host.server(port)
            if host.nginx_address
            else render.slot_server(settings.bind_address, port)
        )
        slots.append(
            SlotStatus(
                slot=slot,
                port=port,
                server=server,
                container=facts,
                host=host.name if multi else "",
            )
        )
    return slots, container_problem or image_problem


def _with_answer(routing: Routing, answered: str | None, problem: str) -> Routing:
    return replace(routing, answered=answered, verify_problem=problem)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        opts = parse_options(sys.argv[1:] if argv is None else argv)
        settings = load_settings(opts.project_dir, opts.stack)
    except UsageError as error:
        print(f"status: {error}", file=sys.stderr)
        return Outcome.USAGE
    except SystemExit as done:  # --help
        return int(done.code or 0)
    report = gather(settings, opts.stack, opts.docker, opts.upstream_file)
    print(status_json(report) if opts.as_json else render_status(report), end="", flush=True)
    return assess(report).outcome
