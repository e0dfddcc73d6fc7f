"""Every container argument reads back from a real Docker daemon as the program declares it.

Issue 9, finding 2: the docker provider stores what its read makes of `docker inspect` and
diffs the next run's inputs against that; a value that reads back differently replaces the
slot (or, for memory_swap, updates it) on every `pulumi up`. Here the program's arguments are
declared through the real SlotContainer component (SDK mocks), created on the real daemon by
the same translation the rehearsal uses (tests/engine_api.py, following the provider's
create), read back with the provider's mapping (tests/provider_readback.py) and compared.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from nocturna_infra.program import render
from nocturna_infra.settings import Settings, parse_settings
from nocturna_infra.slot import Slot
from tests import docker_host
from tests.declared_containers import registered_inputs, start_declared
from tests.engine_api import container_create_body, engine
from tests.ports import free_port
from tests.provider_readback import (
    NOT_READ_BACK,
    READ_FIELDS,
    REPLACE_ON_CHANGE,
    declared,
    differences,
    read_back,
    tf_name,
)

SERVICE = "nocturna-readback"


def settings_for(network: str = "nocturna-network", **overrides: str) -> Settings:
    raw = {"serviceName": SERVICE, "networkName": network, **overrides}
    return parse_settings(raw, api_key="k", project_dir=None)


# --- Without Docker: nothing the program declares escapes the read-back comparison ---------


@pytest.mark.parametrize(
    ("overrides", "slot"),
    [({}, Slot.BLUE), ({"environment": "staging"}, Slot.STAGING)],
    ids=["production", "staging"],
)
def test_every_container_argument_is_read_back_or_listed_as_not_read(
    overrides: dict[str, str], slot: Slot
) -> None:
    args = render.container_args(settings_for(**overrides), slot, "sha256:" + "0" * 64)

    unaccounted = {key for key in args if tf_name(key) not in READ_FIELDS | set(NOT_READ_BACK)}

    assert unaccounted == set()
    assert set(NOT_READ_BACK) <= {tf_name(key) for key in args}, "stale NOT_READ_BACK entries"
    assert {tf_name(key) for key in args} - set(NOT_READ_BACK) == READ_FIELDS


def test_replace_on_change_arguments_the_read_skips_keep_their_declared_value() -> None:
    """env, labels and networks_advanced replace on change but are not read: no drift source."""
    args = render.container_args(settings_for(), Slot.BLUE, "sha256:" + "0" * 64)
    skipped = {tf_name(key) for key in args if tf_name(key) in NOT_READ_BACK} & REPLACE_ON_CHANGE

    assert skipped == {"env", "labels", "networks_advanced"}


# --- On the real daemon -------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_id() -> Iterator[str]:
    docker_host.ensure_engine()
    docker_host.ensure_base_image()
    result = docker_host.build(docker_host.FIXTURE_SERVICE, args=docker_host.default_build_args())
    yield result.image_id
    docker_host.remove_image(result)


@pytest.fixture(scope="module")
def network() -> Iterator[str]:
    name = f"nocturna-readback-{uuid.uuid4().hex[:8]}"
    engine("POST", "/networks/create", {"Name": name, "CheckDuplicate": True}, ok=(201,))
    yield name
    engine("DELETE", f"/networks/{name}", ok=(204, 404))


@pytest.fixture
def containers() -> Iterator[list[str]]:
    created: list[str] = []
    yield created
    for container in created:
        engine("DELETE", f"/containers/{container}?force=true", ok=(204, 404))


def unique_ports(**overrides: str) -> dict[str, str]:
    blue, green, staging = (str(free_port()) for _ in range(3))
    while len({blue, green, staging}) < 3:  # pragma: no cover - free ports rarely repeat
        blue, green, staging = (str(free_port()) for _ in range(3))
    return {"bluePort": blue, "greenPort": green, "stagingPort": staging, **overrides}


MATRIX = [
    pytest.param({}, id="defaults"),
    pytest.param({"cpus": "1"}, id="cpus-1"),
    pytest.param({"cpus": "2"}, id="cpus-2"),
    pytest.param({"cpus": "0.5"}, id="cpus-0.5"),
    pytest.param({"cpus": "1.25"}, id="cpus-1.25"),
    pytest.param({"healthIntervalSeconds": "60"}, id="interval-60"),
    pytest.param(
        {"healthIntervalSeconds": "90", "healthTimeoutSeconds": "61"}, id="interval-90-timeout-61"
    ),
    pytest.param({"healthStartPeriodSeconds": "1"}, id="start-period-1"),
    pytest.param({"healthStartPeriodSeconds": "120"}, id="start-period-120"),
    pytest.param({"memoryMb": "512", "memoryReservationMb": "256"}, id="memory-512"),
    pytest.param({"memoryMb": "2048", "memoryReservationMb": "0"}, id="memory-2048"),
    pytest.param(
        {"logMaxSizeMb": "50", "logMaxFiles": "2", "maxProcesses": "1000", "shmSizeMb": "128"},
        id="logs-processes-shm",
    ),
    pytest.param({"environment": "staging"}, id="staging"),
]


@pytest.mark.docker
@pytest.mark.parametrize("overrides", MATRIX)
def test_declared_arguments_read_back_unchanged(
    image_id: str, network: str, containers: list[str], overrides: dict[str, str]
) -> None:
    settings = settings_for(network, **unique_ports(**overrides))
    slot = Slot.STAGING if settings.environment.value == "staging" else Slot.BLUE
    args = render.container_args(settings, slot, image_id)

    inspected = start_declared(args, containers)
    expected = declared(args)

    assert differences(expected, read_back(inspected, expected)) == {}


@pytest.mark.docker
def test_a_start_period_of_zero_reads_back_as_the_images(
    image_id: str, network: str, containers: list[str]
) -> None:
    """Why healthStartPeriodSeconds must be at least 1: Docker fills 0 from the image."""
    args = render.container_args(settings_for(network, **unique_ports()), Slot.BLUE, image_id)
    args["healthcheck"] = {**args["healthcheck"], "start_period": "0s"}

    inspected = start_declared(args, containers)
    expected = declared(args)

    assert differences(expected, read_back(inspected, expected)) == {
        "healthcheck": (
            expected["healthcheck"],
            {**expected["healthcheck"], "start_period": "30s"},  # the Dockerfile's HEALTHCHECK
        )
    }


@pytest.mark.docker
def test_without_memory_swap_docker_records_twice_the_memory(
    image_id: str, network: str, containers: list[str]
) -> None:
    """Why memory_swap is declared: unset, it reads back as 2x memory on every run."""
    args = render.container_args(settings_for(network, **unique_ports()), Slot.BLUE, image_id)
    del args["memory_swap"]

    inspected = start_declared(args, containers)

    assert read_back(inspected, declared(args))["memory_swap"] == 2 * args["memory"]


@pytest.mark.docker
def test_raising_memory_in_place_reads_back_as_the_new_declaration(
    image_id: str, network: str, containers: list[str]
) -> None:
    """memory and memory_swap update in place (resourceDockerContainerUpdate), together."""
    ports = unique_ports()
    before = render.container_args(settings_for(network, **ports), Slot.BLUE, image_id)
    after = render.container_args(
        settings_for(network, memoryMb="3072", **ports), Slot.BLUE, image_id
    )
    inspected = start_declared(before, containers)

    # The update call resourceDockerContainerUpdate makes (UpdateConfig with Resources).
    engine(
        "POST",
        f"/containers/{inspected['Id']}/update",
        {
            "RestartPolicy": {"Name": after["restart"], "MaximumRetryCount": 0},
            "CpuShares": 0,
            "Memory": after["memory"] * 1024 * 1024,
            "MemoryReservation": after["memory_reservation"] * 1024 * 1024,
            "CpusetCpus": "",
            "MemorySwap": after["memory_swap"] * 1024 * 1024,
        },
    )
    updated = engine("GET", f"/containers/{inspected['Id']}/json")
    expected = declared(after)

    assert differences(expected, read_back(updated, expected)) == {}


# --- A daemon whose daemon.json sets log options --------------------------------------------

DAEMON_LOG_OPTS = {
    "max-size": "1m",
    "max-file": "9",
    "compress": "true",
    "tag": "{{.ImageName}}",
    "labels": "team",
    "labels-regex": "^team$",
    "env": "PATH",
    "env-regex": "^P",
    "mode": "non-blocking",
    "cache-disabled": "true",
    "cache-max-size": "5m",
    "cache-max-file": "2",
    "cache-compress": "false",
}


@dataclass(frozen=True)
class SecondDaemon:
    socket: str

    def docker(self, *args: str, stdin: bytes | None = None) -> str:
        done = subprocess.run(
            [docker_host.DOCKER, "-H", f"unix://{self.socket}", *args],
            input=stdin, capture_output=True, timeout=120, check=True,
        )  # fmt: skip
        return done.stdout.decode().strip()


@pytest.fixture(scope="module")
def daemon_with_log_opts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecondDaemon]:
    """A private dockerd whose daemon.json sets every kind of log option.

    Own socket, data and exec roots, and its own network namespace (`unshare --net`): a
    dockerd started with `--bridge none` deletes the host's docker0 at startup
    (removeDefaultBridgeInterface in moby's daemon_unix.go), which would cut the shared
    daemon's default-bridge containers off.
    """
    if not (shutil.which("dockerd") and shutil.which("unshare")) or os.geteuid() != 0:
        pytest.skip("needs dockerd, unshare and root to start a second daemon")
    root = tmp_path_factory.mktemp("dockerd")
    config = root / "daemon.json"
    config.write_text(json.dumps({"log-driver": "json-file", "log-opts": DAEMON_LOG_OPTS}))
    daemon = SecondDaemon(str(root / "docker.sock"))
    with (root / "dockerd.log").open("wb") as log:
        process = subprocess.Popen(
            ["unshare", "--net", "dockerd", "--host", f"unix://{daemon.socket}",
             "--data-root", str(root / "data"),
             "--exec-root", str(root / "exec"), "--pidfile", str(root / "docker.pid"),
             "--bridge", "none", "--iptables=false", "--ip-masq=false",
             "--config-file", str(config)],
            stdout=log, stderr=log,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not os.path.exists(daemon.socket):
            time.sleep(0.2)
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.CalledProcessError):
                daemon.docker("info")
                break
            time.sleep(0.5)
        # An image without files is enough: containers are created, never started.
        empty = io.BytesIO()
        tarfile.open(fileobj=empty, mode="w").close()
        daemon.docker("import", "-", "nocturna-readback-empty:1", stdin=empty.getvalue())
        yield daemon
    finally:
        process.terminate()
        process.wait(timeout=60)
        shutil.rmtree(root / "data", ignore_errors=True)


def log_state_on(daemon: SecondDaemon, args: Mapping[str, Any]) -> dict[str, Any]:
    """Create a container from `args` on `daemon` (no network: it has no bridge); read its
    log driver and options back the provider's way."""
    body = container_create_body(registered_inputs(args))
    body["Image"] = "nocturna-readback-empty:1"
    body["ExposedPorts"] = {}
    body["HostConfig"] |= {"NetworkMode": "none", "PortBindings": {}}
    body.pop("Healthcheck")
    body["Cmd"] = ["/never-run"]  # the empty image has no command
    name = f"nocturna-readback-{uuid.uuid4().hex[:8]}"
    created = engine("POST", f"/containers/create?name={name}", body, ok=(201,),
                     socket_path=daemon.socket)  # fmt: skip
    try:
        inspected = engine("GET", f"/containers/{created['Id']}/json", socket_path=daemon.socket)
    finally:
        engine("DELETE", f"/containers/{created['Id']}", ok=(204,), socket_path=daemon.socket)
    read = read_back({**inspected, "State": {"Running": False}}, declared(args))
    return {"log_driver": read["log_driver"], "log_opts": read["log_opts"]}


@pytest.mark.docker
def test_daemon_log_options_cannot_change_the_declared_ones(
    daemon_with_log_opts: SecondDaemon,
) -> None:
    args = render.container_args(settings_for(), Slot.BLUE, "nocturna-readback-empty:1")

    assert log_state_on(daemon_with_log_opts, args) == {
        "log_driver": args["log_driver"],
        "log_opts": args["log_opts"],
    }


@pytest.mark.docker
def test_options_left_unset_are_filled_from_daemon_json(
    daemon_with_log_opts: SecondDaemon,
) -> None:
    """Why every option is given: with only max-size and max-file (the old arguments) the
    daemon merges its own, and the read-back map differs on every run."""
    args = render.container_args(settings_for(), Slot.BLUE, "nocturna-readback-empty:1")
    args["log_opts"] = {"max-size": "10m", "max-file": "5"}

    read = log_state_on(daemon_with_log_opts, args)["log_opts"]

    assert read == {**DAEMON_LOG_OPTS, "max-size": "10m", "max-file": "5"}
