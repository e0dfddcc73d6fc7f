"""Per Docker host: its docker provider, network and image build (the slots are declared by
program._declare_slots with the options made here).

The first host keeps the single-host program's names and, when it has no `dockerHost`, the
stack's default docker provider: an existing stack then upgrades with nothing to show in a
preview (same URNs, same provider reference, same daemon). An explicit provider would not
replace anything either: the engine replaces on a provider change only when the provider's
DiffConfig asks for it (pulumi/pulumi pkg/resource/deploy/step_generator.go,
`providerChanged`), and pulumi-docker's (the bridge's, provider/hybrid.go) asks only for
config fields marked ForcesProviderReplace, of which it has none. It would instead point the
host's resources at whatever daemon its `host` names, silently; that is why a deployed
host's dockerHost may not change (hosts.docker_host_change).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker

from nocturna_infra.hosts import HostSettings, resource_name
from nocturna_infra.program.components.image import ServiceImage, ServiceImageArgs
from nocturna_infra.program.components.network import ServiceNetwork, ServiceNetworkArgs
from nocturna_infra.settings import Settings


@dataclass(frozen=True)
class HostBase:
    """What a host's slots stand on."""

    host: HostSettings
    first: bool
    opts: pulumi.ResourceOptions
    """Options every resource on this host is declared with (its provider)."""
    provider: docker.Provider | None
    network: ServiceNetwork
    image: ServiceImage


def docker_provider(host: HostSettings, first: bool) -> docker.Provider | None:
    """An explicit provider for the host, or None for the first host without `dockerHost`."""
    if first and not host.docker_host:
        return None
    return docker.Provider(
        f"docker-{host.name}",
        host=host.docker_host,
        ssh_opts=list(host.ssh_opts) if host.ssh_opts else None,
    )


def declare_host_base(
    settings: Settings, host: HostSettings, first: bool, build_args: Mapping[str, str]
) -> HostBase:
    """The host's provider, network and image: each host builds from the same context."""
    provider = docker_provider(host, first)
    opts = pulumi.ResourceOptions(providers={"docker": provider} if provider else None)
    name = resource_name(settings.service_name, host, first)
    network = ServiceNetwork(
        name,
        ServiceNetworkArgs(name=settings.network_name, environment=settings.environment),
        opts=opts,
    )
    image = ServiceImage(
        name,
        ServiceImageArgs(
            image_name=settings.image.name,
            context=settings.image.context,
            dockerfile=settings.image.dockerfile,
            platform=settings.image.platform,
            build_args=dict(build_args),
        ),
        opts=opts,
    )
    return HostBase(host, first, opts, provider, network, image)


def on_host(container_args: Mapping[str, Any], host: HostSettings) -> dict[str, Any]:
    """`render.container_args` for a slot on `host`: its ports published on the host's
    publishAddress (for the first host by default bindAddress, so nothing changes)."""
    ports = [{**port, "ip": host.publish_address} for port in container_args["ports"]]
    return {**container_args, "ports": ports}
