"""The Dockerfile, built for real with BuildKit from the fixture service, then run hardened."""

from __future__ import annotations

import json
import re
import shutil
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import docker_host
from tests.docker_host import BuildResult
from tests.ports import free_port

pytestmark = pytest.mark.docker

LABELS = {
    "VERSION": "1.0.0",
    "REVISION": "0123456789abcdef0123456789abcdef01234567",
    "SOURCE": "https://example.invalid/nocturna-chart-service",
}
APT_STEP = "apt-get install"
NPM_STEP = "npm ci"
SRC_STEP = "COPY src ./src"
# No compilers, fetchers or VCS: they only serve builds (native addons, downloads), and the
# Dockerfile installs none. npm stays: it is part of the node base image, as in node:20-slim.
# Timing overrides only: the check command that runs is still the image's own HEALTHCHECK.
FAST_HEALTH = ("--health-interval", "1s", "--health-start-period", "1ms")  # 0 would inherit
BUILD_ONLY_COMMANDS = ("cc", "gcc", "g++", "c++", "make", "curl", "wget", "git")
# Installed with the full browser (`chromium`), not with its headless shell.
FULL_BROWSER_ONLY = (
    "chromium", "libgtk-3-0t64", "dbus", "systemd", "libcups2t64", "libavahi-client3",
)  # fmt: skip


@pytest.fixture(scope="module")
def image() -> Iterator[BuildResult]:
    docker_host.ensure_engine()
    docker_host.ensure_base_image()
    args = docker_host.default_build_args(**LABELS)
    result = docker_host.build(docker_host.FIXTURE_SERVICE, args=args)
    yield result
    docker_host.remove_image(result)


@pytest.fixture
def rebuild(image: BuildResult) -> Iterator[Callable[[Path], BuildResult]]:
    """Build a modified copy of the fixture like `image`; remove the new image afterwards."""
    built: list[BuildResult] = []

    def _build(context: Path) -> BuildResult:
        result = docker_host.build(context, args=docker_host.default_build_args(**LABELS))
        built.append(result)
        return result

    yield _build
    for result in built:
        docker_host.remove_image(result)


@pytest.fixture(scope="module")
def service(image: BuildResult) -> Iterator[tuple[str, int]]:
    port = free_port()
    container = docker_host.run(
        image.image_id,
        [*docker_host.HARDENED_RUN_OPTIONS, *FAST_HEALTH],
        publish=(port, docker_host.SERVICE_PORT),
        env={"DEPLOYMENT_SLOT": "blue", "API_KEY": "test-key-not-secret"},
    )
    yield container, port
    docker_host.docker("rm", "-f", container, check=False)


def get_json(url: str, timeout: float = 30) -> tuple[int, dict[str, object]]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, json.loads(response.read())


def sh_in_image(image_id: str, script: str, user: str = "root") -> str:
    return docker_host.docker(
        "run", "--rm", "--label", docker_host.TEST_LABEL, "--user", user,
        "--entrypoint", "sh", image_id, "-c", script,
    ).stdout  # fmt: skip


def copy_fixture(tmp_path: Path) -> Path:
    context = tmp_path / "service"
    shutil.copytree(
        docker_host.FIXTURE_SERVICE, context, ignore=shutil.ignore_patterns("node_modules")
    )
    return context


def test_container_becomes_healthy_through_the_image_healthcheck(image, service):
    container, _ = service
    health = docker_host.wait_healthy(container)

    configured = docker_host.inspect(container)["Config"]["Healthcheck"]["Test"]
    assert configured == docker_host.inspect(image.image_id)["Config"]["Healthcheck"]["Test"]
    assert configured[:3] == ["CMD", "node", "-e"]
    assert health["Log"][-1]["ExitCode"] == 0


def test_health_answers_on_loopback_only(service):
    container, port = service
    docker_host.wait_healthy(container)

    bindings = docker_host.inspect(container)["NetworkSettings"]["Ports"]["3011/tcp"]
    status, body = get_json(f"http://127.0.0.1:{port}/health")

    assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]
    assert status == 200
    assert body["status"] == "healthy"
    assert body["version"] == "1.0.0"
    assert body["slot"] == "blue"
    assert body["auth"] is True


