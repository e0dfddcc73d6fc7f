"""The pull-request preview's preflight: which Docker daemons a preview needs to answer on the
runner, and the comment line when one does not (nocturna_infra/preview_preflight.py)."""

from __future__ import annotations

import json
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nocturna_infra.hosts import HostSettings
from nocturna_infra.preview_preflight import SocketNeed, main, ping, socket_needs, stack_reason

LOCAL = HostSettings("local", "", (), "127.0.0.1", "127.0.0.1")
RENDER2 = HostSettings("render2", "unix:///run/render2/docker.sock", (), "10.0.0.2", "10.0.0.2")
RENDER3 = HostSettings("render3", "ssh://deploy@10.0.0.3", (), "10.0.0.3", "10.0.0.3")
MISSING = "/run/no-such-dir/docker.sock"


def stack_file(project: Path, hosts: list[dict[str, str]]) -> Path:
    config = {
        "nocturna-infra:allowNonLoopbackBind": True,
        "nocturna-infra:hosts": hosts,
    }
    (project / "Pulumi.production.yaml").write_text(yaml.safe_dump({"config": config}))
    return project


class PingHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.rfile.readline()
        self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nOK")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[str]:
    """A unix socket answering Docker's `/_ping` with 200."""
    path = str(tmp_path / "docker.sock")
    server = socketserver.ThreadingUnixStreamServer(path, PingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield path
    server.shutdown()
    server.server_close()


def test_the_default_provider_and_unix_hosts_need_a_socket_and_ssh_hosts_none() -> None:
    assert socket_needs((LOCAL, RENDER2, RENDER3), None) == [
        SocketNeed("local", "/var/run/docker.sock", True),
        SocketNeed("render2", "/run/render2/docker.sock", False),
    ]


def test_docker_host_of_the_runner_is_what_the_default_provider_pings() -> None:
    assert socket_needs((LOCAL,), "unix:///run/user/1000/docker.sock") == [
        SocketNeed("local", "/run/user/1000/docker.sock", True)
    ]
    assert socket_needs((LOCAL,), "tcp://10.0.0.9:2376") == []


def test_a_unix_host_absent_on_the_runner_blocks_the_preview_naming_it(
    tmp_path: Path, daemon: str
) -> None:
    project = stack_file(
        tmp_path,
        [{"name": "local"}, {"name": "render2", "dockerHost": f"unix://{MISSING}",
                             "publishAddress": "10.0.0.2"}],
    )  # fmt: skip

    reason = stack_reason(project, "production", f"unix://{daemon}", ping)

    assert reason == (
        "the preview of production cannot run on this runner: host render2's dockerHost "
        f"unix://{MISSING} does not answer here (no such socket). The docker provider pings "
        "every non-SSH daemon when it starts and would fail with `failed to connect to any "
        "docker daemon`, naming no host. Preview this stack on a machine that reaches that "
        "daemon (`pulumi preview -s production`)."
    )


def test_a_runner_without_its_own_daemon_blocks_the_preview_of_the_default_host(
    tmp_path: Path,
) -> None:
    project = stack_file(tmp_path, [])

    reason = stack_reason(project, "production", f"unix://{MISSING}", ping)

    assert reason.startswith(
        "the preview of production cannot run on this runner: host local uses the stack's "
        f"default docker provider, whose daemon (unix://{MISSING}) does not answer here "
        "(no such socket)."
    )


def test_answering_daemons_and_ssh_hosts_let_the_preview_run(tmp_path: Path, daemon: str) -> None:
    project = stack_file(
        tmp_path,
        [{"name": "local"}, {"name": "render2", "dockerHost": f"unix://{daemon}",
                             "publishAddress": "10.0.0.2"},
         {"name": "render3", "dockerHost": "ssh://deploy@10.0.0.3", "publishAddress": "10.0.0.3"}],
    )  # fmt: skip

    assert stack_reason(project, "production", f"unix://{daemon}", ping) == ""


def test_a_socket_that_refuses_is_named_as_refusing(tmp_path: Path) -> None:
    dead = tmp_path / "dead.sock"
    dead.touch()

    assert ping(str(dead)) == "Connection refused"


def test_invalid_settings_are_left_to_the_preview_to_report(tmp_path: Path) -> None:
    project = stack_file(tmp_path, [{"name": "Bad Name"}])

    assert stack_reason(project, "production", f"unix://{MISSING}", ping) == ""


def test_prints_one_output_line_per_stack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stack_file(tmp_path, [])
    (tmp_path / "Pulumi.staging.yaml").write_text(
        json.dumps({"config": {"nocturna-infra:environment": "staging"}})
    )
    monkeypatch.setenv("DOCKER_HOST", f"unix://{MISSING}")

    assert main(["--project-dir", str(tmp_path), "staging", "production"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("=", 1)[0] for line in lines] == ["staging", "production"]
    assert all("cannot run on this runner: host local" in line for line in lines)
