"""The program on several Docker hosts, under mocks, run after run (plan-diff tests).

The upgrade test is fed the record of today's single-host program
(tests/fixtures/single_host_record.json, made by the program before `hosts` existed): an
existing stack must upgrade without a single container, network or image changing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from harness import MockedRun
from program_runs import (
    IMAGE_V1,
    IMAGE_V2,
    ProgramMocks,
    base_config,
    inputs_of,
    make_project,
    options_of,
    run_program,
)
from test_stack import BLUE, GREEN, IMAGE_V3, STATE_ONLY_OPTIONS, SWITCH, changes, slot_options

from nocturna_infra.program.stack import RecordError
from nocturna_infra.settings import ConfigError

FIXTURE = Path(__file__).parents[1] / "fixtures" / "single_host_record.json"
H2 = "h2"
BLUE2 = f"nocturna-chart-blue@{H2}-container"
GREEN2 = f"nocturna-chart-green@{H2}-container"
TWO_HOSTS = json.dumps(
    [
        {"name": "local"},
        {
            "name": H2,
            "dockerHost": "ssh://deploy@10.0.0.2:2222",
            "sshOpts": ["-o", "ConnectTimeout=5"],
            "publishAddress": "10.0.0.2",
        },
    ]
)
PROTECTED = (True, False, False)
PROTECTED_NEW = (True, False, True)
MAY_CHANGE = (False, True, True)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def two_hosts(**overrides: str) -> dict[str, str]:
    return base_config(hosts=TWO_HOSTS, allowNonLoopbackBind="true", **overrides)


def history(project: Path, *ups: tuple[str, str], hosts: bool = True) -> list[MockedRun]:
    runs: list[MockedRun] = []
    for active, image_id in ups:
        config = two_hosts(activeSlot=active) if hosts else base_config(activeSlot=active)
        previous = runs[-1] if runs else None
        runs.append(run_program(project, config, previous=previous, image_id=image_id))
    return runs


def recorded_program(project: Path) -> dict[str, Any]:
    text = FIXTURE.read_text().replace("<project>", str(project))
    return dict(json.loads(text))


def declared(run: MockedRun) -> dict[str, dict[str, Any]]:
    """What the fixture keeps of a run: per resource, type, parent, provider, inputs and the
    options that cause steps."""
    result = {}
    for name, request in run.monitor.requests.items():
        result[name] = {
            "type": request.type,
            "parent": request.parent,
            "provider": request.provider,
            "inputs": inputs_of(run, name) if name in run.mocks.resources else None,
            "options": {
                k: v for k, v in options_of(run, name).items() if k not in STATE_ONLY_OPTIONS
            },
        }
    return result


def fixture_declared(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The record's resources as today's program declares them unchanged. Issue 19, after the
    record was made, moved the default browser to the headless shell: the standby, declared
    from today's settings, takes the new path; the live slot keeps the one it runs with."""
    declared = {
        name: {
            **entry,
            "options": {k: v for k, v in entry["options"].items() if k not in STATE_ONLY_OPTIONS},
        }
        for name, entry in record["resources"].items()
    }
    standby = declared[GREEN]["inputs"]
    declared[GREEN] = {
        **declared[GREEN],
        "inputs": {**standby, "envs": with_new_browser(standby["envs"])},
    }
    return declared


def test_upgrading_a_single_host_stack_changes_nothing(project: Path) -> None:
    record = recorded_program(project)
    mocks = ProgramMocks(IMAGE_V2, record["exports"])

    upgraded = run_program(project, base_config(), mocks=mocks)

    before, after = fixture_declared(record), declared(upgraded)
    router_before, router_after = before.pop(SWITCH), after.pop(SWITCH)
    assert OLD_BROWSER in after[BLUE]["inputs"]["envs"]  # the live slot as it runs
    assert after == before
    deployment = record["exports"]["deployment"]
    deployment["slots"]["green"]["envs"] = with_new_browser(deployment["slots"]["green"]["envs"])
    # The record gains each host's dockerHost (a host's daemon must not change later).
    assert upgraded.exports["deployment"] == {**deployment, "dockerHosts": {"local": ""}}
    # The router runs the same switch with the same servers; only the release gates (issue
    # 11, merged after the record was made) may add flags and their environment.
    assert router_after["inputs"]["triggers"] == router_before["inputs"]["triggers"]
    assert without_gates(router_after["inputs"]["create"]) == router_before["inputs"]["create"]


