"""The program's container arguments on the real daemon: Chromium still renders under them.

The fixture service does not run Chromium, but its image is built from the real Dockerfile
and holds the real browser package (Chromium's headless shell). So the proof runs the browser
the program points Puppeteer at (the container's PUPPETEER_EXECUTABLE_PATH, from the
puppeteerExecutablePath default) inside a container created from render.container_args
(read-only root, every tmpfs `noexec`, /dev/shm Docker's `noexec` default, all capabilities
dropped, no-new-privileges, the nproc limit) and checks the picture it writes. What it does
not prove: the real service's Puppeteer flags and pages (not in this repository).
"""

from __future__ import annotations

import base64
import struct
import uuid
from collections.abc import Iterator

import pytest

from nocturna_infra.program import render
from nocturna_infra.settings import Settings, parse_settings
from nocturna_infra.slot import Slot
from tests import docker_host
from tests.declared_containers import start_declared
from tests.engine_api import engine
from tests.ports import free_port

pytestmark = pytest.mark.docker

PAGE = (
    "data:text/html,<svg xmlns='http://www.w3.org/2000/svg' width='320' height='200'>"
    "<rect width='320' height='200' fill='navy'/><circle cx='160' cy='100' r='80' fill='gold'/>"
    "</svg>"
)
# The browser the service would launch: the path the program gives it, as the service reads it.
CHROMIUM = (
    "sh", "-c", 'exec "$PUPPETEER_EXECUTABLE_PATH" "$@"', "browser",
    "--headless", "--disable-gpu", "--user-data-dir=/tmp/chromium-profile",
    "--window-size=320,200",
)  # fmt: skip


@pytest.fixture(scope="module")
def settings() -> Settings:
    raw = {
        "serviceName": f"nocturna-hardening-{uuid.uuid4().hex[:6]}",
        "bluePort": str(free_port()),
        "greenPort": str(free_port()),
        "stagingPort": str(free_port()),
    }
    return parse_settings(raw, api_key="k", project_dir=None)


@pytest.fixture(scope="module")
def container(settings: Settings) -> Iterator[str]:
    docker_host.ensure_engine()
    docker_host.ensure_base_image()
    image = docker_host.build(docker_host.FIXTURE_SERVICE, args=docker_host.default_build_args())
    network = settings.network_name + f"-{uuid.uuid4().hex[:6]}"
    engine("POST", "/networks/create", {"Name": network, "CheckDuplicate": True}, ok=(201,))
    args = render.container_args(settings, Slot.BLUE, image.image_id)
    args["networks_advanced"] = [{"name": network, "aliases": [args["name"]]}]
    created: list[str] = []
    try:
        start_declared(args, created)
        docker_host.wait_for_log(created[0], '"message":"listening"')
        yield created[0]
    finally:
        for container_id in created:
            engine("DELETE", f"/containers/{container_id}?force=true", ok=(204, 404))
        engine("DELETE", f"/networks/{network}", ok=(204, 404))
        docker_host.remove_image(image)


def exec_in(container: str, *argv: str, check: bool = True) -> str:
    proc = docker_host.docker("exec", container, *argv, check=check, timeout=180)
    return proc.stdout + proc.stderr


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    width, height = struct.unpack(">II", data[16:24])  # IHDR
    return width, height


def test_every_writable_path_is_noexec(container: str) -> None:
    mounts = exec_in(container, "sh", "-c", "grep -E ' (/tmp|/home/node/.config|/dev/shm) ' "
                     "/proc/mounts")  # fmt: skip

    options = {line.split()[1]: set(line.split()[3].split(",")) for line in mounts.splitlines()}
    assert set(options) == {"/tmp", "/home/node/.config", "/dev/shm"}
    assert all({"noexec", "nosuid", "nodev"} <= opts for opts in options.values()), options


def test_a_binary_copied_to_tmp_cannot_run(container: str) -> None:
    output = exec_in(
        container, "sh", "-c", "cp /bin/true /tmp/true && /tmp/true; echo exit=$?", check=False
    )

    assert "Permission denied" in output
    assert "exit=126" in output


def test_the_service_is_given_the_headless_shell_the_image_holds(container: str) -> None:
    path = exec_in(container, "sh", "-c", 'echo "$PUPPETEER_EXECUTABLE_PATH"').strip()

    assert path == "/usr/bin/chromium-headless-shell"
    assert exec_in(container, "test", "-x", path, "-a", "!", "-e", "/usr/bin/chromium") == ""


def test_chromium_renders_a_page_under_the_programs_arguments(container: str) -> None:
    exec_in(container, *CHROMIUM, "--no-sandbox", "--screenshot=/tmp/shot.png", PAGE)

    data = docker_host.docker("exec", container, "base64", "-w0", "/tmp/shot.png").stdout
    assert png_size(base64.b64decode(data)) == (320, 200)


def test_chromium_prints_a_pdf_under_the_programs_arguments(container: str) -> None:
    exec_in(container, *CHROMIUM, "--no-sandbox", "--print-to-pdf=/tmp/page.pdf", PAGE)

    assert exec_in(container, "head", "-c", "5", "/tmp/page.pdf") == "%PDF-"


def test_chromiums_own_sandbox_cannot_start_in_the_container(container: str) -> None:
    """Why the service needs --no-sandbox: no user namespaces (Docker's seccomp profile without
    CAP_SYS_ADMIN) and no setuid helper (no-new-privileges, chromium-sandbox not installed)."""
    output = exec_in(container, *CHROMIUM, "--screenshot=/tmp/sandboxed.png", PAGE, check=False)

    assert "No usable sandbox" in output
    assert "sandboxed.png" not in exec_in(container, "ls", "/tmp")


def test_the_process_limit_is_in_force(container: str, settings: Settings) -> None:
    limits = exec_in(container, "cat", "/proc/1/limits")

    line = next(line for line in limits.splitlines() if line.startswith("Max processes"))
    assert line.split()[2:4] == [str(settings.limits.max_processes)] * 2


@pytest.mark.parametrize(
    ("path", "exit_code"),
    [
        ("/health", 0),
        # Interpolated into the script (before), this path made the check exit 0 at once.
        ("/health',process.exit(0),'", 1),
    ],
)
def test_the_health_check_requests_its_path_and_never_runs_it(
    container: str, settings: Settings, path: str, exit_code: int
) -> None:
    argv = render.healthcheck_test(settings.app_port, path)[1:]  # without "CMD"

    proc = docker_host.docker("exec", container, *argv, check=False)

    assert proc.returncode == exit_code, proc.stdout + proc.stderr