def test_every_process_runs_as_uid_1000(service):
    container, _ = service
    docker_host.wait_healthy(container)

    rows = docker_host.docker("top", container, "-o", "pid,uid,args").stdout.splitlines()[1:]

    assert rows
    assert all(row.split()[1] == "1000" for row in rows), rows


def test_release_marked_unhealthy_fails_the_image_healthcheck(rebuild, tmp_path):
    context = copy_fixture(tmp_path)
    (context / "src" / "version.js").write_text(
        'module.exports = { version: "3.0.0", healthy: false };\n'
    )
    broken = rebuild(context)
    port = free_port()
    container = docker_host.run(
        broken.image_id,
        [*docker_host.HARDENED_RUN_OPTIONS, *FAST_HEALTH, "--health-retries", "2"],
        publish=(port, docker_host.SERVICE_PORT),
    )
    try:
        health = docker_host.wait_health_status(container, "unhealthy")
        with pytest.raises(urllib.error.HTTPError) as error:
            get_json(f"http://127.0.0.1:{port}/health")

        assert health["Log"][-1]["ExitCode"] == 1
        assert error.value.code == 503
        assert json.loads(error.value.read())["status"] == "degraded"
    finally:
        docker_host.docker("rm", "-f", container, check=False)


def post_render(port: int, key: str | None) -> tuple[int, dict[str, object]]:
    """POST the shipped smoke check's chart body to the render endpoint."""
    body = (Path(__file__).resolve().parent.parent / "smoke" / "chart-render.json").read_bytes()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v2/chart/render", data=body, headers=headers
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_render_answers_a_base64_png_only_with_the_api_key(service):
    container, port = service
    docker_host.wait_healthy(container)

    status, body = post_render(port, "test-key-not-secret")
    refused, _ = post_render(port, None)

    assert status == 200
    assert body["status"] == "success"
    assert body["data"]["format"] == "png"  # type: ignore[index]
    assert str(body["data"]["image"]).startswith("iVBORw0KGgo")  # type: ignore[index]
    assert refused == 401


def test_release_whose_renders_fail_still_answers_health_200(rebuild, tmp_path):
    context = copy_fixture(tmp_path)
    (context / "src" / "version.js").write_text(
        'module.exports = { version: "4.0.0", healthy: true, renderOk: false };\n'
    )
    broken = rebuild(context)
    port = free_port()
    container = docker_host.run(
        broken.image_id,
        [*docker_host.HARDENED_RUN_OPTIONS, *FAST_HEALTH],
        publish=(port, docker_host.SERVICE_PORT),
        env={"API_KEY": "k"},
    )
    try:
        docker_host.wait_healthy(container)
        health, _ = get_json(f"http://127.0.0.1:{port}/health")
        status, body = post_render(port, "k")

        assert health == 200
        assert (status, body["error"]) == (
            500,
            {"code": "RENDER_ERROR", "message": "chart renderer failed"},
        )
    finally:
        docker_host.docker("rm", "-f", container, check=False)


def test_only_the_tmpfs_paths_are_writable(service):
    container, _ = service
    docker_host.wait_healthy(container)
    probe = "touch {0}/probe 2>/dev/null && echo writable || echo read-only"

    results = {
        path: docker_host.docker("exec", container, "sh", "-c", probe.format(path)).stdout.strip()
        for path in ("/tmp", "/home/node/.config", "/app", "/app/src", "/home/node")
    }

    assert results == {
        "/tmp": "writable",
        "/home/node/.config": "writable",
        "/app": "read-only",
        "/app/src": "read-only",
        "/home/node": "read-only",
    }


