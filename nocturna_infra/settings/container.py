"""The container's settings: image build, health check, resource limits, ports, address."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from nocturna_infra.provider_form import cpus_form, nano_cpus_read_back, parse_cpus
from nocturna_infra.settings.reader import Reader
from nocturna_infra.settings.schema import Environment
from nocturna_infra.slot import PRODUCTION_SLOTS, Slot

MEMORY_FLOOR_MB: Final = 256
NANO_CPUS_RANGE: Final = (10**7, 1024 * 10**9)  # 0.01 to 1024 CPUs
MIN_STOP_TIMEOUT_SECONDS: Final = 31  # the service drains in-flight requests for up to 30 s
NAME_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
IMAGE_REPOSITORY_PATTERN: Final = re.compile(
    r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$"
)
STACK_NAME_PATTERN: Final = re.compile(r"^$|^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,2}$")
HEALTH_TEXT_PATTERN: Final = re.compile(r"^[ -~]{0,200}$")
ENV_NAME_PATTERN: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CONTROL_CHARACTERS: Final = re.compile(r"[\x00-\x1f\x7f]")
# Interpolated into nothing (the health check reads it from argv), and still narrow: no quotes,
# spaces, parentheses or shell/JavaScript punctuation.
HEALTH_PATH_PATTERN: Final = re.compile(r"^/[A-Za-z0-9._~/%?=&-]*$")
# Linux platforms Docker/BuildKit build for (`docker buildx ls`, the OCI platform names).
LINUX_PLATFORMS: Final = (
    "linux/amd64",
    "linux/amd64/v2",
    "linux/amd64/v3",
    "linux/arm64",
    "linux/arm/v7",
    "linux/arm/v6",
    "linux/386",
    "linux/ppc64le",
    "linux/s390x",
    "linux/riscv64",
)

# The Dockerfile's CHROMIUM_PACKAGE choices, default first; each installs /usr/bin/<package>.
CHROMIUM_PACKAGES: Final = ("chromium-headless-shell", "chromium")
EXECUTABLE_PATH_PATTERN: Final = re.compile(r"^/[A-Za-z0-9._/-]+$")


@dataclass(frozen=True)
class ImageSettings:
    repository: str
    tag: str
    context: str
    """As configured (relative to the project directory), so state is machine-independent."""
    dockerfile: str
    platform: str
    base_image: str
    extra_ca_certs_dir: Path | None
    build_args: Mapping[str, str]

    @property
    def name(self) -> str:
        return f"{self.repository}:{self.tag}"


@dataclass(frozen=True)
class HealthSettings:
    path: str
    expected_text: str
    interval_seconds: int
    timeout_seconds: int
    retries: int
    start_period_seconds: int


@dataclass(frozen=True)
class ResourceLimits:
    memory_mb: int
    memory_reservation_mb: int
    cpus: str
    """In the form the docker provider reads back (provider_form.cpus_form)."""
    shm_size_mb: int
    tmpfs_size_mb: int
    stop_timeout_seconds: int
    log_max_size_mb: int
    log_max_files: int
    max_processes: int


def parse_slot_ports(read: Reader, environment: Environment) -> dict[Slot, int]:
    """This stack's host ports; they must also miss the other environment's ports.

    A staging and a production stack may share a host, so each checks its ports against the
    other's as configured here (the defaults 3013 vs 3014/3012 never collide).
    """
    staging = read.integer("stagingPort", 1, 65535)
    ports = {slot: read.integer(f"{slot}Port", 1, 65535) for slot in PRODUCTION_SLOTS}
    if ports[Slot.BLUE] == ports[Slot.GREEN]:
        read.fail(
            "greenPort",
            "must differ from bluePort, since both slots run at once",
            ports[Slot.GREEN],
        )
    for slot, port in ports.items():
        if port == staging:
            key = "stagingPort" if environment is Environment.STAGING else f"{slot}Port"
            read.fail(
                key,
                f"must differ from {slot}Port/stagingPort ({port}): a staging and a production "
                "stack on one host would publish the same port; set the same bluePort, "
                "greenPort and stagingPort in both stacks",
                port,
            )
    if environment is Environment.STAGING:
        return {Slot.STAGING: staging}
    return ports


def parse_bind_address(read: Reader) -> str:
    text = read.string("bindAddress")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        read.fail("bindAddress", "must be an IP address such as 127.0.0.1", text)
    if not address.is_loopback and not read.boolean("allowNonLoopbackBind"):
        read.fail(
            "bindAddress",
            "publishes the slots beyond this host, where clients bypass Nginx; must be a "
            "loopback address such as 127.0.0.1 or ::1",
            text,
            "Run `pulumi config set allowNonLoopbackBind true` if that is intended.",
        )
    return text


def no_control_characters(read: Reader, name: str, values: Mapping[str, str]) -> None:
    for key, value in values.items():
        if CONTROL_CHARACTERS.search(value):
            read.fail(f"{name}.{key}", "must not contain control characters", value)


def parse_limits(read: Reader) -> ResourceLimits:
    memory_mb = read.integer("memoryMb", MEMORY_FLOOR_MB, 1024 * 1024)
    reservation_mb = read.integer("memoryReservationMb", 0, 1024 * 1024)
    if reservation_mb > memory_mb:
        read.fail("memoryReservationMb", f"must not exceed memoryMb ({memory_mb})", reservation_mb)
    cpus = read.string("cpus")
    nano_cpus = parse_cpus(cpus)
    if nano_cpus is None or not NANO_CPUS_RANGE[0] <= nano_cpus <= NANO_CPUS_RANGE[1]:
        read.fail("cpus", "must be a number of CPUs between 0.01 and 1024", cpus)
    cpus_declared = cpus_form(cpus)
    if cpus_declared is None:
        read.fail(
            "cpus",
            f"reads back from Docker as {nano_cpus_read_back(nano_cpus)!r} through the docker "
            "provider, a different value that would replace both slots on every run; choose "
            "another value (e.g. two decimals such as 0.15, or one such as 0.1)",
            cpus,
        )
    return ResourceLimits(
        memory_mb=memory_mb,
        memory_reservation_mb=reservation_mb,
        cpus=cpus_declared,
        shm_size_mb=read.integer("shmSizeMb", 1, 1024 * 1024),
        tmpfs_size_mb=read.integer("tmpfsSizeMb", 1, 1024 * 1024),
        stop_timeout_seconds=read.integer("stopTimeoutSeconds", MIN_STOP_TIMEOUT_SECONDS, 3600),
        log_max_size_mb=read.integer("logMaxSizeMb", 1, 10 * 1024),
        log_max_files=read.integer("logMaxFiles", 1, 100),
        max_processes=read.integer("maxProcesses", 256, 1024 * 1024),
    )


def parse_puppeteer_executable_path(read: Reader, building: bool) -> str:
    """The browser path given to the service. Refused when it names the other package's
    browser, which the image does not contain: the service would exit at start and its
    container restart until the health wait fails the `up`. Other paths (an image of one's
    own) are taken as given, and so is every path when nothing is `building` (the live slots
    may still run an image with the old browser)."""
    path = read.matching("puppeteerExecutablePath", EXECUTABLE_PATH_PATTERN, "an absolute path")
    package = read.mapping("buildArgs").get("CHROMIUM_PACKAGE", CHROMIUM_PACKAGES[0])
    installed = f"/usr/bin/{package}"
    browsers = {f"/usr/bin/{p}" for p in CHROMIUM_PACKAGES}
    if not building or path == installed or path not in browsers:
        return path
    if package == CHROMIUM_PACKAGES[0]:
        read.fail(
            "puppeteerExecutablePath",
            f"is the full Chromium browser, which the image no longer installs (it installs "
            f"{package} unless buildArgs.CHROMIUM_PACKAGE is chromium): the service would exit "
            'at start with "Browser was not found", and the new container never become healthy',
            path,
            f"Run `pulumi config rm puppeteerExecutablePath` to use {installed}, or keep the full "
            "browser with `pulumi config set --path buildArgs.CHROMIUM_PACKAGE chromium` "
            "(docs/dockerfile.md).",
        )
    read.fail(
        "puppeteerExecutablePath",
        f"must be {installed} when buildArgs.CHROMIUM_PACKAGE is {package}: the image holds "
        'no other browser, and the service would exit at start with "Browser was not found"',
        path,
        f"Run `pulumi config set puppeteerExecutablePath {installed}`.",
    )


def parse_image(read: Reader, environment: Environment, project_dir: Path | None) -> ImageSettings:
    repository = read.matching(
        "imageName", IMAGE_REPOSITORY_PATTERN, "a lower-case image repository name"
    )
    existing_path(read, "buildContext", project_dir, Path.is_dir, "directory")
    existing_path(read, "dockerfile", project_dir, Path.is_file, "file")
    ca_dir = (
        existing_path(read, "extraCaCertsDir", project_dir, Path.is_dir, "directory")
        if read.string("extraCaCertsDir")
        else None
    )
    build_args = read.mapping("buildArgs")
    no_control_characters(read, "buildArgs", build_args)
    for arg in build_args:
        if not ENV_NAME_PATTERN.fullmatch(arg):
            read.fail(
                "buildArgs",
                "names must be letters, digits and _, not starting with a digit",
                arg,
            )
        if arg in {"BASE_IMAGE", "EXTRA_CA_CERTS"}:
            read.fail(
                "buildArgs", f"{arg} is set by the program from baseImage/extraCaCertsDir", arg
            )
    package = build_args.get("CHROMIUM_PACKAGE", CHROMIUM_PACKAGES[0])
    if package not in CHROMIUM_PACKAGES:
        read.fail(
            "buildArgs.CHROMIUM_PACKAGE",
            f"must be one of {', '.join(CHROMIUM_PACKAGES)} (the browser the image installs)",
            package,
            "Run `pulumi config rm --path buildArgs.CHROMIUM_PACKAGE` for the headless shell.",
        )
    return ImageSettings(
        repository=repository,
        tag=environment.value,
        context=read.string("buildContext"),
        dockerfile=read.string("dockerfile"),
        platform=read.choice("platform", LINUX_PLATFORMS),
        base_image=read.matching(
            "baseImage", re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$"), "an image reference"
        ),
        extra_ca_certs_dir=ca_dir,
        build_args=build_args,
    )


def existing_path(
    read: Reader, name: str, project_dir: Path | None, exists: Callable[[Path], bool], kind: str
) -> Path:
    text = read.string(name)
    if project_dir is None:
        return Path(text)
    path = (project_dir / text).resolve()
    if not exists(path):
        read.fail(
            name,
            f"must name an existing {kind} (relative to {project_dir})",
            text,
        )
    return path
