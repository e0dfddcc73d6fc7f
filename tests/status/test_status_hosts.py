"""`status` with several Docker hosts: every host's slots, and a host that does not answer."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from test_status_cli import SWITCHED_AT, UPSTREAM_NAME, write_stack

from nocturna_infra.status import cli as status
from nocturna_infra.status.cli import load_settings
from nocturna_infra.status.report import assess, render_status, status_data
from nocturna_infra.traffic.upstream import render_upstreams

HOSTS = [
    {"name": "local"},
    {"name": "h2", "dockerHost": "ssh://deploy@127.0.0.2:2222", "publishAddress": "127.0.0.2"},
]
IMAGE = "sha256:" + "ab" * 32


def container(name: str, address: str, port: int) -> dict[str, object]:
    return {
        "Name": f"/{name}",
        "Image": IMAGE,
        "State": {"Status": "running", "Health": {"Status": "healthy"}},
        "NetworkSettings": {"Ports": {"3011/tcp": [{"HostIp": address, "HostPort": str(port)}]}},
    }


def two_host_runner(h2: str) -> tuple[list[list[str]], status.Runner]:
    """First host answers; h2 answers ("up"), hangs past the timeout ("hang")."""
    calls: list[list[str]] = []

    def run(argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        calls.append(list(argv))
        remote = "-H" in argv
        if remote and h2 == "hang":
            raise subprocess.TimeoutExpired(list(argv), status.DOCKER_TIMEOUT_SECONDS)
        address = "127.0.0.2" if remote else "127.0.0.1"
        if "image" in argv:
            return subprocess.CompletedProcess(list(argv), 0, json.dumps([{"Id": IMAGE}]), "")
        found = [container("svc-blue", address, 3014), container("svc-green", address, 3012)]
        return subprocess.CompletedProcess(list(argv), 0, json.dumps(found), "")

    return calls, run


def report_for(tmp_path: Path, h2: str) -> tuple[list[list[str]], status.StatusReport]:
    write_stack(tmp_path, serviceName="svc", hosts=HOSTS, selectionDir=str(tmp_path / "sel"))
    (tmp_path / "sel").mkdir(mode=0o755)
    groups = {
        "blue": ["127.0.0.1:3014", "127.0.0.2:3014"],
        "green": ["127.0.0.1:3012", "127.0.0.2:3012"],
    }
    (tmp_path / "up").write_text(render_upstreams(UPSTREAM_NAME, groups, SWITCHED_AT))
    (tmp_path / "sel" / f"{UPSTREAM_NAME}.blue").write_text("blue\n")
    settings = load_settings(tmp_path, "production")
    calls, runner = two_host_runner(h2)
    report = status.gather(
        settings,
        "production",
        "docker",
        str(tmp_path / "up"),
        runner,
        now=lambda: datetime(2026, 1, 1, tzinfo=UTC),
        nginx=lambda _url: (None, ""),
    )
    return calls, report


def test_every_hosts_slots_are_reported_through_its_docker_host(tmp_path: Path) -> None:
    calls, report = report_for(tmp_path, "up")

    assert [(s.host, s.slot.value, s.server, s.container.state) for s in report.slots] == [
        ("local", "blue", "127.0.0.1:3014", "running"),
        ("local", "green", "127.0.0.1:3012", "running"),
        ("h2", "blue", "127.0.0.2:3014", "running"),
        ("h2", "green", "127.0.0.2:3012", "running"),
    ]
    assert calls[-2][:5] == ["docker", "-H", "ssh://deploy@127.0.0.2:2222", "container", "inspect"]
    assert assess(report).problems == ()
    text = render_status(report)
    assert "HOST   SLOT   CONTAINER" in text
    assert "routes to blue (127.0.0.1:3014), blue (127.0.0.2:3014)" in text


def test_a_host_that_hangs_is_marked_unreachable_and_the_others_reported(tmp_path: Path) -> None:
    _, report = report_for(tmp_path, "hang")

    verdict = assess(report)
    assert verdict.problems == (
        "degraded: host h2 unreachable: docker container inspect failed (Command "
        "'['docker', '-H', 'ssh://deploy@127.0.0.2:2222', 'container', 'inspect', 'svc-blue', "
        "'svc-green']' timed out after 30.0 seconds); its slots' state is unknown",
    )
    states = {(s.host, s.slot.value): s.container.state for s in report.slots}
    assert states[("local", "blue")] == "running"
    assert states[("h2", "blue")] == "unknown"
    assert status_data(report)["unreachableHosts"].keys() == {"h2"}
