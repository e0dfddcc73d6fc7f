"""Test ports: picked at random from 20000-31999 and checked free on every address named.

Below 32768 on purpose: Linux hands out ephemeral (client) ports from 32768 up, so a listener
the tests pick can never collide with the source port of some outgoing connection, and the
machines' rules ask for test ports below 32768. Random, so parallel runs rarely meet.
"""

from __future__ import annotations

import random
import socket

LOWEST = 20000
HIGHEST = 31999


def free_port(*addresses: str) -> int:
    """A TCP port nothing listens on right now on each of `addresses` (default 127.0.0.1)."""
    for _ in range(500):
        port = random.randint(LOWEST, HIGHEST)
        if all(_bindable(address, port) for address in addresses or ("127.0.0.1",)):
            return port
    msg = f"no free port in {LOWEST}-{HIGHEST} on {addresses or ('127.0.0.1',)}"
    raise RuntimeError(msg)


def distinct_free_ports(count: int, *addresses: str) -> list[int]:
    """`count` different free ports (for several listeners started one after another)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port(*addresses)
        if port not in ports:
            ports.append(port)
    return ports


def _bindable(address: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True
