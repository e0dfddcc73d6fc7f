"""What the docker provider's read makes of a real container, next to what the program declares.

The provider (kreuzwerker/terraform-provider-docker v4.5.0, bridged by pulumi-docker 5.2) ends
every create with `resourceDockerContainerRead` and stores the result; the next `pulumi up`
diffs the program's inputs against it. `read_back` maps `docker inspect` JSON the way that
function does (internal/provider/resource_docker_container_funcs.go; the helpers it calls are
named per field), and `declared` puts the program's registered inputs into the same shape, with
the schema defaults (internal/provider/resource_docker_container.go) the bridge fills in.
Equal values mean no diff; on a field in REPLACE_ON_CHANGE a difference would replace the slot.

Every top-level argument render.container_args produces must appear in READ_FIELDS or in
NOT_READ_BACK (with the reason), so a new argument cannot slip past the read-back test.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from nocturna_infra.program.components.slot_container import APPLY_BY_REPLACING
from nocturna_infra.provider_form import go_duration_ns, nano_cpus_read_back

MB: Final = 1024 * 1024

# container_args key (Python name) -> provider (Terraform) field, where they differ. The bridge
# pluralises list and set fields (env -> envs, ulimit -> ulimits).
TF_NAME: Final = {"envs": "env", "ulimits": "ulimit"}

# Fields the read sets from Docker, and that render.container_args declares.
READ_FIELDS: Final = frozenset(
    {
        "name", "image", "ports", "restart", "memory", "memory_reservation", "memory_swap",
        "cpus", "shm_size", "tmpfs", "ulimit", "read_only", "init", "security_opts",
        "capabilities", "log_driver", "log_opts", "stop_signal", "stop_timeout", "healthcheck",
    }
)  # fmt: skip

# Declared (provider field names), but the read never sets them from Docker: the state keeps
# the declared value.
NOT_READ_BACK: Final = {
    "env": "resourceDockerContainerRead: 'We decided not to set the environment variables and "
    "labels because they are taken over from the Docker image' (not read)",
    "labels": "resourceDockerContainerRead: same comment as env (not read)",
    "networks_advanced": "resourceDockerContainerRead sets it only when the state's set is "
    "empty (terraform import)",
    "wait": "provider-side create option; never sent to Docker, never read",
    "wait_timeout": "provider-side create option; never sent to Docker, never read",
    "destroy_grace_seconds": "used by delete only; comment '\"destroy_grace_seconds\" can't be "
    "imported' in the read",
}

# Fields the read sets that diff when the program leaves them unset (not Computed): they must
# read back as the schema default (network_mode "bridge", restart "no") or as the zero value.
# Unset memory_swap is the example: Docker records 2x memory, an update on every run.
# Left out: Computed ones (hostname, command, entrypoint, runtime, platform, ipc_mode), which
# never diff when unset, and user and working_dir, whose DiffSuppressFunc treats an unset ("")
# value as no change (the image's `node` and `/app` read back).
UNDECLARED_DEFAULTS: Final[Mapping[str, Any]] = {
    "memory": 0,
    "memory_reservation": 0,
    "memory_swap": 0,
    "restart": "no",
    "read_only": False,
    "tmpfs": {},
    "network_mode": "bridge",
    "mounts": [],
    "host": [],
    "domainname": "",
    "dns": [],
    "dns_opts": [],
    "dns_search": [],
    "publish_all_ports": False,
    "privileged": False,
    "userns_mode": "",
    "sysctls": {},
    "group_add": [],
    "storage_opts": {},
    "tty": False,
    "stdin_open": False,
    "rm": False,
}

# Replace-on-change fields: ForceNew in the provider schema, plus SlotContainer's
# replace_on_changes (fields the provider would otherwise "update" without applying them).
FORCE_NEW: Final = frozenset(
    {
        "name", "image", "ports", "shm_size", "tmpfs", "ulimit", "read_only", "security_opts",
        "mounts", "host",
        "capabilities", "log_driver", "log_opts", "stop_signal", "stop_timeout", "cpus", "env",
        "labels", "networks_advanced", "network_mode", "domainname", "working_dir", "user",
        "dns", "dns_opts", "dns_search", "publish_all_ports", "userns_mode", "sysctls",
        "group_add", "storage_opts", "tty", "stdin_open",
    }
)  # fmt: skip
REPLACE_ON_CHANGE: Final = FORCE_NEW | set(APPLY_BY_REPLACING)


def tf_name(python_name: str) -> str:
    return TF_NAME.get(python_name, python_name)


def _zero_to(value: Any, empty: Any) -> Any:
    return empty if value is None else value


def _sorted_dicts(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(items, key=lambda item: sorted(item.items()))


def declared(args: Mapping[str, Any]) -> dict[str, Any]:
    """render.container_args as the provider's planned state, for the fields it reads back."""
    state: dict[str, Any] = {}
    for key, value in args.items():
        field = tf_name(key)
        if field not in READ_FIELDS:
            continue
        if field == "ports":
            value = [
                {
                    "internal": int(port["internal"]),
                    "external": int(port["external"]),
                    "ip": port.get("ip") or "0.0.0.0",  # StateFunc: "" is 0.0.0.0
                    "protocol": port.get("protocol", "tcp"),
                }
                for port in value
            ]
        elif field == "security_opts":
            value = sorted(value)
        elif field == "capabilities":
            value = {"add": sorted(value.get("adds", [])), "drop": sorted(value.get("drops", []))}
        elif field == "ulimit":
            value = _sorted_dicts(
                [{"name": u["name"], "soft": int(u["soft"]), "hard": int(u["hard"])} for u in value]
            )
        elif field == "healthcheck":
            value = {
                "test": list(value["tests"]),
                "interval": value.get("interval", "0s"),
                "timeout": value.get("timeout", "0s"),
                "start_period": value.get("start_period", "0s"),
                "start_interval": value.get("start_interval", "0s"),  # schema default
                "retries": int(value.get("retries", 0)),
            }
        elif isinstance(value, float):
            value = int(value)
        state[field] = value
    return {**UNDECLARED_DEFAULTS, **state}


