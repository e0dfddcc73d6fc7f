"""Two-host rehearsal: the real program on two Docker hosts, one Nginx in front, under load.

Host 1 is this machine's dockerd (the stack's default provider, as an upgraded single-host
stack keeps it). Host 2 is the second dockerd reached only over SSH
(scripts/second-docker-host.sh; ssh://nocturna-host2@127.0.0.2:2222, publishing on
127.0.0.2). As in tests/rehearsal.py the program runs under the SDK's mocks and each declared
resource is applied for real; here a resource goes to the engine of the provider it was
declared with:

- no provider (the default one) -> the local socket;
- the `docker-h2` provider      -> the second engine, through the way the docker provider
  dials an ssh:// host (docker/cli connhelper): `ssh <the provider's sshOpts> ... docker
  system dial-stdio`, the Engine API spoken over its stdio (tests/engine_api.SshEngine),
  built from the *declared* provider inputs (host, sshOpts). Image builds on host 2 run
  `docker build` with DOCKER_HOST=ssh://... (the CLI takes no SSH options: the test host's
  ssh wrapper on PATH adds the same options).

Run it: `venv/bin/python -m tests.rehearsal_hosts` (prints the per-step table).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import requests
from pulumi.runtime import mocks as pm

from nocturna_infra.program import stack as program
from nocturna_infra.settings import parse_settings
from nocturna_infra.status import cli as status
from nocturna_infra.status.report import StatusReport, assess
from nocturna_infra.traffic.probe import VERIFY_HEADER
from tests import docker_host, harness
from tests.engine_api import ApplyError, SshEngine, engine, engine_target
from tests.load import SlowClients, WrkLoad
from tests.nginx_instance import NginxInstance
from tests.ports import distinct_free_ports
from tests.rehearsal import (
    REPO,
    ApplyingMocks,
    Backend,
    StepResult,
    UpResult,
    quiet_failed_futures,
    render_table,
    served_version,
    set_release,
    start_without_site,
    switch_seconds,
)
from tests.second_host import SecondHost, release_session, start_session

H2: Final = "h2"
PROVIDER: Final = f"docker-{H2}"


class TwoHostMocks(ApplyingMocks):
    """ApplyingMocks that send each resource to its provider's engine."""

    def __init__(self, backend: Backend, project_dir: Path, second: SecondHost) -> None:
        super().__init__(backend, project_dir)
        self.second = second
        self.remote: SshEngine | None = None
        self.hosts_of: dict[str, str] = {}
        """Resource name -> the host it was applied on (local or h2)."""

    def new_resource(self, args: pm.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        if args.typ == "pulumi:providers:docker":
            self.registered.append(args)
            self.resources[args.name] = args
            inputs = dict(args.inputs)
            if args.name != PROVIDER or inputs.get("host") != self.second.docker_host:
                msg = f"{args.name}: unexpected provider {inputs}"
                raise ApplyError(msg)
            # The engine sends non-string provider config as JSON.
            self.remote = SshEngine(inputs["host"], json.loads(inputs.get("sshOpts", "[]")))
            return f"{args.name}_id", inputs
        provider = args.provider or ""
        if f"::{PROVIDER}::" not in provider:
            if "@" in args.name and args.custom:
                msg = f"{args.name}: declared for host 2 without its provider ({provider!r})"
                raise ApplyError(msg)
            self.hosts_of.setdefault(args.name, "local")
            return super().new_resource(args)
        if self.remote is None:
            msg = f"{args.name}: provider {provider} used before it was registered"
            raise ApplyError(msg)
        self.hosts_of[args.name] = H2
        with engine_target(self.remote):
            try:
                return super().new_resource(args)
            except ApplyError as error:
                msg = f"{args.name} on {self.remote.url}: {error}"
                raise ApplyError(msg) from None

    def _image(self, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if self.hosts_of.get(name) != H2:
            return super()._image(name, inputs)
        build = inputs["build"]
        with tempfile.TemporaryDirectory() as tmp:
            iidfile = Path(tmp) / "iid"
            argv = ["build", "--progress=plain", "--iidfile", str(iidfile)]
            argv += ["--label", docker_host.TEST_LABEL, "-t", inputs["imageName"]]
            argv += ["-f", str(self.project_dir / build["dockerfile"])]
            for key, value in build.get("args", {}).items():
                argv += ["--build-arg", f"{key}={value}"]
            proc = self.second.docker(
                *argv, str(self.project_dir / build["context"]), timeout=1800, check=False
            )
            if proc.returncode != 0:
                tail = (proc.stderr + proc.stdout).strip().splitlines()[-3:] or ["no output"]
                msg = f"docker build on {self.second.docker_host} failed: {' | '.join(tail)}"
                raise ApplyError(msg)
            image_id = iidfile.read_text().strip()
        return inputs["imageName"], {**inputs, "repoDigest": image_id}


def pulumi_up(
    backend: Backend, config: Mapping[str, str], second: SecondHost, project_dir: Path = REPO
) -> tuple[UpResult, TwoHostMocks]:
    """One `pulumi up` over both hosts; outputs kept only on success (as the engine does)."""
    mocks = TwoHostMocks(backend, project_dir, second)
    started = time.monotonic()
    try:
        run = harness.run(
            lambda: program.main(project_dir),
            dict(config),
            stack="production",
            secret_keys=["apiKey"],
            mocks=mocks,
        )
    except Exception as error:  # the failure is the step's outcome
        return UpResult(None, mocks, str(error), time.monotonic() - started), mocks
    backend.exports = dict(run.exports)
    return UpResult(run, mocks, None, time.monotonic() - started), mocks


class TwoHostRehearsal:
    """The blue/green cycle on two hosts; every step checked on both."""

    def __init__(self, workdir: Path, second: SecondHost) -> None:
        self.workdir = workdir
        self.second = second
        self.service = workdir / "service"
        shutil.copytree(docker_host.FIXTURE_SERVICE, self.service)
        set_release(self.service, "1.0.0")
        self.dockerfile = self.service / "two-host.Dockerfile"
        for name in ("two-host.Dockerfile", "two-host.Dockerfile.dockerignore"):
            shutil.copy(Path(__file__).parent / "fixtures" / name, self.service / name)
        self.tag = uuid.uuid4().hex[:6]
        self.prefix = f"nocturna-mh-{self.tag}"
        blue, green = distinct_free_ports(2, "127.0.0.1", second.address)
        self.ports = {"blue": blue, "green": green}
        self.nginx_root = Path(tempfile.mkdtemp(prefix="nocturna-mh-nginx-"))
        self.nginx_root.chmod(0o755)
        self.nginx = NginxInstance(
            self.nginx_root / "production", self.ports["blue"], self.ports["green"]
        )
        self.backend = Backend()
        self.results: list[StepResult] = []
        self.remote = SshEngine(second.docker_host, second.ssh_opts)

    @property
    def switch_name(self) -> str:
        return f"{self.prefix}-switch"

    def hosts_config(self) -> str:
        return json.dumps(
            [
                {"name": "local"},
                {
                    "name": H2,
                    "dockerHost": self.second.docker_host,
                    "sshOpts": list(self.second.ssh_opts),
                    "publishAddress": self.second.address,
                },
            ]
        )

    def config(self, **overrides: str) -> dict[str, str]:
        nginx = self.nginx
        ca_dir = Path("/usr/local/share/ca-certificates")
        return {
            "apiKey": "rehearsal-key-0123456789",
            "serviceName": self.prefix,
            "networkName": self.prefix,
            "imageName": self.prefix,
            "buildContext": str(self.service),
            "dockerfile": str(self.dockerfile),
            "baseImage": docker_host.BASE_IMAGE,
            "extraCaCertsDir": str(ca_dir) if list(ca_dir.glob("*.crt")) else "",
            "bluePort": str(self.ports["blue"]),
            "greenPort": str(self.ports["green"]),
            # Roomier than the single-host rehearsal: host 2's health is polled over SSH, its
            # engine may have just started, and on a busy 2-core machine (load 8) each check's
            # `node` took over 1 s to start, so no slot became healthy in 20 s. No step here
            # expects an unhealthy slot, and a healthy one is reported as soon as it answers,
            # so the room costs little when all is well (wait: 30 s + 3 s x 6 = 48 s).
            "healthIntervalSeconds": "3",
            "healthTimeoutSeconds": "2",
            "healthRetries": "5",
            "healthStartPeriodSeconds": "30",
            "stopTimeoutSeconds": "35",
            "upstreamFile": str(nginx.upstream_file),
            "upstreamName": nginx.site.upstream_name,
            "selectionDir": str(nginx.selection_dir),
            "nginxTestCommand": nginx.test_command,
            "nginxReloadCommand": nginx.reload_command,
            "nginxStartCommand": nginx.start_command,
            "nginxPidFile": str(nginx.pid_file),
            "verifyUrl": nginx.verify_url("/health"),
            "probeAttempts": "4",
            "probeIntervalSeconds": "1",
            "routerPython": sys.executable,
            "hosts": self.hosts_config(),
            # The watch window is the gates rehearsal's subject; here each switch returns at
            # once (and this Nginx writes no slots access log for it to read).
            "watchSeconds": "0",
            **overrides,
        }

    def up(self, active: str) -> tuple[UpResult, TwoHostMocks]:
        return pulumi_up(self.backend, self.config(activeSlot=active), self.second, REPO)

    def states(self) -> dict[str, dict[str, Any] | None]:
        """`docker inspect` of every slot on both hosts, keyed `blue`, `blue@h2`, ..."""
        found: dict[str, dict[str, Any] | None] = {}
        for slot in ("blue", "green"):
            name = f"{self.prefix}-{slot}"
            found[slot] = _inspect(name, None)
            try:
                found[f"{slot}@{H2}"] = _inspect(name, self.remote)
            except (ApplyError, OSError):
                found[f"{slot}@{H2}"] = None
        return found

    def answering(self, count: int = 40) -> set[str]:
        """The servers that answer through Nginx's verification server (fresh connections)."""
        seen: set[str] = set()
        for _ in range(count):
            try:
                response = requests.get(
                    self.nginx.verify_url("/health"), timeout=5, headers={"Connection": "close"}
                )
                seen.add(response.headers.get(VERIFY_HEADER, "?").split(",")[-1].strip())
            except requests.RequestException:
                seen.add("error")
            time.sleep(0.02)
        return seen

    def record(
        self,
        step: str,
        expected: str,
        up: UpResult,
        figures: dict[str, Any] | None,
        problems: list[str],
    ) -> None:
        error = up.error
        outcome = "ok" if error is None else f"failed: {error.splitlines()[0][:240]}"
        if expected == "ok" and error is not None:
            problems.append(f"expected success, got: {error}")
        if expected != "ok" and (error is None or expected not in error):
            problems.append(f"expected a failure mentioning {expected!r}, got {outcome}")
        wrk = figures["wrk"] if figures else None
        slow = figures["slow"] if figures else None
        if wrk is not None and wrk.failed:
            problems.append(f"{wrk.failed} failed requests through Nginx")
        if slow is not None and slow.failed:
            problems.append(f"{len(slow.failed)} failed slow requests: {slow.failed[:2]}")
        images = ", ".join(
            f"{slot}={str(state['Image'])[7:15]}"
            for slot, state in self.states().items()
            if state is not None
        )
        self.results.append(
            StepResult(
                step=step,
                expected=expected,
                outcome=outcome,
                served=served_version(self.nginx),
                images=images,
                requests=wrk.requests if wrk else 0,
                failed=wrk.failed if wrk else 0,
                slow_ok=slow.ok if slow else 0,
                slow_failed=len(slow.failed) if slow else 0,
                switch_seconds=switch_seconds(
                    self.backend.command_output.get(self.switch_name, "")
                ),
                up_seconds=up.seconds,
                problems=problems,
            )
        )
        self.backend.command_output.clear()

    def load(self) -> _Load:
        return _Load(self.nginx, self.workdir)

    def run(self) -> list[StepResult]:
        docker_host.ensure_engine()
        docker_host.ensure_base_image()
        try:
            with quiet_failed_futures():
                self._cycle()
        finally:
            self.cleanup()
        return self.results

    def _cycle(self) -> None:
        start_without_site(self.nginx)
        blue_ports = {
            f"127.0.0.1:{self.ports['blue']}",
            f"{self.second.address}:{self.ports['blue']}",
        }
        green_ports = {
            f"127.0.0.1:{self.ports['green']}",
            f"{self.second.address}:{self.ports['green']}",
        }

        # 1. First deployment on both hosts: v1 everywhere, Nginx routed to blue on both.
        up, mocks = self.up("blue")
        states = self.states()
        problems = [f"{slot} not running" for slot, state in states.items()
                    if state is None or not state["State"]["Running"]]  # fmt: skip
        if {mocks.hosts_of.get(f"{self.prefix}-blue@{H2}-container")} != {H2}:
            problems.append("host 2's blue was not applied through its provider")
        seen = self.answering()
        if seen != blue_ports:
            problems.append(f"through Nginx answered {sorted(seen)}, expected {sorted(blue_ports)}")
        self.record("1 first deploy, 2 hosts (v1, live blue)", "ok", up, None, problems)
        if up.error is not None:
            return
        blue_before = {k: v for k, v in states.items() if k.startswith("blue")}

        # 2. Deploy v2: green replaced on both hosts, blue untouched on both.
        set_release(self.service, "2.0.0")
        with self.load() as figures:
            up, mocks = self.up("blue")
        states = self.states()
        problems = self.untouched(blue_before, states)
        expected = sorted([f"{self.prefix}-green-container", f"{self.prefix}-green@{H2}-container"])
        if sorted(mocks.replaced) != expected:
            problems.append(f"deploy replaced {mocks.replaced}, expected {expected}")
        if figures["slow"].versions.keys() - {"1.0.0"}:
            problems.append(f"traffic left v1 during the deploy: {dict(figures['slow'].versions)}")
        self.record("2 deploy v2 to standby on both", "ok", up, figures, problems)
        green_v2 = {k: v for k, v in states.items() if k.startswith("green")}

        # 3. Switch: both hosts' green take traffic at once; every host answers through Nginx.
        with self.load() as figures:
            up, mocks = self.up("green")
        states = self.states()
        problems = self.untouched(blue_before, states) + self.untouched(green_v2, states)
        if mocks.replaced:
            problems.append(f"switch replaced {mocks.replaced}")
        seen = self.answering()
        if seen != green_ports:
            problems.append(
                f"through Nginx answered {sorted(seen)}, expected {sorted(green_ports)}"
            )
        output = self.backend.command_output.get(self.switch_name, "")
        if "every server answered through Nginx" not in output:
            problems.append("the switch did not see every host answer through Nginx")
        self.record("3 switch to green (both hosts)", "ok", up, figures, problems)

        # 4. Rollback: blue v1 on both hosts at once.
        with self.load() as figures:
            up, mocks = self.up("blue")
        states = self.states()
        problems = self.untouched(blue_before, states) + self.untouched(green_v2, states)
        if mocks.replaced:
            problems.append(f"rollback replaced {mocks.replaced}")
        if not served_version(self.nginx).startswith("blue v1.0.0"):
            problems.append(f"after the rollback Nginx serves {served_version(self.nginx)}")
        seen = self.answering()
        if seen != blue_ports:
            problems.append(f"through Nginx answered {sorted(seen)}, expected {sorted(blue_ports)}")
        self.record("4 rollback to blue (both hosts)", "ok", up, figures, problems)

        # 5a. Host 2 unreachable (sshd refuses; its containers keep serving) during a deploy
        # of v3: the run fails naming host 2; every live slot keeps serving.
        set_release(self.service, "3.0.0")
        with self.load() as figures, self.second.outage("ssh"):
            up, mocks = self.up("blue")
        states = self.states()
        problems = self.untouched(blue_before, states)
        if mocks.replaced:
            problems.append(f"replaced {mocks.replaced}: the release covers every host's build")
        if not served_version(self.nginx).startswith("blue v1.0.0"):
            problems.append(f"Nginx serves {served_version(self.nginx)}")
        self.record("5a deploy v3, host 2 unreachable", self.second.docker_host, up, figures,
                    problems)  # fmt: skip

        # 5b. Host 2 back: the retried deploy brings v3 to host 2's standby too.
        with self.load() as figures:
            up, mocks = self.up("blue")
        states = self.states()
        problems = self.untouched(blue_before, states)
        # Each host builds its own image (its own ID); the release is what they answer.
        versions = {
            address: slot_version(f"http://{address}:{self.ports['green']}/health")
            for address in ("127.0.0.1", self.second.address)
        }
        if set(versions.values()) != {"green 3.0.0"}:
            problems.append(f"the standbys answer {versions}, expected green 3.0.0 on both")
        if f"{self.prefix}-green@{H2}-container" not in mocks.replaced:
            problems.append(f"the retry replaced {mocks.replaced}, expected host 2's green")
        self.record("5b retry: v3 to standby on both", "ok", up, figures, problems)

        # 6. Host 2's engine down during a switch: its containers stop; Nginx passes over
        # them; the switch refuses, naming host 2's server; blue keeps serving on host 1.
        problems = []
        with self.load() as figures, self.second.outage("daemon"):
            # dockerd stops its containers within its shutdown timeout; wait until host 2's
            # green no longer answers (the script kills a dockerd that takes over 30 s, which
            # would leave its containers running).
            green_h2 = f"http://{self.second.address}:{self.ports['green']}/health"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not slot_version(green_h2).startswith("unre"):
                time.sleep(0.5)
            if not slot_version(green_h2).startswith("unreachable"):
                problems.append("host 2's green still answers with its engine stopped")
            up, mocks = self.up("green")
            served = served_version(self.nginx)
        if not served.startswith("blue v1.0.0"):
            problems.append(f"while host 2 was down Nginx served {served}")
        self.record("6 switch, host 2 engine down", f"{self.second.address}:{self.ports['green']}",
                    up, figures, problems)  # fmt: skip

        # 7. Host 2 back (its containers restart: unless-stopped): the switch goes through.
        problems = [] if self.wait_running() else ["host 2's slots did not come back healthy"]
        with self.load() as figures:
            up, mocks = self.up("green")
        if mocks.replaced:
            problems.append(f"switch replaced {mocks.replaced}")
        if not served_version(self.nginx).startswith("green v3.0.0"):
            problems.append(f"after the switch Nginx serves {served_version(self.nginx)}")
        seen = self.answering()
        if seen != green_ports:
            problems.append(
                f"through Nginx answered {sorted(seen)}, expected {sorted(green_ports)}"
            )
        self.record("7 switch to green, host 2 back", "ok", up, figures, problems)

        # 8. Status with host 2 gone dark (sshd frozen): host 1 reported, host 2 unreachable.
        with self.second.outage("hang"):
            started = time.monotonic()
            report = self.status()
            took = time.monotonic() - started
        problems = []
        verdict = assess(report)
        if not any("host h2 unreachable" in line for line in verdict.problems):
            problems.append(f"status did not mark host 2 unreachable: {verdict.problems}")
        local = [s.container.state for s in report.slots if s.host == "local"]
        if local != ["running", "running"]:
            problems.append(f"host 1's slots read {local}")
        self.record(f"8 status, host 2 dark ({took:.0f}s)", "ok", UpResult(None, mocks, None, took),
                    None, problems)  # fmt: skip

    def status(self) -> StatusReport:
        raw = {k: v for k, v in self.config(activeSlot="green").items() if k != "apiKey"}
        settings = parse_settings(raw, api_key="", project_dir=None)
        env = self.second.env()

        def runner(argv: list[str] | Any) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                list(argv),
                capture_output=True,
                text=True,
                timeout=status.DOCKER_TIMEOUT_SECONDS,
                env={**env, "DOCKER_HOST": ""},
                check=False,
            )

        return status.gather(settings, "production", docker_host.DOCKER, runner=runner)

    def wait_running(self, timeout: float = 120) -> bool:
        """Whether every slot on both hosts is healthy again within `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.states()
            if all(
                s is not None and (s["State"].get("Health") or {}).get("Status") == "healthy"
                for s in states.values()
            ):
                return True
            time.sleep(1)
        return False

    @staticmethod
    def untouched(before: Mapping[str, Any], states: Mapping[str, Any]) -> list[str]:
        problems = []
        for slot, old in before.items():
            new = states.get(slot)
            if old is None or new is None:
                problems.append(f"{slot} container missing")
            elif new["Id"] != old["Id"] or new["Image"] != old["Image"]:
                problems.append(f"{slot} container was replaced")
        return problems

    def cleanup(self) -> None:
        for slot in ("blue", "green"):
            name = f"{self.prefix}-{slot}"
            engine("DELETE", f"/containers/{name}?force=true", ok=(204, 404))
            self.second.docker("rm", "-f", name, check=False)
        engine("DELETE", f"/networks/{self.prefix}", ok=(204, 404, 403))
        self.second.docker("network", "rm", self.prefix, check=False)
        image = f"{self.prefix}:production"
        docker_host.docker("image", "rm", image, check=False)
        self.second.docker("image", "rm", image, check=False)
        self.nginx.stop()
        shutil.rmtree(self.nginx_root, ignore_errors=True)


def slot_version(url: str) -> str:
    """`<slot> <version>` as a slot answers its health URL directly."""
    try:
        body = requests.get(url, timeout=5, headers={"Connection": "close"}).json()
    except (requests.RequestException, ValueError) as error:
        return f"unreachable ({type(error).__name__})"
    return f"{body.get('slot')} {body.get('version')}"


def _inspect(name: str, remote: SshEngine | None) -> dict[str, Any] | None:
    state = engine("GET", f"/containers/{name}/json", ok=(200, 404), socket_path=remote)
    return state if state and "State" in state else None


class _Load:
    """Keep-alive wrk load plus 2-second requests through Nginx for the block (as in the
    single-host rehearsal)."""

    def __init__(self, nginx: NginxInstance, workdir: Path) -> None:
        self.wrk = WrkLoad(nginx.url("/"), workdir, keepalive=True)
        self.slow = SlowClients(nginx.url("/slow?ms=2000"), count=4)
        self.figures: dict[str, Any] = {}

    def __enter__(self) -> dict[str, Any]:
        self.wrk.start()
        self.slow.start()
        time.sleep(2.5)
        return self.figures

    def __exit__(self, *exc: object) -> None:
        time.sleep(2.5)
        self.figures["wrk"] = self.wrk.stop()
        self.slow.stop()
        self.figures["slow"] = self.slow


def main() -> int:
    second = start_session()
    try:
        with tempfile.TemporaryDirectory(prefix="nocturna-mh-rehearsal-") as tmp:
            results = TwoHostRehearsal(Path(tmp), second).run()
    finally:
        release_session(second)
    print(render_table(results))
    return 0 if results and all(result.passed for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
