from __future__ import annotations

from typing import Any

import pytest
from harness import as_engine_returns

from nocturna_infra.program import render
from nocturna_infra.program.record import in_read_back_form, recorded_slot_problem
from nocturna_infra.settings import parse_settings
from nocturna_infra.slot import Slot

IMAGE = "sha256:" + "ab" * 32
SETTINGS = parse_settings({}, api_key="k", project_dir=None)
TEMPLATE = render.container_args(SETTINGS, Slot.BLUE, "")


def recorded(**changes: Any) -> dict[str, Any]:
    """The blue slot as the last run recorded it (numbers as floats, as outputs return them)."""
    args = as_engine_returns({**TEMPLATE, "image": IMAGE})
    for key, value in changes.items():
        if value is None:
            del args[key]
        else:
            args[key] = value
    return args


def problem(**changes: Any) -> str | None:
    return recorded_slot_problem(Slot.BLUE, recorded(**changes), TEMPLATE)


def test_the_record_of_the_last_run_is_accepted() -> None:
    assert problem() is None


def test_mutable_settings_may_differ_from_this_run() -> None:
    other = parse_settings(
        {"env": '{"LOG_LEVEL": "debug"}', "memoryMb": "2048", "healthRetries": "5",
         "cpus": "1.5", "bluePort": "3100", "appPort": "8080", "tmpfsSizeMb": "64"},
        api_key="k",
        project_dir=None,
    )  # fmt: skip
    earlier = as_engine_returns({**render.container_args(other, Slot.BLUE, ""), "image": IMAGE})

    assert recorded_slot_problem(Slot.BLUE, earlier, TEMPLATE) is None


def test_a_record_from_an_earlier_version_may_lack_a_key_that_is_not_security_relevant() -> None:
    assert problem(stop_signal=None) is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"privileged": True},
                     "slot blue: recorded argument 'privileged' is not one nocturna-infra declares "
                     "for a container", id="privileged"),
        pytest.param({"volumes": [{"host_path": "/", "container_path": "/host"}]},
                     "slot blue: recorded argument 'volumes' is not one nocturna-infra declares "
                     "for a container", id="root-volume"),
        pytest.param({"user": "root"},
                     "slot blue: recorded argument 'user' is not one nocturna-infra declares for "
                     "a container", id="user-root"),
        pytest.param({"read_only": False},
                     "slot blue: recorded read_only is False, but this run declares True",
                     id="writable-root"),
        pytest.param({"read_only": None},
                     "slot blue: recorded arguments lack 'read_only', which this run declares",
                     id="read-only-removed"),
        pytest.param({"security_opts": []},
                     "slot blue: recorded security_opts is [], but this run declares "
                     "['no-new-privileges:true']", id="new-privileges"),
        pytest.param({"capabilities": {"drops": []}},
                     "slot blue: recorded capabilities is {'drops': []}, but this run declares "
                     "{'drops': ['ALL']}", id="capabilities"),
        pytest.param({"ports": [{"internal": 3011.0, "external": 3014.0, "ip": "0.0.0.0",
                                 "protocol": "tcp"}]},
                     "slot blue: recorded ports[0].ip is '0.0.0.0', but this run declares "
                     "'127.0.0.1'", id="published-everywhere"),
        pytest.param({"ports": [{"internal": 3011.0, "external": 3014.0, "ip": "127.0.0.1",
                                 "protocol": "tcp"}] * 2},
                     "slot blue: recorded ports is [{'external': 3014, 'internal': 3011, 'ip': "
                     "'127.0.0.1', 'protocol': 'tcp'}, {'external': 3014, 'internal': 3011, 'ip': "
                     "'127.0.0.1', 'protocol': 'tcp'}], but this run publishes 1 port(s)",
                     id="extra-port"),
        pytest.param({"tmpfs": {"/tmp": "rw,exec,size=256m",
                                "/home/node/.config": TEMPLATE["tmpfs"]["/home/node/.config"]}},
                     "slot blue: recorded tmpfs['/tmp'] has the option 'exec', which this run "
                     "does not set ('rw,nosuid,nodev,noexec,size=256m')", id="tmpfs-exec"),
        pytest.param({"tmpfs": {"/tmp": "rw,size=1m", "/": "rw"}},
                     "slot blue: recorded tmpfs is {'/': 'rw', '/tmp': 'rw,size=1m'}, but this "
                     "run mounts ['/home/node/.config', '/tmp']", id="tmpfs-mount-point"),
        pytest.param({"networks_advanced": [{"name": "host", "aliases": ["nocturna-chart-blue"]}]},
                     "slot blue: recorded networks_advanced is [{'aliases': "
                     "['nocturna-chart-blue'], 'name': 'host'}], but this run declares "
                     "[{'aliases': ['nocturna-chart-blue'], 'name': 'nocturna-network'}]",
                     id="host-network"),
        pytest.param({"image": "evil.example/miner:latest"},
                     "slot blue: recorded image is 'evil.example/miner:latest', not a local "
                     "image ID (sha256:<64 hex>)", id="registry-image"),
        pytest.param({"name": "nocturna-chart-green"},
                     "slot blue: recorded name is 'nocturna-chart-green', but this run declares "
                     "'nocturna-chart-blue'", id="other-slots-name"),
    ],
)  # fmt: skip
def test_a_record_that_widens_what_the_container_may_do_is_refused(
    changes: dict[str, Any], message: str
) -> None:
    assert problem(**changes) == message


def test_the_check_follows_whatever_keys_render_produces() -> None:
    template = {**TEMPLATE, "pids_limit": 256}

    assert recorded_slot_problem(Slot.BLUE, recorded(), template) is None
    assert recorded_slot_problem(Slot.BLUE, recorded(pids_limit=256.0), template) is None
    assert recorded_slot_problem(Slot.BLUE, recorded(pids_limit=256.0), TEMPLATE) == (
        "slot blue: recorded argument 'pids_limit' is not one nocturna-infra declares for a "
        "container"
    )


def test_values_recorded_before_the_read_back_forms_are_declared_as_the_provider_reads_them() -> (
    None
):
    old = recorded(cpus="1", healthcheck={**TEMPLATE["healthcheck"], "interval": "60s",
                                          "timeout": "5s", "start_period": "90s"})  # fmt: skip

    args = in_read_back_form(old)

    assert args["cpus"] == "1.0"
    assert {key: args["healthcheck"][key] for key in ("interval", "timeout", "start_period")} == {
        "interval": "1m0s",
        "timeout": "5s",
        "start_period": "1m30s",
    }
    assert args["healthcheck"]["tests"] == TEMPLATE["healthcheck"]["tests"]
    assert {k: v for k, v in args.items() if k not in ("cpus", "healthcheck")} == {
        k: v for k, v in old.items() if k not in ("cpus", "healthcheck")
    }


def test_values_already_in_read_back_form_are_kept() -> None:
    current = recorded(cpus="0.9")

    assert in_read_back_form(current) == current