def test_stop_drains_an_in_flight_request_and_exits_zero(image):
    port = free_port()
    container = docker_host.run(
        image.image_id, docker_host.HARDENED_RUN_OPTIONS, publish=(port, docker_host.SERVICE_PORT)
    )
    try:
        docker_host.wait_for_log(container, '"message":"listening"')
        answer: dict[str, object] = {}

        def slow_request() -> None:
            answer["status"], answer["body"] = get_json(f"http://127.0.0.1:{port}/slow?ms=2000")

        client = threading.Thread(target=slow_request)
        client.start()
        docker_host.wait_for_log(container, '"message":"slow request started"')
        exit_code = docker_host.stop(container, timeout=40)
        client.join(timeout=60)

        assert exit_code == 0
        assert answer == {"status": 200, "body": {"slept": 2000, "version": "1.0.0"}}
        assert '"message":"stopped"' in docker_host.logs(container)
    finally:
        docker_host.docker("rm", "-f", container, check=False)


def test_image_carries_oci_labels_and_runtime_config(image):
    config = docker_host.inspect(image.image_id)["Config"]

    assert {k: v for k, v in config["Labels"].items() if k.startswith("org.opencontainers")} == {
        "org.opencontainers.image.title": "nocturna-chart-service",
        "org.opencontainers.image.version": LABELS["VERSION"],
        "org.opencontainers.image.revision": LABELS["REVISION"],
        "org.opencontainers.image.source": LABELS["SOURCE"],
    }
    assert config["User"] == "node"
    assert config["StopSignal"] == "SIGTERM"
    assert config["Cmd"] == ["node", "src/app.js"]
    assert config["ExposedPorts"] == {"3011/tcp": {}}
    assert {
        "NODE_ENV=production",
        "PORT=3011",
        "HOST=0.0.0.0",
        "PUPPETEER_EXECUTABLE_PATH=/usr/bin/chromium-headless-shell",
        "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt",
    } <= set(config["Env"])


def test_app_files_belong_to_root_and_are_not_writable_by_others(image):
    found = sh_in_image(image.image_id, "find /app ! -user root -o -perm -o+w")

    assert found == ""


def test_image_holds_no_apt_lists_npm_cache_or_dev_dependencies(image):
    script = (
        "find /var/lib/apt/lists /var/cache/apt -type f ! -name lock;"
        " ls -d /root/.npm /home/node/.npm /app/node_modules/is-number 2>/dev/null;"
        " ls /app/node_modules"
    )

    assert sh_in_image(image.image_id, script).split() == ["ms"]


def test_image_holds_no_build_only_tools(image):
    script = " ".join(f"command -v {c};" for c in BUILD_ONLY_COMMANDS)

    assert sh_in_image(image.image_id, f"{script} true") == ""


def test_image_has_the_headless_shell_and_trusts_the_host_cas(image):
    extra = docker_host.default_build_args()["EXTRA_CA_CERTS"]
    script = (
        '"$PUPPETEER_EXECUTABLE_PATH" --version;'
        " cat /usr/local/share/ca-certificates/nocturna-extra-*.crt 2>/dev/null"
    )

    output = sh_in_image(image.image_id, script, user="node")

    assert re.fullmatch(r"Chromium \d+\.[\d.]+\n", output.removesuffix(extra)), output
    assert output.endswith(extra)


def test_image_holds_no_full_browser_or_desktop_services(image):
    """What makes the headless shell lighter: none of the full browser's desktop stack."""
    script = (
        "ls /usr/bin/chromium 2>/dev/null;"
        f" dpkg-query -W -f '${{db:Status-Abbrev}}${{Package}}\\n' {' '.join(FULL_BROWSER_ONLY)}"
        " 2>/dev/null | grep '^ii';"
        " true"
    )

    assert sh_in_image(image.image_id, script) == ""


def test_full_browser_build_arg_installs_chromium_and_points_puppeteer_at_it(image):
    result = docker_host.build(
        docker_host.FIXTURE_SERVICE,
        args=docker_host.default_build_args(CHROMIUM_PACKAGE="chromium"),
        target="base",
    )
    try:
        env = docker_host.inspect(result.image_id)["Config"]["Env"]
        output = sh_in_image(result.image_id, '"$PUPPETEER_EXECUTABLE_PATH" --version')
    finally:
        docker_host.remove_image(result)

    assert "PUPPETEER_EXECUTABLE_PATH=/usr/bin/chromium" in env
    assert output.startswith("Chromium ")


