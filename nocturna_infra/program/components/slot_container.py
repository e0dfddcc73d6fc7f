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
# The engine's key for "the last create left initialization errors" (a failed health
# `wait`): with it, the next `up` re-creates the container instead of accepting it as is
# (pulumi/pulumi pkg/resource/deploy/step_generator.go, applyReplaceOnChanges).
REPLACE_IF_INIT_FAILED = "#initerror"


@dataclass(frozen=True)
class SlotContainerArgs:
    container_args: Mapping[str, pulumi.Input[Any]]
    """docker.Container keyword arguments (see render.container_args), without secrets."""
    secret_env: pulumi.Input[Mapping[str, str]]
    """Variables appended to `envs` as secrets: API_KEY, and `env` when it is secret."""
    protect: bool = False
    """The slot must not be replaced in this run (see program.slot_is_protected)."""
    depends_on: Sequence[pulumi.Resource] = ()


class SlotContainer(pulumi.ComponentResource):
    """A fixed-name container for one slot; replacements always stop the old one first.

    A slot that must not be replaced is `protect`ed: the engine refuses to replace a
    resource whose old and new state are both protected, and bails before any step runs
    (step_generator.go, continueStepsFromDiff), so a diff nobody expected fails the `up`
    instead of stopping the slot. A slot that may take the release is not protected
    (unprotect-and-replace in one run is allowed) and is re-created on the next `up` if its
    health wait failed.
    """

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
        envs: pulumi.Output[list[str]] = pulumi.Output.all(
            kwargs.pop("envs", []), args.secret_env
        ).apply(lambda values: [*values[0], *(f"{k}={v}" for k, v in values[1].items())])
        container = docker.Container(
            f"{name}-container",
            envs=envs,  # secret, as `secret_env` is
            **kwargs,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(args.depends_on),
                protect=args.protect,
                # Fixed names and host ports: never create the new container first.
                delete_before_replace=True,
                replace_on_changes=APPLY_BY_REPLACING
                + ([] if args.protect else [REPLACE_IF_INIT_FAILED]),
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
