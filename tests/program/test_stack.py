"""The whole program under mocks, run after run, as `pulumi up` would drive it.

The plan-diff tests run the program twice, the second run fed the first run's outputs, and
compare every resource's recorded inputs and options: what differs is what a real
`pulumi up` would change.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pulumi
import pytest
from harness import MockedRun, is_secret
from program_runs import (
    API_KEY,
    IMAGE_V1,
    IMAGE_V2,
    ProgramMocks,
    base_config,
    declared_dependencies,
    inputs_of,
    make_project,
    options_of,
    run_program,
)
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.sync_await import _sync_await

from nocturna_infra.program.stack import DriftError, RecordError
from nocturna_infra.settings import ConfigError
from nocturna_infra.traffic.upstream import render_upstream

BLUE = "nocturna-chart-blue-container"
GREEN = "nocturna-chart-green-container"
SWITCH = "nocturna-chart-switch"
IMAGE_V3 = "sha256:" + "3" * 64


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


# Options that never cause a step by themselves: the engine decides create/update/replace
# from the inputs' diff (step_generator.go, continueStepsFromDiff); a changed `protect` or
# dependency list is written to the state by a `same` step. Each flow's exact values of
# these are asserted by test_resource_options_in_every_flow.
STATE_ONLY_OPTIONS = {"dependencies", "protect", "replaceOnChanges"}


def changes(before: MockedRun, after: MockedRun) -> dict[str, list[str]]:
    """Per resource, the inputs and options that differ between two runs: what a real
    `pulumi up` would change."""
    changed: dict[str, list[str]] = {}
    names = set(before.monitor.requests) | set(after.monitor.requests)
    for name in sorted(names):
        if name not in before.mocks.resources or name not in after.mocks.resources:
            changed[name] = ["<added or removed>"]
            continue
        old, new = inputs_of(before, name), inputs_of(after, name)
        keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        old_opts, new_opts = options_of(before, name), options_of(after, name)
        keys += [
            f"option:{k}"
            for k in sorted(old_opts)
            if old_opts[k] != new_opts[k] and k not in STATE_ONLY_OPTIONS
        ]
        if keys:
            changed[name] = keys
    return changed


def history(project: Path, *ups: tuple[str, str]) -> list[MockedRun]:
    """Consecutive production `pulumi up`s, each given as (activeSlot, image ID of the build)
    and fed the outputs of the one before."""
    runs: list[MockedRun] = []
    for active, image_id in ups:
        previous = runs[-1] if runs else None
        config = base_config(activeSlot=active)
        runs.append(run_program(project, config, previous=previous, image_id=image_id))
    return runs


def image_of(run: MockedRun, name: str) -> str:
    return inputs_of(run, name)["image"]


def upstream_target(run: MockedRun) -> list[Any]:
    return inputs_of(run, SWITCH)["triggers"][:2]


@pytest.mark.parametrize("active", ["blue", "green"])
def test_first_deployment_creates_both_slots_from_the_build(project: Path, active: str) -> None:
    run = run_program(project, base_config(activeSlot=active))

    assert image_of(run, BLUE) == IMAGE_V1
    assert image_of(run, GREEN) == IMAGE_V1
    port = {"blue": 3014, "green": 3012}[active]
    assert upstream_target(run) == [active, f"127.0.0.1:{port}"]
    assert f"--slot {active}" in inputs_of(run, SWITCH)["create"]
    assert run.exports["liveSlot"] == active


def test_switch_waits_for_both_slot_containers(project: Path) -> None:
    run = run_program(project, base_config())

    dependencies = options_of(run, SWITCH)["dependencies"]
    assert [urn.rsplit("::", 1)[1] for urn in dependencies] == [BLUE, GREEN]


@pytest.mark.parametrize(
    ("live", "live_name", "standby_name"),
    [
        pytest.param("blue", BLUE, GREEN, id="blue-live"),
        pytest.param("green", GREEN, BLUE, id="green-live"),
    ],
)
def test_deploy_replaces_only_the_standby(
    project: Path, live: str, live_name: str, standby_name: str
) -> None:
    first = run_program(project, base_config(activeSlot=live))
    deploy = run_program(project, base_config(activeSlot=live), previous=first, image_id=IMAGE_V2)

    assert changes(first, deploy) == {standby_name: ["image"]}
    assert image_of(deploy, live_name) == IMAGE_V1
    assert image_of(deploy, standby_name) == IMAGE_V2


def test_settings_change_rolls_to_the_standby_only(project: Path) -> None:
    first = run_program(project, base_config())
    changed = run_program(
        project,
        base_config(env='{"LOG_LEVEL": "debug"}', memoryMb="2048", healthRetries="5"),
        previous=first,
    )

    assert changes(first, changed) == {
        GREEN: ["envs", "healthcheck", "memory", "memorySwap", "waitTimeout"]
    }
    assert "LOG_LEVEL=debug" in inputs_of(changed, GREEN)["envs"]
    assert inputs_of(changed, BLUE) == inputs_of(first, BLUE)


def test_api_key_rotation_rolls_to_the_standby_only(project: Path) -> None:
    first = run_program(project, base_config())
    rotated = run_program(project, base_config(apiKey="key-two-0987654321"), previous=first)

    assert changes(first, rotated) == {GREEN: ["envs"]}
    assert "API_KEY=key-two-0987654321" in inputs_of(rotated, GREEN)["envs"]
    assert f"API_KEY={API_KEY}" in inputs_of(rotated, BLUE)["envs"]


def test_switch_changes_no_container_only_the_router(project: Path) -> None:
    _, deploy, switch = history(
        project, ("blue", IMAGE_V1), ("blue", IMAGE_V2), ("green", IMAGE_V2)
    )

    assert changes(deploy, switch) == {SWITCH: ["create", "triggers"]}
    assert upstream_target(switch) == ["green", "127.0.0.1:3012"]
    assert switch.exports["liveSlot"] == "green"
    assert switch.exports["standbySlot"] == "blue"


def test_rollback_returns_to_the_untouched_previous_version(project: Path) -> None:
    first, _, switch, rollback = history(
        project, ("blue", IMAGE_V1), ("blue", IMAGE_V2), ("green", IMAGE_V2), ("blue", IMAGE_V2)
    )

    assert changes(switch, rollback) == {SWITCH: ["create", "triggers"]}
    assert inputs_of(rollback, BLUE) == inputs_of(first, BLUE)
    assert image_of(rollback, BLUE) == IMAGE_V1
    assert upstream_target(rollback) == ["blue", "127.0.0.1:3014"]


def test_unchanged_up_after_a_switch_keeps_the_rollback_target(project: Path) -> None:
    *_, switch, again = history(
        project, ("blue", IMAGE_V1), ("blue", IMAGE_V2), ("green", IMAGE_V2), ("green", IMAGE_V2)
    )

    assert changes(switch, again) == {}
    assert image_of(again, BLUE) == IMAGE_V1


def test_build_arriving_with_a_switch_waits_for_the_next_up(project: Path) -> None:
    _, deploy, switch_and_build, next_up = history(
        project, ("blue", IMAGE_V1), ("blue", IMAGE_V2), ("green", IMAGE_V3), ("green", IMAGE_V3)
    )

    assert changes(deploy, switch_and_build) == {SWITCH: ["create", "triggers"]}
    assert changes(switch_and_build, next_up) == {BLUE: ["image"]}
    assert image_of(next_up, BLUE) == IMAGE_V3
    assert image_of(next_up, GREEN) == IMAGE_V2


def test_unchanged_up_changes_nothing(project: Path) -> None:
    first = run_program(project, base_config())
    again = run_program(project, base_config(), previous=first)

    assert changes(first, again) == {}


def test_no_op_up_after_a_deploy_changes_nothing_including_memory_swap(project: Path) -> None:
    _, deploy, again = history(project, ("blue", IMAGE_V1), ("blue", IMAGE_V2), ("blue", IMAGE_V2))

    assert changes(deploy, again) == {}
    # Declared, and equal to memory: what Docker records and the provider reads back
    # (tests/test_provider_readback.py); left out, Docker records twice the memory.
    for name in (BLUE, GREEN):
        assert inputs_of(again, name)["memorySwap"] == inputs_of(again, name)["memory"]


def test_preview_of_a_new_build_keeps_the_live_slot_known_and_unchanged(project: Path) -> None:
    first = run_program(project, base_config())
    unknown_build = ProgramMocks(IMAGE_V1, first.exports)
    unknown_build.computed = {}  # the build changed: its image ID is unknown in preview
    preview = run_program(project, base_config(), preview=True, mocks=unknown_build)

    assert inputs_of(preview, BLUE) == inputs_of(first, BLUE)
    assert isinstance(inputs_of(preview, GREEN)["image"], pulumi.output.Unknown)
    assert inputs_of(preview, GREEN)["name"] == "nocturna-chart-green"


def test_staging_runs_one_container_routed_on_3013(project: Path) -> None:
    config = base_config(
        environment="staging",
        upstreamFile="/etc/nginx/upstreams/nocturna-img-staging.conf",
        upstreamName="nocturna-img-staging",
    )
    first = run_program(project, config, stack="staging")
    deploy = run_program(project, config, previous=first, image_id=IMAGE_V2, stack="staging")

    containers = [
        name for name, args in first.mocks.resources.items()
        if args.typ == "docker:index/container:Container"
    ]  # fmt: skip
    assert containers == ["nocturna-chart-staging-container"]
    assert upstream_target(first) == ["staging", "127.0.0.1:3013"]
    assert "standbySlot" not in first.exports
    # The router runs again for the new container: the probe gates staging traffic too.
    assert changes(first, deploy) == {STAGING: ["image"], SWITCH: ["triggers"]}
    assert inputs_of(deploy, SWITCH)["triggers"][-1] == f"{STAGING}-{'2' * 12}"
    assert changes(deploy, run_program(project, config, previous=deploy, image_id=IMAGE_V2,
                                       stack="staging")) == {}  # fmt: skip


def test_missing_api_key_stops_before_any_resource(project: Path) -> None:
    config = base_config()
    del config["apiKey"]
    mocks = ProgramMocks(IMAGE_V1, None)

    with pytest.raises(ConfigError, match=r"^nocturna-infra:apiKey: is required"):
        run_program(project, config, mocks=mocks)
    assert mocks.registered == []


def test_invalid_config_stops_before_any_resource(project: Path) -> None:
    mocks = ProgramMocks(IMAGE_V1, None)

    with pytest.raises(ConfigError, match="nocturna-infra:activeSlot: must be one of blue, green"):
        run_program(project, base_config(activeSlot="purple"), mocks=mocks)
    assert mocks.registered == []


def test_api_key_appears_only_inside_secrets(project: Path) -> None:
    run = run_program(project, base_config())

    for name, args in run.mocks.resources.items():
        for key, value in args.inputs.items():
            if API_KEY in repr(value):
                assert (name, key) in {(BLUE, "envs"), (GREEN, "envs")}
                assert is_secret(value)
    public_exports = {k: v for k, v in run.exports.items() if k != "deploymentSecrets"}
    assert API_KEY not in repr(public_exports)
    secrets_output = runtime_settings.get_root_resource().outputs["deploymentSecrets"]  # type: ignore[union-attr]
    assert _sync_await(secrets_output.is_secret()) is True


STAGING = "nocturna-chart-staging-container"
STAGING_CONFIG = {
    "environment": "staging",
    "upstreamFile": "/etc/nginx/upstreams/nocturna-img-staging.conf",
    "upstreamName": "nocturna-img-staging",
}


def waits_for_the_image(run: MockedRun, name: str) -> bool:
    return any(
        "ServiceImage" in urn or urn.endswith("::nocturna-chart-image")
        for urn in declared_dependencies(run, name)
    )


def slot_options(run: MockedRun) -> dict[str, tuple[bool, bool, bool]]:
    """Per container: (protected, re-created after a failed health wait, waits for the image)."""
    return {
        name: (
            options_of(run, name)["protect"],
            "#initerror" in options_of(run, name)["replaceOnChanges"],
            waits_for_the_image(run, name),
        )
        for name, args in run.mocks.resources.items()
        if args.typ == "docker:index/container:Container"
    }


PROTECTED = (True, False, False)  # frozen: kept as recorded, never replaced, no build
PROTECTED_NEW = (True, False, True)  # the live slot as it is first created
MAY_CHANGE = (False, True, True)  # may take the release; re-created if its health failed


@pytest.mark.parametrize(
    ("ups", "expected"),
    [
        pytest.param([("blue", IMAGE_V1)], {BLUE: PROTECTED_NEW, GREEN: MAY_CHANGE},
                     id="first-deploy"),
        pytest.param([("green", IMAGE_V1)], {BLUE: MAY_CHANGE, GREEN: PROTECTED_NEW},
                     id="first-deploy-green"),
        pytest.param([("blue", IMAGE_V1), ("blue", IMAGE_V2)],
                     {BLUE: PROTECTED, GREEN: MAY_CHANGE}, id="deploy"),
        pytest.param([("blue", IMAGE_V1), ("blue", IMAGE_V1)],
                     {BLUE: PROTECTED, GREEN: MAY_CHANGE}, id="no-op"),
        pytest.param([("blue", IMAGE_V1), ("green", IMAGE_V2)],
                     {BLUE: PROTECTED, GREEN: PROTECTED}, id="switch"),
        pytest.param([("blue", IMAGE_V1), ("green", IMAGE_V1), ("blue", IMAGE_V2)],
                     {BLUE: PROTECTED, GREEN: PROTECTED}, id="rollback"),
        pytest.param([("blue", IMAGE_V1), ("green", IMAGE_V1), ("green", IMAGE_V2)],
                     {BLUE: MAY_CHANGE, GREEN: PROTECTED}, id="deploy-after-switch"),
    ],
)  # fmt: skip
def test_resource_options_in_every_flow(
    project: Path, ups: list[tuple[str, str]], expected: dict[str, tuple[bool, bool, bool]]
) -> None:
    run = history(project, *ups)[-1]

    assert slot_options(run) == expected
    for name in (BLUE, GREEN):
        assert options_of(run, name)["deleteBeforeReplace"] is True
        replace_on = options_of(run, name)["replaceOnChanges"]
        assert sorted(set(replace_on) - {"#initerror"}) == ["healthcheck", "init", "tmpfs"]
    assert options_of(run, "nocturna-chart-network")["protect"] is True
    assert options_of(run, SWITCH)["protect"] is False


def test_staging_container_is_never_protected(project: Path) -> None:
    config = base_config(**STAGING_CONFIG)
    first = run_program(project, config, stack="staging")
    deploy = run_program(project, config, previous=first, image_id=IMAGE_V2, stack="staging")

    assert slot_options(first) == {STAGING: MAY_CHANGE}
    assert slot_options(deploy) == {STAGING: MAY_CHANGE}


@pytest.mark.parametrize("flow", ["switch", "rollback"])
def test_switch_and_rollback_never_wait_for_the_build(project: Path, flow: str) -> None:
    ups = [("blue", IMAGE_V1), ("blue", IMAGE_V2), ("green", IMAGE_V3)]
    if flow == "rollback":
        ups.append(("blue", IMAGE_V3))
    run = history(project, *ups)[-1]

    waiting = [
        name
        for name, args in run.mocks.resources.items()
        if args.typ in {"docker:index/container:Container", "command:local:Command"}
        or args.typ.startswith("nocturna:index:SlotContainer")
        or args.typ == "nocturna:index:Router"
        if waits_for_the_image(run, name)
    ]
    assert waiting == []


def test_preview_of_a_switch_runs_the_router_while_the_build_is_unknown(project: Path) -> None:
    first = run_program(project, base_config())
    unknown_build = ProgramMocks(IMAGE_V1, first.exports)
    unknown_build.computed = {}  # the service checkout changed: its image ID is unknown
    preview = run_program(
        project, base_config(activeSlot="green"), preview=True, mocks=unknown_build
    )

    router = inputs_of(preview, SWITCH)
    assert not any(isinstance(value, pulumi.output.Unknown) for value in router["triggers"])
    assert "--slot green --upstream-file" in router["create"]
    assert router["triggers"][:2] == ["green", "127.0.0.1:3012"]
    assert not waits_for_the_image(preview, SWITCH)
    assert changes(first, preview) == {SWITCH: ["create", "triggers"]}


def test_outputs_tell_the_operator_where_everything_is(project: Path) -> None:
    run = run_program(project, base_config())

    assert run.exports["slots"] == {
        "blue": {"container": "nocturna-chart-blue", "image": IMAGE_V1, "url": "http://127.0.0.1:3014/health"},
        "green": {"container": "nocturna-chart-green", "image": IMAGE_V1, "url": "http://127.0.0.1:3012/health"},
    }  # fmt: skip
    assert run.exports["upstreamFile"] == "/etc/nginx/upstreams/nocturna-img-production.conf"
    assert run.exports["latestBuild"] == {
        "image": "nocturna-chart-service:production",
        "imageId": IMAGE_V1,
    }


def test_a_non_certificate_in_the_ca_directory_is_a_config_error(project: Path) -> None:
    certs = project / "certs"
    certs.mkdir()
    (certs / "proxy.crt").write_text("not a certificate\n")
    mocks = ProgramMocks(IMAGE_V1, None)

    with pytest.raises(ConfigError) as caught:
        run_program(project, base_config(extraCaCertsDir="certs"), mocks=mocks)
    assert str(caught.value) == (
        f"nocturna-infra:extraCaCertsDir: {certs / 'proxy.crt'}: not a PEM certificate "
        "(no '-----BEGIN CERTIFICATE-----' block found). Only PEM CA certificates (*.crt) "
        "belong there."
    )
    assert mocks.registered == []


def test_host_ca_certificates_reach_the_build_as_pem(project: Path) -> None:
    certs = Path("/usr/local/share/ca-certificates")
    if not list(certs.glob("*.crt")):
        pytest.skip("this host has no extra CA certificates")
    run = run_program(project, base_config(extraCaCertsDir=str(certs)))

    build_args = inputs_of(run, "nocturna-chart-image")["build"]["args"]
    assert build_args["EXTRA_CA_CERTS"].startswith("-----BEGIN CERTIFICATE-----")
    assert build_args["BASE_IMAGE"] == "node:20-slim"


def test_deploy_refuses_when_nginx_routes_to_the_standby(project: Path) -> None:
    upstream = project / "upstream.conf"
    config = base_config(upstreamFile=str(upstream))
    first = run_program(project, config)
    # A break-glass switch to green whose config was never brought in step.
    upstream.write_text(
        render_upstream("nocturna-img-production", "green", ["127.0.0.1:3012"], datetime.now(UTC))
    )
    mocks = ProgramMocks(IMAGE_V2, first.exports)

    with pytest.raises(DriftError, match="Nginx routes to green, but activeSlot is blue"):
        run_program(project, config, mocks=mocks)
    assert [args.typ for args in mocks.registered] == ["pulumi:pulumi:StackReference"]
    adopted = run_program(project, base_config(upstreamFile=str(upstream), activeSlot="green"),
                          previous=first, image_id=IMAGE_V2)  # fmt: skip
    assert changes(first, adopted) == {SWITCH: ["create", "triggers"]}


def test_deploy_refuses_when_the_selection_file_routes_to_the_standby(project: Path) -> None:
    selection = project / "selection"
    selection.mkdir()
    config = base_config(selectionDir=str(selection))
    first = run_program(project, config)
    # A break-glass switch to green (the selection file) whose config was never brought in step.
    (selection / "nocturna-img-production.green").write_text("green\n")

    with pytest.raises(DriftError, match="Nginx routes to green, but activeSlot is blue"):
        run_program(project, config, mocks=ProgramMocks(IMAGE_V2, first.exports))
    (selection / "nocturna-img-production.green").unlink()
    (selection / "nocturna-img-production.blue").write_text("blue\n")
    assert run_program(project, config, previous=first, image_id=IMAGE_V2) is not None


def test_the_router_passes_every_slots_server_and_the_selection_dir(project: Path) -> None:
    run = run_program(project, base_config(selectionDir="/run/nocturna"))

    command = inputs_of(run, SWITCH)["create"]
    assert " --selection-dir /run/nocturna --fallback-slot blue --server 127.0.0.1:3014" in command
    assert " --standby green=127.0.0.1:3012 " in command
    assert inputs_of(run, SWITCH)["triggers"] == [
        "blue", "127.0.0.1:3014", "green=127.0.0.1:3012",
        "/etc/nginx/upstreams/nocturna-img-production.conf", "nocturna-img-production",
        "/run/nocturna", "nocturna-chart-blue-container-111111111111",
    ]  # fmt: skip


SECRET_ENV = '{"DB_PASSWORD": "hunter2-very-secret", "LOG_LEVEL": "debug"}'


def test_secret_env_stays_secret_in_every_input_and_output(project: Path) -> None:
    config = base_config(env=SECRET_ENV)
    first = run_program(project, config, secret_keys=("apiKey", "env"))
    again = run_program(project, config, previous=first, secret_keys=("apiKey", "env"))

    for run in (first, again):
        for name, args in run.mocks.resources.items():
            for key, value in args.inputs.items():
                if "hunter2" in repr(value):
                    assert (name, key) in {(BLUE, "envs"), (GREEN, "envs")}
                    assert is_secret(value)
        public = {k: v for k, v in run.exports.items() if k != "deploymentSecrets"}
        assert "hunter2" not in repr(public)
        assert "DB_PASSWORD=hunter2-very-secret" in inputs_of(run, BLUE)["envs"]
        assert "DB_PASSWORD=hunter2-very-secret" in inputs_of(run, GREEN)["envs"]
    # The live slot is re-declared from the secret record, unchanged.
    assert changes(first, again) == {}


def test_secret_env_change_rolls_to_the_standby_only(project: Path) -> None:
    first = run_program(project, base_config(env=SECRET_ENV), secret_keys=("apiKey", "env"))
    rotated = run_program(
        project,
        base_config(env='{"DB_PASSWORD": "rotated-password-2", "LOG_LEVEL": "debug"}'),
        previous=first,
        secret_keys=("apiKey", "env"),
    )

    assert changes(first, rotated) == {GREEN: ["envs"]}
    assert "DB_PASSWORD=rotated-password-2" in inputs_of(rotated, GREEN)["envs"]
    assert "DB_PASSWORD=hunter2-very-secret" in inputs_of(rotated, BLUE)["envs"]


def test_secret_build_args_are_refused_before_any_resource(project: Path) -> None:
    mocks = ProgramMocks(IMAGE_V1, None)

    with pytest.raises(ConfigError) as caught:
        run_program(project, base_config(buildArgs='{"NPM_TOKEN": "t0ken"}'), mocks=mocks,
                    secret_keys=("apiKey", "buildArgs"))  # fmt: skip
    assert str(caught.value) == (
        "nocturna-infra:buildArgs: is set with --secret, but its value would be shown in plain "
        "text in the stack's outputs, resource inputs and previews and kept in the image history "
        "(docker history); got '[secret]'. Set it without --secret (`pulumi config set "
        "buildArgs ...`); keep secrets in apiKey or env (`pulumi config set --secret --path "
        "env.NAME value`), which stay secret."
    )
    assert mocks.registered == []


@pytest.mark.parametrize(
    ("organization", "reference"),
    [
        # The self-managed backend's organization is always the literal `organization`, and
        # its legacy layout cannot parse three parts (tests/engine/test_real_state_stack.py).
        pytest.param("organization", "production", id="file-backend"),
        # Pulumi Cloud rejects a StackReference that is not <organization>/<project>/<stack>.
        pytest.param("acme", "acme/nocturna-infra/production", id="pulumi-cloud"),
    ],
)
def test_state_is_read_from_this_stack_as_the_backend_names_it(
    project: Path, organization: str, reference: str
) -> None:
    run = run_program(project, base_config(), organization=organization)

    assert inputs_of(run, "previous-deployment")["name"] == reference


def test_a_set_state_stack_is_used_as_given_on_any_backend(project: Path) -> None:
    run = run_program(
        project, base_config(stateStack="acme/nocturna-infra/old-production"), organization="acme"
    )

    assert inputs_of(run, "previous-deployment")["name"] == "acme/nocturna-infra/old-production"


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        pytest.param("privileged", True, "slot blue: recorded argument 'privileged' is not one "
                     "nocturna-infra declares for a container", id="privileged"),
        pytest.param("volumes", [{"host_path": "/", "container_path": "/host"}], "slot blue: "
                     "recorded argument 'volumes' is not one nocturna-infra declares for a "
                     "container", id="root-volume"),
        pytest.param("user", "root", "slot blue: recorded argument 'user' is not one "
                     "nocturna-infra declares for a container", id="user-root"),
        pytest.param("capabilities", {"adds": ["SYS_ADMIN"], "drops": ["ALL"]}, "slot blue: "
                     "recorded capabilities is {'adds': ['SYS_ADMIN'], 'drops': ['ALL']}, but "
                     "this run declares {'drops': ['ALL']}", id="capabilities"),
    ],
)  # fmt: skip
def test_a_tampered_record_is_refused_before_any_container(
    project: Path, key: str, value: Any, problem: str
) -> None:
    first = run_program(project, base_config())
    tampered = copy.deepcopy(first.exports)
    tampered["deployment"]["slots"]["blue"][key] = value
    mocks = ProgramMocks(IMAGE_V1, tampered)

    with pytest.raises(RecordError) as caught:
        run_program(project, base_config(), mocks=mocks)
    assert str(caught.value) == (
        f"stack production, output `deployment`: {problem}. Refusing to declare a container "
        "from it. If you changed that setting on purpose, set it back: it cannot change under "
        "a kept slot. Otherwise the state was written outside nocturna-infra: compare `pulumi "
        "stack output deployment --json` with `python -m nocturna_infra.status` and restore a "
        "trusted state (`pulumi stack import`)."
    )
    assert [args.typ for args in mocks.registered] == ["pulumi:pulumi:StackReference"]


def test_a_live_slot_recorded_before_the_read_back_forms_is_declared_unchanged(
    project: Path,
) -> None:
    config = base_config(cpus="1", healthIntervalSeconds="60", healthTimeoutSeconds="5")
    first = run_program(project, config)
    # What an earlier nocturna-infra recorded for the same container: "1" and "60s", while the
    # provider's state holds the read-back "1.0" and "1m0s" (what `first` declared).
    older = copy.deepcopy(first.exports)
    for args in older["deployment"]["slots"].values():
        args["cpus"] = "1"
        args["healthcheck"]["interval"] = "60s"

    again = run_program(project, config, mocks=ProgramMocks(IMAGE_V1, older))

    assert inputs_of(again, BLUE)["cpus"] == "1.0"
    assert changes(first, again) == {}


RENDER_CHECK = (
    '[{"name": "render", "method": "POST", "path": "/api/v2/chart/render", '
    '"headers": {"Authorization": "Bearer ${API_KEY}"}, "body": {"planets": {}}}]'
)


def test_smoke_checks_reach_the_switch_as_templates_and_the_key_as_a_secret_env(
    project: Path,
) -> None:
    run = run_program(project, base_config(smokeChecks=RENDER_CHECK))

    switch = run.mocks.resources[SWITCH].inputs
    command = inputs_of(run, SWITCH)["create"]
    assert is_secret(switch["environment"])
    assert inputs_of(run, SWITCH)["environment"] == {"API_KEY": API_KEY}
    assert API_KEY not in command
    assert """ --smoke-checks '[{"name":"render","method":"POST",""" in command
    assert "Bearer ${API_KEY}" in command
    assert " --watch-seconds 30 --watch-log /var/log/nginx/nocturna-slots.log " in command


