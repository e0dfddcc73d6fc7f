"""The service image, built with BuildKit on the Docker host and kept local."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker


@dataclass(frozen=True)
class ServiceImageArgs:
    image_name: str
    context: str
    dockerfile: str
    platform: str
    build_args: Mapping[str, str]


class ServiceImage(pulumi.ComponentResource):
    """A docker.Image that is never pushed: its local image ID is the immutable reference."""

    image_id: pulumi.Output[str]
    """Local image ID (`sha256:...`); every real rebuild changes it."""
    image_name: pulumi.Output[str]
    """The mutable `repository:tag` the build is also tagged with, for humans."""

    def __init__(
        self, name: str, args: ServiceImageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("nocturna:index:ServiceImage", name, None, opts)
        image = docker.Image(
            f"{name}-image",
            image_name=args.image_name,
            skip_push=True,
            build=docker.DockerBuildArgs(
                context=args.context,
                dockerfile=args.dockerfile,
                args=dict(args.build_args),
                platform=args.platform,
                builder_version=docker.BuilderVersion.BUILDER_BUILD_KIT,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        # With skip_push, repo_digest is the local image ID rather than a registry digest.
        self.image_id = image.repo_digest
        self.image_name = image.image_name
        self.register_outputs({"image_id": self.image_id, "image_name": self.image_name})
