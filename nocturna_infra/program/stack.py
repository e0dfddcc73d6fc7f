"""The Pulumi program: settings from config, then network, image, slots and router."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final

import pulumi
from pulumi.runtime.sync_await import _sync_await

from nocturna_infra.hosts import HostSettings, docker_host_change, hosts_release, resource_name
from nocturna_infra.program import render
from nocturna_infra.program.ca_certs import CaCertError, read_extra_ca_certs
from nocturna_infra.program.components.host_stack import HostBase, declare_host_base, on_host
from nocturna_infra.program.components.image import ServiceImage
from nocturna_infra.program.components.network import ServiceNetwork
from nocturna_infra.program.components.router import Router, RouterArgs
from nocturna_infra.program.components.slot_container import SlotContainer, SlotContainerArgs
from nocturna_infra.program.deployment import (
    STATE_VERSION,
    RecordedState,
    SlotAction,
    after_switch_back,
    is_protected,
    is_switch,
    plan_actions,
    release_fingerprint,
    routing_conflict,
    takes_release,
)
from nocturna_infra.program.record import in_read_back_form, recorded_slot_problem
from nocturna_infra.settings import PROJECT, ConfigError, Environment, Settings
from nocturna_infra.slot import Slot
from nocturna_infra.traffic import canary, gates
from nocturna_infra.traffic.safe_files import UnsafeFileError
from nocturna_infra.traffic.selection import nginx_choice, read_markers
from nocturna_infra.traffic.upstream import UpstreamParseError, parse_upstream

# The container argument that comes from the build rather than from settings.
IMAGE_KEY: Final = "image"


def read_previous_state(stack_name: str) -> RecordedState | None:
    """What the last run of this stack recorded, as plain values, before anything is declared.

    Awaited synchronously (as the SDK's own synchronous invokes are) so that which slot may
    change is decided in Python, and the live slot's arguments stay known in `preview`.
    """
    reference = pulumi.StackReference("previous-deployment", stack_name=stack_name)
    plain = _sync_await(reference.get_output_details("deployment"))
    secret = _sync_await(reference.get_output_details("deploymentSecrets"))
    return RecordedState.from_outputs(
        plain.value, secret.secret_value if secret.secret_value is not None else secret.value
    )


class DriftError(pulumi.RunError):
    """Nginx routes somewhere this run does not expect; going ahead could cause an outage."""


def routed_slot(settings: Settings) -> Slot | None:
    """The slot Nginx routes to on this host, if it can be told: the selection file the
    switch maintains, else (a host not yet migrated) the single-group upstream file.

    None when neither exists (first deployment, or Pulumi running off the host, as in
    a pull-request preview), they are unreadable, or the file routes to no single slot.
    """
    router = settings.router
    names = [slot.value for slot in settings.slots]
    try:
        present = read_markers(Path(router.selection_dir), router.upstream_name, names)
    except UnsafeFileError:
        present = frozenset()
    if present:
        return Slot(nginx_choice(present, names, names[0]))
    try:
        state = parse_upstream(Path(router.upstream_file).read_text())
    except (OSError, UnicodeDecodeError, UpstreamParseError):
        return None
    by_server = {
        render.slot_server(settings.bind_address, port): slot
        for slot, port in settings.slot_ports.items()
    }
    slots = {by_server.get(server) for server in state.servers}
    return slots.pop() if len(slots) == 1 else None


class RecordError(pulumi.RunError):
    """The recorded deployment holds container arguments this program would never declare."""


def checked_previous_state(settings: Settings) -> RecordedState | None:
    """The previous run's record, refused if a slot in it is not what this program declares,
    or if a host's `dockerHost` differs from the one its resources were deployed on."""
    previous = read_previous_state(settings.state_stack)
    moved = docker_host_change(settings.hosts, previous.docker_hosts) if previous else None
    if moved:
        msg = f"{PROJECT}:{moved}"
        raise ConfigError(msg)
    for index, host in enumerate(settings.hosts):
        if previous is not None:
            _check_host_record(settings, previous.on_host(host.name if index else None), host)
    return previous


def _check_host_record(settings: Settings, previous: RecordedState, host: HostSettings) -> None:
    where = f" on host {host.name}" if len(settings.hosts) > 1 else ""
    for slot, recorded in previous.slots.items():
        if slot not in settings.slots:
            continue
        template = on_host(render.container_args(settings, slot, ""), host)
        problem = recorded_slot_problem(slot, recorded, template)
        if problem:
            problem += where
            msg = (
                f"stack {settings.state_stack}, output `deployment`: {problem}. Refusing to "
                "declare a container from it. If you changed that setting on purpose, set it "
                "back: it cannot change under a kept slot. Otherwise the state was written "
                "outside nocturna-infra: compare `pulumi stack output deployment --json` with "
                "`python -m nocturna_infra.status` and restore a trusted state "
                "(`pulumi stack import`)."
            )
            raise RecordError(msg)


@dataclass(frozen=True)
class DeclaredSlot:
    container: SlotContainer
    container_args: dict[str, pulumi.Input[Any]]
    """What the slot runs, without secrets: recorded in the `deployment` output."""
    secret_env: pulumi.Output[dict[str, str]]
    """API_KEY and any secret `env`: recorded in `deploymentSecrets`."""


def main(project_dir: Path | None = None) -> None:
    """Declare the whole stack. Reads config here, never at import."""
    project_dir = project_dir or Path.cwd()
    settings = Settings.from_config(pulumi.Config(), project_dir)
    build_args = render.image_build_args(settings, _extra_ca_certs(settings))
    previous = checked_previous_state(settings)
    production = settings.environment is Environment.PRODUCTION
    active = settings.active_slot if production else None
    routed = routed_slot(settings)
    previous = after_switch_back(previous, routed, switched_back(settings))
    conflict = routing_conflict(routed, active, previous)
    if conflict:
        msg = f"{settings.router.upstream_file}: {conflict}"
        raise DriftError(msg)
    bases = [
        declare_host_base(settings, host, index == 0, build_args)
        for index, host in enumerate(settings.hosts)
    ]
    live = settings.active_slot if production else Slot.STAGING
    release = _release(settings, [base.image.image_id for base in bases])
    switching = is_switch(previous, active)
    if switching and previous is not None:
        release.apply(lambda current: _warn_if_pending(previous, current, live))
    note = render.progressive_note(settings, live) if switching else ""
    if note:
        pulumi.log.info(note)
    per_host = [
        _declare_slots(settings, previous, active, base.image.image_id, release, base.network, base)
        for base in bases
    ]
    slots = per_host[0]
    host_ports = {slot: _host_port(declared.container_args) for slot, declared in slots.items()}
    router = _declare_router(settings, live, bases, per_host, project_dir)
    recorded_release = (
        pulumi.Output.from_input(previous.release)
        if switching and previous is not None and previous.release
        else release
    )
    _export(
        settings,
        live,
        bases[0].image,
        slots,
        host_ports,
        router,
        recorded_release,
        _host_records(bases, per_host),
    )
    _export_hosts(bases, per_host)


def _declare_router(
    settings: Settings,
    live: Slot,
    bases: Sequence[HostBase],
    per_host: Sequence[dict[Slot, DeclaredSlot]],
    project_dir: Path,
) -> Router:
    """The switch, given every slot's server on every host (the first host's as before). It
    runs in the project directory when a smoke check reads a body file there (by its path:
    the body stays off the command line)."""
    body_files = any(check.body_file for check in settings.gates.smoke_checks)
    slots = per_host[0]
    all_ports = _ports_by_slot(settings, slots)
    more = [
        _ports_by_slot(settings, declared).apply(partial(_with_address, base.host.nginx_address))
        for base, declared in zip(bases[1:], per_host[1:], strict=True)
    ]
    every = pulumi.Output.all(all_ports, *more)
    return Router(
        settings.service_name,
        RouterArgs(
            switch_command=every.apply(
                lambda ports: render.gated_switch_command(settings, live, ports[0], ports[1:])
            ),
            live_slot=live.value,
            upstream_file=settings.router.upstream_file,
            upstream_name=settings.router.upstream_name,
            live_server=_live_servers(settings, live, _host_port(slots[live].container_args), more),
            standby_servers=every.apply(
                lambda ports: _standby_servers(settings, live, ports[0], ports[1:])
            ),
            selection_dir=settings.router.selection_dir,
            live_container=slots[live].container.container_id,
            environment=_switch_environment(settings, slots[live].secret_env),
            directory=str(project_dir) if body_files else None,
            # Only containers: in a switch or rollback, nothing it waits for waits for a build.
            depends_on=[declared.container for host in per_host for declared in host.values()],
        ),
    )


def _release(settings: Settings, image_ids: list[pulumi.Output[str]]) -> pulumi.Output[str]:
    """The fingerprint of what a deploy would give the slots now (secret); with several
    hosts it covers every host's build (a single host's value is unchanged)."""
    templates = {slot: render.container_args(settings, slot, "") for slot in settings.slots}
    names = [host.name for host in settings.hosts[1:]]
    return pulumi.Output.all(settings.api_key, *image_ids).apply(
        lambda values: hosts_release(
            release_fingerprint(
                {slot: {**args, IMAGE_KEY: values[1]} for slot, args in templates.items()},
                values[0],
                render.secret_env(settings),
            ),
            dict(zip(names, values[2:], strict=True)),
        )
    )


def _declare_slots(
    settings: Settings,
    previous: RecordedState | None,
    active: Slot | None,
    image_id: pulumi.Output[str],
    release: pulumi.Output[str],
    network: ServiceNetwork,
    base: HostBase,
) -> dict[Slot, DeclaredSlot]:
    """One container per slot, from its record or the release as `plan_actions` decides.

    A slot depends on the image only through its `image` input, and only when it may take
    the release: a frozen slot never waits for a build.
    """
    current_secrets = pulumi.Output.secret(settings.api_key).apply(
        lambda key: {"API_KEY": key, **render.secret_env(settings)}
    )
    declared: dict[Slot, DeclaredSlot] = {}
    if previous is not None:
        previous = previous.on_host(None if base.first else base.host.name)
    for slot, action in plan_actions(previous, settings.slots, active).items():
        recorded = in_read_back_form(previous.slots.get(slot, {})) if previous else {}
        recorded_key = previous.api_keys.get(slot) if previous else None
        recorded_secrets = (
            {"API_KEY": recorded_key, **previous.secret_env.get(slot, {})}
            if previous is not None and recorded_key is not None
            else None
        )
        takes = pulumi.Output.unsecret(release.apply(partial(takes_release, action, previous)))
        new = {**on_host(render.container_args(settings, slot, ""), base.host), IMAGE_KEY: image_id}
        kwargs = _choose_arguments(action, takes, new, recorded)
        secret_env = _choose_secret_env(action, takes, current_secrets, recorded_secrets)
        container = SlotContainer(
            resource_name(
                render.container_name(settings.service_name, slot), base.host, base.first
            ),
            SlotContainerArgs(
                container_args=kwargs,
                secret_env=secret_env,
                protect=is_protected(action, slot, active),
                depends_on=[network],
            ),
            opts=base.opts,
        )
        declared[slot] = DeclaredSlot(container, kwargs, secret_env)
    return declared


def _export(
    settings: Settings,
    live: Slot,
    image: ServiceImage,
    slots: dict[Slot, DeclaredSlot],
    host_ports: dict[Slot, pulumi.Output[int]],
    router: Router,
    release: pulumi.Output[str],
    host_records: tuple[dict[str, Any], dict[str, Any]] = ({}, {}),
) -> None:
    pulumi.export("environment", settings.environment.value)
    pulumi.export("liveSlot", live.value)
    if settings.environment is Environment.PRODUCTION:
        pulumi.export("standbySlot", live.other.value)
    pulumi.export("upstreamFile", settings.router.upstream_file)
    pulumi.export("latestBuild", {"image": settings.image.name, "imageId": image.image_id})
    pulumi.export(
        "slots",
        {
            slot.value: {
                "container": render.container_name(settings.service_name, slot),
                "image": declared.container.image,
                "url": host_ports[slot].apply(
                    lambda port: render.slot_url(settings.bind_address, port, settings.health.path)
                ),
            }
            for slot, declared in slots.items()
        },
    )
    pulumi.export("switchOutput", router.output)
    pulumi.export(
        "deployment",
        {
            "version": STATE_VERSION,
            "liveSlot": live.value,
            "slots": {slot.value: declared.container_args for slot, declared in slots.items()},
            **({"hosts": host_records[0]} if host_records[0] else {}),
            "dockerHosts": {host.name: host.docker_host for host in settings.hosts},
        },
    )
    pulumi.export(
        "deploymentSecrets",
        pulumi.Output.secret(
            {
                "release": release,
                **_secret_record(slots),
                **({"hosts": host_records[1]} if host_records[1] else {}),
            }
        ),
    )


def switched_back(settings: Settings) -> tuple[Slot, Slot] | None:
    """(from, to) if the last switch's watch, or its canary steps, moved traffic back (their
    records, on this host)."""
    upstream_file = Path(settings.router.upstream_file)
    pair = canary.stepped_back(
        canary.read_record(upstream_file), gates.read_record(gates.record_path(upstream_file))
    )
    names = {slot.value: slot for slot in settings.slots}
    if pair is None or pair[0] not in names or pair[1] not in names:
        return None
    return names[pair[0]], names[pair[1]]


def _switch_environment(
    settings: Settings, live_secrets: pulumi.Output[dict[str, str]]
) -> pulumi.Output[dict[str, str]] | None:
    """What the smoke checks' templates name, from the live slot (its API key, its secret
    `env` or the plain `env`): secret, so the state keeps it encrypted. Settings refuse any
    other name, so nothing comes from the environment `pulumi up` runs in."""
    names = render.switch_environment_names(settings)
    if not names:
        return None
    environment: pulumi.Output[dict[str, str]] = live_secrets.apply(
        lambda found: render.switch_environment(names, found, settings.env)
    )
    return pulumi.Output.secret(environment)


def _host_records(
    bases: Sequence[HostBase], per_host: Sequence[dict[Slot, DeclaredSlot]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every other host's slots for `deployment.hosts` and `deploymentSecrets.hosts`; the
    first host's stay where the single-host record keeps them, so old records still read."""
    plain: dict[str, Any] = {}
    secret: dict[str, Any] = {}
    for base, slots in zip(bases[1:], per_host[1:], strict=True):
        plain[base.host.name] = {
            "slots": {slot.value: declared.container_args for slot, declared in slots.items()}
        }
        secret[base.host.name] = _secret_record(slots)
    return plain, secret


def _secret_record(slots: Mapping[Slot, DeclaredSlot]) -> dict[str, Any]:
    return {
        "apiKeys": {
            slot.value: declared.secret_env.apply(lambda env: env["API_KEY"])
            for slot, declared in slots.items()
        },
        "secretEnv": {
            slot.value: declared.secret_env.apply(
                lambda env: {k: v for k, v in env.items() if k != "API_KEY"}
            )
            for slot, declared in slots.items()
        },
    }


def _export_hosts(bases: Sequence[HostBase], per_host: Sequence[dict[Slot, DeclaredSlot]]) -> None:
    """With several hosts, where each host's slots are (the `slots` output is the first's)."""
    if len(bases) < 2:
        return
    pulumi.export(
        "hosts",
        {
            base.host.name: {
                "dockerHost": base.host.docker_host or "(default provider)",
                "slots": {
                    slot.value: {
                        "image": declared.container.image,
                        "server": _host_port(declared.container_args).apply(base.host.server),
                    }
                    for slot, declared in slots.items()
                },
            }
            for base, slots in zip(bases, per_host, strict=True)
        },
    )


def _standby_servers(
    settings: Settings,
    live: Slot,
    ports: Mapping[Slot, int],
    more: Sequence[tuple[str, Mapping[Slot, int]]] = (),
) -> str:
    """`slot=server` of every other slot on every host: their groups are in the upstream
    file too (one host: exactly the single-host value)."""
    return " ".join(
        f"{slot.value}={server}"
        for slot in ports
        if slot is not live
        for server in [
            render.first_host_server(settings, ports[slot]),
            *(f"{address}:{other[slot]}" for address, other in more),
        ]
    )


def _live_servers(
    settings: Settings,
    live: Slot,
    port: pulumi.Output[int],
    more: Sequence[pulumi.Output[tuple[str, dict[Slot, int]]]],
) -> pulumi.Output[str]:
    """The live slot's servers, space-separated (one host: the single-host value), so adding
    or removing a host re-runs the router, which rewrites the upstream file once."""
    return pulumi.Output.all(port, *more).apply(
        lambda values: " ".join(
            [
                render.first_host_server(settings, values[0]),
                *(f"{address}:{ports[live]}" for address, ports in values[1:]),
            ]
        )
    )


def _ports_by_slot(
    settings: Settings, slots: Mapping[Slot, DeclaredSlot]
) -> pulumi.Output[dict[Slot, int]]:
    """Every slot's host port on one host."""
    return pulumi.Output.all(
        *(_host_port(slots[slot].container_args) for slot in settings.slots)
    ).apply(lambda ports: dict(zip(settings.slots, ports, strict=True)))


def _with_address(address: str, ports: dict[Slot, int]) -> tuple[str, dict[Slot, int]]:
    return (address, ports)


def _host_port(container_args: dict[str, pulumi.Input[Any]]) -> pulumi.Output[int]:
    """The host port a slot's container publishes (recorded numbers come back as floats)."""
    return pulumi.Output.from_input(container_args["ports"]).apply(
        lambda ports: int(ports[0]["external"])
    )


def _extra_ca_certs(settings: Settings) -> str:
    directory = settings.image.extra_ca_certs_dir
    if directory is None:
        return ""
    try:
        return read_extra_ca_certs(directory)
    except CaCertError as error:
        msg = f"{PROJECT}:extraCaCertsDir: {error}. Only PEM CA certificates (*.crt) belong there."
        raise ConfigError(msg) from None


def _choose_arguments(
    action: SlotAction,
    takes_release: pulumi.Output[bool],
    new: dict[str, pulumi.Input[Any]],
    recorded: Any,
) -> dict[str, pulumi.Input[Any]]:
    """Per argument: the recorded value (frozen), the new one (deploy), or decided later.

    Arguments equal in both stay plain, so `preview` shows them as unchanged even while the
    decision waits for the image build.
    """
    if action is SlotAction.DEPLOY:
        return new
    if action is SlotAction.FROZEN:
        return dict(recorded)
    chosen: dict[str, pulumi.Input[Any]] = {}
    for key in sorted(set(new) | set(recorded)):
        old_value = recorded.get(key)
        new_value = new.get(key)
        if key != IMAGE_KEY and old_value == new_value:
            chosen[key] = new_value
        else:
            chosen[key] = pulumi.Output.all(takes_release, new_value).apply(
                partial(_new_if_taken, old_value)
            )
    return chosen


def _choose_secret_env(
    action: SlotAction,
    takes_release: pulumi.Output[bool],
    current: pulumi.Output[dict[str, str]],
    recorded: dict[str, str] | None,
) -> pulumi.Output[dict[str, str]]:
    if action is SlotAction.DEPLOY or recorded is None:
        return current
    if action is SlotAction.FROZEN:
        return pulumi.Output.secret(recorded)
    return pulumi.Output.secret(
        pulumi.Output.all(takes_release, current).apply(partial(_new_if_taken, recorded))
    )


def _new_if_taken(old: Any, taken_and_new: list[Any]) -> Any:
    """[takes the release?, new value] -> the value the slot runs."""
    taken, new = taken_and_new
    return new if taken else old


def _warn_if_pending(previous: RecordedState, current: str, live: Slot) -> None:
    if previous.release != current:
        pulumi.log.warn(
            f"activeSlot changed to {live}: only traffic moves in this run. The new build or "
            f"settings go to the standby ({live.other}) on the next `pulumi up`."
        )
