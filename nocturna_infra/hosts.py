"""The Docker hosts a stack runs on: the `hosts` setting and per-host naming.

Every host runs the same network, image build and slots; one Nginx (on the machine running
Pulumi) lists one server per host in each slot's group. The first host keeps the names the
single-host program used, so an existing stack upgrades without replacing anything; the
others get `@<host name>` appended to every resource name (and nothing else: Docker names
are the same on every host, since each host is its own engine).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NoReturn

HOST_NAME_PATTERN: Final = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
# Docker's own forms (docker/cli connhelper): unix:///path, ssh://[user@]host[:port].
UNIX_PATTERN: Final = re.compile(r"^unix:///[A-Za-z0-9._/-]+$")
SSH_PATTERN: Final = re.compile(
    r"^ssh://(?:[a-z_][a-z0-9_.-]{0,31}@)?(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$"
)
SSH_OPT_PATTERN: Final = re.compile(r"^[A-Za-z0-9=_./:@%+,~ -]{1,200}$")
FIELDS: Final = ("name", "dockerHost", "sshOpts", "publishAddress", "nginxAddress")
SSH_FILE_PATTERN: Final = re.compile(r"^(?:/|~/)[A-Za-z0-9._/@%+,~-]+$")
SSH_YES_NO: Final = ("yes", "no")
# The `-o` options a deploy link needs, each with the values it may take. Everything else is
# refused: ProxyCommand, LocalCommand (with PermitLocalCommand), KnownHostsCommand, Match exec
# and the like make ssh run a command; -F/-E read or write other files; -o StrictHostKeyChecking
# or UserKnownHostsFile=/dev/null would accept any host key on a root-equivalent link.
SSH_OPTIONS: Final[dict[str, tuple[str, ...] | str]] = {
    "identityfile": "file",
    "identitiesonly": SSH_YES_NO,
    "userknownhostsfile": "file",
    "stricthostkeychecking": ("yes",),
    "batchmode": SSH_YES_NO,
    "connecttimeout": "number",
    "connectionattempts": "number",
    "serveraliveinterval": "number",
    "serveralivecountmax": "number",
    "tcpkeepalive": SSH_YES_NO,
    "port": "number",
    "user": "user",
    "compression": SSH_YES_NO,
    "loglevel": ("QUIET", "FATAL", "ERROR", "INFO", "VERBOSE"),
}
SSH_OPTION_NAMES: Final = (
    "IdentityFile, IdentitiesOnly, UserKnownHostsFile, StrictHostKeyChecking=yes, BatchMode, "
    "ConnectTimeout, ConnectionAttempts, ServerAliveInterval, ServerAliveCountMax, TCPKeepAlive, "
    "Port, User, Compression, LogLevel"
)
SSH_FLAGS_WITH_VALUE: Final = {"-i": "identityfile", "-p": "port", "-l": "user", "-o": ""}
SSH_FLAGS: Final = ("-4", "-6", "-C", "-q")
SSH_ALLOWED: Final = (
    f"allowed: -i FILE, -p PORT, -l USER, {', '.join(SSH_FLAGS)} and -o with {SSH_OPTION_NAMES}"
)
DEFAULT_HOST_NAME: Final = "local"


@dataclass(frozen=True)
class HostSettings:
    """One Docker host."""

    name: str
    docker_host: str
    """`unix://...` or `ssh://user@host[:port]`; empty = the stack's default docker provider
    (docker:host config or DOCKER_HOST), as the single-host program used."""
    ssh_opts: tuple[str, ...]
    """Extra `ssh` arguments for an ssh:// host (the provider's `ssh_opts`)."""
    publish_address: str
    """The address on that host the slot ports are published on."""
    nginx_address: str
    """Where Nginx (the machine running Pulumi) reaches those ports, in URL/upstream form."""

    def server(self, port: int) -> str:
        """The `host:port` Nginx proxies to for a slot on this host."""
        return f"{self.nginx_address}:{port}"


def resource_name(base: str, host: HostSettings, first: bool) -> str:
    """A Pulumi resource name on `host`: the first host keeps the single-host name (so its
    URNs do not change); every other host's is suffixed."""
    return base if first else f"{base}@{host.name}"


def hosts_release(first_host_release: str, other_images: Mapping[str, str]) -> str:
    """The release fingerprint over every host: the single-host fingerprint as it is when
    there is one host (so an upgraded stack keeps its recorded release), else a digest of it
    and every other host's image ID (each host builds its own; a new build anywhere is a new
    release for every standby)."""
    if not other_images:
        return first_host_release
    document = json.dumps(
        {"first": first_host_release, "hosts": dict(sorted(other_images.items()))},
        sort_keys=True,
        separators=(",", ":"),
    )
    return "sha256:" + hashlib.sha256(document.encode()).hexdigest()


