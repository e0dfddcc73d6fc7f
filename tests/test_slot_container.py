from __future__ import annotations

import harness
import pulumi

from nocturna_infra.slot_container import SlotContainer, SlotContainerArgs


def make(api_key: pulumi.Input[str]) -> SlotContainer:
    return SlotContainer(
        "svc-green",
        SlotContainerArgs(
            container_args={"name": "svc-green", "image": "sha256:1", "envs": ["PORT=3011"]},
            api_key=api_key,
        ),
    )


def test_api_key_is_appended_to_envs_as_a_secret() -> None:
    run = harness.run(lambda: make(pulumi.Output.secret("s3cret")))

    envs = run.mocks.resources["svc-green-container"].inputs["envs"]
    assert harness.is_secret(envs)
    assert harness.unsecret(envs) == ["PORT=3011", "API_KEY=s3cret"]


def test_container_is_replaced_stop_first_even_when_the_engine_forces_it() -> None:
    run = harness.run(lambda: make("k"))

    request = run.monitor.requests["svc-green-container"]
    assert request.deleteBeforeReplace is True
    assert list(request.replaceOnChanges) == ["healthcheck", "tmpfs", "init"]
    assert run.monitor.requests["svc-green"].type == "nocturna:index:SlotContainer"
