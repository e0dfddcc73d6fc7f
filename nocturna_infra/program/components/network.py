"""The user-defined bridge network every container of the stack joins."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_docker as docker


@dataclass(frozen=True)
class ServiceNetworkArgs:
    name: str
    environment: str


class ServiceNetwork(pulumi.ComponentResource):
    """A Docker network with a fixed name, so containers can find each other by alias."""

    network_name: pulumi.Output[str]
    """Name of the Docker network, to attach containers to."""

    def __init__(
        self, name: str, args: ServiceNetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("nocturna:index:ServiceNetwork", name, None, opts)
        network = docker.Network(
            f"{name}-network",
            name=args.name,
            driver="bridge",
            labels=[
                docker.NetworkLabelArgs(label="com.nocturna.environment", value=args.environment)
            ],
            # Networks cannot be updated; a replacement under the same name must go first.
            # Protected: the live container is attached to it, so the engine refuses any
            # replacement (step_generator.go, continueStepsFromDiff) and `pulumi destroy`
            # needs a deliberate `pulumi state unprotect` (docs/operations.md).
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True, protect=True),
        )
        self.network_name = network.name
        self.register_outputs({"network_name": self.network_name})
