"""The Pulumi program: settings from config, then network, image, slots and router."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any, Final

import pulumi
from pulumi.runtime.sync_await import _sync_await

from nocturna_infra import render
from nocturna_infra.ca_certs import CaCertError, read_extra_ca_certs
from nocturna_infra.deployment import (
    STATE_VERSION,
    RecordedState,
    SlotAction,
    after_switch_back,
    is_switch,
    plan_actions,
    release_fingerprint,
    routing_conflict,
    takes_release,
)
from nocturna_infra.image import ServiceImage, ServiceImageArgs
from nocturna_infra.network import ServiceNetwork, ServiceNetworkArgs
from nocturna_infra.router import Router, RouterArgs
from nocturna_infra.settings import PROJECT, ConfigError, Environment, Settings
from nocturna_infra.slot import Slot
from nocturna_infra.slot_container import SlotContainer, SlotContainerArgs
from nocturna_infra.traffic import gates
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


def main(project_dir: Path | None = None) -> None:
    """Declare the whole stack. Reads config here, never at import."""
    project_dir = project_dir or Path.cwd()
    settings = Settings.from_config(pulumi.Config(), project_dir)
    build_args = render.image_build_args(settings, _extra_ca_certs(settings))
    previous = read_previous_state(settings.state_stack)
    production = settings.environment is Environment.PRODUCTION
    active = settings.active_slot if production else None
    routed = routed_slot(settings)
    previous = after_switch_back(previous, routed, switched_back(settings))
    conflict = routing_conflict(routed, active, previous)
    if conflict:
        msg = f"{settings.router.upstream_file}: {conflict}"
        raise DriftError(msg)
    name = settings.service_name

    network = ServiceNetwork(
        name, ServiceNetworkArgs(name=settings.network_name, environment=settings.environment)
    )
    image = ServiceImage(
        name,
        ServiceImageArgs(
            image_name=settings.image.name,
            context=settings.image.context,
            dockerfile=settings.image.dockerfile,
            platform=settings.image.platform,
            build_args=build_args,
        ),
    )

    live = settings.active_slot if production else Slot.STAGING
    templates = {slot: render.container_args(settings, slot, "") for slot in settings.slots}
    release = pulumi.Output.all(image.image_id, settings.api_key).apply(
        lambda values: release_fingerprint(
            {slot: {**args, IMAGE_KEY: values[0]} for slot, args in templates.items()}, values[1]
        )
    )
    switching = is_switch(previous, active)
    if switching and previous is not None:
        release.apply(lambda current: _warn_if_pending(previous, current, live))

    containers: dict[Slot, SlotContainer] = {}
    slot_kwargs: dict[Slot, dict[str, pulumi.Input[Any]]] = {}
    api_keys: dict[Slot, pulumi.Output[str]] = {}
    for slot, action in plan_actions(previous, settings.slots, active).items():
        recorded = previous.slots.get(slot, {}) if previous else {}
        recorded_key = previous.api_keys.get(slot) if previous else None
        takes = pulumi.Output.unsecret(release.apply(partial(takes_release, action, previous)))
        new = {**templates[slot], IMAGE_KEY: image.image_id}
        slot_kwargs[slot] = _choose_arguments(action, takes, new, recorded)
        api_keys[slot] = _choose_api_key(action, takes, settings.api_key, recorded_key)
        containers[slot] = SlotContainer(
            render.container_name(name, slot),
            SlotContainerArgs(
                container_args=slot_kwargs[slot],
                api_key=api_keys[slot],
                depends_on=[network, image],
            ),
        )

    host_ports = {slot: _host_port(kwargs) for slot, kwargs in slot_kwargs.items()}
    live_port = host_ports[live]
    all_ports = pulumi.Output.all(*(host_ports[slot] for slot in settings.slots)).apply(
        lambda ports: dict(zip(settings.slots, ports, strict=True))
    )
    router = Router(
        name,
        RouterArgs(
            switch_command=all_ports.apply(
                lambda ports: render.gated_switch_command(settings, live, ports)
            ),
            live_slot=live.value,
            upstream_file=settings.router.upstream_file,
            upstream_name=settings.router.upstream_name,
            live_server=live_port.apply(partial(render.slot_server, settings.bind_address)),
            standby_servers=all_ports.apply(partial(_standby_servers, settings, live)),
            selection_dir=settings.router.selection_dir,
            environment=_switch_environment(settings, api_keys[live]),
            depends_on=list(containers.values()),
        ),
    )

    pulumi.export("environment", settings.environment.value)
    pulumi.export("liveSlot", live.value)
    if production:
        pulumi.export("standbySlot", live.other.value)
    pulumi.export("upstreamFile", settings.router.upstream_file)
    pulumi.export("latestBuild", {"image": settings.image.name, "imageId": image.image_id})
    pulumi.export(
        "slots",
        {
            slot.value: {
                "container": render.container_name(name, slot),
                "image": container.image,
                "url": host_ports[slot].apply(
                    lambda port: render.slot_url(settings.bind_address, port, settings.health.path)
                ),
            }
            for slot, container in containers.items()
        },
    )
    pulumi.export("switchOutput", router.output)
    pulumi.export(
        "deployment",
        {
            "version": STATE_VERSION,
            "liveSlot": live.value,
            "slots": {slot.value: kwargs for slot, kwargs in slot_kwargs.items()},
        },
    )
    recorded_release = (
        pulumi.Output.from_input(previous.release)
        if switching and previous is not None and previous.release
        else release
    )
    pulumi.export(
        "deploymentSecrets",
        pulumi.Output.secret(
            {
                "release": recorded_release,
                "apiKeys": {slot.value: key for slot, key in api_keys.items()},
            }
        ),
    )


def switched_back(settings: Settings) -> tuple[Slot, Slot] | None:
    """(from, to) if the last switch's watch moved traffic back (its record, on this host)."""
    record = gates.read_record(gates.record_path(Path(settings.router.upstream_file)))
    pair = gates.switched_back(record)
    names = {slot.value: slot for slot in settings.slots}
    if pair is None or pair[0] not in names or pair[1] not in names:
        return None
    return names[pair[0]], names[pair[1]]


def _switch_environment(
    settings: Settings, live_key: pulumi.Output[str]
) -> pulumi.Output[dict[str, str]] | None:
    """The live slot's API key for checks naming `${API_KEY}`: secret, so the state keeps it
    encrypted; other names come from the environment `pulumi up` runs in."""
    if "API_KEY" not in render.switch_environment_names(settings):
        return None
    environment: pulumi.Output[dict[str, str]] = live_key.apply(lambda key: {"API_KEY": key})
    return pulumi.Output.secret(environment)


def _standby_servers(settings: Settings, live: Slot, ports: Mapping[Slot, int]) -> str:
    """`slot=server` of every other slot: their groups are in the upstream file too."""
    return " ".join(
        f"{slot.value}={render.slot_server(settings.bind_address, port)}"
        for slot, port in ports.items()
        if slot is not live
    )


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


def _choose_api_key(
    action: SlotAction,
    takes_release: pulumi.Output[bool],
    current: pulumi.Input[str],
    recorded: str | None,
) -> pulumi.Output[str]:
    if action is SlotAction.DEPLOY or recorded is None:
        return pulumi.Output.secret(current)
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