OLD_BROWSER = "PUPPETEER_EXECUTABLE_PATH=/usr/bin/chromium"


def with_new_browser(envs: list[str]) -> list[str]:
    assert OLD_BROWSER in envs
    new = "PUPPETEER_EXECUTABLE_PATH=/usr/bin/chromium-headless-shell"
    return [new if env == OLD_BROWSER else env for env in envs]


def without_gates(command: str) -> str:
    for flag in (" --smoke-checks ", " --watch-seconds "):
        command = command.split(flag)[0]
    return command


def test_upgrading_with_a_new_build_replaces_only_the_standby(project: Path) -> None:
    record = recorded_program(project)

    upgraded = run_program(project, base_config(), mocks=ProgramMocks(IMAGE_V3, record["exports"]))

    before = fixture_declared(record)
    after = declared(upgraded)
    changed = sorted(name for name in before if before[name] != after[name])
    assert changed == [GREEN, SWITCH] or changed == [GREEN]
    assert after[GREEN]["inputs"]["image"] == IMAGE_V3
    assert after[BLUE] == before[BLUE]


def test_adding_a_host_keeps_the_first_hosts_resources_and_rewrites_the_upstream(
    project: Path,
) -> None:
    record = recorded_program(project)
    mocks = ProgramMocks(IMAGE_V2, record["exports"])

    added = run_program(project, two_hosts(), mocks=mocks)

    before = fixture_declared(record)
    after = declared(added)
    kept = {name: after[name] for name in before if name != SWITCH}
    assert kept == {name: entry for name, entry in before.items() if name != SWITCH}
    new = sorted(set(after) - set(before))
    assert new == sorted(
        [
            "docker-h2",
            "nocturna-chart@h2",
            "nocturna-chart@h2-image",
            "nocturna-chart@h2-network",
            "nocturna-chart-blue@h2",
            BLUE2,
            "nocturna-chart-green@h2",
            GREEN2,
        ]
    )
    # The live slot's group gains host 2's server: one upstream rewrite and reload.
    assert inputs_of(added, SWITCH)["triggers"][1] == "127.0.0.1:3014 10.0.0.2:3014"
    assert before[SWITCH]["inputs"]["triggers"][1] == "127.0.0.1:3014"


def test_every_host_has_its_own_provider_and_the_first_keeps_the_default(project: Path) -> None:
    run = run_program(project, two_hosts())

    provider = inputs_of(run, "docker-h2")
    assert provider["host"] == "ssh://deploy@10.0.0.2:2222"
    # Provider config other than strings travels as JSON, as the SDK sends it.
    assert json.loads(provider["sshOpts"]) == ["-o", "ConnectTimeout=5"]
    on_h2 = run.monitor.requests[BLUE2].provider
    assert "pulumi:providers:docker::docker-h2::" in on_h2
    for name in (GREEN2, "nocturna-chart@h2-image", "nocturna-chart@h2-network"):
        assert run.monitor.requests[name].provider == on_h2, name
    for name in (BLUE, GREEN, "nocturna-chart-image", "nocturna-chart-network"):
        assert run.monitor.requests[name].provider == "", name
    assert inputs_of(run, BLUE2)["ports"][0]["ip"] == "10.0.0.2"
    assert inputs_of(run, BLUE)["ports"][0]["ip"] == "127.0.0.1"
    # Docker names are the same on every host: each host is its own engine.
    assert inputs_of(run, BLUE2)["name"] == inputs_of(run, BLUE)["name"] == "nocturna-chart-blue"


