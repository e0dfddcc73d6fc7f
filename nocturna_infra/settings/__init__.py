"""Stack configuration, read and validated in one place.

`Settings.from_config` is the only code that reads `pulumi.Config`. Every key is declared
in `CONFIG_SCHEMA` (mirrored by Pulumi.yaml, which a test checks), every value is checked
before any resource is declared, and the first problem stops the program with a
`ConfigError` that names the full key, the bad value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pulumi

from nocturna_infra.hosts import HostSettings, parse_hosts
from nocturna_infra.settings.container import (
    CHROMIUM_PACKAGES,
    ENV_NAME_PATTERN,
    HEALTH_PATH_PATTERN,
    HEALTH_TEXT_PATTERN,
    NAME_PATTERN,
    STACK_NAME_PATTERN,
    HealthSettings,
    ImageSettings,
    ResourceLimits,
    no_control_characters,
    parse_bind_address,
    parse_image,
    parse_limits,
    parse_puppeteer_executable_path,
    parse_slot_ports,
)
from nocturna_infra.settings.gates import GateSettings, parse_gates, smoke_templates
from nocturna_infra.settings.reader import ConfigError, Reader, read_stack_file
from nocturna_infra.settings.router import RouterSettings, parse_router
from nocturna_infra.settings.schema import (
    CONFIG_SCHEMA,
    PROJECT,
    SCHEMA_BY_NAME,
    ConfigKey,
    Environment,
)
from nocturna_infra.slot import PRODUCTION_SLOTS, Slot

__all__ = [
    "CHROMIUM_PACKAGES",
    "CONFIG_SCHEMA",
    "PROJECT",
    "SCHEMA_BY_NAME",
    "ConfigError",
    "ConfigKey",
    "Environment",
    "GateSettings",
    "HealthSettings",
    "ImageSettings",
    "ResourceLimits",
    "RouterSettings",
    "Settings",
    "default_state_stack",
    "parse_settings",
    "read_stack_file",
]

# Keys whose values may be set with `--secret` and are then carried as secrets end to end.
SECRET_CAPABLE: Final = frozenset({"apiKey", "env"})
# What `pulumi.get_organization()` returns on the self-managed (file or object store) backend.
FILE_BACKEND_ORGANIZATION: Final = "organization"
MANAGED_ENV: Final = frozenset(
    {"NODE_ENV", "PORT", "HOST", "DEPLOYMENT_SLOT", "PUPPETEER_EXECUTABLE_PATH", "API_KEY"}
)


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
            default_state_stack=default_state_stack(
                pulumi.get_organization(), pulumi.get_project(), pulumi.get_stack()
            ),
            project_dir=project_dir or Path.cwd(),
            secret_keys=frozenset(
                key.name
                for key in CONFIG_SCHEMA
                if pulumi.runtime.is_config_secret(cfg.full_key(key.name))
            ),
        )


def default_state_stack(organization: str | None, project: str, stack: str) -> str:
    """This stack's own name as a StackReference on the current backend must spell it.

    Pulumi Cloud accepts only `<organization>/<project>/<stack>`; the self-managed (file)
    backend's organization is always the literal `organization`, and its legacy layout
    cannot parse a three-part name, so there it is the bare name (README, "How it remembers").
    """
    if not organization or organization == FILE_BACKEND_ORGANIZATION:
        return stack
    return f"{organization}/{project}/{stack}"


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
    read = Reader(raw, namespace)
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
    slot_ports = parse_slot_ports(read, environment)
    bind_address = parse_bind_address(read)

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

    limits = parse_limits(read)
    env = read.mapping("env")
    no_control_characters(read, "env", env)
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

    gates = parse_gates(read, project_dir)
    smoke_templates(read, gates.smoke_checks, env)
    if gates.canary_steps and (
        environment is not Environment.PRODUCTION or not read.string("verifyUrl")
    ):
        # The steps need two slots and the watch, which probes through verifyUrl.
        read.fail(
            "canarySteps",
            "needs environment production and a verifyUrl (the steps are judged by the watch)",
            ",".join(str(share) for share in gates.canary_steps),
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
        image=parse_image(read, environment, project_dir),
        app_port=app_port,
        slot_ports=slot_ports,
        bind_address=bind_address,
        health=health,
        limits=limits,
        env=env,
        puppeteer_executable_path=parse_puppeteer_executable_path(read, project_dir is not None),
        router=parse_router(read),
        state_stack=read.matching(
            "stateStack",
            STACK_NAME_PATTERN,
            "empty or a stack name such as production or organization/<project>/<stack>",
        )
        or default_state_stack,
        api_key=api_key,
        gates=gates,
        env_secret="env" in secret_keys,
        hosts=parse_hosts(
            raw.get("hosts"),
            bind_address=bind_address,
            allow_non_loopback=read.boolean("allowNonLoopbackBind"),
            fail=lambda name, problem, value: read.fail(name, problem, value),
        ),
    )
