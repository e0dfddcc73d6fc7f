"""Can `pulumi preview` of a stack run on this machine? Asked before a pull-request preview.

    python -m nocturna_infra.preview_preflight [--project-dir DIR] STACK...

Prints one `STACK=REASON` line per stack (for `$GITHUB_OUTPUT`), REASON empty when the preview
can run. What a plain preview needs from its runner, read from the provider's source (it
cannot run here: its Go module is not served):

- pulumi-docker's `Configure` (provider/provider.go) calls `configureDockerClient(config,
  true)` (provider/image.go), which pings every daemon but an `ssh://` one and fails with
  `failed to connect to any docker daemon`, naming no host. So the first host without
  `dockerHost` needs a daemon on the runner (a hosted runner has one), and every `unix://`
  host needs its socket to answer there.
- An `ssh://` host is dialled only when a resource first needs a client
  (terraform-provider-docker v4.5.0, internal/provider/config.go, `MakeClient`), which a
  plain preview never does: it needs nothing from the runner.

A stack whose settings are invalid is left to the preview, which reports them itself.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from nocturna_infra.hosts import HostSettings
from nocturna_infra.settings import ConfigError, parse_settings, read_stack_file

DEFAULT_SOCKET: Final = "/var/run/docker.sock"
PING_TIMEOUT_SECONDS: Final = 5.0


@dataclass(frozen=True)
class SocketNeed:
    """A Docker daemon socket the provider pings when it starts, and which host needs it."""

    host: str
    socket: str
    default_provider: bool


def socket_needs(hosts: Sequence[HostSettings], docker_host_env: str | None) -> list[SocketNeed]:
    """The sockets that must answer for a preview: `unix://` hosts, and the first host's
    default provider (DOCKER_HOST when it is `unix://`, else the default socket; any other
    DOCKER_HOST cannot be checked here). `ssh://` hosts need none."""
    needs: list[SocketNeed] = []
    for host in hosts:
        if host.docker_host.startswith("unix://"):
            needs.append(SocketNeed(host.name, host.docker_host.removeprefix("unix://"), False))
        elif not host.docker_host:
            env = docker_host_env or f"unix://{DEFAULT_SOCKET}"
            if env.startswith("unix://"):
                needs.append(SocketNeed(host.name, env.removeprefix("unix://"), True))
    return needs


def blocked_reason(stack: str, need: SocketNeed, problem: str) -> str:
    """One line for the pull-request comment: why this stack's preview did not run."""
    which = (
        f"host {need.host} uses the stack's default docker provider, whose daemon "
        f"(unix://{need.socket})"
        if need.default_provider
        else f"host {need.host}'s dockerHost unix://{need.socket}"
    )
    return (
        f"the preview of {stack} cannot run on this runner: {which} does not answer here "
        f"({problem}). The docker provider pings every non-SSH daemon when it starts and would "
        "fail with `failed to connect to any docker daemon`, naming no host. Preview this stack "
        f"on a machine that reaches that daemon (`pulumi preview -s {stack}`)."
    )


def ping(path: str) -> str | None:
    """None if a Docker daemon answers `GET /_ping` on the socket, else what went wrong."""
    if not Path(path).exists():
        return "no such socket"
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(PING_TIMEOUT_SECONDS)
            conn.connect(path)
            conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            status = conn.recv(64).split(b"\r\n", 1)[0].decode("ascii", "replace")
    except OSError as error:
        return error.strerror or type(error).__name__
    if status.split(" ")[1:2] != ["200"]:
        return f"answered {status!r}"
    return None


def stack_reason(
    project_dir: Path, stack: str, docker_host_env: str | None, check: Callable[[str], str | None]
) -> str:
    """Empty when `stack`'s preview can run here, else the reason it cannot."""
    try:
        settings = parse_settings(read_stack_file(project_dir, stack), api_key="", project_dir=None)
    except ConfigError:
        return ""
    for need in socket_needs(settings.hosts, docker_host_env):
        problem = check(need.socket)
        if problem:
            return blocked_reason(stack, need, problem)
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nocturna_infra.preview_preflight")
    parser.add_argument("stacks", nargs="+", metavar="STACK")
    parser.add_argument("--project-dir", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    for stack in args.stacks:
        reason = stack_reason(args.project_dir, stack, os.environ.get("DOCKER_HOST"), ping)
        print(f"{stack}={' '.join(reason.split())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
