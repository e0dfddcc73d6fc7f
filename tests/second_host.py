"""A second Docker host for tests, reached over SSH like a real remote one.

`scripts/second-docker-host.sh` does the work (second dockerd on its own socket and data-root,
sshd on 127.0.0.2:2222 letting one key in as user `nocturna-host2`); this module gives tests a
handle on it:

    host = start_session()                 # claim it for this process; starts what is missing
    host.docker("run", ...)                # the docker CLI over DOCKER_HOST=ssh://..., as users do
    host.run_http(name="...")              # a tiny labelled HTTP server published on 127.0.0.2
    with host.outage("daemon"): ...        # host down: dockerd #2 stopped (its containers too)
    with host.outage("ssh"): ...           # engine unreachable, containers still serving
    with host.outage("hang"): ...          # SSH connections hang until the client's timeout
    release_session()                      # last claim gone: everything stops again

A session's claim is its process id, so claims of crashed sessions expire by themselves, and a
host someone started by hand (`second-docker-host.sh start`) is never stopped by a test session.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import pytest
import requests

from tests.docker_host import (
    BASE_IMAGE,
    DOCKER,
    REPO_ROOT,
    TEST_LABEL,
    DockerError,
    ensure_base_image,
    ensure_engine,
)
from tests.ports import free_port

SCRIPT: Final = REPO_ROOT / "scripts" / "second-docker-host.sh"
HTTP_PORT: Final = 8080
"""Container port of `run_http`'s server."""

Part = Literal["daemon", "ssh", "hang"]
"""An outage: engine stopped (containers too), sshd stopped (refused), or sshd frozen (hangs)."""

_HTTP_SERVER_JS: Final = """
const http = require("http");
const host = process.env.HOST_LABEL;
http.createServer((req, res) => {
  res.setHeader("X-Slot", process.env.SLOT || "blue");
  res.setHeader("X-Host", host);
  res.end(host + "\\n");
}).listen(Number(process.env.PORT));
"""