def test_switch_output_is_secret_by_choice_when_the_key_is_in_its_environment(
    project: Path,
) -> None:
    keyed = run_program(project, base_config(smokeChecks=RENDER_CHECK))
    plain = run_program(project, base_config())

    assert list(keyed.monitor.requests[SWITCH].additionalSecretOutputs) == ["stdout", "stderr"]
    assert list(plain.monitor.requests[SWITCH].additionalSecretOutputs) == []


def test_without_checks_naming_the_key_the_switch_gets_no_environment(project: Path) -> None:
    run = run_program(project, base_config())

    assert "environment" not in run.mocks.resources[SWITCH].inputs


def test_smoke_templates_get_the_key_and_env_values_from_the_router_only(
    project: Path,
) -> None:
    checks = RENDER_CHECK.replace(
        '"Bearer ${API_KEY}"', '"Bearer ${API_KEY}", "X-Tenant": "${TENANT}"'
    )
    config = base_config(smokeChecks=checks, env='{"TENANT": "acme", "LOG_LEVEL": "info"}')

    run = run_program(project, config)

    assert is_secret(run.mocks.resources[SWITCH].inputs["environment"])
    assert inputs_of(run, SWITCH)["environment"] == {"API_KEY": API_KEY, "TENANT": "acme"}


