"""Test support for a real Docker engine: start it, build images, run and inspect containers.

Everything created here carries the label `com.nocturna.test=1` (images through `--label`,
containers through `run`), so `remove_labelled()` cleans up without touching anything else on
a shared daemon. Published ports bind to 127.0.0.1 only; test traffic goes there and nowhere
else.

Reused by the Dockerfile tests, the benchmark and the end-to-end rehearsal:

    ensure_engine(); ensure_base_image()
    result = build(FIXTURE_SERVICE, args=default_build_args(VERSION="1.0.0"))
    cid = run(result.image_id, HARDENED_RUN_OPTIONS, publish=(free_port(), SERVICE_PORT))
    wait_healthy(cid)
    ...
    docker("rm", "-f", cid); remove_image(result)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from nocturna_infra.program.ca_certs import read_extra_ca_certs

DOCKER: Final = os.environ.get("DOCKER", "/usr/bin/docker")
REPO_ROOT: Final = Path(__file__).resolve().parent.parent
DOCKERFILE: Final = REPO_ROOT / "Dockerfile"
FIXTURE_SERVICE: Final = REPO_ROOT / "tests" / "fixture_service"
BASE_IMAGE_SCRIPT: Final = REPO_ROOT / "scripts" / "make-base-image.sh"
BASE_IMAGE: Final = "local/node:20-slim"
TEST_LABEL_KEY: Final = "com.nocturna.test"
TEST_LABEL: Final = f"{TEST_LABEL_KEY}=1"
SERVICE_PORT: Final = 3011

HARDENED_RUN_OPTIONS: Final[tuple[str, ...]] = (
    "--init",
    "--read-only",
    "--tmpfs",
    "/tmp:rw,nosuid,nodev,noexec,size=256m",
    "--tmpfs",
    "/home/node/.config:rw,nosuid,nodev,noexec,size=16m,uid=1000,gid=1000,mode=0700",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
)
"""How the program runs the service: tini as PID 1, read-only root, tmpfs where Chromium writes."""


class DockerError(RuntimeError):
    """A docker command failed; the message holds the command and its output."""


def docker(
    *args: str, timeout: float = 600, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `docker ARGS` and return the finished process (stdout and stderr as text)."""
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    proc = subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )
    if check and proc.returncode != 0:
        msg = f"docker {' '.join(args)[:300]} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
        raise DockerError(msg)
    return proc