def script(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run the helper script; raise with its output if it fails."""
    proc = subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        msg = f"{SCRIPT.name} {' '.join(args)} exited {proc.returncode}:\n"
        msg += proc.stdout + proc.stderr
        raise DockerError(msg)
    return proc


def unavailable_reason() -> str | None:
    """Why a second Docker host cannot exist on this machine, or None if it can."""
    if os.geteuid() != 0:
        return "a second dockerd and sshd need root"
    path = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    missing = [tool for tool in ("dockerd", "sshd") if shutil.which(tool, path=path) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (apt-get install docker.io openssh-server)"
    return None


@dataclass(frozen=True)
class SecondHost:
    """The second Docker host as its users see it: an ssh:// URL, SSH options, an address."""

    docker_host: str
    """`ssh://nocturna-host2@127.0.0.2:2222`: the DOCKER_HOST a user would set."""
    socket: str
    """`unix:///run/nocturna-host2/docker.sock`: the engine's own socket (setup only)."""
    address: str
    """Where its ports are published and where Nginx on the first host reaches them."""
    ssh_port: int
    user: str
    ssh_opts: tuple[str, ...]
    """What a docker provider's `sshOpts` (or DOCKER_SSH_OPTS) needs: key, known_hosts."""
    wrapper_dir: Path
    """Holds an `ssh` that adds `ssh_opts`; first on PATH, it serves the docker CLI."""
    log_dir: Path
    created: list[str] = field(default_factory=list, compare=False)

    def env(self) -> dict[str, str]:
        """The environment of a docker CLI that talks to this host over SSH."""
        return {
            **os.environ,
            "DOCKER_HOST": self.docker_host,
            "DOCKER_SSH_OPTS": " ".join(self.ssh_opts),
            "PATH": f"{self.wrapper_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "DOCKER_BUILDKIT": "1",
        }

    def docker(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """`docker ARGS` over ssh://, exactly as a user's CLI (or a docker provider) reaches it."""
        proc = subprocess.run(
            [DOCKER, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            check=False,
        )
        if check and proc.returncode != 0:
            msg = f"{self.docker_host}: docker {' '.join(args)[:300]} exited {proc.returncode}:\n"
            raise DockerError(msg + proc.stdout + proc.stderr)
        return proc

    def info(self) -> dict[str, Any]:
        """`docker info` of this host, over SSH."""
        data: dict[str, Any] = json.loads(self.docker("info", "--format", "{{json .}}").stdout)
        return data

    def free_port(self) -> int:
        """A port free on this host's publish address."""
        return free_port(self.address)

    def url(self, port: int, path: str = "/") -> str:
        return f"http://{self.address}:{port}{path}"

    def run_http(
        self,
        *,
        label: str = "host2",
        port: int | None = None,
        network: str | None = None,
        slot: str = "blue",
    ) -> tuple[str, int]:
        """Start a labelled HTTP server on this host, published on `address`; (id, host port).

        It answers every request with body and `X-Host` header `label` and `X-Slot` `slot`.
        Waits until it answers through the published port.
        """
        port = port or self.free_port()
        name = f"nocturna-test-h2-{uuid.uuid4().hex[:10]}"
        argv = ["run", "--detach", "--init", "--label", TEST_LABEL, "--name", name]
        argv += ["--publish", f"{self.address}:{port}:{HTTP_PORT}"]
        argv += ["--env", f"HOST_LABEL={label}", "--env", f"SLOT={slot}"]
        argv += ["--env", f"PORT={HTTP_PORT}"]
        if network:
            argv += ["--network", network]
        self.created.append(name)  # by name: a failed `run` can still leave it created
        try:
            cid = self.docker(*argv, BASE_IMAGE, "node", "-e", _HTTP_SERVER_JS).stdout.strip()
            wait_http(self.url(port), label)
        except (DockerError, subprocess.TimeoutExpired):
            self.remove(name)
            raise
        return cid, port

    def remove(self, *containers: str) -> None:
        """Remove containers this session created (by id or name; never anything else)."""
        if containers:
            self.docker("rm", "-f", *containers, check=False)

    def down(self, part: Part) -> None:
        """Simulate an outage: stop dockerd #2 (its containers stop too), stop only its sshd
        (connections refused, containers serving) or freeze sshd (connections hang)."""
        script("down", part)

    def up(self) -> None:
        """Start again whatever `down` stopped."""
        script("start", "--lease", str(os.getpid()))

    @contextmanager
    def outage(self, part: Part) -> Iterator[None]:
        """The host is down (`daemon`), refuses SSH (`ssh`) or hangs (`hang`) inside the
        block, and is back after it."""
        self.down(part)
        try:
            yield
        finally:
            self.up()


def wait_http(url: str, expected: str, timeout: float = 60) -> None:
    """Wait until `url` answers 200 with `expected` in its body."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            response = get(url)
            if response.status_code == 200 and expected in response.text:
                return
            last = f"{response.status_code} {response.text[:200]!r}"
        except requests.RequestException as exc:
            last = repr(exc)
        time.sleep(0.2)
    msg = f"{url}: no 200 with {expected!r} within {timeout:.0f}s (last: {last})"
    raise DockerError(msg)


def get(url: str, timeout: float = 5) -> requests.Response:
    """GET on a fresh connection, never through a proxy from the environment."""
    with requests.Session() as session:
        session.trust_env = False
        return session.get(url, timeout=timeout, headers={"Connection": "close"})


def _parse_env(text: str) -> dict[str, str]:
    """`export KEY=VALUE` lines of `second-docker-host.sh env` as a dict (quotes removed)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        values[key] = value.strip("'")
    return values


def describe() -> SecondHost:
    """The host's coordinates, as the script reports them (nothing is started)."""
    env = _parse_env(script("env").stdout)
    return SecondHost(
        docker_host=env["DOCKER_HOST"],
        socket=env["NOCTURNA_HOST2_SOCKET"],
        address=env["NOCTURNA_HOST2_ADDRESS"],
        ssh_port=int(env["NOCTURNA_HOST2_SSH_PORT"]),
        user=env["NOCTURNA_HOST2_USER"],
        ssh_opts=tuple(env["DOCKER_SSH_OPTS"].split()),
        wrapper_dir=Path(env["NOCTURNA_HOST2_WRAPPER_DIR"]),
        log_dir=Path(env["NOCTURNA_HOST2_LOG_DIR"]),
    )


def start_session() -> SecondHost:
    """Claim the second host for this process, starting whatever of it is not running."""
    ensure_engine()
    ensure_base_image()
    script("start", "--lease", str(os.getpid()))
    return describe()


def release_session(host: SecondHost | None = None) -> None:
    """Drop this process's claim; the last claim stops dockerd #2 and sshd (unless started by
    hand). Containers this session created are removed first."""
    if host is not None and host.created:
        host.remove(*host.created)
    script("release", str(os.getpid()))


def session_host() -> Iterator[SecondHost]:
    """Body of the session fixture: skip only where the host cannot exist (never in CI)."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"second Docker host: {reason}; .ci/run must install it", pytrace=False)
        pytest.skip(f"second Docker host: {reason}")
    host = start_session()
    try:
        yield host
    finally:
        release_session(host)


def status() -> tuple[bool, str]:
    """(both dockerd #2 and sshd run, the script's status text)."""
    proc = subprocess.run(
        [str(SCRIPT), "status"], capture_output=True, text=True, timeout=60, check=False
    )
    return proc.returncode == 0, proc.stdout


def host_processes() -> Sequence[str]:
    """Command lines of the host's running dockerd, containerd and sshd processes."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        program = cmdline.split(" ", 1)[0].rsplit("/", 1)[-1].rstrip(":")
        if "nocturna-host2" in cmdline and program in {"dockerd", "containerd", "sshd"}:
            found.append(cmdline.strip())
    return found
