"""Run the real program under mocks, feeding each run the outputs of the one before.

This is how the engine would drive it: the StackReference to the stack's own previous
outputs returns what the last run exported (numbers as floats, as the engine's Struct
values are), and `docker.Image` reports the local image ID of the current build.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import harness
from harness import MockedRun, stack_reference_state, unsecret
from pulumi.runtime import mocks as pm

from nocturna_infra.program import stack as program

IMAGE_V1 = "sha256:" + "1" * 64
IMAGE_V2 = "sha256:" + "2" * 64
API_KEY = "key-one-1234567890"
SECRET_OUTPUTS = ("deploymentSecrets",)


def make_project(root: Path) -> Path:
    """A project directory with the files the settings check for."""
    (root / "Dockerfile").write_text("FROM scratch\n")
    (root / "service").mkdir(exist_ok=True)
    return root


def base_config(**overrides: str) -> dict[str, str]:
    return {"buildContext": "service", "apiKey": API_KEY, **overrides}


class ProgramMocks(harness.Recorder):
    def __init__(self, image_id: str, previous_exports: Mapping[str, Any] | None) -> None:
        super().__init__(
            computed_outputs={
                **harness.DEFAULT_COMPUTED,
                "docker:index/image:Image": {"repoDigest": image_id},
            }
        )
        self.previous_exports = previous_exports or {}

    def new_resource(self, args: pm.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        if args.typ == "pulumi:pulumi:StackReference":
            self.registered.append(args)
            self.resources[args.name] = args
            state = stack_reference_state(
                args.inputs["name"], self.previous_exports, SECRET_OUTPUTS
            )
            return args.name, state
        if args.typ == "docker:index/container:Container":
            # Docker gives a re-created container a new ID; a new image always re-creates.
            self.registered.append(args)
            self.resources[args.name] = args
            image = str(unsecret(args.inputs).get("image", ""))
            return f"{args.name}-{image.removeprefix('sha256:')[:12]}", dict(args.inputs)
        return super().new_resource(args)


def run_program(
    project_dir: Path,
    config: Mapping[str, str],
    *,
    previous: MockedRun | None = None,
    image_id: str = IMAGE_V1,
    preview: bool = False,
    stack: str = "production",
    mocks: ProgramMocks | None = None,
    secret_keys: tuple[str, ...] = ("apiKey",),
    organization: str | None = None,
) -> MockedRun:
    recorder = mocks or ProgramMocks(image_id, previous.exports if previous else None)
    return harness.run(
        lambda: program.main(project_dir),
        dict(config),
        preview=preview,
        stack=stack,
        secret_keys=secret_keys,
        mocks=recorder,
        organization=organization,
    )


def inputs_of(run: MockedRun, name: str) -> dict[str, Any]:
    return unsecret(run.mocks.resources[name].inputs)


def options_of(run: MockedRun, name: str) -> dict[str, Any]:
    """The resource options a real engine would see, in comparable form."""
    request = run.monitor.requests[name]
    return {
        "dependencies": sorted(request.dependencies),
        "deleteBeforeReplace": request.deleteBeforeReplace,
        "replaceOnChanges": sorted(request.replaceOnChanges),
        "ignoreChanges": sorted(request.ignoreChanges),
        "parent": request.parent,
        "customTimeouts": str(request.customTimeouts),
        "protect": request.protect,
    }


def declared_dependencies(run: MockedRun, name: str) -> set[str]:
    """Every URN a resource waits for: `depends_on` and the resources its inputs come from."""
    request = run.monitor.requests[name]
    urns = set(request.dependencies)
    for dependencies in request.propertyDependencies.values():
        urns |= set(dependencies.urns)
    return urns
