"""Stack configuration, read and validated in one place.

`Settings.from_config` is the only code that reads `pulumi.Config`. Every key is declared
in `CONFIG_SCHEMA` (mirrored by Pulumi.yaml, which a test checks), every value is checked
before any resource is declared, and the first problem stops the program with a
`ConfigError` that names the full key, the bad value and what is allowed.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, NoReturn

import pulumi
import yaml

from nocturna_infra.hosts import HostSettings, parse_hosts
from nocturna_infra.provider_form import cpus_form, nano_cpus_read_back, parse_cpus
from nocturna_infra.slot import PRODUCTION_SLOTS, Slot
from nocturna_infra.traffic.smoke import SmokeCheck, SmokeDefinitionError, parse_checks

PROJECT: Final = "nocturna-infra"


class ConfigError(pulumi.RunError):
    """A stack configuration value is invalid; the CLI prints it without a traceback."""


class Environment(StrEnum):
    PRODUCTION = "production"
    STAGING = "staging"


@dataclass(frozen=True)
class ConfigKey:
    """One declared config key: its Pulumi.yaml type, default and description."""

    name: str
    type: str  # string | integer | boolean | object | array (Pulumi.yaml types)
    default: Any
    description: str
    secret: bool = False
    items: str | None = None
    """Element type of an `array` key (Pulumi.yaml requires `items` for arrays)."""


CONFIG_SCHEMA: Final[tuple[ConfigKey, ...]] = (
    ConfigKey(
        "environment",
        "string",
        "production",
        "Kind of stack: production (blue/green slots) or staging (one container).",
    ),
    ConfigKey(
        "activeSlot",
        "string",
        "blue",
        "Production slot that Nginx routes to: blue or green. Staging accepts only blue.",
    ),
    ConfigKey(
        "apiKey",
        "string",
        None,
        "API_KEY given to the service. Set with `pulumi config set --secret apiKey`.",
        secret=True,
    ),
    ConfigKey(
        "serviceName",
        "string",
        "nocturna-chart",
        "Prefix of container names: <serviceName>-blue, -green, -staging.",
    ),
    ConfigKey(
        "networkName", "string", "nocturna-network", "Docker network the service containers join."
    ),
    ConfigKey(
        "imageName",
        "string",
        "nocturna-chart-service",
        "Local image repository; the tag is the environment name.",
    ),
    ConfigKey(
        "buildContext",
        "string",
        "../nocturna-image",
        "Service checkout to build, relative to this project directory.",
    ),
    ConfigKey(
        "dockerfile",
        "string",
        "Dockerfile",
        "Dockerfile to build with, relative to this project directory.",
    ),
    ConfigKey(
        "baseImage",
        "string",
        "node:20-slim",
        "Base image passed as the BASE_IMAGE build argument (must exist locally or be pullable).",
    ),
    ConfigKey(
        "extraCaCertsDir",
        "string",
        "",
        "Directory of extra CA certificates (*.crt, PEM) the image must trust, e.g. "
        "/usr/local/share/ca-certificates behind a TLS-intercepting proxy. Empty: none.",
    ),
    ConfigKey(
        "buildArgs",
        "object",
        {},
        "Extra build arguments (name -> string), e.g. VERSION and REVISION.",
    ),
    ConfigKey(
        "platform",
        "string",
        "linux/amd64",
        "Platform of the image build: linux/amd64, linux/amd64/v2, linux/amd64/v3, linux/arm64, "
        "linux/arm/v7, linux/arm/v6, linux/386, linux/ppc64le, linux/s390x or linux/riscv64.",
    ),
    ConfigKey("appPort", "integer", 3011, "Port the service listens on inside its container."),
    ConfigKey("bluePort", "integer", 3014, "Host port of the blue slot."),
    ConfigKey("greenPort", "integer", 3012, "Host port of the green slot."),
    ConfigKey("stagingPort", "integer", 3013, "Host port of the staging container."),
    ConfigKey(
        "bindAddress",
        "string",
        "127.0.0.1",
        "Host address the slot ports are published on: a loopback address, unless "
        "allowNonLoopbackBind is true.",
    ),
    ConfigKey(
        "allowNonLoopbackBind",
        "boolean",
        False,
        "Opt-in to publish the slot ports on a non-loopback bindAddress (e.g. 0.0.0.0), where "
        "clients can reach the slots without Nginx.",
    ),
    ConfigKey(
        "healthPath",
        "string",
        "/health",
        "HTTP path of the service's health check: letters, digits and . _ ~ / - % ? = &.",
    ),
    ConfigKey(
        "healthContains",
        "string",
        '"status":"healthy"',
        "Text the health response must contain before a switch, so another service "
        "answering 200 on the port is refused. Empty: the status code alone.",
    ),
    ConfigKey("healthIntervalSeconds", "integer", 10, "Docker health check interval."),
    ConfigKey(
        "healthTimeoutSeconds",
        "integer",
        5,
        "Docker health check timeout; must be below the interval.",
    ),
    ConfigKey(
        "healthRetries",
        "integer",
        3,
        "Failed Docker health checks before a container counts as unhealthy.",
    ),
    ConfigKey(
        "healthStartPeriodSeconds",
        "integer",
        30,
        "Grace period after start during which failed health checks do not count (at least 1: "
        "Docker reads 0 as the image's own start period).",
    ),
    ConfigKey("memoryMb", "integer", 1024, "Memory limit of each container, in MiB."),
    ConfigKey(
        "memoryReservationMb",
        "integer",
        512,
        "Memory reservation (soft limit) of each container, in MiB.",
    ),
    ConfigKey(
        "cpus",
        "string",
        "0.9",
        "CPU limit of each container, e.g. 0.9; declared in the form the docker provider "
        "reads back (1 becomes 1.0).",
    ),
    ConfigKey("shmSizeMb", "integer", 512, "Size of /dev/shm in each container, in MiB."),
    ConfigKey(
        "tmpfsSizeMb",
        "integer",
        256,
        "Size of each writable tmpfs (/tmp, /home/node/.config), in MiB.",
    ),
    ConfigKey(
        "stopTimeoutSeconds",
        "integer",
        40,
        "Seconds Docker waits after SIGTERM before SIGKILL; the service drains for up to 30 s.",
    ),
    ConfigKey("logMaxSizeMb", "integer", 10, "Size at which a container log file rotates, MiB."),
    ConfigKey("logMaxFiles", "integer", 5, "Rotated log files kept per container."),
    ConfigKey(
        "maxProcesses",
        "integer",
        4096,
        "Process and thread limit (RLIMIT_NPROC) of the service's user, uid 1000, counted over "
        "every process of that uid on the host; stops a fork bomb before it exhausts PIDs.",
    ),
    ConfigKey(
        "env",
        "object",
        {},
        "Extra environment variables (name -> value) for the service. Set with --secret "
        "(pulumi config set --secret --path env.NAME value) to keep every env value secret.",
    ),
    ConfigKey(
        "puppeteerExecutablePath",
        "string",
        "/usr/bin/chromium-headless-shell",
        "Browser binary inside the image (PUPPETEER_EXECUTABLE_PATH): "
        "/usr/bin/chromium-headless-shell, or /usr/bin/chromium with buildArgs.CHROMIUM_PACKAGE "
        "chromium (the full browser); another path only for an image of your own.",
    ),
    ConfigKey(
        "upstreamFile",
        "string",
        "/etc/nginx/upstreams/nocturna-img-production.conf",
        "Nginx upstream file the switch owns: one group per slot, rewritten when servers change.",
    ),
    ConfigKey(
        "upstreamName",
        "string",
        "nocturna-img-production",
        "Name of the Nginx upstream block in upstreamFile.",
    ),
    ConfigKey(
        "selectionDir",
        "string",
        "/var/lib/nocturna/switch",
        "Root-owned directory of the selection files the site config tests to pick the live "
        "slot (<upstreamName>.<slot>); must match the path in the shipped Nginx site.",
    ),
    ConfigKey(
        "nginxTestCommand", "string", "nginx -t", "Command that validates the Nginx configuration."
    ),
    ConfigKey("nginxReloadCommand", "string", "nginx -s reload", "Command that reloads Nginx."),
    ConfigKey(
        "verifyUrl",
        "string",
        "http://127.0.0.1:8099/health",
        "URL on Nginx's loopback verification server (nginx/nocturna-chart.conf) that proves, "
        "after each switch, that Nginx reaches the new slot. Empty: skip.",
    ),
    ConfigKey(
        "smokePath",
        "string",
        "",
        "Extra path probed on the target before switching (GET, expects 200); "
        "empty: health path only.",
    ),
    ConfigKey(
        "smokeChecks",
        "array",
        [],
        "Requests the target slot must answer correctly after its health probes and before "
        "any traffic moves (name, method, path, headers with ${VAR} secrets, body or bodyFile, "
        "expectStatus, expectContains, expectJsonField/expectJsonValue, timeoutSeconds); "
        "see docs/switch.md.",
        items="object",
    ),
    ConfigKey(
        "watchSeconds",
        "integer",
        30,
        "After a switch, how long the new slot is watched through Nginx (its traffic in "
        "watchLog, plus probes) before the switch succeeds; failures switch back. 0: no watch.",
    ),
    ConfigKey(
        "watchErrorPercent",
        "integer",
        5,
        "Share of the new slot's requests answered with 5xx during the watch (once "
        "watchMinRequests were seen) that switches back.",
    ),
    ConfigKey(
        "watchMinRequests",
        "integer",
        20,
        "Requests the new slot must have answered before watchErrorPercent is judged.",
    ),
    ConfigKey(
        "watchFailedProbes",
        "integer",
        3,
        "Consecutive failed probes through Nginx during the watch that switch back.",
    ),
    ConfigKey(
        "watchLog",
        "string",
        "/var/log/nginx/nocturna-slots.log",
        "JSON access log of the public site that the watch reads (the shipped site writes it; "
        "see nginx/nocturna-chart.conf).",
    ),
    ConfigKey("probeAttempts", "integer", 30, "Health probes of the target before giving up."),
    ConfigKey("probeIntervalSeconds", "integer", 2, "Seconds between health probes."),
    ConfigKey("probeTimeoutSeconds", "integer", 5, "Timeout of one health probe request."),
    ConfigKey(
        "routerPython",
        "string",
        "venv/bin/python",
        "Python that runs the switch (python -m nocturna_infra.switch), relative to "
        "this project directory or absolute.",
    ),
    ConfigKey(
        "stateStack",
        "string",
        "",
        "Stack whose outputs hold the previous deployment (which image each slot runs). "
        "Empty: this stack itself, by its bare name (resolves in every backend).",
    ),
    ConfigKey(
        "hosts",
        "array",
        [],
        "Docker hosts running the slots, one Nginx in front (docs/hosts.md): objects with "
        "name, dockerHost (unix:///path or ssh://user@host[:port]; may be empty for the "
        "first host: the default docker provider), sshOpts (ssh arguments), "
        "publishAddress (IP the ports are published on; the first host defaults to "
        "bindAddress) and nginxAddress (how Nginx reaches that host; default "
        "publishAddress). Empty: one local host.",
        items="object",
    ),
)

SCHEMA_BY_NAME: Final = {key.name: key for key in CONFIG_SCHEMA}

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
ASCII_INTEGER: Final = re.compile(r"^-?[0-9]+$")
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
UPSTREAM_NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9_.-]+$")
URL_PATH_PATTERN: Final = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*$")
# Keys whose values may be set with `--secret` and are then carried as secrets end to end.
SECRET_CAPABLE: Final = frozenset({"apiKey", "env"})
MANAGED_ENV: Final = frozenset(
    {"NODE_ENV", "PORT", "HOST", "DEPLOYMENT_SLOT", "PUPPETEER_EXECUTABLE_PATH", "API_KEY"}
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


@dataclass(frozen=True)
class RouterSettings:
    upstream_file: str
    upstream_name: str
    selection_dir: str
    nginx_test_command: str
    nginx_reload_command: str
    verify_url: str
    smoke_path: str
    probe_attempts: int
    probe_interval_seconds: int
    probe_timeout_seconds: int
    python: str


@dataclass(frozen=True)
class GateSettings:
    """Release gates: smoke checks before the switch, the watch after it."""

    smoke_checks: tuple[SmokeCheck, ...]
    watch_seconds: int
    watch_error_percent: int
    watch_min_requests: int
    watch_failed_probes: int
    watch_log: str


@dataclass(frozen=True)
class Settings:
    """Everything the program needs, validated; plain values except the secret API key."""

    environment: Environment
    active_slot: Slot
    service_name: str
    network_name: str
    image: ImageSettings
    app_port: int
    slot_ports: Mapping[Slot, int]
    bind_address: str
    health: HealthSettings
    limits: ResourceLimits
    env: Mapping[str, str]
    puppeteer_executable_path: str
    router: RouterSettings
    state_stack: str
    api_key: pulumi.Input[str]
    gates: GateSettings
    env_secret: bool = False
    """`env` was set with --secret: its values never go into plain inputs or outputs."""
    hosts: tuple[HostSettings, ...] = ()
    """The Docker hosts, first one first (never empty once parsed; see hosts.py)."""

    @property
    def slots(self) -> tuple[Slot, ...]:
        """The slots this stack runs: blue and green, or staging alone."""
        return tuple(self.slot_ports)

    @property
    def standby_slot(self) -> Slot | None:
        return self.active_slot.other if self.environment is Environment.PRODUCTION else None

    @staticmethod
    def from_config(cfg: pulumi.Config, project_dir: Path | None = None) -> Settings:
        """Read every declared key of `cfg` (raw strings, as the engine sends them)."""
        raw = {key.name: cfg.get(key.name) for key in CONFIG_SCHEMA if not key.secret}
        api_key = cfg.get_secret("apiKey")
        if api_key is None:
            msg = (
                f"{cfg.full_key('apiKey')}: is required; the service refuses to start in "
                "production without it. Run `pulumi config set --secret apiKey <key>`."
            )
            raise ConfigError(msg)
        return parse_settings(
            raw,
            api_key=api_key,
            namespace=cfg.name,
            # A bare stack name resolves in every backend (the self-managed backend's
            # project and legacy layouts, Pulumi Cloud): see README, "How it remembers".
            default_state_stack=pulumi.get_stack(),
            project_dir=project_dir or Path.cwd(),
            secret_keys=frozenset(
                key.name
                for key in CONFIG_SCHEMA
                if pulumi.runtime.is_config_secret(cfg.full_key(key.name))
            ),
        )


def read_stack_file(project_dir: Path, stack: str) -> dict[str, str]:
    """This project's plain config values from Pulumi.<stack>.yaml, as the engine sends them.

    For tools that run without the Pulumi CLI (status); secrets are left out.
    """
    path = project_dir / f"Pulumi.{stack}.yaml"
    document = yaml.safe_load(path.read_text()) or {}
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict | None):
        msg = f"{path}: expected a mapping with a `config:` mapping"
        raise ValueError(msg)
    raw: dict[str, str] = {}
    for full_key, value in (config or {}).items():
        namespace, _, name = str(full_key).partition(":")
        if namespace != PROJECT or _holds_secret(value):
            continue
        raw[name] = value if isinstance(value, str) else json.dumps(value)
    return raw


def _holds_secret(value: object) -> bool:
    """A stack-file value is, or contains (`--secret --path env.X`), an encrypted secret."""
    if isinstance(value, dict):
        return "secure" in value or any(_holds_secret(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_secret(item) for item in value)
    return False


class _Reader:
    """Typed access to raw config strings, with defaults from CONFIG_SCHEMA."""

    def __init__(self, raw: Mapping[str, str | None], namespace: str) -> None:
        self._raw = raw
        self._namespace = namespace

    def key(self, name: str) -> str:
        return f"{self._namespace}:{name}"

    def fail(self, name: str, problem: str, value: object, remedy: str = "") -> NoReturn:
        msg = f"{self.key(name)}: {problem}; got {value!r}."
        if remedy:
            msg += f" {remedy}"
        raise ConfigError(msg) from None

    def string(self, name: str) -> str:
        value = self._raw.get(name)
        return str(SCHEMA_BY_NAME[name].default) if value is None else value

    def integer(self, name: str, low: int, high: int) -> int:
        text = self._raw.get(name)
        if text is None:
            value = int(SCHEMA_BY_NAME[name].default)
        else:
            if not ASCII_INTEGER.fullmatch(text):
                self.fail(name, "must be a whole number (ASCII digits)", text)
            value = int(text)
        if not low <= value <= high:
            self.fail(name, f"must be between {low} and {high}", value)
        return value

    def mapping(self, name: str) -> dict[str, str]:
        text = self._raw.get(name)
        if text is None:
            return dict(SCHEMA_BY_NAME[name].default)
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            self.fail(name, "must be an object of name -> value", text)
        if not isinstance(value, dict):
            self.fail(name, "must be an object of name -> value", value)
        result: dict[str, str] = {}
        for item_name, item in value.items():
            if isinstance(item, bool):
                item = "true" if item else "false"
            if not isinstance(item, str | int | float):
                self.fail(f"{name}.{item_name}", "must be a string, number or boolean", item)
            result[str(item_name)] = str(item)
        return result

    def boolean(self, name: str) -> bool:
        text = self.string(name)
        if text not in ("true", "false", "True", "False"):
            self.fail(name, "must be true or false", text)
        return text.lower() == "true"

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        value = self.string(name)
        if value not in allowed:
            self.fail(
                name,
                f"must be one of {', '.join(allowed)}",
                value,
                f"Run `pulumi config set {name} {allowed[0]}`.",
            )
        return value

    def matching(self, name: str, pattern: re.Pattern[str], allowed: str) -> str:
        value = self.string(name)
        if not pattern.fullmatch(value):
            self.fail(name, f"must be {allowed}", value)
        return value


def parse_settings(
    raw: Mapping[str, str | None],
    *,
    api_key: pulumi.Input[str],
    namespace: str = PROJECT,
    default_state_stack: str = "production",
    project_dir: Path | None,
    secret_keys: frozenset[str] = frozenset(),
) -> Settings:
    """Validate raw config strings into Settings; raise ConfigError at the first problem.

    `project_dir` None skips the checks about what gets built: that build inputs exist and that
    the browser path is the image's (for tools that only read, such as status).
    `secret_keys` names the keys set with `--secret`.
    """
    read = _Reader(raw, namespace)
    for name in sorted(secret_keys - SECRET_CAPABLE):
        read.fail(
            name,
            "is set with --secret, but its value would be shown in plain text in the stack's "
            "outputs, resource inputs and previews"
            + (" and kept in the image history (docker history)" if name == "buildArgs" else ""),
            "[secret]",
            f"Set it without --secret (`pulumi config set {name} ...`); keep secrets in apiKey "
            "or env (`pulumi config set --secret --path env.NAME value`), which stay secret.",
        )
    environment = Environment(read.choice("environment", tuple(e.value for e in Environment)))
    active_slot = Slot(read.choice("activeSlot", tuple(s.value for s in PRODUCTION_SLOTS)))
    if environment is Environment.STAGING and active_slot is not Slot.BLUE:
        read.fail(
            "activeSlot",
            "staging runs a single container and has no blue/green slots",
            active_slot.value,
            "Run `pulumi config rm activeSlot`.",
        )

    app_port = read.integer("appPort", 1, 65535)
    slot_ports = _slot_ports(read, environment)
    bind_address = _bind_address(read)

    health = HealthSettings(
        path=read.matching(
            "healthPath",
            HEALTH_PATH_PATTERN,
            "a URL path starting with / of letters, digits and . _ ~ / - % ? = &",
        ),
        expected_text=read.matching(
            "healthContains",
            HEALTH_TEXT_PATTERN,
            "empty or printable text of at most 200 characters",
        ),
        interval_seconds=read.integer("healthIntervalSeconds", 1, 3600),
        timeout_seconds=read.integer("healthTimeoutSeconds", 1, 3600),
        retries=read.integer("healthRetries", 1, 100),
        start_period_seconds=read.integer("healthStartPeriodSeconds", 1, 3600),
    )
    if health.timeout_seconds >= health.interval_seconds:
        read.fail(
            "healthTimeoutSeconds",
            f"must be below healthIntervalSeconds ({health.interval_seconds})",
            health.timeout_seconds,
        )

    limits = _limits(read)
    env = read.mapping("env")
    _no_control_characters(read, "env", env)
    for env_name in env:
        if not ENV_NAME_PATTERN.fullmatch(env_name):
            read.fail(
                "env", "names must be letters, digits and _, not starting with a digit", env_name
            )
        if env_name in MANAGED_ENV:
            read.fail(
                "env",
                f"{env_name} is set by the program; managed names are "
                + ", ".join(sorted(MANAGED_ENV)),
                env_name,
                "Use apiKey for API_KEY and the matching keys for the others.",
            )

    return Settings(
        environment=environment,
        active_slot=active_slot,
        service_name=read.matching(
            "serviceName", NAME_PATTERN, "lower-case letters, digits, '.', '_' or '-'"
        ),
        network_name=read.matching(
            "networkName", NAME_PATTERN, "lower-case letters, digits, '.', '_' or '-'"
        ),
        image=_image(read, environment, project_dir),
        app_port=app_port,
        slot_ports=slot_ports,
        bind_address=bind_address,
        health=health,
        limits=limits,
        env=env,
        puppeteer_executable_path=_puppeteer_executable_path(read, project_dir is not None),
        router=_router(read),
        state_stack=read.matching(
            "stateStack",
            STACK_NAME_PATTERN,
            "empty or a stack name such as production or organization/<project>/<stack>",
        )
        or default_state_stack,
        api_key=api_key,
        gates=_gates(read, project_dir),
        env_secret="env" in secret_keys,
        hosts=parse_hosts(
            raw.get("hosts"),
            bind_address=bind_address,
            allow_non_loopback=read.boolean("allowNonLoopbackBind"),
            fail=lambda name, problem, value: read.fail(name, problem, value),
        ),
    )


def _slot_ports(read: _Reader, environment: Environment) -> dict[Slot, int]:
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


def _bind_address(read: _Reader) -> str:
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


def _no_control_characters(read: _Reader, name: str, values: Mapping[str, str]) -> None:
    for key, value in values.items():
        if CONTROL_CHARACTERS.search(value):
            read.fail(f"{name}.{key}", "must not contain control characters", value)


def _limits(read: _Reader) -> ResourceLimits:
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


def _image(read: _Reader, environment: Environment, project_dir: Path | None) -> ImageSettings:
    repository = read.matching(
        "imageName", IMAGE_REPOSITORY_PATTERN, "a lower-case image repository name"
    )
    _existing_path(read, "buildContext", project_dir, Path.is_dir, "directory")
    _existing_path(read, "dockerfile", project_dir, Path.is_file, "file")
    ca_dir = (
        _existing_path(read, "extraCaCertsDir", project_dir, Path.is_dir, "directory")
        if read.string("extraCaCertsDir")
        else None
    )
    build_args = read.mapping("buildArgs")
    _no_control_characters(read, "buildArgs", build_args)
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


def _puppeteer_executable_path(read: _Reader, building: bool) -> str:
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


def _existing_path(
    read: _Reader, name: str, project_dir: Path | None, exists: Callable[[Path], bool], kind: str
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


def _router(read: _Reader) -> RouterSettings:
    upstream_file = read.string("upstreamFile")
    if not upstream_file.startswith("/") or not re.fullmatch(r"[A-Za-z0-9._/-]+", upstream_file):
        read.fail("upstreamFile", "must be an absolute path", upstream_file)
    if {".", "..", ""} & set(upstream_file.split("/")[1:]):
        read.fail(
            "upstreamFile",
            "must be a normalised absolute path without '.', '..' or empty components",
            upstream_file,
        )
    commands = {}
    for name in ("nginxTestCommand", "nginxReloadCommand"):
        text = read.string(name)
        try:
            words = shlex.split(text)
        except ValueError:
            words = []
        if not words:
            read.fail(name, "must be a command line such as 'nginx -t'", text)
        commands[name] = text
    verify_url = read.string("verifyUrl")
    if verify_url and not re.fullmatch(
        r"https?://(127\.[0-9.]+|localhost|\[::1\])(:\d+)?/\S*", verify_url
    ):
        read.fail(
            "verifyUrl",
            "must be empty or an http(s) URL on a loopback address, such as "
            "http://127.0.0.1:8099/nocturna-verify",
            verify_url,
        )
    smoke_path = read.string("smokePath")
    if smoke_path and not URL_PATH_PATTERN.fullmatch(smoke_path):
        read.fail("smokePath", "must be empty or a URL path starting with /", smoke_path)
    selection_dir = read.string("selectionDir")
    if not re.fullmatch(
        r"/[A-Za-z0-9._/-]*[A-Za-z0-9._-]", selection_dir
    ) or ".." in selection_dir.split("/"):
        read.fail(
            "selectionDir",
            "must be an absolute directory path without '..' (letters, digits, '.', '_', '-')",
            selection_dir,
        )
    python = read.string("routerPython")
    if not re.fullmatch(r"[A-Za-z0-9._/+-]+", python):
        read.fail("routerPython", "must be a path to a Python interpreter", python)
    return RouterSettings(
        upstream_file=upstream_file,
        upstream_name=read.matching(
            "upstreamName", UPSTREAM_NAME_PATTERN, "letters, digits, '.', '_' or '-'"
        ),
        selection_dir=selection_dir,
        nginx_test_command=commands["nginxTestCommand"],
        nginx_reload_command=commands["nginxReloadCommand"],
        verify_url=verify_url,
        smoke_path=smoke_path,
        probe_attempts=read.integer("probeAttempts", 1, 1000),
        probe_interval_seconds=read.integer("probeIntervalSeconds", 1, 600),
        probe_timeout_seconds=read.integer("probeTimeoutSeconds", 1, 600),
        python=python,
    )


def _gates(read: _Reader, project_dir: Path | None) -> GateSettings:
    text = read.string("smokeChecks")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        read.fail("smokeChecks", "must be a list of checks (objects)", text)
    try:
        checks = parse_checks(value, read.key("smokeChecks"), project_dir)
    except SmokeDefinitionError as error:
        msg = f"{error}."
        raise ConfigError(msg) from None
    watch_log = read.string("watchLog")
    if not re.fullmatch(r"/[A-Za-z0-9._/-]*[A-Za-z0-9._-]", watch_log) or ".." in watch_log.split(
        "/"
    ):
        read.fail("watchLog", "must be an absolute file path without '..'", watch_log)
    return GateSettings(
        smoke_checks=checks,
        watch_seconds=read.integer("watchSeconds", 0, 3600),
        watch_error_percent=read.integer("watchErrorPercent", 1, 100),
        watch_min_requests=read.integer("watchMinRequests", 1, 1_000_000),
        watch_failed_probes=read.integer("watchFailedProbes", 1, 100),
        watch_log=watch_log,
    )