def test_an_explicit_first_host_gets_an_explicit_provider(project: Path) -> None:
    hosts = json.dumps([{"name": "local", "dockerHost": "unix:///run/docker.sock"}])

    run = run_program(project, base_config(hosts=hosts))

    assert inputs_of(run, "docker-local")["host"] == "unix:///run/docker.sock"
    assert "docker-local" in run.monitor.requests[BLUE].provider


def test_deploy_replaces_the_standby_on_every_host_and_nothing_else(project: Path) -> None:
    first, deploy = history(project, ("blue", IMAGE_V1), ("blue", IMAGE_V2))

    assert changes(first, deploy) == {GREEN: ["image"], GREEN2: ["image"]}


def test_switch_and_rollback_move_only_the_router_for_every_host(project: Path) -> None:
    _, deploy, switch, rollback = history(
        project, ("blue", IMAGE_V1), ("blue", IMAGE_V2), ("green", IMAGE_V2), ("blue", IMAGE_V2)
    )

    assert changes(deploy, switch) == {SWITCH: ["create", "triggers"]}
    assert changes(switch, rollback) == {SWITCH: ["create", "triggers"]}
    command = inputs_of(switch, SWITCH)["create"]
    assert "--server 127.0.0.1:3012 --server 10.0.0.2:3012" in command
    assert "--standby blue=127.0.0.1:3014 --standby blue=10.0.0.2:3014" in command
    assert (
        "--health-url http://127.0.0.1:3012/health --health-url http://10.0.0.2:3012/health"
        in command
    )
    assert inputs_of(rollback, BLUE2)["image"] == IMAGE_V1


@pytest.mark.parametrize(
    ("ups", "expected"),
    [
        pytest.param([("blue", IMAGE_V1)], (PROTECTED_NEW, MAY_CHANGE), id="first-deploy"),
        pytest.param([("blue", IMAGE_V1), ("blue", IMAGE_V2)], (PROTECTED, MAY_CHANGE),
                     id="deploy"),
        pytest.param([("blue", IMAGE_V1), ("green", IMAGE_V2)], (PROTECTED, PROTECTED),
                     id="switch"),
        pytest.param([("blue", IMAGE_V1), ("green", IMAGE_V1), ("blue", IMAGE_V2)],
                     (PROTECTED, PROTECTED), id="rollback"),
    ],
)  # fmt: skip
def test_every_frozen_slot_is_protected_on_every_host(
    project: Path, ups: list[tuple[str, str]], expected: tuple[Any, Any]
) -> None:
    run = history(project, *ups)[-1]

    blue, green = expected
    assert slot_options(run) == {BLUE: blue, GREEN: green, BLUE2: blue, GREEN2: green}


def test_the_record_keeps_each_hosts_slots_and_an_old_reader_sees_the_first(
    project: Path,
) -> None:
    first, deploy = history(project, ("blue", IMAGE_V1), ("blue", IMAGE_V2))

    record = deploy.exports["deployment"]
    assert record["version"] == 1
    assert record["slots"]["green"]["ports"][0]["ip"] == "127.0.0.1"
    assert record["hosts"][H2]["slots"]["green"]["ports"][0]["ip"] == "10.0.0.2"
    assert record["hosts"][H2]["slots"]["blue"]["image"] == IMAGE_V1
    assert set(deploy.exports["deploymentSecrets"]["hosts"][H2]) == {"apiKeys", "secretEnv"}
    assert deploy.exports["hosts"][H2]["slots"]["green"]["server"] == "10.0.0.2:3012"
    assert first.exports["deployment"]["hosts"][H2]["slots"]["blue"]["image"] == IMAGE_V1


