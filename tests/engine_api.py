"""Docker Engine API over the unix socket, and docker.Container inputs applied the provider's way.

Shared by the rehearsal (tests/rehearsal.py) and the read-back test
(tests/test_provider_readback.py), so both create containers from the same translation.
`container_create_body` follows `resourceDockerContainerCreate` of
kreuzwerker/terraform-provider-docker v4.5.0 (internal/provider/resource_docker_container_funcs.go),
the provider pulumi-docker 5.2 bridges: `network_mode` keeps its schema default "bridge", and
`create_container` then disconnects `bridge` and connects each `networks_advanced` entry with
its aliases, as that function does after `ContainerCreate`.

An input the translation does not know fails loudly (`UnsupportedInputError`), never silently
dropped: adding a container argument to render.py means teaching it here too.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final

from nocturna_infra.provider_form import parse_cpus

DOCKER_SOCKET: Final = "/var/run/docker.sock"
MB: Final = 1024 * 1024


class UnsupportedInputError(ValueError):
    """A declared input this harness cannot apply; failing beats silently dropping it."""


class ApplyError(RuntimeError):
    """Applying a resource failed, as the provider's step would."""


class SshEngine:
    """A Docker engine reached as a docker provider reaches an ssh:// host (docker/cli
    connhelper): `ssh [sshOpts] -l USER -p PORT HOST -- docker system dial-stdio`, with the
    Engine API spoken over that process's stdin/stdout."""

    def __init__(self, url: str, ssh_opts: Sequence[str]) -> None:
        match = re.fullmatch(r"ssh://(?:([^@/]+)@)?([^:/]+)(?::(\d+))?", url)
        if not match:
            msg = f"not an ssh:// docker host: {url!r}"
            raise ValueError(msg)
        self.url = url
        self.user, self.host, self.port = match.group(1), match.group(2), match.group(3)
        self.ssh_opts = tuple(ssh_opts)

    def argv(self) -> list[str]:
        argv = ["ssh", "-F", "/dev/null", *self.ssh_opts, "-T"]
        argv += ["-l", self.user] if self.user else []
        argv += ["-p", self.port] if self.port else []
        return [*argv, "--", self.host, "docker", "system", "dial-stdio"]


_TARGET = threading.local()


@contextmanager
def engine_target(target: str | SshEngine) -> Iterator[None]:
    """Within the block, on this thread, `engine()` calls without a socket go to `target`."""
    before = getattr(_TARGET, "value", None)
    _TARGET.value = target
    try:
        yield
    finally:
        _TARGET.value = before


class _SshConnection(http.client.HTTPConnection):
    def __init__(self, remote: SshEngine) -> None:
        super().__init__("docker", timeout=120)
        self._remote = remote
        self._process: subprocess.Popen[bytes] | None = None

    def connect(self) -> None:
        ours, theirs = socket.socketpair()
        self._process = subprocess.Popen(
            self._remote.argv(), stdin=theirs, stdout=theirs, stderr=subprocess.DEVNULL
        )
        theirs.close()
        ours.settimeout(self.timeout)
        self.sock = ours

    def close(self) -> None:
        super().close()
        if self._process is not None:
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=120)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def engine(
    method: str,
    path: str,
    body: Any = None,
    ok: tuple[int, ...] = (200,),
    socket_path: str | SshEngine | None = None,
) -> Any:
    """One Docker Engine API call; returns the decoded JSON (or None).

    `socket_path`: a unix socket path or an `SshEngine`; None: this thread's `engine_target`,
    else the local engine."""
    target = socket_path or getattr(_TARGET, "value", None) or DOCKER_SOCKET
    connection: http.client.HTTPConnection = (
        _SshConnection(target) if isinstance(target, SshEngine) else _UnixConnection(target)
    )
    try:
        payload = None if body is None else json.dumps(body)
        headers = {"Content-Type": "application/json"} if payload else {}
        connection.request(method, path, body=payload, headers=headers)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    if response.status not in ok:
        msg = f"docker API {method} {path}: {response.status} {data.decode(errors='replace')}"
        raise ApplyError(msg)
    return json.loads(data) if data else None


_DURATION_PART: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_NS: Final = {"ns": 1, "us": 10**3, "µs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
                   "h": 3600 * 10**9}  # fmt: skip


def go_parse_duration(value: str) -> int:
    """Nanoseconds of a Go duration ("10s", "1m30s", "1h0m0s"), as `time.ParseDuration`."""
    if value == "0":
        return 0
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNIT_NS[match.group(2)]
        position = match.end()
    if position != len(value) or not value:
        msg = f"duration {value!r}: not a Go duration such as 10s or 1m30s"
        raise UnsupportedInputError(msg)
    return round(total)