def test_unknown_browser_package_fails_the_build_before_apt(image):
    with pytest.raises(docker_host.DockerError) as error:
        docker_host.build(
            docker_host.FIXTURE_SERVICE,
            args=docker_host.default_build_args(CHROMIUM_PACKAGE="google-chrome-stable"),
            target="base",
        )

    assert (
        "CHROMIUM_PACKAGE: must be chromium-headless-shell or chromium; "
        "got 'google-chrome-stable'" in str(error.value)
    )


def test_base_stage_builds_without_extra_cas(image):
    result = docker_host.build(
        docker_host.FIXTURE_SERVICE,
        args=docker_host.default_build_args(EXTRA_CA_CERTS=""),
        target="base",
    )
    try:
        extra = sh_in_image(result.image_id, "ls /usr/local/share/ca-certificates")
    finally:
        docker_host.remove_image(result)

    assert extra == ""


def test_extra_ca_certs_without_a_certificate_fail_the_build(image):
    with pytest.raises(docker_host.DockerError) as error:
        docker_host.build(
            docker_host.FIXTURE_SERVICE,
            args=docker_host.default_build_args(EXTRA_CA_CERTS="not a certificate"),
            target="base",
        )

    assert "EXTRA_CA_CERTS: no PEM certificate found" in str(error.value)


def test_code_change_rebuilds_only_the_app_layer(image, rebuild, tmp_path):
    context = copy_fixture(tmp_path)
    with (context / "src" / "version.js").open("a") as version:
        version.write(f"// code-only change {uuid.uuid4()}\n")  # unique: never in the cache

    rebuilt = rebuild(context)

    assert rebuilt.step(APT_STEP).cached
    assert rebuilt.step(NPM_STEP).cached
    assert not rebuilt.step(SRC_STEP).cached


def test_lockfile_change_reruns_npm_ci_but_not_apt(image, rebuild, tmp_path):
    context = copy_fixture(tmp_path)
    version = f'"version": "1.0.1-test.{uuid.uuid4().hex}"'  # unique: never in the cache
    for name in ("package.json", "package-lock.json"):
        path = context / name
        path.write_text(path.read_text().replace('"version": "1.0.0"', version, 2))

    rebuilt = rebuild(context)

    assert rebuilt.step(APT_STEP).cached
    assert not rebuilt.step(NPM_STEP).cached


def test_unrelated_files_stay_out_of_the_context(image, rebuild, tmp_path):
    context = copy_fixture(tmp_path)
    (context / ".env").write_text("API_KEY=must-not-ship\n")
    (context / "docs").mkdir()
    (context / "docs" / "notes.md").write_text("notes\n")

    rebuilt = rebuild(context)

    assert rebuilt.image_id == image.image_id


def test_no_cache_build_starts_with_empty_cache_mounts(tmp_path):
    """BuildKit's --no-cache ignores cache mounts too: what the benchmark's figure means."""
    mount_id = f"nocturna-test-mount-{uuid.uuid4().hex[:12]}"
    (tmp_path / "Dockerfile").write_text(
        f"FROM {docker_host.BASE_IMAGE}\nARG STAMP\n"
        f"RUN --mount=type=cache,id={mount_id},target=/cache "
        'sh -c \'echo "mount holds: $(ls /cache | tr "\\n" " ")"; touch /cache/$STAMP\'\n'
    )
    seen = {}
    built = []
    try:
        for stamp, no_cache in (("one", False), ("two", False), ("three", True), ("four", False)):
            result = docker_host.build(
                tmp_path, tmp_path / "Dockerfile", {"STAMP": stamp}, no_cache=no_cache
            )
            built.append(result)
            output = re.search(r"^#\d+ [\d.]+ mount holds:(.*)$", result.log, re.MULTILINE)
            seen[stamp] = output.group(1).split()
    finally:
        for result in built:
            docker_host.remove_image(result)

    assert seen == {"one": [], "two": ["one"], "three": [], "four": ["three"]}
