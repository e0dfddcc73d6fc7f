"""End-to-end rehearsal harness: the real program, applied to the local Docker engine and Nginx.

Not product code. The Pulumi engine cannot run here, so `ApplyingMocks` stands in for it:
the real program runs under the SDK's mocks, and each resource it declares is *applied* to
this host the way the provider would, with engine-like memory between runs:

- `docker:index/network:Network`  -> created once (`docker network create` equivalent);
- `docker:index/image:Image`      -> built with BuildKit from its declared context,
                                     Dockerfile and args; its output is the local image ID;
- `docker:index/container:Container` -> unchanged inputs: left alone; changed: stopped
                                     and removed first, then created from its declared
                                     inputs (Engine API), then waited on until healthy;
- `command:local:Command`          -> its `create` runs with /bin/sh in the project
                                     directory when new or when any input changed;
- `pulumi:pulumi:StackReference`   -> the outputs of this stack's last successful run.

The translation from declared inputs to Docker is explicit (tests/engine_api.py, shared with
the provider read-back test, following the provider's create): an input it does not know
fails loudly, never silently dropped. A failed run leaves the
previous outputs, as the engine does, and a container whose health wait failed stays in
place with its inputs recorded (the engine's "initialization error"). Resource options
are honoured as the engine's step generator does (pkg/resource/deploy/step_generator.go):
the next run with the same inputs re-creates such a container only if its
`replace_on_changes` holds `#initerror` (otherwise an empty update accepts it), and a
replacement of a resource protected in its old and new state fails the run.

Run it: `venv/bin/python -m tests.rehearsal` (prints the per-step table).
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import requests
import yaml
from pulumi.runtime import mocks as pm
from pulumi.runtime import settings

from nocturna_infra.program import stack as program
from nocturna_infra.traffic import canary, gates
from nocturna_infra.traffic.watch import parse_line
from tests import docker_host, harness
from tests.engine_api import (
    ApplyError,
    UnsupportedInputError,
    check_inputs,
    container_create_body,
    create_container,
    engine,
)
from tests.harness import MockedRun, stack_reference_state, unsecret
from tests.load import SlowClients, WrkLoad
from tests.nginx_instance import STAGING, NginxInstance
from tests.ports import free_port

REPO: Final = Path(__file__).resolve().parent.parent
HEALTH_POLL_SECONDS: Final = 0.5
BREAK_AFTER_REQUESTS: Final = 300
"""Requests the rehearsal's breaking release answers well (smoke check, then traffic)."""


# --- The stand-in engine --------------------------------------------------------------------


@dataclass
class Applied:
    inputs: dict[str, Any]
    id: str
    outputs: dict[str, Any]
    init_failed: bool = False
    """Created, but its health wait failed (the engine's initialization error)."""
    protected: bool = False


@dataclass
class Backend:
    """What the engine remembers of one stack between runs."""

    resources: dict[str, Applied] = field(default_factory=dict)
    exports: dict[str, Any] = field(default_factory=dict)
    command_output: dict[str, str] = field(default_factory=dict)


