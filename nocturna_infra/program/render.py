"""Pure functions that turn Settings into names, container arguments and command lines.

Nothing here talks to the Pulumi engine: every function returns plain text or JSON-able
data, so tests compare whole outputs exactly.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, Final

from nocturna_infra.provider_form import go_duration
from nocturna_infra.settings import SCHEMA_BY_NAME, Environment, Settings
from nocturna_infra.slot import Slot
from nocturna_infra.traffic.options import DEFAULT_NGINX_START
from nocturna_infra.traffic.routes import DEFAULT_EXCLUDED, routes_json
from nocturna_infra.traffic.smoke import checks_json

SERVICE_LABEL: Final = "chart-service"
LABEL_PREFIX: Final = "com.nocturna"
# Node one-liner, so the health check needs no curl in the image. The path is the script's
# argument (process.argv[1] under `node -e`), never part of the code.
HEALTHCHECK_SCRIPT: Final = (
    "require('http').get({{host:'127.0.0.1',port:{port},path:process.argv[1]}},"
    "r=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1))"
)
# Every option the daemon could merge in, given: the json-file driver's, the generic `mode`
# and the dual-logging `cache-*` ones (inert for json-file, which reads its own files). The
# daemon adds daemon.json `log-opts` only where a container leaves an option unset, and the
# provider reads the merged map back (log_opts replaces on change). `max-buffer-size` cannot
# be given in blocking mode: a daemon.json that sets it makes the create fail loudly.
LOG_OPTS_FIXED: Final = {
    "compress": "false",
    "mode": "blocking",
    "tag": "{{.Name}}",
    "labels": f"{LABEL_PREFIX}.slot",
    "labels-regex": "^com\\.nocturna\\.slot$",
    "env": "DEPLOYMENT_SLOT",
    "env-regex": "^DEPLOYMENT_SLOT$",
    "cache-disabled": "true",
    "cache-max-size": "20m",
    "cache-max-file": "5",
    "cache-compress": "true",
}
# Tmpfs options: nothing in the service executes from its writable paths.
TMPFS_OPTIONS: Final = "rw,nosuid,nodev,noexec"


def container_name(service: str, slot: Slot) -> str:
    """The one place container names (and network aliases) are formed."""
    return f"{service}-{slot}"


def probe_host(bind_address: str) -> str:
    """Where the host reaches a port published on `bind_address` (URL/upstream form)."""
    address = ipaddress.ip_address(bind_address)
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return f"[{address}]" if address.version == 6 else str(address)


def slot_server(bind_address: str, port: int) -> str:
    """The `host:port` Nginx proxies to for a slot published on the host."""
    return f"{probe_host(bind_address)}:{port}"


def first_host_server(settings: Settings, port: int) -> str:
    """The server of a slot on the first host: where `hosts[0].nginxAddress` says (by
    default the bindAddress's, exactly as the single-host program had it)."""
    return (
        settings.hosts[0].server(port)
        if settings.hosts
        else slot_server(settings.bind_address, port)
    )


def slot_url(bind_address: str, port: int, path: str) -> str:
    return f"http://{slot_server(bind_address, port)}{path}"


def healthcheck_test(app_port: int, path: str) -> list[str]:
    return ["CMD", "node", "-e", HEALTHCHECK_SCRIPT.format(port=int(app_port)), path]


def container_args(settings: Settings, slot: Slot, image: str) -> dict[str, Any]:
    """Keyword arguments of the slot's docker.Container, except its secret variables
    (API_KEY, and `env` when it was set with --secret: see `secret_env`).

    JSON-able on purpose: the program stores them in a plain stack output, so a live slot
    can be re-declared with exactly the arguments it was created with. Every value is in the
    form the docker provider reads back from Docker (tests/test_provider_readback.py proves it
    on a real daemon), so an unchanged slot never shows a diff.
    """
    limits = settings.limits
    health = settings.health
    production = slot is not Slot.STAGING
    name = container_name(settings.service_name, slot)
    labels = {
        f"{LABEL_PREFIX}.environment": settings.environment.value,
        f"{LABEL_PREFIX}.service": SERVICE_LABEL,
    }
    if production:
        labels[f"{LABEL_PREFIX}.slot"] = slot.value
    env = {
        "NODE_ENV": "production" if production else "staging",
        "PORT": str(settings.app_port),
        "HOST": "0.0.0.0",
        "PUPPETEER_EXECUTABLE_PATH": settings.puppeteer_executable_path,
        "DEPLOYMENT_SLOT": slot.value,
        **({} if settings.env_secret else settings.env),
    }
    return {
        "name": name,
        "image": image,
        "envs": [f"{key}={value}" for key, value in sorted(env.items())],
        "labels": [{"label": key, "value": value} for key, value in sorted(labels.items())],
        "ports": [
            {
                "internal": settings.app_port,
                "external": settings.slot_ports[slot],
                "ip": settings.bind_address,
                "protocol": "tcp",
            }
        ],
        "networks_advanced": [{"name": settings.network_name, "aliases": [name]}],
        "restart": "unless-stopped",
        "memory": limits.memory_mb,
        "memory_reservation": limits.memory_reservation_mb,
        # Equal to memory: no swap. Unset, Docker records twice the memory and the provider
        # shows an update on every run.
        "memory_swap": limits.memory_mb,
        "cpus": limits.cpus,
        "shm_size": limits.shm_size_mb,
        "tmpfs": {
            "/tmp": f"{TMPFS_OPTIONS},size={limits.tmpfs_size_mb}m",
            # Chromium's profile directory: owned by the image's `node` user (uid 1000).
            "/home/node/.config": f"{TMPFS_OPTIONS},size=16m,uid=1000,gid=1000,mode=0700",
        },
        # The provider has no pids_limit (v4.5.0 schema); RLIMIT_NPROC is the closest limit.
        "ulimits": [{"name": "nproc", "soft": limits.max_processes, "hard": limits.max_processes}],
        "read_only": True,
        "init": True,
        "security_opts": ["no-new-privileges:true"],
        "capabilities": {"drops": ["ALL"]},
        "log_driver": "json-file",
        "log_opts": {
            "max-size": f"{limits.log_max_size_mb}m",
            "max-file": str(limits.log_max_files),
            **LOG_OPTS_FIXED,
        },
        "stop_signal": "SIGTERM",
        "stop_timeout": limits.stop_timeout_seconds,
        "destroy_grace_seconds": limits.stop_timeout_seconds,
        "healthcheck": {
            "tests": healthcheck_test(settings.app_port, health.path),
            "interval": go_duration(health.interval_seconds),
            "timeout": go_duration(health.timeout_seconds),
            "retries": health.retries,
            "start_period": go_duration(health.start_period_seconds),
        },
        "wait": True,
        "wait_timeout": health_wait_seconds(settings),
    }


def secret_env(settings: Settings) -> dict[str, str]:
    """The user's variables that must stay secret (all of `env` when it was set with
    --secret), without API_KEY, which comes as a Pulumi secret of its own."""
    return dict(sorted(settings.env.items())) if settings.env_secret else {}


def health_wait_seconds(settings: Settings) -> int:
    """How long creating a container waits for `healthy`: start period plus every retry."""
    health = settings.health
    return health.start_period_seconds + health.interval_seconds * (health.retries + 1)


def image_build_args(settings: Settings, extra_ca_certs: str) -> dict[str, str]:
    """Build arguments for the Dockerfile: the user's, then the ones the program owns."""
    return {
        **settings.image.build_args,
        "BASE_IMAGE": settings.image.base_image,
        "EXTRA_CA_CERTS": extra_ca_certs,
    }


def switch_argv(
    settings: Settings,
    slot: Slot,
    ports: Mapping[Slot, int],
    more: Sequence[tuple[str, Mapping[Slot, int]]] = (),
) -> list[str]:
    """argv of the health-gated switch that makes `slot` live; `ports` holds the host port of
    every slot, so the upstream file defines each slot's group (the first slot is the site's
    fallback). `more` gives every other host's (Nginx address, ports): each slot's group
    then lists one server per host, and the target is probed on every host."""
    router = settings.router
    server = first_host_server(settings, ports[slot])
    servers = [server, *(f"{address}:{other[slot]}" for address, other in more)]
    argv = [
        router.python,
        "-m",
        "nocturna_infra.switch",
        "--slot",
        slot.value,
        "--upstream-file",
        router.upstream_file,
        "--upstream-name",
        router.upstream_name,
        "--selection-dir",
        router.selection_dir,
        "--fallback-slot",
        settings.slots[0].value,
    ]
    for target in servers:
        argv += ["--server", target]
    for other in settings.slots:
        if other is not slot:
            argv += [
                "--standby",
                f"{other.value}={first_host_server(settings, ports[other])}",
            ]
            for address, other_ports in more:
                argv += ["--standby", f"{other.value}={address}:{other_ports[other]}"]
    for target in servers:
        argv += ["--health-url", f"http://{target}{settings.health.path}"]
    if settings.health.expected_text:
        argv += ["--health-contains", settings.health.expected_text]
    if router.smoke_path:
        for target in servers:
            argv += ["--smoke-url", f"http://{target}{router.smoke_path}"]
    if router.verify_url:
        argv += ["--verify-url", router.verify_url]
    argv += [
        "--attempts",
        str(router.probe_attempts),
        "--interval",
        str(router.probe_interval_seconds),
        "--timeout",
        str(router.probe_timeout_seconds),
        "--nginx-test",
        router.nginx_test_command,
        "--nginx-reload",
        router.nginx_reload_command,
    ]
    # Only when not the switch's own default: an upgrade must not change every stack's router
    # command (a changed command runs the switch again).
    if router.nginx_start_command != DEFAULT_NGINX_START:
        argv += ["--nginx-start", router.nginx_start_command]
    # Only when they differ from the switch's defaults, so existing router commands (and
    # the break-glass commands in docs) stay as they were.
    if router.nginx_pid_file != SCHEMA_BY_NAME["nginxPidFile"].default:
        argv += ["--nginx-pid-file", router.nginx_pid_file]
    if router.reload_timeout_seconds != SCHEMA_BY_NAME["reloadTimeoutSeconds"].default:
        argv += ["--reload-timeout", str(router.reload_timeout_seconds)]
    return argv


def switch_command(
    settings: Settings,
    slot: Slot,
    ports: Mapping[Slot, int],
    more: Sequence[tuple[str, Mapping[Slot, int]]] = (),
) -> str:
    """The switch as one shell-safe command line (the break-glass form: no release gates)."""
    return shlex.join(switch_argv(settings, slot, ports, more))


def gate_argv(settings: Settings) -> list[str]:
    """Flags adding the release gates: smoke checks (plain JSON: `${VAR}` templates, never
    values) and, in production, the watch window after the switch (it probes through the
    verification server, so it needs verifyUrl)."""
    gates = settings.gates
    argv: list[str] = []
    if gates.smoke_checks:
        argv += ["--smoke-checks", checks_json(gates.smoke_checks)]
    production = settings.environment is Environment.PRODUCTION
    if production and gates.watch_seconds and settings.router.verify_url:
        argv += [
            "--watch-seconds",
            str(gates.watch_seconds),
            "--watch-log",
            gates.watch_log,
            "--watch-error-percent",
            str(gates.watch_error_percent),
            "--watch-min-requests",
            str(gates.watch_min_requests),
            "--watch-failed-probes",
            str(gates.watch_failed_probes),
        ]
        # Only what differs from the switch's defaults, so a stack that sets none of the
        # issue-21 keys keeps its router command (and Pulumi does not re-run it).
        if gates.watch_routes:
            argv += ["--watch-routes", routes_json(gates.watch_routes)]
        if gates.watch_exclude_paths != DEFAULT_EXCLUDED:
            argv += ["--watch-exclude-paths", json.dumps(list(gates.watch_exclude_paths))]
        if gates.watch_started_log:
            argv += ["--watch-started-log", gates.watch_started_log]
        if (
            gates.watch_request_timeout_seconds
            != SCHEMA_BY_NAME["watchRequestTimeoutSeconds"].default
        ):
            argv += ["--watch-request-timeout", str(gates.watch_request_timeout_seconds)]
        for key, flag, value in (
            ("watchBaselineSeconds", "--watch-baseline-seconds", gates.watch_baseline_seconds),
            ("watchRegressionFactor", "--watch-regression-factor", gates.watch_regression_factor),
        ):
            if value != SCHEMA_BY_NAME[key].default:
                argv += [flag, str(value)]
        if gates.watch_probe_path:
            argv += ["--watch-probe-path", gates.watch_probe_path]
        argv += canary_argv(settings)
    return argv


def canary_argv(settings: Settings) -> list[str]:
    """The progressive switch's flags, only when canarySteps is set (a stack that leaves it
    off keeps its router command); the rest only where they differ from the defaults."""
    gates = settings.gates
    if not gates.canary_steps:
        return []
    argv = ["--canary-steps", ",".join(str(share) for share in gates.canary_steps)]
    for key, flag, value in (
        ("canaryKey", "--canary-key", gates.canary_key),
        ("canaryMinRequests", "--canary-min-requests", gates.canary_min_requests),
        ("canaryStepSeconds", "--canary-step-seconds", gates.canary_step_seconds),
    ):
        if value != SCHEMA_BY_NAME[key].default:
            argv += [flag, str(value)]
    return argv


def progressive_note(settings: Settings, slot: Slot) -> str:
    """What `pulumi preview` and `up` say before a progressive switch to `slot` (empty when
    the router switches at once): the shares and the longest the steps can take."""
    gates = settings.gates
    if "--canary-steps" not in gate_argv(settings):
        return ""
    shares = " -> ".join(f"{share}%" for share in (*gates.canary_steps, 100))
    longest = gates.canary_step_seconds * len(gates.canary_steps)
    return (
        f"the switch to {slot} is progressive: {shares}, each step judged against the old slot; "
        f"the steps take at most {longest}s (canaryStepSeconds {gates.canary_step_seconds} x "
        f"{len(gates.canary_steps)}), then the {gates.watch_seconds}s watch"
    )


def gated_switch_command(
    settings: Settings,
    slot: Slot,
    ports: Mapping[Slot, int],
    more: Sequence[tuple[str, Mapping[Slot, int]]] = (),
) -> str:
    """The router's `create`: the switch with its release gates, one shell-safe line (the
    single quotes keep `${API_KEY}` from the shell; the switch fills it in itself). `more`:
    every other host's (Nginx address, ports), as for `switch_argv`."""
    return shlex.join(switch_argv(settings, slot, ports, more) + gate_argv(settings))


def switch_environment_names(settings: Settings) -> frozenset[str]:
    """Environment variables the smoke checks' templates name."""
    return frozenset(name for check in settings.gates.smoke_checks for name in check.variables)


def switch_environment(
    names: frozenset[str], live_secrets: Mapping[str, str], env: Mapping[str, str]
) -> dict[str, str]:
    """The switch's secret environment: each name the templates use, from the live slot's
    secrets (API_KEY, a secret `env`) or else the stack's plain `env`."""
    return {name: live_secrets.get(name, env.get(name, "")) for name in sorted(names)}