def docker_host_change(hosts: tuple[HostSettings, ...], recorded: Mapping[str, str]) -> str | None:
    """Why this run must not go ahead when a host's `dockerHost` differs from the one its
    resources were deployed on (`recorded`, by host name), or None.

    The docker provider marks no configuration field as forcing a replacement, so the
    engine would keep every resource of that host and point it at the other daemon: its
    live slot would be declared where it does not run, and the old daemon's containers
    forgotten. Hosts not yet recorded (new, or a record from before `dockerHosts`) pass.
    """
    for index, host in enumerate(hosts):
        before = recorded.get(host.name)
        if before is None or before == host.docker_host:
            continue
        return (
            f"hosts[{index}].dockerHost: host {host.name} was deployed on {_daemon(before)}, "
            "and changing its dockerHost would point its network, image and slots at another "
            "Docker daemon without replacing any of them (the docker provider forces no "
            f"replacement when its host changes); got {_daemon(host.docker_host)}. Set it back "
            f"to {before!r}. To move a host: add the new one under another name, `pulumi up`, "
            'drain the old one and remove it (docs/hosts.md, "Moving a host to another '
            'daemon").'
        )
    return None


def _daemon(docker_host: str) -> str:
    return repr(docker_host) if docker_host else "'' (the stack's default docker provider)"