class ApplyingMocks(harness.Recorder):
    def __init__(self, backend: Backend, project_dir: Path) -> None:
        super().__init__(computed_outputs={})
        self.backend = backend
        self.project_dir = project_dir
        self.replaced: list[str] = []

    def new_resource(self, args: pm.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.registered.append(args)
        self.resources[args.name] = args
        if args.typ == "pulumi:pulumi:StackReference":
            state = stack_reference_state(
                args.inputs["name"], self.backend.exports, ("deploymentSecrets",)
            )
            return args.name, state
        if not args.custom:
            return f"{args.name}_component", {}
        appliers: dict[str, Callable[[str, dict[str, Any]], tuple[str, dict[str, Any]]]] = {
            "docker:index/network:Network": self._network,
            "docker:index/image:Image": self._image,
            "docker:index/container:Container": self._container,
            "command:local:Command": self._command,
        }
        if args.typ not in appliers:
            msg = f"{args.name}: resource type {args.typ} is not supported by the rehearsal"
            raise UnsupportedInputError(msg)
        inputs = unsecret(dict(args.inputs))
        previous = self.backend.resources.get(args.name)
        request = self.monitor.requests.get(args.name) if self.monitor else None
        protect = bool(request is not None and request.protect)
        on_init_error = request is not None and "#initerror" in request.replaceOnChanges
        # The provider hashes an image's build context into its inputs, so unchanged inputs
        # do not mean an unchanged image: always build (BuildKit's cache makes it cheap).
        unchanged = previous is not None and previous.inputs == inputs
        if unchanged and args.typ != "docker:index/image:Image":
            assert previous is not None
            if not (previous.init_failed and on_init_error):
                previous.init_failed = False  # the engine's empty update accepts it
                previous.protected = protect
                return previous.id, previous.outputs
        if previous is not None and previous.protected and protect:
            msg = (
                f'unable to replace resource "{args.name}" as it is currently marked for protection'
            )
            raise ApplyError(msg)
        try:
            resource_id, outputs = appliers[args.typ](args.name, inputs)
        except ApplyError:
            failed = self.backend.resources.get(args.name)
            if failed is not None and failed is not previous:
                failed.init_failed, failed.protected = True, protect
            raise
        self.backend.resources[args.name] = Applied(inputs, resource_id, outputs, False, protect)
        return resource_id, outputs

    def _network(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        check_inputs("Network", inputs, {"name", "driver", "labels"})
        labels = {item["label"]: item["value"] for item in inputs.get("labels", [])}
        created = engine(
            "POST",
            "/networks/create",
            {"Name": inputs["name"], "Driver": inputs.get("driver", "bridge"),
             "Labels": labels, "CheckDuplicate": True},
            ok=(201,),
        )  # fmt: skip
        return created["Id"], inputs

    def _image(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        check_inputs("Image", inputs, {"imageName", "skipPush", "buildOnPreview", "build"})
        build = inputs["build"]
        check_inputs(
            "Image.build", build, {"context", "dockerfile", "platform", "builderVersion", "args"}
        )
        if inputs.get("skipPush") is not True or build.get("builderVersion") != "BuilderBuildKit":
            msg = f"{name}: only local BuildKit builds (skipPush) are supported"
            raise UnsupportedInputError(msg)
        if build.get("platform") not in (None, "linux/amd64"):
            msg = f"{name}: platform {build['platform']} is not this host's (linux/amd64)"
            raise UnsupportedInputError(msg)
        result = docker_host.build(
            self.project_dir / build["context"],
            self.project_dir / build["dockerfile"],
            build.get("args", {}),
            tag=inputs["imageName"],
        )
        return inputs["imageName"], {**inputs, "repoDigest": result.image_id}

    def _container(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        container_create_body(inputs)  # validate before touching anything
        previous = self.backend.resources.get(name)
        if previous is not None:
            # Fixed names and ports: the provider replaces delete-first.
            self.replaced.append(name)
            grace = int(previous.inputs.get("destroyGraceSeconds", 10))
            engine("POST", f"/containers/{previous.id}/stop?t={grace}", ok=(204, 304, 404))
            engine("DELETE", f"/containers/{previous.id}?force=true", ok=(204, 404))
            del self.backend.resources[name]
        container_id = create_container(inputs)
        engine("POST", f"/containers/{container_id}/start", ok=(204,))
        outputs = {**inputs, "id": container_id}
        if inputs.get("wait"):
            try:
                self._wait_healthy(inputs["name"], container_id, int(inputs.get("waitTimeout", 60)))
            except ApplyError:
                # The ID is saved before the wait: the engine keeps the failed container.
                self.backend.resources[name] = Applied(inputs, container_id, outputs)
                raise
        return container_id, outputs

    @staticmethod
    def _wait_healthy(name: str, container_id: str, timeout: int) -> None:
        deadline = time.monotonic() + timeout
        status = "unknown"
        while time.monotonic() < deadline:
            state = engine("GET", f"/containers/{container_id}/json")["State"]
            status = state.get("Health", {}).get("Status", "none")
            if status == "healthy":
                return
            if not state.get("Running"):
                status = f"exited {state.get('ExitCode')}"
                break
            time.sleep(HEALTH_POLL_SECONDS)
        msg = f"container {name} failed to be in healthy state after {timeout}s ({status})"
        raise ApplyError(msg)

    def _command(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        check_inputs("Command", inputs, {"create", "triggers", "logging", "environment", "dir"})
        done = subprocess.run(
            ["/bin/sh", "-c", inputs["create"]],
            cwd=inputs.get("dir", self.project_dir),  # pulumi-command: `dir`, else its own cwd
            env={**os.environ, **inputs.get("environment", {})},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        self.backend.command_output[name] = done.stdout + done.stderr
        if done.returncode != 0:
            msg = f"{name}: command exited {done.returncode}: {done.stderr.strip()}"
            raise ApplyError(msg)
        return f"{name}_id", {**inputs, "stdout": done.stdout.rstrip("\n"), "stderr": done.stderr}


@dataclass(frozen=True)
class UpResult:
    """One `pulumi up`: what ran, how long it took and the error it ended with, if any."""

    run: MockedRun | None
    mocks: ApplyingMocks
    error: str | None
    """The first error of a failed run, as the CLI would print it."""
    seconds: float


def pulumi_up(
    backend: Backend, config: Mapping[str, str], *, stack: str, project_dir: Path = REPO
) -> UpResult:
    """One `pulumi up`: the program applied for real; outputs kept only on success."""
    mocks = ApplyingMocks(backend, project_dir)
    started = time.monotonic()
    try:
        run = harness.run(
            lambda: program.main(project_dir),
            dict(config),
            stack=stack,
            secret_keys=["apiKey"],
            mocks=mocks,
        )
    except Exception as error:  # the failure is the step's outcome
        failure = str(error)
    else:
        backend.exports = dict(run.exports)
        return UpResult(run, mocks, None, time.monotonic() - started)
    return UpResult(None, mocks, failure, time.monotonic() - started)


@contextmanager
def quiet_failed_futures() -> Iterator[None]:
    """Silence asyncio's "Future exception was never retrieved" for failed runs.

    A failed run leaves futures holding its error; that error is the step's reported
    outcome already, so their tracebacks printed later would only look like more failures.
    """
    asyncio_log = logging.getLogger("asyncio")
    asyncio_log.disabled = True
    try:
        yield
    finally:
        settings.SETTINGS.outputs.clear()
        gc.collect()
        asyncio_log.disabled = False


# --- The rehearsal --------------------------------------------------------------------------


@dataclass
class StepResult:
    step: str
    expected: str
    outcome: str
    served: str
    images: str
    requests: int
    failed: int
    slow_ok: int
    slow_failed: int
    switch_seconds: float | None
    up_seconds: float
    problems: list[str]
    broken_answered: str = "-"
    """For a release the watch switched back: requests it answered (failed) before that."""
    broken_failed: int = 0
    """Failed requests the broken slot answered (all others must be zero)."""

    @property
    def passed(self) -> bool:
        return not self.problems


def container_state(name: str) -> dict[str, Any] | None:
    """`docker inspect` of a container, or None if there is none by that name."""
    state = engine("GET", f"/containers/{name}/json", ok=(200, 404))
    return state if state and "State" in state else None


def served_version(nginx: NginxInstance) -> str:
    """Which slot and release answer through Nginx, e.g. `blue v1.0.0`."""
    try:
        with requests.Session() as session:
            session.trust_env = False
            response = session.get(nginx.url("/health"), timeout=5, headers={"Connection": "close"})
        body = response.json()
    except (requests.RequestException, ValueError) as error:
        return f"unreachable ({type(error).__name__})"
    return f"{body.get('slot')} v{body.get('version')}"


def set_release(service: Path, version: str, healthy: bool = True, **knobs: object) -> None:
    """The fixture's release: its version and how it behaves (see version.js)."""
    fields = {"version": version, "healthy": healthy, **knobs}
    (service / "src" / "version.js").write_text(f"module.exports = {json.dumps(fields)};\n")


def production_smoke_checks() -> str:
    """The smoke checks shipped in Pulumi.production.yaml (the chart-service example)."""
    config = yaml.safe_load((REPO / "Pulumi.production.yaml").read_text())["config"]
    return json.dumps(config["nocturna-infra:smokeChecks"])


def production_watch_routes() -> str:
    """The route classes shipped in Pulumi.production.yaml (the render route on its own)."""
    config = yaml.safe_load((REPO / "Pulumi.production.yaml").read_text())["config"]
    return json.dumps(config["nocturna-infra:watchRoutes"])


@dataclass(frozen=True)
class SlotAnswers:
    """Requests through Nginx per slot group, from the site's JSON access log."""

    answered: Counter[str]
    failed: Counter[str]

    def of(self, slot: str) -> tuple[int, int]:
        group = f"nocturna-img-production-{slot}"
        return self.answered[group], self.failed[group]


def slot_answers(log: Path, offset: int) -> SlotAnswers:
    """Count the log's records written after `offset` by group; 5xx count as failed."""
    answered: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    with log.open("rb") as handle:
        handle.seek(offset)
        for line in handle.read().decode("utf-8", "replace").splitlines():
            record = parse_line(line)
            if record is None:
                continue
            answered[record.group] += 1
            if record.failed:
                failed[record.group] += 1
    return SlotAnswers(answered, failed)


def switch_seconds(text: str) -> float | None:
    match = re.search(r"switch: \w+ .* in ([\d.]+)s", text)
    return float(match.group(1)) if match else None


RENDER_PATH: Final = "/api/v2/chart/render"
HUNG_RENDER_CLIENTS: Final = 6


class RenderClient:
    """One client rendering through Nginx, one request at a time; statuses by slot."""

    def __init__(self, url: str, key: str) -> None:
        self.url = url
        self.key = key
        self.answers: Counter[tuple[str, int]] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        body = (REPO / "smoke" / "chart-render.json").read_bytes()
        headers = {"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"}
        with requests.Session() as session:
            session.trust_env = False
            while not self._stop.is_set():
                try:
                    response = session.post(self.url, data=body, headers=headers, timeout=30)
                    version = response.json().get("meta", {}).get("version", "")
                    self.answers[(str(version), response.status_code)] += 1
                except (requests.RequestException, ValueError):
                    self.answers[("error", 0)] += 1
                time.sleep(0.3)

    def failed(self) -> int:
        return sum(n for (_, status), n in self.answers.items() if status != 200)

    def failed_on(self, slot: str) -> int:
        """Failed renders answered by `slot` (blue runs 1.0.0 in the rehearsal)."""
        versions = {"blue": "1.0.0"}
        return sum(
            n for (version, status), n in self.answers.items()
            if version == versions.get(slot) and status != 200
        )  # fmt: skip

    def __enter__(self) -> RenderClient:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=40)


class NotFoundFlood:
    """Clients asking for a page that does not exist, as fast as one keep-alive connection
    goes: 4xx never count against a slot (issue 21), so they must not hide its 5xx either."""

    PATH: Final = "/no-such-page"

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with requests.Session() as session:
            session.trust_env = False
            while not self._stop.is_set():
                try:
                    self.statuses[session.get(self.url, timeout=10).status_code] += 1
                except requests.RequestException:
                    self.statuses[0] += 1

    def failed(self) -> int:
        """Answers other than the 404 the page deserves."""
        return sum(n for status, n in self.statuses.items() if status != 404)

    def __enter__(self) -> NotFoundFlood:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=20)


@contextmanager
def under_load(nginx: NginxInstance, workdir: Path) -> Iterator[dict[str, Any]]:
    """Keep-alive wrk load plus 2-second requests through Nginx for the duration of the block.

    Keep-alive clients that never retry are the strict case: a reload closing their idle
    connections would show as failed requests."""
    wrk = WrkLoad(nginx.url("/"), workdir, keepalive=True)
    slow = SlowClients(nginx.url("/slow?ms=2000"), count=4)
    figures: dict[str, Any] = {}
    wrk.start()
    slow.start()
    time.sleep(2.5)  # slow requests in flight and load steady before anything changes
    try:
        yield figures
    finally:
        time.sleep(2.5)  # the last slow requests finish
        figures["wrk"] = wrk.stop()
        slow.stop()
        figures["slow"] = slow


class Rehearsal:
    """Drives the blue/green cycle on this host and checks each step's outcome."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.service = workdir / "service"
        shutil.copytree(docker_host.FIXTURE_SERVICE, self.service)
        set_release(self.service, "1.0.0")
        # Nginx's workers (nobody) must reach the selection files, as www-data does on a host:
        # not under `workdir`, whose parents may be root-only (pytest's tmp_path).
        self.nginx_root = Path(tempfile.mkdtemp(prefix="nocturna-rehearsal-nginx-"))
        self.nginx_root.chmod(0o755)
        # Unique names and free ports: the host's dockerd is shared with other test runs.
        self.prefix = f"nocturna-rehearsal-{uuid.uuid4().hex[:6]}"
        self.ports = {slot: free_port() for slot in ("blue", "green", "staging")}
        self.nginx = NginxInstance(
            self.nginx_root / "production",
            blue_port=self.ports["blue"],
            green_port=self.ports["green"],
        )
        self.production = Backend()
        self.staging = Backend()
        self.results: list[StepResult] = []
        self.watch_record: dict[str, Any] = {}
        self.hung_renders = 0
        self.inconclusive_probes = 0
        self.canary_renders = (0, 0)
        """7m: renders that failed, of all the render clients sent."""
        """Watch probes of 7k answered 429 (inconclusive)."""
        """Renders of the hanging release (7g) that its client saw time out."""
        self.names = {slot: f"{self.prefix}-{slot}" for slot in ("blue", "green")}

    def config(self, nginx: NginxInstance, **overrides: str) -> dict[str, str]:
        ca_dir = Path("/usr/local/share/ca-certificates")
        return {
            "apiKey": "rehearsal-key-0123456789",
            "serviceName": self.prefix,
            "networkName": self.prefix,
            "imageName": "nocturna-rehearsal",
            "bluePort": str(self.ports["blue"]),
            "greenPort": str(self.ports["green"]),
            "stagingPort": str(self.ports["staging"]),
            "buildContext": str(self.service),
            "dockerfile": str(REPO / "Dockerfile"),
            "baseImage": docker_host.BASE_IMAGE,
            "extraCaCertsDir": str(ca_dir) if list(ca_dir.glob("*.crt")) else "",
            "healthIntervalSeconds": "2",
            "healthTimeoutSeconds": "1",
            "healthRetries": "3",
            "healthStartPeriodSeconds": "4",
            "stopTimeoutSeconds": "35",
            "upstreamFile": str(nginx.upstream_file),
            "upstreamName": nginx.site.upstream_name,
            "selectionDir": str(nginx.selection_dir),
            "nginxTestCommand": nginx.test_command,
            "nginxReloadCommand": nginx.reload_command,
            "nginxStartCommand": nginx.start_command,
            "nginxPidFile": str(nginx.pid_file),
            "verifyUrl": nginx.verify_url("/health"),
            "probeAttempts": "8",
            "probeIntervalSeconds": "1",
            "routerPython": sys.executable,
            "smokeChecks": production_smoke_checks(),
            "watchSeconds": "5",
            "watchLog": str(nginx.slots_log),
            "watchStartedLog": str(nginx.started_log),
            "watchRoutes": production_watch_routes(),
            **overrides,
        }

    # Each step: run one `pulumi up`, then compare what happened with what must happen.

    def record(
        self,
        step: str,
        expected: str,
        up: UpResult,
        figures: dict[str, Any] | None,
        problems: list[str],
        backend: Backend,
        nginx: NginxInstance,
        switch_name: str = "",
        broken: tuple[str, SlotAnswers] | None = None,
        other_clients_failed: int = 0,
    ) -> None:
        """`broken`: the slot the watch switched back from, and the log's counts: failures
        it answered are the release's, not the switch's; every other must be zero.
        `other_clients_failed`: failures seen by clients other than wrk and the slow ones."""
        error = up.error
        outcome = "ok" if error is None else f"failed: {error.splitlines()[0][:90]}"
        if expected == "ok" and error is not None:
            problems.append(f"expected success, got {outcome}")
        if expected != "ok" and (error is None or expected not in error):
            problems.append(f"expected a failure mentioning {expected!r}, got {outcome}")
        wrk = figures["wrk"] if figures else None
        slow = figures["slow"] if figures else None
        allowed = broken[1].of(broken[0])[1] if broken else 0
        failed = (wrk.failed if wrk else 0) + (len(slow.failed) if slow else 0)
        failed += other_clients_failed
        if wrk is not None and wrk.socket_errors:
            problems.append(f"{wrk.socket_errors} requests through Nginx failed on the socket")
        if failed != allowed:
            detail = f" (slow: {slow.failed[:2]})" if slow and slow.failed else ""
            problems.append(
                f"{failed} failed requests through Nginx, {allowed} of them answered by the "
                f"broken slot{detail}"
            )
        images = ", ".join(
            f"{slot}={str(state['Image'])[7:19]}"
            for slot, state in self.slot_states(backend).items()
            if state is not None
        )
        self.results.append(
            StepResult(
                step=step,
                expected=expected,
                outcome=outcome,
                served=served_version(nginx),
                images=images,
                requests=wrk.requests if wrk else 0,
                failed=(wrk.failed if wrk else 0) + other_clients_failed,
                slow_ok=slow.ok if slow else 0,
                slow_failed=len(slow.failed) if slow else 0,
                switch_seconds=switch_seconds(
                    backend.command_output.get(switch_name or f"{self.prefix}-switch", "")
                ),
                up_seconds=up.seconds,
                problems=problems,
                broken_answered=self.broken_cell(broken) if broken else "-",
                broken_failed=allowed,
            )
        )
        backend.command_output.clear()

    def broken_cell(self, broken: tuple[str, SlotAnswers]) -> str:
        """`green 512 (212 failed), back in 1.3s`: what the broken slot answered, and the
        time from its first failure to the switch back (the watch record)."""
        slot, answers = broken
        answered, failed = answers.of(slot)
        seconds = self.watch_record.get("secondsFromFirstFailureToSwitchBack")
        back = f", back in {seconds:.2f}s" if isinstance(seconds, int | float) else ""
        return f"{slot} {answered} ({failed} failed){back}"

    def slot_states(self, backend: Backend) -> dict[str, dict[str, Any] | None]:
        names = {"staging": f"{self.prefix}-staging"} if backend is self.staging else self.names
        return {slot: container_state(name) for slot, name in names.items()}

    def run(self) -> list[StepResult]:
        docker_host.ensure_engine()
        docker_host.ensure_base_image()
        self.cleanup()
        try:
            with quiet_failed_futures():
                self._production_cycle()
                self._staging()
        finally:
            self.cleanup()
            shutil.rmtree(self.nginx_root, ignore_errors=True)
        return self.results

    def _up(self, **overrides: str) -> UpResult:
        return pulumi_up(self.production, self.config(self.nginx, **overrides), stack="production")

    def _production_cycle(self) -> None:
        start_without_site(self.nginx)

        # 1. First deployment: both slots from v1, Nginx routed to blue.
        up = self._up(activeSlot="blue")
        states = self.slot_states(self.production)
        problems = []
        if any(state is None or not state["State"]["Running"] for state in states.values()):
            problems.append("both slots must run after the first deployment")
        problems += self.run_the_build(states)
        self.record("1 first deploy (v1, live blue)", "ok", up, None, problems,
                    self.production, self.nginx)  # fmt: skip
        if up.error is not None:
            return
        blue_v1 = states["blue"]

        # 2. Deploy v2: only green changes; traffic stays on blue v1.
        set_release(self.service, "2.0.0")
        with under_load(self.nginx, self.workdir) as figures:
            up = self._up(activeSlot="blue")
        states = self.slot_states(self.production)
        problems = self.untouched("blue", blue_v1, states)
        problems += self.run_the_build({"green": states["green"]})
        if up.mocks.replaced != [f"{self.prefix}-green-container"]:
            problems.append(f"deploy replaced {up.mocks.replaced}, expected green only")
        if figures["slow"].versions.keys() - {"1.0.0"}:
            problems.append(f"traffic left v1 during the deploy: {dict(figures['slow'].versions)}")
        self.record("2 deploy v2 to standby", "ok", up, figures, problems,
                    self.production, self.nginx)  # fmt: skip

        # 3. Switch to green: traffic moves to v2, blue keeps running v1.
        with under_load(self.nginx, self.workdir) as figures:
            up = self._up(activeSlot="green")
        states = self.slot_states(self.production)
        problems = self.untouched("blue", blue_v1, states)
        if up.mocks.replaced:
            problems.append(f"switch replaced {up.mocks.replaced}")
        if not served_version(self.nginx).startswith("green v2.0.0"):
            problems.append(f"after the switch Nginx serves {served_version(self.nginx)}")
        green_v2 = states["green"]
        self.record("3 switch to green", "ok", up, figures, problems,
                    self.production, self.nginx)  # fmt: skip

        # 4. Rollback: traffic back on v1 at once, green keeps v2.
        with under_load(self.nginx, self.workdir) as figures:
            up = self._up(activeSlot="blue")
        states = self.slot_states(self.production)
        problems = self.untouched("blue", blue_v1, states) + self.untouched(
            "green", green_v2, states
        )
        if not served_version(self.nginx).startswith("blue v1.0.0"):
            problems.append(f"after the rollback Nginx serves {served_version(self.nginx)}")
        self.record("4 rollback to blue", "ok", up, figures, problems,
                    self.production, self.nginx)  # fmt: skip

        # 5. A broken v3 (health 503): the deploy fails its health wait; a retried `up`
        # re-creates the standby (`#initerror`) and fails again. No failed run is recorded,
        # so a switch to green then restores green to its recorded v2 before routing to it.
        set_release(self.service, "3.0.0", healthy=False)
        with under_load(self.nginx, self.workdir) as figures:
            up = self._up(activeSlot="blue")
        problems = self.untouched("blue", blue_v1, self.slot_states(self.production))
        self.record("5a deploy broken v3", "failed to be in healthy state", up, figures,
                    problems, self.production, self.nginx)  # fmt: skip
        with under_load(self.nginx, self.workdir) as figures:
            up = self._up(activeSlot="blue")
        problems = self.untouched("blue", blue_v1, self.slot_states(self.production))
        if up.mocks.replaced != [f"{self.prefix}-green-container"]:
            problems.append(f"the retried deploy replaced {up.mocks.replaced}, expected green")
        self.record("5b retry the deploy", "failed to be in healthy state", up, figures,
                    problems, self.production, self.nginx)  # fmt: skip
        with under_load(self.nginx, self.workdir) as figures:
            up = self._up(activeSlot="green")
        states = self.slot_states(self.production)
        problems = self.untouched("blue", blue_v1, states)
        if up.mocks.replaced != [f"{self.prefix}-green-container"]:
            problems.append(f"the switch replaced {up.mocks.replaced}, expected green (v3 -> v2)")
        if states["green"] is None or states["green"]["Image"] != green_v2["Image"]:
            problems.append("green does not run its recorded v2 image")
        if not served_version(self.nginx).startswith("green v2.0.0"):
            problems.append(f"after the switch Nginx serves {served_version(self.nginx)}")
        self.record("5c switch to green (recorded v2)", "ok", up, figures,
                    problems, self.production, self.nginx)  # fmt: skip

        # 5d. The provider reads the live slot back in another form than declared (here the
        # daemon's extra log option, issue 9 finding 2): a replacement the engine refuses,
        # as green is protected in its old and new state. Nothing changes; green serves on.
        set_release(self.service, "2.0.0")  # the cached v2 build: nothing new for blue
        green_before = self.slot_states(self.production)["green"]
        applied = self.production.resources.get(f"{self.prefix}-green-container")
        if applied is None:  # 5c failed; its outcome already says why
            return
        green_before_log_opts = applied.inputs["logOpts"]
        applied.inputs["logOpts"] = {**applied.inputs["logOpts"], "compress": "true"}
        with under_load(self.nginx, self.workdir) as figures:
            up = self._up(activeSlot="green")
        states = self.slot_states(self.production)
        problems = self.untouched("green", green_before, states)
        problems += self.untouched("blue", blue_v1, states)
        if up.mocks.replaced:
            problems.append(f"the refused run replaced {up.mocks.replaced}")
        self.record("5d provider diff on live green", "marked for protection", up, figures,
                    problems, self.production, self.nginx)  # fmt: skip
        # 5e. Roll back to blue (v1) for the gate steps; green keeps its recorded v2.
        applied.inputs["logOpts"] = green_before_log_opts
        with under_load(self.nginx, self.workdir) as figures:
            up = self._up(activeSlot="blue")
        states = self.slot_states(self.production)
        problems = self.untouched("blue", blue_v1, states)
        problems += self.untouched("green", green_before, states)
        if not served_version(self.nginx).startswith("blue v1.0.0"):
            problems.append(f"after the rollback Nginx serves {served_version(self.nginx)}")
        self.record("5e rollback to blue", "ok", up, figures, problems,
                    self.production, self.nginx)  # fmt: skip
        self._gates(blue_v1)
        self.nginx.stop()

    def _gates(self, blue_v1: dict[str, Any] | None) -> None:
        # 6. A release whose renders fail while /health says 200: deployed to the standby,
        # then refused by the smoke gate (the shipped chart-service check); nothing moves.
        set_release(self.service, "4.0.0", renderOk=False)
        up = self._up(activeSlot="blue")
        problems = self.untouched("blue", blue_v1, self.slot_states(self.production))
        self.record("6a deploy v4 (renders fail)", "ok", up, None, problems,
                    self.production, self.nginx)  # fmt: skip
        selection_before = sorted(p.name for p in self.nginx.selection_dir.iterdir())
        with under_load(self.nginx, self.workdir) as figures:
            up = self._up(activeSlot="green")
        problems = self.untouched("blue", blue_v1, self.slot_states(self.production))
        if sorted(p.name for p in self.nginx.selection_dir.iterdir()) != selection_before:
            problems.append("the refused switch changed the selection")
        if not served_version(self.nginx).startswith("blue v1.0.0"):
            problems.append(f"a refused switch moved traffic: {served_version(self.nginx)}")
        self.record("6b switch: smoke gate refuses", "failed smoke check 'render'", up,
                    figures, problems, self.production, self.nginx)  # fmt: skip

        # 7. A release that passes every gate, then breaks under traffic: the watch sees
        # its 500s through Nginx and switches back to blue within the window.
        set_release(self.service, "5.0.0", failAfterRequests=BREAK_AFTER_REQUESTS)
        up = self._up(activeSlot="blue")
        problems = self.untouched("blue", blue_v1, self.slot_states(self.production))
        self.record("7a deploy v5 (breaks later)", "ok", up, None, problems,
                    self.production, self.nginx)  # fmt: skip
        offset = self.nginx.slots_log.stat().st_size
        with under_load(self.nginx, self.workdir) as figures:
            up = self._up(activeSlot="green", watchSeconds="30")
        answers = slot_answers(self.nginx.slots_log, offset)
        problems = self.untouched("blue", blue_v1, self.slot_states(self.production))
        if answers.of("blue")[1]:
            problems.append(f"blue failed {answers.of('blue')[1]} requests")
        if not served_version(self.nginx).startswith("blue v1.0.0"):
            problems.append(f"after the watch Nginx serves {served_version(self.nginx)}")
        saved = gates.read_record(gates.record_path(self.nginx.upstream_file)) or {}
        if saved.get("result") != "switched-back":
            problems.append(f"watch record says {saved.get('result')!r}, not switched-back")
        self.watch_record = saved
        self.record("7b switch: watch switches back", "switched back to blue", up, figures,
                    problems, self.production, self.nginx,
                    broken=("green", answers))  # fmt: skip
        # Keep blue, as the message advises: the drift guard accepts Nginx on blue, no container
        # changes, and the switch finds blue already live.
        with under_load(self.nginx, self.workdir) as figures:
            up = self._up(activeSlot="blue")
        problems = self.untouched("blue", blue_v1, self.slot_states(self.production))
        if up.mocks.replaced:
            problems.append(f"keeping blue replaced {up.mocks.replaced}")
        if not served_version(self.nginx).startswith("blue v1.0.0"):
            problems.append(f"after keeping blue Nginx serves {served_version(self.nginx)}")
        self.record("7c keep blue (activeSlot blue)", "ok", up, figures, problems,
                    self.production, self.nginx)  # fmt: skip

        # 7d. Issue 21: a release whose renders alone fail once the smoke check's render
        # passed, while cheap requests flood (wrk) and one client renders through Nginx. In
        # aggregate the failed renders stay far under 5 %; the render route's own class
        # (Pulumi.production.yaml's watchRoutes) switches back.
        set_release(self.service, "6.0.0", renderFailAfter=1)
        up = self._up(activeSlot="blue")
        problems = self.untouched("blue", blue_v1, self.slot_states(self.production))
        self.record("7d deploy v6 (renders fail)", "ok", up, None, problems,
                    self.production, self.nginx)  # fmt: skip
        offset = self.nginx.slots_log.stat().st_size
        renders = RenderClient(self.nginx.url(RENDER_PATH), "rehearsal-key-0123456789")
        not_found = NotFoundFlood(self.nginx.url(NotFoundFlood.PATH))
        with under_load(self.nginx, self.workdir) as figures, renders, not_found:
            up = self._up(activeSlot="green", watchSeconds="30")
        answers = slot_answers(self.nginx.slots_log, offset)
        if not_found.statuses[404] < 100:
            problems_404 = [f"the 404 flood sent only {not_found.statuses[404]} requests"]
        else:
            problems_404 = []
        problems = self.untouched("blue", blue_v1, self.slot_states(self.production))
        if answers.of("blue")[1]:
            problems.append(f"blue failed {answers.of('blue')[1]} requests")
        if renders.failed_on("blue"):
            problems.append(f"blue failed {renders.failed_on('blue')} renders")
        saved = gates.read_record(gates.record_path(self.nginx.upstream_file)) or {}
        if saved.get("result") != "switched-back":
            problems.append(f"watch record says {saved.get('result')!r}, not switched-back")
        if not str(saved.get("reason", "")).startswith(f"POST {RENDER_PATH}: "):
            problems.append(f"switched back for {saved.get('reason')!r}, not the render class")
        self.watch_record = saved
        self.record("7e switch: renders fail under a GET and 404 flood", "switched back to blue",
                    up, figures, problems + problems_404, self.production, self.nginx,
                    broken=("green", answers),
                    other_clients_failed=renders.failed() + not_found.failed())  # fmt: skip
        self._hung_render()
        self._good_release_kept()
        self._rate_limited_probes()
        self._canary()

    def _hung_render(self) -> None:
        """7f/7g. Issue 21: renders that never answer leave nothing in the access log until
        the proxy gives up (60 s); the start log shows them in flight, and one in flight past
        watchRequestTimeoutSeconds fails the render class: switched back."""
        blue_v1 = self.slot_states(self.production)["blue"]
        set_release(self.service, "7.0.0", renderHangAfter=1)
        up = self._up(activeSlot="blue")
        problems = self.untouched("blue", blue_v1, self.slot_states(self.production))
        self.record("7f deploy v7 (renders hang)", "ok", up, None, problems,
                    self.production, self.nginx)  # fmt: skip
        offset = self.nginx.slots_log.stat().st_size
        # Several users rendering at once, as on the real service: the render class needs
        # its minRequests (5 in Pulumi.production.yaml) before a share is judged.
        clients = [
            RenderClient(self.nginx.url(RENDER_PATH), "rehearsal-key-0123456789")
            for _ in range(HUNG_RENDER_CLIENTS)
        ]
        with under_load(self.nginx, self.workdir) as figures, ExitStack() as running:
            for client in clients:
                running.enter_context(client)
            up = self._up(activeSlot="green", watchSeconds="30", watchRequestTimeoutSeconds="8")
        answers = slot_answers(self.nginx.slots_log, offset)
        problems = self.untouched("blue", blue_v1, self.slot_states(self.production))
        failed_on_blue = sum(client.failed_on("blue") for client in clients)
        if answers.of("blue")[1] or failed_on_blue:
            problems.append(
                f"blue failed {answers.of('blue')[1]} requests, {failed_on_blue} renders"
            )
        hung = sum(client.answers[("error", 0)] for client in clients)
        if not hung:
            problems.append("no render hung: the clients saw every render answered")
        if not served_version(self.nginx).startswith("blue v1.0.0"):
            problems.append(f"after the watch Nginx serves {served_version(self.nginx)}")
        saved = gates.read_record(gates.record_path(self.nginx.upstream_file)) or {}
        if saved.get("result") != "switched-back":
            problems.append(f"watch record says {saved.get('result')!r}, not switched-back")
        if not str(saved.get("reason", "")).startswith(f"POST {RENDER_PATH}: "):
            problems.append(f"switched back for {saved.get('reason')!r}, not the render class")
        # The hung renders are the release's own failures, seen by their client as a timeout
        # (Nginx logs 499 when it closes, not 5xx): counted apart from the switch's.
        self.watch_record = saved
        self.record("7g switch: renders hang past the limit", "switched back to blue", up,
                    figures, problems, self.production, self.nginx,
                    broken=("green", answers))  # fmt: skip
        self.hung_renders = hung

    def _rate_limited_probes(self) -> None:
        """7j/7k. Issue 21: a healthy release whose service rate-limits the path the watch
        probes (one shared bucket behind the proxy) answers 429: inconclusive, not a failure,
        so the release is kept (before, three such probes in a row switched back)."""
        green_v8 = self.slot_states(self.production)["green"]
        set_release(self.service, "9.0.0", rateLimitPath="/ping")
        up = self._up(activeSlot="green")
        problems = self.untouched("green", green_v8, self.slot_states(self.production))
        self.record("7j deploy v9 to blue (429 on /ping)", "ok", up, None, problems,
                    self.production, self.nginx)  # fmt: skip
        with under_load(self.nginx, self.workdir) as figures:
            up = self._up(activeSlot="blue", watchSeconds="12", watchProbePath="/ping")
        problems = []
        if not served_version(self.nginx).startswith("blue v9.0.0"):
            problems.append(f"after the watch Nginx serves {served_version(self.nginx)}")
        saved = gates.read_record(gates.record_path(self.nginx.upstream_file)) or {}
        if saved.get("result") != "passed":
            problems.append(f"watch record says {saved.get('result')!r}, not passed")
        seen = saved.get("seen") or {}
        if not seen.get("inconclusiveProbes"):
            problems.append(f"no probe was answered 429: {seen}")
        self.inconclusive_probes = int(seen.get("inconclusiveProbes") or 0)
        self.record("7k switch: probes answered 429 by a healthy slot", "ok", up, figures,
                    problems, self.production, self.nginx)  # fmt: skip

    def _canary(self) -> None:
        """7l-7o. Issue 18: progressive switches under the same mixed traffic. A release whose
        renders fail is aborted at the first step (only that step's share of the renders
        failed, all on green), and a good release steps 5 -> 25 -> 50 % and then takes all."""
        steps = {"canarySteps": "5,25,50", "canaryMinRequests": "3", "canaryStepSeconds": "20"}
        blue_v9 = self.slot_states(self.production)["blue"]
        set_release(self.service, "10.0.0", renderFailAfter=1)
        up = self._up(activeSlot="blue", **steps)
        problems = self.untouched("blue", blue_v9, self.slot_states(self.production))
        self.record("7l deploy v10 to green (renders fail)", "ok", up, None, problems,
                    self.production, self.nginx)  # fmt: skip
        offset = self.nginx.slots_log.stat().st_size
        clients = [
            RenderClient(self.nginx.url(RENDER_PATH), "rehearsal-key-0123456789")
            for _ in range(HUNG_RENDER_CLIENTS)
        ]
        with under_load(self.nginx, self.workdir) as figures, ExitStack() as running:
            for client in clients:
                running.enter_context(client)
            up = self._up(activeSlot="green", watchSeconds="5", **steps)
        answers = slot_answers(self.nginx.slots_log, offset)
        problems = self.untouched("blue", blue_v9, self.slot_states(self.production))
        failed_renders = sum(client.failed() for client in clients)
        if answers.of("blue")[1] or sum(client.failed_on("blue") for client in clients):
            problems.append(f"blue failed {answers.of('blue')[1]} requests")
        if not served_version(self.nginx).startswith("blue v9.0.0"):
            problems.append(f"after the aborted canary Nginx serves {served_version(self.nginx)}")
        saved = canary.read_record(self.nginx.upstream_file) or {}
        if saved.get("result") != "aborted" or not str(saved.get("reason", "")).startswith(
            "at 5 %"
        ):
            problems.append(f"canary record says {saved.get('result')!r}: {saved.get('reason')}")
        self.canary_renders = (failed_renders, sum(sum(c.answers.values()) for c in clients))
        self.record("7m progressive switch: aborted at 5 %", "exited 11", up, figures,
                    problems, self.production, self.nginx, broken=("green", answers),
                    other_clients_failed=failed_renders)  # fmt: skip

        set_release(self.service, "11.0.0")
        up = self._up(activeSlot="blue", **steps)
        problems = self.untouched("blue", blue_v9, self.slot_states(self.production))
        self.record("7n deploy v11 to green (good)", "ok", up, None, problems,
                    self.production, self.nginx)  # fmt: skip
        renders = RenderClient(self.nginx.url(RENDER_PATH), "rehearsal-key-0123456789")
        with under_load(self.nginx, self.workdir) as figures, renders:
            up = self._up(activeSlot="green", watchSeconds="5", **steps)
        problems = []
        if not served_version(self.nginx).startswith("green v11.0.0"):
            problems.append(f"after the canary Nginx serves {served_version(self.nginx)}")
        saved = canary.read_record(self.nginx.upstream_file) or {}
        if saved.get("result") != "passed" or len(saved.get("steps") or []) != 3:
            problems.append(f"canary record says {saved.get('result')!r}: {saved.get('reason')}")
        self.record("7o progressive switch: 5, 25, 50 %, then all", "ok", up, figures,
                    problems, self.production, self.nginx,
                    other_clients_failed=renders.failed())  # fmt: skip

    def _good_release_kept(self) -> None:
        """7h/7i. Issue 21: no false alarm: a good release under the same mixed traffic
        (renders, a GET flood, a 404 flood, /health polls) is kept."""
        blue_v1 = self.slot_states(self.production)["blue"]
        set_release(self.service, "8.0.0")
        up = self._up(activeSlot="blue")
        problems = self.untouched("blue", blue_v1, self.slot_states(self.production))
        self.record("7h deploy v8 (good)", "ok", up, None, problems,
                    self.production, self.nginx)  # fmt: skip
        renders = RenderClient(self.nginx.url(RENDER_PATH), "rehearsal-key-0123456789")
        not_found = NotFoundFlood(self.nginx.url(NotFoundFlood.PATH))
        with under_load(self.nginx, self.workdir) as figures, renders, not_found:
            up = self._up(activeSlot="green", watchSeconds="15")
        problems = []
        if not served_version(self.nginx).startswith("green v8.0.0"):
            problems.append(f"after the watch Nginx serves {served_version(self.nginx)}")
        saved = gates.read_record(gates.record_path(self.nginx.upstream_file)) or {}
        if saved.get("result") != "passed":
            problems.append(f"watch record says {saved.get('result')!r}, not passed")
        if renders.answers[("8.0.0", 200)] == 0:
            problems.append("no render was answered by v8 during the watch")
        self.record("7i switch: a good release under mixed traffic", "ok", up, figures,
                    problems, self.production, self.nginx,
                    other_clients_failed=renders.failed() + not_found.failed())  # fmt: skip

    def _staging(self) -> None:
        # 8. Staging: one container on its own port, routed after its probe passes.
        set_release(self.service, "1.0.0")
        nginx = NginxInstance(
            self.nginx_root / "staging", blue_port=self.ports["staging"], green_port=0, site=STAGING
        )
        start_without_site(nginx)
        config = self.config(
            nginx,
            environment="staging",
            networkName=f"{self.prefix}-staging",
            verifyUrl=nginx.verify_url("/health"),
        )
        up = pulumi_up(self.staging, config, stack="staging")
        states = self.slot_states(self.staging)
        problems = []
        state = states["staging"]
        ports = state["HostConfig"]["PortBindings"] if state else {}
        port = str(self.ports["staging"])
        if ports != {"3011/tcp": [{"HostIp": "127.0.0.1", "HostPort": port}]}:
            problems.append(f"staging publishes {ports}, expected 127.0.0.1:{port} only")
        served = served_version(nginx)
        if not served.startswith("staging v1.0.0"):
            problems.append(f"staging Nginx serves {served}")
        self.record("8 staging deploy", "ok", up, None, problems, self.staging, nginx)
        nginx.stop()

    def run_the_build(self, states: Mapping[str, dict[str, Any] | None]) -> list[str]:
        """The containers run the image the Image resource built (its immutable local ID)."""
        built = self.production.resources.get(f"{self.prefix}-image")
        if built is None:
            return ["no image was built"]
        image_id = built.outputs["repoDigest"]
        return [
            f"{slot} runs {state['Image'] if state else None}, not the build {image_id}"
            for slot, state in states.items()
            if state is None or state["Image"] != image_id
        ]

    @staticmethod
    def untouched(slot: str, before: dict[str, Any] | None, states: Mapping[str, Any]) -> list[str]:
        after = states.get(slot)
        if before is None or after is None:
            return [f"{slot} container missing"]
        problems = []
        if after["Id"] != before["Id"]:
            problems.append(f"{slot} container was replaced")
        if after["Image"] != before["Image"]:
            problems.append(f"{slot} image changed")
        if after["State"]["StartedAt"] != before["State"]["StartedAt"]:
            problems.append(f"{slot} container was restarted")
        return problems

    def cleanup(self) -> None:
        for name in (*self.names.values(), f"{self.prefix}-staging"):
            engine("DELETE", f"/containers/{name}?force=true", ok=(204, 404))
        for network in (self.prefix, f"{self.prefix}-staging"):
            engine("DELETE", f"/networks/{network}", ok=(204, 404))
        self.nginx.stop()


def start_without_site(nginx: NginxInstance) -> None:
    """A running host Nginx onto which the site config is installed before the first deploy.

    The site's `include` of the upstream file dangles until the first switch writes it
    (docs/switch.md, "Installing"), so Nginx starts with the site empty, as a host's Nginx
    would have been running before nocturna-infra arrived.
    """
    nginx.prefix.mkdir(parents=True, exist_ok=True)
    nginx.write_config()
    site = nginx.prefix / "nocturna-chart.conf"
    text = site.read_text()
    site.write_text("# not installed yet\n")
    subprocess.run(nginx.command(), check=True, capture_output=True, timeout=30)
    deadline = time.monotonic() + 10
    while nginx.master_pid() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    site.write_text(text)


def render_table(results: list[StepResult]) -> str:
    header = ("step", "expected", "outcome", "Nginx serves", "slot images", "requests",
              "failed", "slow ok/failed", "broken slot answered", "switch s",
              "up s")  # fmt: skip
    rows = [header]
    for result in results:
        rows.append(
            (
                result.step,
                result.expected if result.expected == "ok" else "failure",
                "as expected" if result.passed else "UNEXPECTED",
                result.served,
                result.images,
                str(result.requests) if result.requests else "-",
                str(result.failed) if result.requests else "-",
                f"{result.slow_ok}/{result.slow_failed}" if result.requests else "-",
                result.broken_answered,
                f"{result.switch_seconds:.2f}" if result.switch_seconds is not None else "-",
                f"{result.up_seconds:.1f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in rows]  # fmt: skip
    for result in results:
        if result.outcome != "ok":
            lines.append(f"  {result.step}: {result.outcome}")
        lines += [f"  {result.step}: UNEXPECTED {problem}" for problem in result.problems]
    return "\n".join(lines)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="nocturna-rehearsal-") as tmp:
        results = Rehearsal(Path(tmp)).run()
    print(render_table(results))
    return 0 if results and all(result.passed for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
