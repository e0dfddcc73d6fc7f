"""The end-to-end rehearsal (tests/rehearsal.py) and its input translation."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.engine_api import UnsupportedInputError, container_create_body, go_parse_duration
from tests.rehearsal import Rehearsal, render_table

INPUTS = {
    "name": "svc-blue",
    "image": "sha256:abc",
    "envs": ["PORT=3011", "API_KEY=k"],
    "labels": [{"label": "com.nocturna.slot", "value": "blue"}],
    "ports": [{"internal": 3011.0, "external": 3014.0, "ip": "127.0.0.1", "protocol": "tcp"}],
    "networksAdvanced": [{"name": "net", "aliases": ["svc-blue"]}],
    "restart": "unless-stopped",
    "memory": 1024.0,
    "memoryReservation": 512.0,
    "memorySwap": 1024.0,
    "cpus": "0.9",
    "shmSize": 512.0,
    "tmpfs": {"/tmp": "rw,size=256m"},
    "ulimits": [{"name": "nproc", "soft": 4096.0, "hard": 4096.0}],
    "readOnly": True,
    "init": True,
    "securityOpts": ["no-new-privileges:true"],
    "capabilities": {"drops": ["ALL"]},
    "logDriver": "json-file",
    "logOpts": {"max-size": "10m"},
    "stopSignal": "SIGTERM",
    "stopTimeout": 40.0,
    "destroyGraceSeconds": 40.0,
    "healthcheck": {"tests": ["CMD", "true"], "interval": "1m0s", "timeout": "5s",
                    "retries": 3.0, "startPeriod": "1m30s"},
    "wait": True,
    "waitTimeout": 70.0,
}  # fmt: skip


def test_declared_container_inputs_become_an_engine_api_body() -> None:
    assert container_create_body(INPUTS) == {
        "Image": "sha256:abc",
        "Env": ["PORT=3011", "API_KEY=k"],
        "Labels": {"com.nocturna.slot": "blue"},
        "ExposedPorts": {"3011/tcp": {}},
        "Healthcheck": {
            "Test": ["CMD", "true"],
            "Interval": 60_000_000_000,
            "Timeout": 5_000_000_000,
            "Retries": 3,
            "StartPeriod": 90_000_000_000,
        },
        "StopSignal": "SIGTERM",
        "StopTimeout": 40,
        "HostConfig": {
            "PortBindings": {"3011/tcp": [{"HostIp": "127.0.0.1", "HostPort": "3014"}]},
            "RestartPolicy": {"Name": "unless-stopped"},
            "Memory": 1024 * 1024 * 1024,
            "MemoryReservation": 512 * 1024 * 1024,
            "MemorySwap": 1024 * 1024 * 1024,
            "NanoCpus": 900_000_000,
            "ShmSize": 512 * 1024 * 1024,
            "Tmpfs": {"/tmp": "rw,size=256m"},
            "Ulimits": [{"Name": "nproc", "Soft": 4096, "Hard": 4096}],
            "ReadonlyRootfs": True,
            "Init": True,
            "SecurityOpt": ["no-new-privileges:true"],
            "CapAdd": [],
            "CapDrop": ["ALL"],
            "LogConfig": {"Type": "json-file", "Config": {"max-size": "10m"}},
            "NetworkMode": "bridge",
        },
    }


@pytest.mark.parametrize(
    ("text", "nanoseconds"),
    [("0s", 0), ("0", 0), ("10s", 10**10), ("1m0s", 6 * 10**10), ("1h0m0s", 3600 * 10**9),
     ("1m30s", 9 * 10**10), ("1.5s", 15 * 10**8), ("300ms", 3 * 10**8)],
)  # fmt: skip
def test_go_durations_are_parsed_as_time_parse_duration(text: str, nanoseconds: int) -> None:
    assert go_parse_duration(text) == nanoseconds


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        pytest.param(
            {**INPUTS, "privileged": True},
            r"Container: unsupported inputs \['privileged'\]",
            id="top-level",
        ),
        pytest.param(
            {**INPUTS, "healthcheck": {**INPUTS["healthcheck"], "startInterval": "1s"}},
            r"Container.healthcheck: unsupported inputs \['startInterval'\]",
            id="nested",
        ),
        pytest.param(
            {**INPUTS, "ulimits": [{"name": "nofile", "soft": 1, "hard": 1, "x": 1}]},
            r"Container.ulimits: unsupported inputs \['x'\]",
            id="ulimit",
        ),
        pytest.param(
            {**INPUTS, "cpus": "0.0000000001"},
            "ParseCPUs would refuse it",
            id="cpus-too-precise",
        ),
        pytest.param(
            {**INPUTS, "healthcheck": {"tests": ["CMD"], "interval": "1d"}},
            "duration '1d': not a Go duration",
            id="duration",
        ),
    ],
)  # fmt: skip
def test_inputs_the_rehearsal_cannot_apply_fail_loudly(inputs: dict, message: str) -> None:
    with pytest.raises(UnsupportedInputError, match=message):
        container_create_body(inputs)


@pytest.mark.docker
@pytest.mark.nginx
def test_blue_green_cycle_on_real_docker_and_nginx_under_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = Rehearsal(tmp_path).run()

    with capsys.disabled():
        print("\n" + render_table(results))
    assert [result.step for result in results] == [
        "1 first deploy (v1, live blue)",
        "2 deploy v2 to standby",
        "3 switch to green",
        "4 rollback to blue",
        "5a deploy broken v3",
        "5b retry the deploy",
        "5c switch to green (recorded v2)",
        "5d provider diff on live green",
        "5e rollback to blue",
        "6a deploy v4 (renders fail)",
        "6b switch: smoke gate refuses",
        "7a deploy v5 (breaks later)",
        "7b switch: watch switches back",
        "7c keep blue (activeSlot blue)",
        "7d deploy v6 (renders fail)",
        "7e switch: renders fail under a GET and 404 flood",
        "7f deploy v7 (renders hang)",
        "7g switch: renders hang past the limit",
        "7h deploy v8 (good)",
        "7i switch: a good release under mixed traffic",
        "7j deploy v9 to blue (429 on /ping)",
        "7k switch: probes answered 429 by a healthy slot",
        "7l deploy v10 to green (renders fail)",
        "7m progressive switch: aborted at 5 %",
        "7n deploy v11 to green (good)",
        "7o progressive switch: 5, 25, 50 %, then all",
        "8 staging deploy",
    ]
    assert [problem for result in results for problem in result.problems] == []
    under_load = [result for result in results if result.requests]
    # Every failed request was answered by the release the watch switched back; none by the
    # slot serving before, and none lost by a switch.
    assert all(result.failed + result.slow_failed == result.broken_failed for result in under_load)
    by_step = {result.step.split()[0]: result for result in results}
    for step in ("7b", "7e"):  # 7b, and 7e (issue 21: one route failing under floods)
        assert by_step[step].broken_failed > 0
        assert by_step[step].broken_answered.startswith("green ")
    assert by_step["7g"].served.startswith("blue v1.0.0")  # a hung route switched back
    assert by_step["7i"].served.startswith("green v8.0.0")  # a good release kept
    assert by_step["7k"].served.startswith("blue v9.0.0")  # rate-limited probes: kept
    assert by_step["7m"].served.startswith("blue v9.0.0")  # canary aborted at its first step
    assert by_step["7o"].served.startswith("green v11.0.0")  # canary went all the way
