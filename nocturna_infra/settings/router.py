"""The switch's settings: Nginx files and commands, and the probes of the target."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Final

from nocturna_infra.settings.reader import Reader

UPSTREAM_NAME_PATTERN: Final = re.compile(r"^[A-Za-z0-9_.-]+$")
URL_PATH_PATTERN: Final = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*$")


@dataclass(frozen=True)
class RouterSettings:
    upstream_file: str
    upstream_name: str
    selection_dir: str
    nginx_test_command: str
    nginx_reload_command: str
    nginx_start_command: str
    """Empty: the switch never starts Nginx."""
    nginx_pid_file: str
    reload_timeout_seconds: int
    verify_url: str
    smoke_path: str
    probe_attempts: int
    probe_interval_seconds: int
    probe_timeout_seconds: int
    python: str


def parse_router(read: Reader) -> RouterSettings:
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
    start_command = read.string("nginxStartCommand")
    try:
        start_words = shlex.split(start_command)
    except ValueError:
        start_words = []
    if start_command and not start_words:
        read.fail(
            "nginxStartCommand", "must be empty or a command line such as 'nginx'", start_command
        )
    verify_url = read.string("verifyUrl")
    if re.match(r"https?://localhost[:/]", verify_url, re.IGNORECASE):
        read.fail(
            "verifyUrl",
            "localhost may resolve to ::1, where any local user may listen and would receive "
            "the smoke checks' bearer key during the watch; use 127.0.0.1 (as Nginx's "
            "verification server listens), e.g. http://127.0.0.1:8099/nocturna-verify",
            verify_url,
        )
    if verify_url and not re.fullmatch(r"https?://(127\.[0-9.]+|\[::1\])(:\d+)?/\S*", verify_url):
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
    pid_file = read.string("nginxPidFile")
    if pid_file and (
        not re.fullmatch(r"/[A-Za-z0-9._/-]*[A-Za-z0-9._-]", pid_file)
        or ".." in pid_file.split("/")
    ):
        read.fail("nginxPidFile", "must be empty or an absolute file path without '..'", pid_file)
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
        nginx_start_command=start_command,
        nginx_pid_file=pid_file,
        reload_timeout_seconds=read.integer("reloadTimeoutSeconds", 1, 3600),
        verify_url=verify_url,
        smoke_path=smoke_path,
        probe_attempts=read.integer("probeAttempts", 1, 1000),
        probe_interval_seconds=read.integer("probeIntervalSeconds", 1, 600),
        probe_timeout_seconds=read.integer("probeTimeoutSeconds", 1, 600),
        python=python,
    )