def test_smoke_body_file_stays_off_the_switch_command_line(project: Path) -> None:
    (project / "smoke").mkdir()
    (project / "smoke" / "chart.json").write_text('{"planets": {"sun": "body-marker-7f3a"}}')
    checks = RENDER_CHECK.replace('"body": {"planets": {}}', '"bodyFile": "smoke/chart.json"')

    run = run_program(project, base_config(smokeChecks=checks))

    switch = inputs_of(run, SWITCH)
    assert "body-marker-7f3a" not in switch["create"]
    assert '"bodyFile":"smoke/chart.json"' in switch["create"]
    assert switch["dir"] == str(project)


def test_smoke_header_naming_the_pulumi_passphrase_stops_before_any_resource(
    project: Path,
) -> None:
    checks = RENDER_CHECK.replace("${API_KEY}", "${PULUMI_CONFIG_PASSPHRASE}")
    mocks = ProgramMocks(IMAGE_V1, None)

    with pytest.raises(ConfigError, match=r"smokeChecks\[0\]\.headers\.Authorization: names "):
        run_program(project, base_config(smokeChecks=checks), mocks=mocks)
    assert mocks.registered == []


def test_switch_back_by_the_watch_is_expected_routing_not_drift(project: Path) -> None:
    selection = project / "selection"
    selection.mkdir()
    upstream = project / "upstream.conf"
    paths = {"selectionDir": str(selection), "upstreamFile": str(upstream)}
    first = run_program(project, base_config(activeSlot="blue", **paths))
    switched = run_program(project, base_config(activeSlot="green", **paths), previous=first)
    # The switch to green failed its watch and went back to blue: blue's marker, and the record.
    (selection / "nocturna-img-production.blue").write_text("blue\n")
    retry = base_config(activeSlot="green", **paths)
    with pytest.raises(DriftError, match="Nginx routes to blue, but activeSlot is green"):
        run_program(project, retry, mocks=ProgramMocks(IMAGE_V2, switched.exports))
    record = Path(f"{upstream}.watch.json")
    record.write_text('{"slot": "green", "previous": "blue", "result": "switched-back"}\n')

    again = run_program(project, retry, previous=switched, image_id=IMAGE_V2)

    # Blue serves traffic and is frozen; green keeps its release; only the switch is retried.
    assert image_of(again, BLUE) == image_of(switched, BLUE)
    assert image_of(again, GREEN) == image_of(switched, GREEN)
    assert "--slot green" in inputs_of(again, SWITCH)["create"]
