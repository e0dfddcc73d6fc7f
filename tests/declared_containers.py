"""Containers created on the real daemon from the program's own declarations.

`registered_inputs` runs the real SlotContainer component under the SDK's mocks and returns the
docker.Container inputs it registers (camelCase, as the provider receives them);
`start_declared` creates them with the rehearsal's translation (tests/engine_api.py) and
starts the container.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nocturna_infra.program.components.slot_container import SlotContainer, SlotContainerArgs
from tests import harness
from tests.engine_api import create_container, engine


def registered_inputs(args: Mapping[str, Any], api_key: str = "k") -> dict[str, Any]:
    """The docker.Container inputs SlotContainer registers for render.container_args `args`."""
    run = harness.run(
        lambda: SlotContainer(
            "declared",
            SlotContainerArgs(container_args=args, secret_env={"API_KEY": api_key}),
        )
    )
    inputs: dict[str, Any] = harness.unsecret(run.mocks.resources["declared-container"].inputs)
    return inputs


def start_declared(args: Mapping[str, Any], created: list[str]) -> dict[str, Any]:
    """Create and start a container from `args` the provider's way; return `docker inspect`.

    The container's ID is appended to `created` first, so the caller can always remove it.
    """
    container = create_container(registered_inputs(args))
    created.append(container)
    engine("POST", f"/containers/{container}/start", ok=(204,))
    inspected: dict[str, Any] = engine("GET", f"/containers/{container}/json")
    return inspected