def check_inputs(kind: str, value: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        msg = f"{kind}: unsupported inputs {unknown}"
        raise UnsupportedInputError(msg)


CONTAINER_INPUTS: Final = {
    "name", "image", "envs", "labels", "ports", "networksAdvanced", "restart", "memory",
    "memoryReservation", "memorySwap", "cpus", "shmSize", "tmpfs", "ulimits", "readOnly", "init",
    "securityOpts", "capabilities", "logDriver", "logOpts", "stopSignal", "stopTimeout",
    "destroyGraceSeconds", "healthcheck", "wait", "waitTimeout",
}  # fmt: skip


def container_create_body(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Engine API `POST /containers/create` body for declared Container inputs.

    Field by field what resourceDockerContainerCreate sends; networks are connected after the
    create (`create_container`).
    """
    check_inputs("Container", inputs, CONTAINER_INPUTS)
    exposed: dict[str, Any] = {}
    bindings: dict[str, Any] = {}
    for port in inputs.get("ports", []):
        check_inputs("Container.ports", port, {"internal", "external", "ip", "protocol"})
        key = f"{int(port['internal'])}/{port.get('protocol', 'tcp')}"
        exposed[key] = {}
        bindings.setdefault(key, []).append(
            {"HostIp": port.get("ip", "0.0.0.0"), "HostPort": str(int(port["external"]))}
        )
    for network in inputs.get("networksAdvanced", []):
        check_inputs("Container.networksAdvanced", network, {"name", "aliases"})
    capabilities = inputs.get("capabilities", {})
    check_inputs("Container.capabilities", capabilities, {"adds", "drops"})
    ulimits = []
    for ulimit in inputs.get("ulimits", []):
        check_inputs("Container.ulimits", ulimit, {"name", "soft", "hard"})
        ulimits.append(
            {"Name": ulimit["name"], "Soft": int(ulimit["soft"]), "Hard": int(ulimit["hard"])}
        )
    health = inputs.get("healthcheck")
    healthcheck = None
    if health is not None:
        check_inputs(
            "Container.healthcheck",
            health,
            {"tests", "interval", "timeout", "retries", "startPeriod"},
        )
        healthcheck = {
            "Test": list(health["tests"]),
            "Interval": go_parse_duration(health.get("interval", "0s")),
            "Timeout": go_parse_duration(health.get("timeout", "0s")),
            "Retries": int(health.get("retries", 0)),
            "StartPeriod": go_parse_duration(health.get("startPeriod", "0s")),
        }
    nano_cpus = 0
    if "cpus" in inputs:
        parsed = parse_cpus(str(inputs["cpus"]).rstrip("."))
        if parsed is None:
            msg = f"Container.cpus {inputs['cpus']!r}: Docker's ParseCPUs would refuse it"
            raise UnsupportedInputError(msg)
        nano_cpus = parsed
    swap = int(inputs.get("memorySwap", 0))
    host_config: dict[str, Any] = {
        "PortBindings": bindings,
        "RestartPolicy": {"Name": inputs.get("restart", "no")},
        "Memory": int(inputs.get("memory", 0)) * MB,
        "MemoryReservation": int(inputs.get("memoryReservation", 0)) * MB,
        "MemorySwap": swap * MB if swap > 0 else swap,
        "NanoCpus": nano_cpus,
        "ShmSize": int(inputs.get("shmSize", 64)) * MB,
        "Tmpfs": dict(inputs.get("tmpfs", {})),
        "Ulimits": ulimits,
        "ReadonlyRootfs": bool(inputs.get("readOnly", False)),
        "Init": bool(inputs.get("init", False)),
        "SecurityOpt": list(inputs.get("securityOpts", [])),
        "CapAdd": list(capabilities.get("adds", [])),
        "CapDrop": list(capabilities.get("drops", [])),
        "LogConfig": {
            "Type": inputs.get("logDriver", "json-file"),
            "Config": dict(inputs.get("logOpts", {})),
        },
        # network_mode's schema default; the provider always sends it.
        "NetworkMode": "bridge",
    }
    body: dict[str, Any] = {
        "Image": inputs["image"],
        "Env": list(inputs.get("envs", [])),
        "Labels": {item["label"]: item["value"] for item in inputs.get("labels", [])},
        "ExposedPorts": exposed,
        "HostConfig": host_config,
    }
    if healthcheck is not None:
        body["Healthcheck"] = healthcheck
    if "stopSignal" in inputs:
        body["StopSignal"] = inputs["stopSignal"]
    if "stopTimeout" in inputs:
        body["StopTimeout"] = int(inputs["stopTimeout"])
    return body


def create_container(inputs: Mapping[str, Any], socket_path: str | SshEngine | None = None) -> str:
    """Create (not start) a container from declared inputs the provider's way; return its ID.

    After `ContainerCreate` the provider disconnects the default `bridge` network and
    connects every `networks_advanced` entry with its aliases.
    """
    body = container_create_body(inputs)  # validate before touching anything
    created = engine(
        "POST", f"/containers/create?name={inputs['name']}", body, ok=(201,),
        socket_path=socket_path,
    )  # fmt: skip
    container_id: str = created["Id"]
    networks = inputs.get("networksAdvanced", [])
    if networks:
        engine(
            "POST", "/networks/bridge/disconnect", {"Container": container_id, "Force": False},
            ok=(200, 404), socket_path=socket_path,
        )  # fmt: skip
        for network in networks:
            engine(
                "POST",
                f"/networks/{network['name']}/connect",
                {
                    "Container": container_id,
                    "EndpointConfig": {"Aliases": list(network.get("aliases", []))},
                },
                socket_path=socket_path,
            )
    return container_id
