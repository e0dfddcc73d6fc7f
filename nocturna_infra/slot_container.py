"""One slot's container, declared from recorded or freshly rendered arguments."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker

# Fields the provider records without applying them to a running container; a change must
# replace the container to take effect (and only ever reaches the standby slot).
APPLY_BY_REPLACING = ["healthcheck", "tmpfs", "init"]


@dataclass(frozen=True)
class SlotContainerArgs:
    container_args: Mapping[str, pulumi.Input[Any]]
    """docker.Container keyword arguments (see render.container_args), without API_KEY."""
    api_key: pulumi.Input[str]
    depends_on: Sequence[pulumi.Resource] = ()


class SlotContainer(pulumi.ComponentResource):
    """A fixed-name container for one slot; replacements always stop the old one first."""

    container_id: pulumi.Output[str]
    """Docker ID of the container."""
    container_name: pulumi.Output[str]
    """Docker name of the container."""
    image: pulumi.Output[str]
    """Image ID the container runs."""

    def __init__(
        self, name: str, args: SlotContainerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("nocturna:index:SlotContainer", name, None, opts)
        kwargs = dict(args.container_args)
        envs = pulumi.Output.all(kwargs.pop("envs", []), args.api_key).apply(
            lambda values: [*values[0], f"API_KEY={values[1]}"]
        )
        container = docker.Container(
            f"{name}-container",
            envs=envs,
            **kwargs,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(args.depends_on),
                # Fixed names and host ports: never create the new container first.
                delete_before_replace=True,
                replace_on_changes=APPLY_BY_REPLACING,
            ),
        )
        self.container_id = container.id
        self.container_name = container.name
        self.image = container.image
        self.register_outputs(
            {
                "container_id": self.container_id,
                "container_name": self.container_name,
                "image": self.image,
            }
        )