def ensure_engine(timeout: float = 60) -> None:
    """Make sure dockerd answers, starting it in the background (as .ci/run does) if not."""
    if docker("info", check=False, timeout=30).returncode == 0:
        return
    if shutil.which("dockerd") is None:
        msg = "dockerd is not running and not installed; run .ci/run or `apt-get install docker.io`"
        raise DockerError(msg)
    log = Path(tempfile.gettempdir()) / "dockerd-tests.log"
    with log.open("ab") as out:
        subprocess.Popen(["dockerd"], stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if docker("info", check=False, timeout=30).returncode == 0:
            return
        time.sleep(1)
    msg = f"dockerd did not answer within {timeout:.0f}s; see {log}"
    raise DockerError(msg)


def ensure_base_image() -> None:
    """Create the stand-in base image local/node:20-slim if missing (fast when present)."""
    if docker("image", "inspect", BASE_IMAGE, check=False).returncode == 0:
        return
    proc = subprocess.run(
        [str(BASE_IMAGE_SCRIPT)], capture_output=True, text=True, timeout=1800, check=False
    )
    if proc.returncode != 0:
        msg = f"{BASE_IMAGE_SCRIPT} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
        raise DockerError(msg)


def default_build_args(**overrides: str) -> dict[str, str]:
    """Build args for a test build: the stand-in base and the host's extra CA certificates."""
    return {"BASE_IMAGE": BASE_IMAGE, "EXTRA_CA_CERTS": read_extra_ca_certs(), **overrides}


@dataclass(frozen=True)
class Step:
    """One step of a BuildKit build, as reported by `--progress=plain`."""

    name: str
    cached: bool


@dataclass(frozen=True)
class BuildResult:
    """An image built by `build`: its id, its tag, the plain-progress log and the wall time."""

    image_id: str
    tag: str
    log: str
    seconds: float

    def steps(self) -> list[Step]:
        """The named steps (`[stage n/m] INSTRUCTION ...`) in log order, with their cache hit."""
        names: dict[str, str] = {}
        cached: set[str] = set()
        for line in self.log.splitlines():
            if match := re.match(r"#(\d+) (\[.+)$", line):
                names.setdefault(match.group(1), match.group(2))
            elif match := re.match(r"#(\d+) CACHED$", line):
                cached.add(match.group(1))
        return [Step(name, vertex in cached) for vertex, name in names.items()]

    def step(self, fragment: str) -> Step:
        """The single step whose name contains `fragment`."""
        found = [s for s in self.steps() if fragment in s.name]
        if len(found) != 1:
            msg = f"expected one step matching {fragment!r}, found {[s.name for s in found]}"
            raise LookupError(msg)
        return found[0]


def build(
    context: Path,
    dockerfile: Path = DOCKERFILE,
    args: Mapping[str, str] | None = None,
    tag: str | None = None,
    *,
    no_cache: bool = False,
    target: str | None = None,
) -> BuildResult:
    """`DOCKER_BUILDKIT=1 docker build` of `context` with `dockerfile`, labelled for cleanup.

    Without `tag` the image gets a unique `nocturna-test/build:<random>` tag, so `remove_image`
    can drop exactly this build even if another build produced the same image id.
    """
    tag = tag or f"nocturna-test/build:{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory() as tmp:
        iidfile = Path(tmp) / "iid"
        argv = ["build", "--progress=plain", "--iidfile", str(iidfile), "--label", TEST_LABEL]
        argv += ["-f", str(dockerfile), "-t", tag]
        for key, value in (args or {}).items():
            argv += ["--build-arg", f"{key}={value}"]
        if no_cache:
            argv.append("--no-cache")
        if target:
            argv += ["--target", target]
        started = time.monotonic()
        proc = docker(*argv, str(context), timeout=1800, check=False)
        seconds = time.monotonic() - started
        log = proc.stderr + proc.stdout
        if proc.returncode != 0:
            msg = f"docker build of {context} failed ({proc.returncode}):\n{log[-6000:]}"
            raise DockerError(msg)
        return BuildResult(iidfile.read_text().strip(), tag, log, seconds)


def remove_image(result: BuildResult) -> None:
    """Remove the tag `build` gave; the image goes with it unless something else uses it."""
    docker("image", "rm", result.tag, check=False)


def run(
    image: str,
    options: Sequence[str] = HARDENED_RUN_OPTIONS,
    *,
    publish: tuple[int, int] | None = None,
    env: Mapping[str, str] | None = None,
    name: str | None = None,
    command: Sequence[str] = (),
) -> str:
    """Start a detached, labelled container; `publish=(host_port, container_port)` on 127.0.0.1."""
    argv = ["run", "--detach", "--label", TEST_LABEL, *options]
    if publish:
        argv += ["--publish", f"127.0.0.1:{publish[0]}:{publish[1]}"]
    for key, value in (env or {}).items():
        argv += ["--env", f"{key}={value}"]
    if name:
        argv += ["--name", name]
    return docker(*argv, image, *command).stdout.strip()


def inspect(obj: str) -> dict[str, Any]:
    """`docker inspect` of one container or image."""
    data: list[dict[str, Any]] = json.loads(docker("inspect", obj).stdout)
    return data[0]


def logs(container: str) -> str:
    """The container's stdout and stderr so far."""
    proc = docker("logs", container, check=False)
    return proc.stdout + proc.stderr


def wait_healthy(container: str, timeout: float = 90) -> dict[str, Any]:
    """Wait until Docker reports the container `healthy`; return its `State.Health`."""
    deadline = time.monotonic() + timeout
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        state = inspect(container)["State"]
        status = state.get("Health", {}).get("Status")
        if status == "healthy":
            health: dict[str, Any] = state["Health"]
            return health
        if status == "unhealthy" or not state["Running"]:
            break
        time.sleep(0.5)
    msg = (
        f"{container[:12]}: not healthy after {timeout:.0f}s "
        f"(state {state.get('Status')}, health {state.get('Health')}):\n{logs(container)}"
    )
    raise DockerError(msg)


def wait_health_status(container: str, wanted: str, timeout: float = 90) -> dict[str, Any]:
    """Wait until Docker's health status of the container is `wanted`; return `State.Health`."""
    deadline = time.monotonic() + timeout
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        health = inspect(container)["State"].get("Health", {})
        if health.get("Status") == wanted:
            return health
        time.sleep(0.5)
    msg = f"{container[:12]}: health not {wanted!r} after {timeout:.0f}s (last: {health})"
    raise DockerError(msg)


def wait_for_log(container: str, text: str, timeout: float = 30) -> None:
    """Wait until `text` appears in the container's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in logs(container):
            return
        time.sleep(0.2)
    msg = f"{container[:12]}: {text!r} not logged within {timeout:.0f}s:\n{logs(container)}"
    raise DockerError(msg)


def stop(container: str, timeout: int = 40) -> int:
    """`docker stop -t TIMEOUT`; return the container's exit code."""
    docker("stop", "-t", str(timeout), container, timeout=timeout + 30)
    exit_code: int = inspect(container)["State"]["ExitCode"]
    return exit_code


def remove_labelled() -> None:
    """Remove every container and image labelled `com.nocturna.test=1`, and nothing else.

    For a CI machine or a manual clean-up: on a daemon shared with other test sessions this
    also removes theirs, so tests remove what they created by id or tag instead.
    """
    label = f"label={TEST_LABEL}"
    containers = docker("ps", "-aq", "--filter", label).stdout.split()
    if containers:
        docker("rm", "-f", *containers, check=False)
    images = docker("images", "-q", "--filter", label).stdout.split()
    if images:
        docker("image", "rm", "-f", *sorted(set(images)), check=False)