def url_host(address: str) -> str:
    """`address` as it goes in a URL or an upstream server (IPv6 in brackets); a loopback or
    unspecified address is reached on loopback."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.is_unspecified:
        ip = ipaddress.ip_address("::1" if ip.version == 6 else "127.0.0.1")
    return f"[{ip}]" if ip.version == 6 else str(ip)


Fail = Callable[[str, str, object], NoReturn]


def parse_hosts(
    text: str | None, *, bind_address: str, allow_non_loopback: bool, fail: Fail
) -> tuple[HostSettings, ...]:
    """Validate the `hosts` setting (a JSON array, as the engine sends it).

    `fail(key, problem, value)` raises the ConfigError; keys are `hosts[0].dockerHost` etc.
    Unset or empty: today's single local host, publishing on `bindAddress`.
    """
    if text is None:
        raw: Any = []
    else:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError:
            fail("hosts", "must be an array of host objects", text)
    if not isinstance(raw, list):
        fail("hosts", "must be an array of host objects", raw)
    if not raw:
        address = url_host(bind_address)
        return (HostSettings(DEFAULT_HOST_NAME, "", (), bind_address, address),)
    hosts: list[HostSettings] = []
    for index, item in enumerate(raw):
        hosts.append(
            _parse_host(
                index,
                item,
                bind_address=bind_address,
                allow_non_loopback=allow_non_loopback,
                fail=fail,
            )
        )
    names = [host.name for host in hosts]
    for index, name in enumerate(names):
        if name in names[:index]:
            fail(f"hosts[{index}].name", "must be unique among the hosts", name)
    return tuple(hosts)


def _parse_host(
    index: int, item: object, *, bind_address: str, allow_non_loopback: bool, fail: Fail
) -> HostSettings:
    key = f"hosts[{index}]"
    if not isinstance(item, dict):
        fail(
            key,
            "must be an object with name, dockerHost, sshOpts, publishAddress, nginxAddress",
            item,
        )
    unknown = sorted(set(item) - set(FIELDS))
    if unknown:
        fail(
            f"{key}.{unknown[0]}", f"is not a host field; allowed: {', '.join(FIELDS)}", unknown[0]
        )
    name = item.get("name")
    if not isinstance(name, str) or not HOST_NAME_PATTERN.fullmatch(name):
        fail(
            f"{key}.name",
            "must be 1-31 lower-case letters, digits or '-', starting with a letter",
            name,
        )
    docker_host = item.get("dockerHost", "")
    if not isinstance(docker_host, str):
        fail(f"{key}.dockerHost", "must be a string", docker_host)
    if docker_host == "" and index > 0:
        fail(
            f"{key}.dockerHost",
            "is required for every host but the first (which may use the "
            "stack's default docker provider); allowed: unix:///path or "
            "ssh://user@host[:port]",
            docker_host,
        )
    if docker_host and not (
        UNIX_PATTERN.fullmatch(docker_host) or SSH_PATTERN.fullmatch(docker_host)
    ):
        fail(f"{key}.dockerHost", "must be unix:///path or ssh://user@host[:port]", docker_host)
    ssh_opts = item.get("sshOpts", [])
    if not isinstance(ssh_opts, list) or not all(
        isinstance(opt, str) and SSH_OPT_PATTERN.fullmatch(opt) for opt in ssh_opts
    ):
        fail(
            f"{key}.sshOpts",
            "must be an array of ssh arguments (printable, no quotes or "
            'shell characters), e.g. ["-o", "ConnectTimeout=5"]',
            ssh_opts,
        )
    if ssh_opts and not docker_host.startswith("ssh://"):
        fail(f"{key}.sshOpts", "is only used with an ssh:// dockerHost", ssh_opts)
    _check_ssh_opts(ssh_opts, f"{key}.sshOpts", fail)
    default_publish = bind_address if index == 0 else None
    publish = item.get("publishAddress", default_publish)
    if publish is None:
        fail(
            f"{key}.publishAddress",
            "is required for every host but the first (the first "
            "defaults to bindAddress); an IP address of that host",
            publish,
        )
    try:
        publish_ip = ipaddress.ip_address(publish)
    except ValueError:
        fail(f"{key}.publishAddress", "must be an IP address of that host", publish)
    if not publish_ip.is_loopback and not allow_non_loopback:
        fail(
            f"{key}.publishAddress",
            "publishes the slots beyond that host, where clients could "
            "bypass Nginx; must be loopback unless allowNonLoopbackBind is true (then firewall "
            "the ports to the Nginx host)",
            publish,
        )
    nginx = item.get("nginxAddress")
    if nginx is None:
        if publish_ip.is_unspecified:
            fail(
                f"{key}.nginxAddress",
                "is required when publishAddress is unspecified (0.0.0.0 or ::)",
                nginx,
            )
        nginx = str(publish)
    if (
        not isinstance(nginx, str)
        or not re.fullmatch(r"[A-Za-z0-9.:-]{1,253}", nginx)
        or (nginx.lower() == "localhost")
    ):
        fail(
            f"{key}.nginxAddress",
            "must be an IP address or host name (not localhost) the "
            "Nginx host reaches that host by",
            nginx,
        )
    return HostSettings(
        name=name,
        docker_host=docker_host,
        ssh_opts=tuple(ssh_opts),
        publish_address=str(publish),
        nginx_address=url_host(nginx),
    )


def _check_ssh_opts(args: list[str], key: str, fail: Fail) -> None:
    """Only the ssh options a deploy link needs (`SSH_OPTIONS`), with values of their kind: the
    docker provider hands `sshOpts` to the ssh it runs as the user running Pulumi."""
    index = 0
    while index < len(args):
        arg = args[index]
        flag = arg[:2]
        if arg in SSH_FLAGS:
            index += 1
            continue
        if flag not in SSH_FLAGS_WITH_VALUE:
            fail(key, f"{arg!r} is not an ssh option a deploy link needs; {SSH_ALLOWED}", arg)
        if len(arg) > 2:
            value = arg[2:]
            index += 1
        elif index + 1 < len(args):
            value = args[index + 1]
            index += 2
        else:
            fail(key, f"{arg} needs a value; {SSH_ALLOWED}", arg)
        if flag == "-o":
            name, _, option_value = value.replace(" ", "=", 1).partition("=")
            _check_ssh_option(name, option_value, value, key, fail)
        else:
            _check_ssh_option(SSH_FLAGS_WITH_VALUE[flag], value, f"{flag} {value}", key, fail)


def _check_ssh_option(name: str, value: str, given: str, key: str, fail: Fail) -> None:
    kind = SSH_OPTIONS.get(name.lower())
    if kind is None:
        fail(key, f"ssh option {name!r} is not allowed; {SSH_ALLOWED}", given)
    if name.lower() == "stricthostkeychecking" and value.lower() != "yes":
        fail(
            key,
            "StrictHostKeyChecking must be yes (anything else accepts a host key nobody "
            "checked); pin the host key in a UserKnownHostsFile (docs/hosts.md)",
            given,
        )
    if kind == "file":
        ok = bool(SSH_FILE_PATTERN.fullmatch(value)) and not value.startswith("/dev/")
        what = "an absolute or ~/ path of a file (not /dev/null)"
    elif kind == "number":
        ok = value.isascii() and value.isdigit() and 0 < int(value) <= 65535
        what = "a whole number"
    elif kind == "user":
        ok = bool(re.fullmatch(r"[a-z_][a-z0-9_.-]{0,31}", value))
        what = "a user name"
    else:
        ok = value.lower() in {choice.lower() for choice in kind}
        what = " or ".join(kind)
    if not ok:
        fail(key, f"ssh option {name} must be {what}", given)