def test_a_tampered_record_on_another_host_is_refused(project: Path) -> None:
    first = run_program(project, two_hosts())
    exports = json.loads(json.dumps(first.exports))
    exports["deployment"]["hosts"][H2]["slots"]["blue"]["privileged"] = True

    with pytest.raises(
        RecordError, match=r"slot blue: recorded argument 'privileged'.* on host h2"
    ):
        run_program(project, two_hosts(), mocks=ProgramMocks(IMAGE_V2, exports))


def test_removing_a_host_leaves_the_first_hosts_resources_alone(project: Path) -> None:
    _, deploy = history(project, ("blue", IMAGE_V1), ("blue", IMAGE_V2))
    removed = run_program(project, base_config(), previous=deploy, image_id=IMAGE_V2)

    gone = changes(deploy, removed)
    assert gone.pop(SWITCH) == ["create", "triggers"]
    assert all("@h2" in name or name == "docker-h2" for name in gone)
    assert all(value == ["<added or removed>"] for value in gone.values())
    assert inputs_of(removed, SWITCH)["triggers"][1] == "127.0.0.1:3014"


MOVE_A_HOST = (
    "To move a host: add the new one under another name, `pulumi up`, drain the old one and "
    'remove it (docs/hosts.md, "Moving a host to another daemon").'
)


def test_changing_a_hosts_docker_host_is_refused_before_any_resource(project: Path) -> None:
    first = run_program(project, two_hosts())
    moved = json.loads(TWO_HOSTS)
    moved[1]["dockerHost"] = "ssh://deploy@10.0.0.9:2222"
    mocks = ProgramMocks(IMAGE_V2, first.exports)

    with pytest.raises(ConfigError) as caught:
        run_program(project, two_hosts() | {"hosts": json.dumps(moved)}, mocks=mocks)
    assert str(caught.value) == (
        "nocturna-infra:hosts[1].dockerHost: host h2 was deployed on "
        "'ssh://deploy@10.0.0.2:2222', and changing its dockerHost would point its network, "
        "image and slots at another Docker daemon without replacing any of them (the docker "
        "provider forces no replacement when its host changes); got "
        "'ssh://deploy@10.0.0.9:2222'. Set it back to 'ssh://deploy@10.0.0.2:2222'. " + MOVE_A_HOST
    )
    assert [args.typ for args in mocks.registered] == ["pulumi:pulumi:StackReference"]


def test_giving_the_first_host_an_explicit_docker_host_later_is_refused(project: Path) -> None:
    first = run_program(project, base_config())
    explicit = json.dumps([{"name": "local", "dockerHost": "unix:///run/other-docker.sock"}])
    mocks = ProgramMocks(IMAGE_V1, first.exports)

    with pytest.raises(ConfigError) as caught:
        run_program(project, base_config(hosts=explicit), mocks=mocks)
    assert str(caught.value) == (
        "nocturna-infra:hosts[0].dockerHost: host local was deployed on '' (the stack's "
        "default docker provider), and changing its dockerHost would point its network, image "
        "and slots at another Docker daemon without replacing any of them (the docker provider "
        "forces no replacement when its host changes); got 'unix:///run/other-docker.sock'. "
        "Set it back to ''. " + MOVE_A_HOST
    )
    assert [args.typ for args in mocks.registered] == ["pulumi:pulumi:StackReference"]


def test_a_record_without_docker_hosts_accepts_the_hosts_as_configured(project: Path) -> None:
    """A stack last deployed before the record kept dockerHost: nothing to compare yet."""
    record = recorded_program(project)
    explicit = json.dumps([{"name": "local", "dockerHost": "unix:///run/other-docker.sock"}])

    run = run_program(
        project, base_config(hosts=explicit), mocks=ProgramMocks(IMAGE_V1, record["exports"])
    )

    assert run.exports["deployment"]["dockerHosts"] == {"local": "unix:///run/other-docker.sock"}
