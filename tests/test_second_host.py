"""The second test Docker host is real: its own engine, reached over SSH, publishing on 127.0.0.2.

What the multi-host feature will rely on, proven before it exists: a docker CLI (and so a docker
provider) with DOCKER_HOST=ssh://... reaches the second engine and not the first; images build
and containers run there; their ports are reachable from this host, also through an Nginx on the
first host; and an outage of that host fails docker commands quickly, with a message saying why.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import pytest

from nocturna_infra.traffic.upstream import render_upstreams
from tests.docker_host import BASE_IMAGE, TEST_LABEL, docker
from tests.nginx_instance import UPSTREAM_NAME, NginxInstance
from tests.ports import free_port
from tests.second_host import SecondHost, get, host_processes, script, status, wait_http

pytestmark = [pytest.mark.docker]

_TEXT: Final[dict[str, Any]] = {"capture_output": True, "text": True, "check": True, "timeout": 60}


@pytest.fixture
def network(second_host: SecondHost) -> Iterator[str]:
    """A user-defined bridge network on the second host, created over SSH."""
    name = f"nocturna-test-h2-{uuid.uuid4().hex[:10]}"
    second_host.docker("network", "create", "--label", TEST_LABEL, name)
    yield name
    second_host.docker("network", "rm", name, check=False)


@pytest.fixture
def first_host_http() -> Iterator[tuple[str, int]]:
    """The same tiny HTTP server on the first host, published on 127.0.0.1; (id, port)."""
    port = free_port()
    js = (
        'require("http").createServer((q, r) => { r.setHeader("X-Slot", "blue"); '
        'r.setHeader("X-Host", "host1"); r.end("host1\\n"); }).listen(8080)'
    )
    name = f"nocturna-test-h1-{uuid.uuid4().hex[:10]}"
    try:
        cid = docker(
            "run", "--detach", "--init", "--label", TEST_LABEL, "--name", name,
            "--publish", f"127.0.0.1:{port}:8080", BASE_IMAGE, "node", "-e", js,
        ).stdout.strip()  # fmt: skip
        wait_http(f"http://127.0.0.1:{port}/", "host1")
        yield cid, port
    finally:
        docker("rm", "-f", name, check=False)  # by name: a failed `run` can leave it created


def _refused(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_ssh_url_reaches_a_second_engine_not_the_first(second_host: SecondHost) -> None:
    first = docker("info", "--format", "{{.ID}} {{.DockerRootDir}}").stdout.split()
    second = second_host.info()

    assert second_host.docker_host.startswith("ssh://")
    assert second["ID"] != first[0]
    assert second["DockerRootDir"] != first[1]
    assert second["DockerRootDir"] == "/var/lib/nocturna-host2/docker"


def test_ssh_opts_alone_reach_the_engine_as_a_docker_provider_dials(
    second_host: SecondHost,
) -> None:
    """What pulumi-docker and terraform-provider-docker run with `sshOpts` (docker/cli
    connhelper): plain ssh with those options, `docker system dial-stdio` on the far side, and
    the Engine API spoken over its stdio. No wrapper, no ssh config file."""
    argv = ["/usr/bin/ssh", "-F", "/dev/null", *second_host.ssh_opts]
    argv += ["-o", "ConnectTimeout=30", "-T", "-l", second_host.user]
    argv += ["-p", str(second_host.ssh_port), "--", second_host.address]
    request = "GET /info HTTP/1.0\r\nHost: docker\r\n\r\n"
    proc = subprocess.run(
        [*argv, "docker", "system", "dial-stdio"], input=request, **_TEXT, env={"PATH": "/bin"}
    )
    head, _, body = proc.stdout.partition("\n\n")  # text mode reads \r\n as \n

    assert head.startswith("HTTP/1.0 200 OK")
    assert json.loads(body)["DockerRootDir"] == "/var/lib/nocturna-host2/docker"


def test_containers_on_the_second_host_are_invisible_to_the_first(
    second_host: SecondHost,
) -> None:
    cid, _ = second_host.run_http()
    try:
        assert second_host.docker("ps", "-q", "--no-trunc", "--filter", f"id={cid}").stdout.split()
        assert docker("ps", "-aq", "--no-trunc", "--filter", f"id={cid}").stdout.split() == []
    finally:
        second_host.remove(cid)


def test_the_base_image_was_loaded_into_the_second_engine(second_host: SecondHost) -> None:
    want = docker("image", "inspect", "--format", "{{.Id}}", BASE_IMAGE).stdout.strip()
    have = second_host.docker("image", "inspect", "--format", "{{.Id}}", BASE_IMAGE)

    assert have.stdout.strip() == want


def test_sshd_admits_the_generated_key_only(second_host: SecondHost) -> None:
    """Without the key (plain ssh, no wrapper) the same URL is refused: key auth, no password."""
    env = {**second_host.env(), "PATH": "/usr/bin:/bin"}
    env.pop("SSH_AUTH_SOCK", None)
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"]
    argv += ["-o", "UserKnownHostsFile=/dev/null", "-o", "IdentityFile=/dev/null"]
    argv += ["-p", str(second_host.ssh_port), f"{second_host.user}@{second_host.address}"]
    proc = subprocess.run(
        [*argv, "docker", "version"], capture_output=True, text=True, timeout=60, env=env
    )

    assert proc.returncode == 255
    assert "Permission denied (publickey)" in proc.stderr


def test_sshd_listens_on_the_second_loopback_address_only(second_host: SecondHost) -> None:
    socket.create_connection((second_host.address, second_host.ssh_port), timeout=5).close()

    assert _refused("127.0.0.1", second_host.ssh_port)


def test_the_key_runs_nothing_but_docker_dial_stdio(second_host: SecondHost) -> None:
    """A command sent with the key is replaced by `docker system dial-stdio` (forced command)."""
    argv = [str(second_host.wrapper_dir / "ssh"), "-p", str(second_host.ssh_port)]
    argv += [f"{second_host.user}@{second_host.address}", "echo shell-reached; id -un"]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )

    assert proc.returncode == 0, proc.stderr  # admitted, and dial-stdio ended with its input
    assert "shell-reached" not in proc.stdout
    assert second_host.user not in proc.stdout


def test_ports_publish_on_the_second_address_from_a_user_defined_network(
    second_host: SecondHost, network: str
) -> None:
    cid, port = second_host.run_http(label="host2-net", network=network)
    try:
        response = get(second_host.url(port))

        assert response.text == "host2-net\n"
        assert response.headers["X-Host"] == "host2-net"
        assert _refused("127.0.0.1", port)
    finally:
        second_host.remove(cid)


def test_an_image_built_over_ssh_exists_on_the_second_host_only(
    second_host: SecondHost, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text(
        f'FROM {BASE_IMAGE}\nRUN echo built-on-host2 > /built.txt\nCMD ["cat", "/built.txt"]\n'
    )
    tag = f"nocturna-test/h2-build:{uuid.uuid4().hex[:12]}"
    second_host.docker("build", "--label", TEST_LABEL, "-t", tag, str(tmp_path), timeout=900)
    try:
        out = second_host.docker("run", "--rm", "--label", TEST_LABEL, tag).stdout

        assert out == "built-on-host2\n"
        assert docker("image", "inspect", tag, check=False).returncode != 0
    finally:
        second_host.docker("image", "rm", tag, check=False)


def test_nginx_on_the_first_host_balances_across_both_hosts(
    second_host: SecondHost, first_host_http: tuple[str, int], tmp_path: Path
) -> None:
    """The shipped Nginx config, its upstream listing one server per host, reaches both."""
    _, port1 = first_host_http
    cid2, port2 = second_host.run_http(label="host2")
    nginx = NginxInstance(tmp_path, blue_port=port1, green_port=port1)
    nginx.write_config()
    servers = [f"127.0.0.1:{port1}", f"{second_host.address}:{port2}"]
    # The live (blue) group lists one server per host; Nginx routes to it per the selection.
    nginx.upstream_file.write_text(
        render_upstreams(UPSTREAM_NAME, {"blue": servers, "green": servers[:1]}, datetime.now(UTC))
    )
    (nginx.selection_dir / f"{UPSTREAM_NAME}.blue").write_text("blue\n")
    nginx.start()
    try:
        answers = [get(nginx.url()) for _ in range(6)]
        upstreams = {get(nginx.verify_url("/")).headers["X-Nocturna-Upstream"] for _ in range(6)}

        assert {r.status_code for r in answers} == {200}
        assert {r.headers["X-Host"] for r in answers} == {"host1", "host2"}
        assert upstreams == set(servers)
    finally:
        nginx.stop()
        second_host.remove(cid2)


def test_engine_down_fails_docker_over_ssh_quickly_and_says_so(second_host: SecondHost) -> None:
    """Host down (dockerd #2 stopped): commands fail at once, its containers are gone; back up
    after the outage."""
    cid, port = second_host.run_http()
    try:
        with second_host.outage("daemon"):
            proc = second_host.docker("ps", check=False, timeout=60)

            assert proc.returncode != 0
            assert "Cannot connect to the Docker daemon" in proc.stderr
            assert _refused(second_host.address, port)

        assert second_host.docker("ps", "-q").returncode == 0
    finally:
        second_host.remove(cid)


def test_ssh_down_fails_docker_over_ssh_while_containers_keep_serving(
    second_host: SecondHost,
) -> None:
    cid, port = second_host.run_http(label="still-serving")
    try:
        with second_host.outage("ssh"):
            proc = second_host.docker("ps", check=False, timeout=60)

            assert proc.returncode != 0
            assert "Connection refused" in proc.stderr
            assert get(second_host.url(port)).text == "still-serving\n"

        assert second_host.docker("ps", "-q").returncode == 0
    finally:
        second_host.remove(cid)


def test_a_host_gone_dark_fails_docker_over_ssh_after_the_connect_timeout(
    second_host: SecondHost,
) -> None:
    """sshd frozen: the kernel accepts the connection, nothing answers. The `ConnectTimeout` in
    the SSH options bounds each attempt; the error names the banner exchange."""
    cid, port = second_host.run_http(label="dark-but-serving")
    try:
        with second_host.outage("hang"):
            proc = second_host.docker("ps", check=False, timeout=300)

            assert proc.returncode != 0
            assert "Connection timed out during banner exchange" in proc.stderr
            assert get(second_host.url(port)).text == "dark-but-serving\n"

        assert second_host.docker("ps", "-q").returncode == 0
    finally:
        second_host.remove(cid)


def test_starting_and_restarting_the_second_engine_keeps_the_first_ones_bridge(
    second_host: SecondHost,
) -> None:
    """`dockerd --bridge none`, or a restart with default address pools, deletes the link named
    docker0 (moby daemon_unix.go, removeDefaultBridgeInterface): the first engine's bridge."""
    if docker("network", "inspect", "bridge", check=False).returncode != 0:
        pytest.skip("the first engine runs without its default bridge network")
    with second_host.outage("daemon"):
        pass  # a restart: the path that deleted docker0 when address pools were configured

    assert Path("/sys/class/net/docker0").exists()
    name = f"nocturna-test-h1-{uuid.uuid4().hex[:10]}"
    try:
        docker("run", "--detach", "--label", TEST_LABEL, "--name", name, BASE_IMAGE, "sleep", "30")
    finally:
        docker("rm", "-f", name, check=False)


def test_the_last_live_claim_stops_everything_and_a_dead_claim_does_not_count(
    second_host: SecondHost,
) -> None:
    """What ends a test session: releasing the last claim leaves no dockerd #2, containerd or
    sshd behind, even though a crashed session never released its claim."""
    claims = status()[1].split("claims:", 1)[1]
    if "by hand" in claims or claims.split() != [str(os.getpid())]:
        pytest.skip(f"the host is also held by a person or another session ({claims.strip()})")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **_TEXT)
    script("start", "--lease", dead.stdout.strip())  # a session that crashed holding a claim
    try:
        script("release", str(os.getpid()))

        assert status()[0] is False
        assert host_processes() == []
        assert not Path("/sys/class/net/nocturna-h2").exists()
    finally:
        second_host.up()
    assert status()[0] is True