def read_back(inspect: Mapping[str, Any], declared_state: Mapping[str, Any]) -> dict[str, Any]:
    """resourceDockerContainerRead applied to `docker inspect` JSON of a running container."""
    config = inspect["Config"]
    host = inspect["HostConfig"]
    state: dict[str, Any] = {
        "name": inspect["Name"].lstrip("/"),
        "read_only": host["ReadonlyRootfs"],
        # "If it begins with sha256: then we need to use {{ .Image }} value"
        "image": (
            inspect["Image"]
            if str(declared_state.get("image", "")).startswith("sha256:")
            else config["Image"]
        ),
        "domainname": config.get("Domainname", ""),
        # getDockerContainerMounts: HostConfig.Mounts only (tmpfs given as HostConfig.Tmpfs
        # is not among them)
        "mounts": [
            {"target": m.get("Target"), "source": m.get("Source"), "type": m.get("Type")}
            for m in host.get("Mounts") or []
        ],
        "host": [  # flattenExtraHosts
            dict(zip(("host", "ip"), entry.split(":")[:2], strict=True))
            for entry in host.get("ExtraHosts") or []
        ],
        "dns": _zero_to(host.get("Dns"), []),
        "dns_opts": _zero_to(host.get("DnsOptions"), []),
        "dns_search": _zero_to(host.get("DnsSearch"), []),
        "security_opts": sorted(_zero_to(host.get("SecurityOpt"), [])),
        "publish_all_ports": host.get("PublishAllPorts", False),
        "restart": host["RestartPolicy"]["Name"],
        "init": bool(host.get("Init")),
        "tmpfs": _zero_to(host.get("Tmpfs"), {}),
        "privileged": host.get("Privileged", False),
        "memory": host["Memory"] // MB,
        "memory_reservation": _mb_or_raw(host.get("MemoryReservation", 0)),
        "memory_swap": _mb_or_raw(host.get("MemorySwap", 0)),
        "shm_size": host["ShmSize"] // MB,
        "log_driver": host["LogConfig"]["Type"],
        # containerLogOptsForState: Docker's whole map when log_opts is configured
        "log_opts": host["LogConfig"].get("Config") if declared_state.get("log_opts") else None,
        "storage_opts": _zero_to(host.get("StorageOpt"), {}),
        "network_mode": host.get("NetworkMode", ""),
        "userns_mode": host.get("UsernsMode", ""),
        "sysctls": _zero_to(host.get("Sysctls"), {}),
        "group_add": _zero_to(host.get("GroupAdd"), []),
        "tty": config.get("Tty", False),
        "stdin_open": config.get("OpenStdin", False),
        "rm": host.get("AutoRemove", False),
        "stop_signal": config.get("StopSignal", ""),
        "stop_timeout": _zero_to(config.get("StopTimeout"), 0),
        # flattenContainerPorts (resource_docker_container_structures.go); read when running
        "ports": _ports(inspect) if inspect["State"]["Running"] else declared_state.get("ports"),
    }
    if host.get("CapAdd") or host.get("CapDrop"):
        state["capabilities"] = {
            "add": sorted(host.get("CapAdd") or []),
            "drop": sorted(host.get("CapDrop") or []),
        }
    if declared_state.get("ulimit"):  # read only when configured (flattenUlimits)
        state["ulimit"] = _sorted_dicts(
            [
                {"name": u["Name"], "soft": u["Soft"], "hard": u["Hard"]}
                for u in host.get("Ulimits") or []
            ]
        )
    if host.get("NanoCpus", 0) > 0:  # nanoInt64ToDecimalString (helpers.go)
        state["cpus"] = nano_cpus_read_back(host["NanoCpus"])
    health = config.get("Healthcheck")
    if health is not None:  # each duration through time.Duration.String()
        state["healthcheck"] = {
            "test": health.get("Test"),
            "interval": go_duration_ns(health.get("Interval", 0)),
            "timeout": go_duration_ns(health.get("Timeout", 0)),
            "start_period": go_duration_ns(health.get("StartPeriod", 0)),
            "start_interval": go_duration_ns(health.get("StartInterval", 0)),
            "retries": health.get("Retries", 0),
        }
    return state


def _mb_or_raw(value: int) -> int:
    return value // MB if value > 0 else value


def _ports(inspect: Mapping[str, Any]) -> list[dict[str, Any]]:
    ports = inspect["NetworkSettings"].get("Ports") or {}
    keys = sorted(ports, key=lambda key: (int(key.split("/")[0]), key.split("/")[1]))
    return [
        {
            "internal": int(key.split("/")[0]),
            "external": int(binding["HostPort"]),
            "ip": binding["HostIp"],
            "protocol": key.split("/")[1],
        }
        for key in keys
        for binding in ports[key] or []
    ]


def differences(
    declared_state: Mapping[str, Any], read: Mapping[str, Any]
) -> dict[str, tuple[Any, Any]]:
    """Fields whose declared value differs from the read-back one: (declared, read)."""
    return {
        field: (value, read.get(field))
        for field, value in declared_state.items()
        if read.get(field) != value
    }
