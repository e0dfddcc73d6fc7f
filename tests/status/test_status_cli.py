"""The status command: option and config errors, Docker facts, and whole runs against a real
dockerd and a real upstream file."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nocturna_infra.settings import Environment
from nocturna_infra.slot import Slot
from nocturna_infra.status import cli as status
from nocturna_infra.status.cli import (
    UsageError,
    ask_nginx,
    container_facts,
    inspect_all,
    load_settings,
    main,
    parse_docker_time,
    parse_options,
    published_ports,
    read_routing,
)
from nocturna_infra.status.report import ContainerFacts, SlotStatus, StatusReport, assess
from nocturna_infra.traffic.upstream import UpstreamState, render_upstream, render_upstreams
from tests import docker_host
from tests.backends import Backend
from tests.docker_host import REPO_ROOT
from tests.nginx_instance import NginxInstance
from tests.ports import distinct_free_ports

SWITCHED_AT = datetime(2026, 11, 26, 20, 40, 5, tzinfo=UTC)
UPSTREAM_NAME = "nocturna-img-production"
APP_PORT = 8080
# A tiny HTTP service and a health check run by the same node, like the real image's.
SERVER_JS = (
    "require('http').createServer((q,s)=>{s.setHeader('content-type','application/json');"
    f's.end(\'{{"status":"healthy"}}\')}}).listen({APP_PORT})'
)
HEALTH_JS = (
    f"require('http').get('http://127.0.0.1:{APP_PORT}/health',"
    "r=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1))"
)
FAST_HEALTH = (
    "--init",
    "--health-cmd",
    f'node -e "{HEALTH_JS}"',
    "--health-interval",
    "1s",
    "--health-timeout",
    "5s",
    "--health-retries",
    "3",
    "--health-start-period",
    "1ms",
)


def write_stack(project: Path, stack: str = "production", **config: object) -> None:
    lines = ["config:"] + [
        f"  nocturna-infra:{key}: {json.dumps(value)}" for key, value in config.items()
    ]
    (project / f"Pulumi.{stack}.yaml").write_text("\n".join(lines) + "\n")


def write_upstream(path: Path, slot: str, *servers: str) -> None:
    """The single-group file of a host not yet migrated to the selection file."""
    path.write_text(render_upstream(UPSTREAM_NAME, slot, servers, SWITCHED_AT))


def write_slots(path: Path, selection_dir: Path, live: str | None, **servers: str) -> None:
    """The upstream file with one group per slot, and the selection files naming `live`."""
    groups = {slot: [server] for slot, server in servers.items()}
    path.write_text(render_upstreams(UPSTREAM_NAME, groups, SWITCHED_AT))
    selection_dir.mkdir(exist_ok=True)
    for old in selection_dir.iterdir():
        old.unlink()
    if live is not None:
        (selection_dir / f"{UPSTREAM_NAME}.{live}").write_text(f"{live}\n")


# --- options and config ------------------------------------------------------------------------


def usage_error(argv: Sequence[str], cwd: Path) -> str:
    with pytest.raises(UsageError) as caught:
        parse_options(argv, cwd=cwd)
    return str(caught.value)


def test_options_default_to_production_in_the_current_directory(tmp_path: Path) -> None:
    opts = parse_options(["--docker", sys.executable], cwd=tmp_path)
    assert (opts.stack, opts.project_dir, opts.upstream_file, opts.as_json) == (
        "production",
        tmp_path,
        None,
        False,
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(
            ["--stack", "../prod"],
            "--stack: expected a stack name (letters, digits, '_', '.', '-'); got '../prod'",
            id="stack",
        ),
        pytest.param(
            ["--docker", "/nonexistent/docker"],
            "--docker: expected an executable docker CLI; got '/nonexistent/docker'",
            id="docker",
        ),
        pytest.param(
            ["--project-dir", "/nonexistent/project"],
            "--project-dir: expected an existing directory; got '/nonexistent/project'",
            id="project-dir",
        ),
        pytest.param(["--slot", "blue"], "unrecognized arguments: --slot blue", id="unknown-flag"),
    ],
)
def test_bad_flag_is_a_usage_error_naming_it(argv: list[str], message: str, tmp_path: Path) -> None:
    assert usage_error(argv, tmp_path) == message


def test_unknown_stack_names_the_stacks_that_exist(tmp_path: Path) -> None:
    write_stack(tmp_path, "staging", environment="staging")
    with pytest.raises(UsageError) as caught:
        load_settings(tmp_path, "prod")
    assert str(caught.value) == (
        f"--stack: no Pulumi.prod.yaml in {tmp_path}; got 'prod'. Stacks there: staging"
    )


def test_invalid_config_value_is_a_usage_error_naming_the_key(tmp_path: Path) -> None:
    write_stack(tmp_path, activeSlot="purple")
    with pytest.raises(UsageError) as caught:
        load_settings(tmp_path, "production")
    assert str(caught.value) == (
        "nocturna-infra:activeSlot: must be one of blue, green; got 'purple'. "
        "Run `pulumi config set activeSlot blue`."
    )


def test_stack_file_with_secrets_and_missing_build_inputs_still_loads(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.production.yaml").write_text(
        "config:\n"
        "  nocturna-infra:activeSlot: green\n"
        "  nocturna-infra:buildContext: ../nowhere\n"
        "  nocturna-infra:apiKey:\n"
        "    secure: AAABADdhYmNk\n"
    )
    settings = load_settings(tmp_path, "production")
    assert settings.active_slot == "green"


def test_the_repository_stacks_load() -> None:
    assert load_settings(REPO_ROOT, "production").router.upstream_file == (
        "/etc/nginx/upstreams/nocturna-img-production.conf"
    )
    assert load_settings(REPO_ROOT, "staging").router.upstream_name == "nocturna-img-staging"


def test_config_error_exits_2_with_the_message_on_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_stack(tmp_path, bluePort=70000)
    code = main(["--project-dir", str(tmp_path), "--docker", sys.executable])
    assert code == 2
    assert capsys.readouterr().err == (
        "status: nocturna-infra:bluePort: must be between 1 and 65535; got 70000.\n"
    )


def test_help_lists_the_exit_codes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nocturna_infra.status", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    assert done.returncode == 0
    assert "exit codes:\n  0  as configured" in done.stdout
    assert "\n  1  drift:" in done.stdout
    assert "\n  2  bad usage" in done.stdout
    assert "\n  3  degraded:" in done.stdout


# --- facts from files and docker inspect --------------------------------------------------------


def test_upstream_file_is_read_back(tmp_path: Path) -> None:
    path = tmp_path / "up.conf"
    write_upstream(path, "green", "127.0.0.1:3012")
    routing = read_routing(str(path), UPSTREAM_NAME)
    assert routing.state == UpstreamState(UPSTREAM_NAME, "green", ("127.0.0.1:3012",))
    assert routing.problem == ""


def test_selection_names_the_group_nginx_uses(tmp_path: Path) -> None:
    path, selection = tmp_path / "up.conf", tmp_path / "selection"
    write_slots(path, selection, "green", blue="127.0.0.1:3014", green="127.0.0.1:3012")

    routing = read_routing(str(path), UPSTREAM_NAME, str(selection), ["blue", "green"])

    assert routing.state == UpstreamState(f"{UPSTREAM_NAME}-green", "green", ("127.0.0.1:3012",))
    assert (routing.selection, routing.selection_problem) == ("green", "")


def test_unreadable_selection_is_drift_naming_the_fallback(tmp_path: Path) -> None:
    path = tmp_path / "up.conf"
    write_slots(
        path, tmp_path / "selection", "green", blue="127.0.0.1:3014", green="127.0.0.1:3012"
    )

    routing = read_routing(str(path), UPSTREAM_NAME, str(tmp_path / "nowhere"), ["blue", "green"])

    assert routing.state == UpstreamState(f"{UPSTREAM_NAME}-blue", "blue", ("127.0.0.1:3014",))
    assert routing.selection_problem == (
        f"{tmp_path}/nowhere: no such directory (Nginx uses its fallback slot); "
        "Nginx uses its fallback blue"
    )


@pytest.mark.nginx
def test_the_verification_server_is_asked_which_server_answers() -> None:
    # Not pytest's tmp_path: its parents are root-only, so the workers could not see the
    # selection and would use the fallback (which is what the disagreement check is for).
    tmp_path = Path(tempfile.mkdtemp(prefix="nocturna-status-"))
    blue, green = Backend("blue").start(), Backend("green").start()
    nginx = NginxInstance(tmp_path, blue.port, green.port)
    nginx.write_config()
    nginx.write_routing("green", {"blue": blue.server, "green": green.server}, SWITCHED_AT)
    nginx.start()
    try:
        answered = ask_nginx(nginx.verify_url("/health"))
        # The site config ignores the selection: the files say green, Nginx answers blue.
        site = tmp_path / "nocturna-chart.conf"
        site.write_text(site.read_text().replace("-f ", "-d "))
        subprocess.run(nginx.command("-s", "reload"), check=True, capture_output=True)
        time.sleep(0.3)
        routing = read_routing(
            str(nginx.upstream_file), UPSTREAM_NAME, str(nginx.selection_dir), ["blue", "green"]
        )
        disagreeing = ask_nginx(nginx.verify_url("/health"))
    finally:
        nginx.stop()
        blue.stop()
        green.stop()
        shutil.rmtree(tmp_path)

    assert answered == (green.server, "")
    assert disagreeing == (blue.server, "")
    slots = tuple(
        SlotStatus(Slot(b.slot), b.port, b.server, ContainerFacts(b.slot, "running", "healthy"))
        for b in (blue, green)
    )
    report = StatusReport(
        stack="production",
        environment=Environment.PRODUCTION,
        live_slot=Slot.GREEN,
        slots=slots,
        routing=replace(routing, answered=disagreeing[0]),
        checked_at=SWITCHED_AT,
    )
    problems = [line for line in assess(report).problems if line.startswith("drift")]
    assert problems == [
        f"drift: the selection says green ({green.server}), but Nginx's verification server "
        f"answered from {blue.server}"
    ]


def test_original_hand_written_upstream_file_is_read_without_a_slot(tmp_path: Path) -> None:
    path = tmp_path / "up.conf"
    path.write_text(
        "upstream nocturna-img-production {\n"
        "    server localhost:3014;  # ACTIVE: blue\n"
        "    # server localhost:3012;  # STANDBY: green\n"
        "    keepalive 32;\n"
        "}\n"
    )
    assert read_routing(str(path), UPSTREAM_NAME).state == UpstreamState(
        UPSTREAM_NAME, None, ("localhost:3014",)
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param(None, "missing (no such file)", id="missing"),
        pytest.param("", "not an upstream file (no `upstream NAME {` line found)", id="empty"),
        pytest.param(
            "upstream x {\n}\n",
            "not an upstream file (upstream x: no `server` lines)",
            id="no-servers",
        ),
    ],
)
def test_unusable_upstream_file_gives_a_reason(
    content: str | None, problem: str, tmp_path: Path
) -> None:
    path = tmp_path / "up.conf"
    if content is not None:
        path.write_text(content)
    routing = read_routing(str(path), UPSTREAM_NAME)
    assert (routing.state, routing.problem) == (None, problem)


def test_docker_times_with_nanoseconds_are_read() -> None:
    assert parse_docker_time("2026-11-26T20:40:05.123456789Z") == datetime(
        2026, 11, 26, 20, 40, 5, 123456, tzinfo=UTC
    )
    assert parse_docker_time("2026-11-26T21:40:05+01:00") == SWITCHED_AT
    assert parse_docker_time("") is None


def test_published_ports_come_from_the_running_bindings_else_the_configured_ones() -> None:
    running = {
        "NetworkSettings": {"Ports": {"3011/tcp": [{"HostIp": "127.0.0.1", "HostPort": "3014"}]}},
        "HostConfig": {"PortBindings": {"3011/tcp": [{"HostIp": "", "HostPort": "9"}]}},
    }
    stopped = {
        "NetworkSettings": {"Ports": {}},
        "HostConfig": {"PortBindings": {"3011/tcp": [{"HostIp": "::1", "HostPort": "3012"}]}},
    }
    assert published_ports(running) == ("127.0.0.1:3014",)
    assert published_ports(stopped) == ("[::1]:3012",)
    assert published_ports({}) == ()


def test_container_facts_from_inspect() -> None:
    container = {
        "Name": "/svc-blue",
        "Image": "sha256:" + "ab" * 32,
        "State": {"Status": "running", "Health": {"Status": "starting"}},
        "NetworkSettings": {"Ports": {"3011/tcp": [{"HostIp": "127.0.0.1", "HostPort": "3014"}]}},
    }
    image = {"Id": "sha256:" + "ab" * 32, "Created": "2026-11-26T20:40:05.5Z"}
    assert container_facts("svc-blue", container, image) == ContainerFacts(
        name="svc-blue",
        state="running",
        health="starting",
        image_id="sha256:" + "ab" * 32,
        image_created=datetime(2026, 11, 26, 20, 40, 5, 500000, tzinfo=UTC),
        published=("127.0.0.1:3014",),
    )
    assert container_facts("svc-blue", {"State": {"Status": "exited"}}, None).health == "none"
    assert container_facts("svc-green", None, None) == ContainerFacts("svc-green", "missing")


def fake_runner(returncode: int, stdout: str, stderr: str):
    def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(list(argv), returncode, stdout, stderr)

    return run


def test_missing_containers_are_not_a_docker_problem() -> None:
    runner = fake_runner(1, '[{"Name": "/a"}]\n', "Error: No such container: b\n")
    assert inspect_all("docker", "container", ["a", "b"], runner) == ([{"Name": "/a"}], "")


def test_unreachable_daemon_is_a_docker_problem() -> None:
    runner = fake_runner(
        1, "", "Cannot connect to the Docker daemon at unix:///var/run/docker.sock.\n"
    )
    assert inspect_all("docker", "container", ["a"], runner) == (
        [],
        "container inspect exited 1: Cannot connect to the Docker daemon at "
        "unix:///var/run/docker.sock.",
    )


def test_unreachable_daemon_still_reports_every_slot(tmp_path: Path) -> None:
    write_stack(tmp_path, serviceName="svc")
    settings = load_settings(tmp_path, "production")
    runner = fake_runner(1, "", "Cannot connect to the Docker daemon\n")
    report = status.gather(settings, "production", "docker", str(tmp_path / "up"), runner)
    assert [(s.slot, s.container) for s in report.slots] == [
        ("blue", ContainerFacts("svc-blue", "unknown")),
        ("green", ContainerFacts("svc-green", "unknown")),
    ]
    assert (
        report.docker_problem == "container inspect exited 1: Cannot connect to the Docker daemon"
    )


# --- whole runs against a real dockerd --------------------------------------------------------


@dataclass
class Project:
    """A temporary project: its stack file, upstream file and two slot containers."""

    directory: Path
    service: str
    ports: dict[str, int]
    upstream: Path
    containers: dict[str, str]

    def name(self, slot: str) -> str:
        return f"{self.service}-{slot}"

    @property
    def selection(self) -> Path:
        return self.directory / "selection"

    def route(self, live: str | None) -> None:
        write_slots(
            self.upstream,
            self.selection,
            live,
            blue=self.server("blue"),
            green=self.server("green"),
        )

    def server(self, slot: str) -> str:
        return f"127.0.0.1:{self.ports[slot]}"

    def run_status(self, *extra: str) -> tuple[int, str]:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "nocturna_infra.status",
                "--project-dir",
                str(self.directory),
                "--upstream-file",
                str(self.upstream),
                "--docker",
                docker_host.DOCKER,
                *extra,
            ],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=120,
            check=False,
        )
        assert done.stderr == ""
        return done.returncode, done.stdout

    def row(self, text: str, slot: str) -> list[str]:
        """The table row of `slot`, split on runs of two or more spaces."""
        line = next(line for line in text.splitlines() if line.startswith(f"{slot} "))
        return re.split(r"\s{2,}", line)


def start_slot(image: str, name: str, port: int) -> str:
    return docker_host.run(
        image,
        FAST_HEALTH,
        publish=(port, APP_PORT),
        name=name,
        command=["node", "-e", SERVER_JS],
    )


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    """Blue and green running and healthy, Nginx routed to blue, activeSlot blue."""
    docker_host.ensure_engine()
    docker_host.ensure_base_image()
    service = f"nocturna-test-status-{uuid.uuid4().hex[:10]}"
    blue, green = distinct_free_ports(2)
    write_stack(
        tmp_path,
        environment="production",
        activeSlot="blue",
        serviceName=service,
        bluePort=blue,
        greenPort=green,
        selectionDir=str(tmp_path / "selection"),
        verifyUrl="",  # no Nginx here; tests/status/test_status_cli.py asks a real one separately
    )
    proj = Project(tmp_path, service, {"blue": blue, "green": green}, tmp_path / "up.conf", {})
    try:
        for slot in ("blue", "green"):
            proj.containers[slot] = start_slot(
                docker_host.BASE_IMAGE, proj.name(slot), proj.ports[slot]
            )
        for cid in proj.containers.values():
            docker_host.wait_healthy(cid, timeout=60)
        proj.route("blue")
        yield proj
    finally:
        for cid in proj.containers.values():
            docker_host.docker("rm", "-f", cid, check=False)


@pytest.mark.docker
def test_all_healthy_exits_0_with_both_slots_live_per_config_and_nginx(project: Project) -> None:
    code, text = project.run_status()
    image = docker_host.inspect(docker_host.BASE_IMAGE)["Id"].removeprefix("sha256:")[:12]
    assert code == 0, text
    assert text.splitlines()[1] == (
        f"Nginx:  upstream {UPSTREAM_NAME}-blue in {project.upstream} routes to "
        f"blue ({project.server('blue')}); selection: blue"
    )
    blue = project.row(text, "blue")
    green = project.row(text, "green")
    assert blue[:5] == ["blue", project.name("blue"), "running", "healthy", image]
    assert blue[6:] == [project.server("blue"), "yes", "yes"]
    assert green[:5] == ["green", project.name("green"), "running", "healthy", image]
    assert green[6:] == [project.server("green"), "no", "no"]
    assert text.endswith("Result: ok, as configured (exit 0)\n")


@pytest.mark.docker
@pytest.mark.parametrize("how", ["stopped", "removed"])
def test_standby_down_exits_3_and_the_live_row_stays_complete(project: Project, how: str) -> None:
    green = project.containers["green"]
    if how == "stopped":
        docker_host.stop(green, timeout=5)
    else:
        docker_host.docker("rm", "-f", green)
    code, text = project.run_status()
    assert code == 3, text
    blue = project.row(text, "blue")
    assert blue[2:4] == ["running", "healthy"]
    assert blue[6:] == [project.server("blue"), "yes", "yes"]
    row = project.row(text, "green")
    if how == "stopped":
        assert row[2] == "exited"
        assert row[6] == project.server("green")  # the configured binding, shown while stopped
        problem = f"degraded: green: {project.name('green')} is exited, not running"
    else:
        assert row[2:] == ["missing", "-", "-", "-", "-", "no", "no"]
        problem = f"degraded: green: container {project.name('green')} is missing"
    assert text.endswith(f"Result: degraded (exit 3)\n  - {problem}\n")


@pytest.mark.docker
def test_nginx_on_green_while_active_slot_is_blue_exits_1_naming_both(project: Project) -> None:
    project.route("green")
    code, text = project.run_status()
    assert code == 1, text
    assert project.row(text, "blue")[-2:] == ["yes", "no"]
    assert project.row(text, "green")[-2:] == ["no", "yes"]
    assert text.endswith(
        "Result: drift (exit 1)\n"
        f"  - drift: Nginx routes to green ({project.server('green')}), but activeSlot is blue\n"
    )


@pytest.mark.docker
def test_missing_selection_exits_1_naming_the_fallback_nginx_uses(project: Project) -> None:
    project.route(None)
    code, text = project.run_status()
    assert code == 1, text
    assert project.row(text, "blue")[-2:] == ["yes", "yes"]
    assert text.endswith(
        "Result: drift (exit 1)\n"
        "  - drift: selection: no selection (Nginx uses its fallback blue)\n"
    )


@pytest.mark.docker
def test_host_not_yet_migrated_is_read_from_its_single_group_file(project: Project) -> None:
    write_upstream(project.upstream, "blue", project.server("blue"))
    code, text = project.run_status()
    assert code == 0, text
    assert text.splitlines()[1] == (
        f"Nginx:  upstream {UPSTREAM_NAME} in {project.upstream} routes to "
        f"blue ({project.server('blue')})"
    )


@pytest.mark.docker
def test_missing_upstream_file_exits_1_with_a_clear_line(project: Project) -> None:
    project.upstream.unlink()
    code, text = project.run_status()
    assert code == 1, text
    assert text.splitlines()[1] == f"Nginx:  {project.upstream}: missing (no such file)"
    assert text.endswith(
        "Result: drift (exit 1)\n"
        f"  - drift: {project.upstream}: missing (no such file); where Nginx routes is unknown\n"
    )
    assert project.row(text, "green")[2:4] == ["running", "healthy"]


@pytest.mark.docker
def test_json_output_has_the_same_verdict(project: Project) -> None:
    docker_host.docker("rm", "-f", project.containers["green"])
    code, text = project.run_status("--json")
    data = json.loads(text)
    assert code == 3
    assert (data["exitCode"], data["nginx"]["routedSlots"]) == (3, ["blue"])
    assert [(s["slot"], s["state"], s["liveConfig"], s["liveNginx"]) for s in data["slots"]] == [
        ("blue", "running", True, True),
        ("green", "missing", False, False),
    ]
