"""Which recorded container arguments may be declared again: the guard on the stack record.

The program re-declares a kept slot from the `deployment` output of the last run (see
deployment.py). That output is only as trustworthy as whoever can write the stack's state
(or the stack `stateStack` names): taken unchecked, a `privileged: true`, a `/` host volume
or `user: root` written into it would reach the next container. So a recorded slot is
accepted only if

- every key is one `render.container_args` produces (a record from an earlier version may
  lack keys added since; never a security-relevant one);
- every security-relevant key equals this run's template, except where the value follows a
  documented setting (port numbers, tmpfs sizes), which is checked for its form instead;
- the image is a local image ID (`sha256:` and 64 hex digits), as the build records it.

Everything else (env, limits, health timings, log rotation, labels) is a mutable setting
that the live slot legitimately keeps from the run that created it; those keys run inside
the same sandbox as the image, which may differ by design.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, Final

from nocturna_infra.provider_form import cpus_form, go_duration
from nocturna_infra.slot import Slot

IMAGE_ID_PATTERN: Final = re.compile(r"^sha256:[0-9a-f]{64}$")
# How versions before the read-back forms (provider_form) wrote health check durations.
WHOLE_SECONDS: Final = re.compile(r"^([0-9]+)s$")
HEALTH_DURATIONS: Final = ("interval", "timeout", "start_period")


def normalize(value: Any) -> Any:
    """The value in comparable form: stack outputs return every number as a float, and
    mappings in no particular order (here: sorted by key)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(key): normalize(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, list | tuple):
        return [normalize(item) for item in value]
    return value


def _equal(key: str, recorded: Any, template: Any) -> str | None:
    if recorded == template:
        return None
    return f"recorded {key} is {recorded!r}, but this run declares {template!r}"


def _ports(key: str, recorded: Any, template: Any) -> str | None:
    """Same bindings and addresses; the numbers follow appPort and the slot port keys."""
    if not isinstance(recorded, list) or len(recorded) != len(template):
        return f"recorded {key} is {recorded!r}, but this run publishes {len(template)} port(s)"
    for index, (got, want) in enumerate(zip(recorded, template, strict=True)):
        where = f"{key}[{index}]"
        if not isinstance(got, Mapping) or set(got) != set(want):
            return f"recorded {where} is {got!r}, but this run declares the keys {sorted(want)}"
        for field in ("ip", "protocol"):
            if got[field] != want[field]:
                return (
                    f"recorded {where}.{field} is {got[field]!r}, but this run declares "
                    f"{want[field]!r}"
                )
        for field in ("internal", "external"):
            if not isinstance(got[field], int) or not 1 <= got[field] <= 65535:
                return f"recorded {where}.{field} is {got[field]!r}, not a port number"
    return None


def _tmpfs_flags(options: str) -> set[str]:
    return {flag for flag in options.split(",") if not flag.startswith("size=")}


def _tmpfs(key: str, recorded: Any, template: Any) -> str | None:
    """Same mount points; no mount option this run does not set (sizes follow tmpfsSizeMb).

    A flag the template has may be missing (an older record): Docker mounts every tmpfs
    noexec, nosuid and nodev unless an option says otherwise, so only added options widen.
    """
    if not isinstance(recorded, Mapping) or set(recorded) != set(template):
        return f"recorded {key} is {recorded!r}, but this run mounts {sorted(template)}"
    for path, options in recorded.items():
        if not isinstance(options, str):
            return f"recorded {key}[{path!r}] is {options!r}, not mount options"
        added = sorted(_tmpfs_flags(options) - _tmpfs_flags(template[path]))
        if added:
            return (
                f"recorded {key}[{path!r}] has the option {added[0]!r}, which this run does not "
                f"set ({template[path]!r})"
            )
    return None


Check = Callable[[str, Any, Any], str | None]

# The keys that decide what the container may do to the host and who can reach it. Keys
# render.container_args does not produce (privileged, user, volumes, mounts, devices,
# network_mode, pid_mode, ...) are refused as unknown before these checks.
SECURITY_CHECKS: Final[Mapping[str, Check]] = {
    "name": _equal,
    "capabilities": _equal,
    "security_opts": _equal,
    "read_only": _equal,
    "networks_advanced": _equal,
    "log_driver": _equal,
    "ports": _ports,
    "tmpfs": _tmpfs,
}


def recorded_slot_problem(
    slot: Slot, recorded: Mapping[str, Any], template: Mapping[str, Any]
) -> str | None:
    """Why `recorded` must not be declared as `slot`'s container, or None if it may.

    `template` is this run's `render.container_args` for the slot (any image).
    """
    unknown = sorted(set(recorded) - set(template))
    if unknown:
        return (
            f"slot {slot}: recorded argument {unknown[0]!r} is not one nocturna-infra "
            "declares for a container"
        )
    image = recorded.get("image")
    if not isinstance(image, str) or not IMAGE_ID_PATTERN.fullmatch(image):
        return f"slot {slot}: recorded image is {image!r}, not a local image ID (sha256:<64 hex>)"
    for key, check in SECURITY_CHECKS.items():
        if key not in template:
            continue
        if key not in recorded:
            return f"slot {slot}: recorded arguments lack {key!r}, which this run declares"
        problem = check(key, normalize(recorded[key]), normalize(template[key]))
        if problem:
            return f"slot {slot}: {problem}"
    return None


def in_read_back_form(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded slot with `cpus` and health check durations as the provider reads them back.

    Slots created before nocturna-infra declared those values in read-back form were
    recorded as they were declared (`"1"`, `"60s"`), while the provider's state holds what it
    read back after creating them (`"1.0"`, `"1m0s"`). Re-declaring the recorded text would
    be a diff on every run: for `cpus` (replace-on-change) a replacement that the live slot's
    protection refuses, so every `up` would fail. The values mean the same; only the text
    changes.
    """
    args = dict(recorded)
    cpus = args.get("cpus")
    if isinstance(cpus, str) and (form := cpus_form(cpus)):
        args["cpus"] = form
    health = args.get("healthcheck")
    if isinstance(health, Mapping):
        health = dict(health)
        for key in HEALTH_DURATIONS:
            value = health.get(key)
            match = WHOLE_SECONDS.fullmatch(value) if isinstance(value, str) else None
            if match:
                health[key] = go_duration(int(match.group(1)))
        args["healthcheck"] = health
    return args
