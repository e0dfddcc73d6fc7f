from __future__ import annotations

from collections.abc import Mapping

import harness
import pulumi
import pytest

from nocturna_infra.program.components.slot_container import SlotContainer, SlotContainerArgs


def make(secret_env: pulumi.Input[Mapping[str, str]], *, protect: bool = False) -> SlotContainer:
    return SlotContainer(
        "svc-green",
        SlotContainerArgs(
            container_args={"name": "svc-green", "image": "sha256:1", "envs": ["PORT=3011"]},
            secret_env=secret_env,
            protect=protect,
        ),
    )


def test_secret_variables_are_appended_to_envs_as_a_secret() -> None:
    run = harness.run(lambda: make(pulumi.Output.secret({"API_KEY": "s3cret", "DB": "pw"})))

    envs = run.mocks.resources["svc-green-container"].inputs["envs"]
    assert harness.is_secret(envs)
    assert harness.unsecret(envs) == ["PORT=3011", "API_KEY=s3cret", "DB=pw"]


@pytest.mark.parametrize(
    ("protect", "replace_on_changes"),
    [
        pytest.param(False, ["healthcheck", "tmpfs", "init", "#initerror"], id="may-change"),
        pytest.param(True, ["healthcheck", "tmpfs", "init"], id="protected"),
    ],
)
def test_container_is_replaced_stop_first_and_protected_when_it_must_stay(
    protect: bool, replace_on_changes: list[str]
) -> None:
    run = harness.run(lambda: make({"API_KEY": "k"}, protect=protect))

    request = run.monitor.requests["svc-green-container"]
    assert request.deleteBeforeReplace is True
    assert request.protect is protect
    # A protected container is never re-created for a failed health wait: the engine
    # would refuse the replacement and fail the run.
    assert list(request.replaceOnChanges) == replace_on_changes
    assert run.monitor.requests["svc-green"].type == "nocturna:index:SlotContainer"
