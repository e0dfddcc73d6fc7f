"""A private Nginx running the shipped config, for tests, the benchmark and the rehearsal.

The shipped `nginx/nocturna-chart.conf` (or the staging site) is used as is, except for the
ports, the upstream file path and the selection directory, substituted as exact strings (each
must match as often as the shipped file has it). A thin wrapper `nginx.conf` supplies what a
host's own nginx.conf would: pid, logs, temp paths, events, and the main-context snippet
`nginx/nocturna-main.conf`.
"""

from __future__ import annotations

import grp
import os
import shlex
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from nocturna_infra.traffic.split import steps_path
from nocturna_infra.traffic.upstream import render_upstreams
from tests.ports import free_port

if TYPE_CHECKING:
    from tests.backends import Backend

REPO = Path(__file__).resolve().parent.parent
SITE_CONF = REPO / "nginx" / "nocturna-chart.conf"
MAIN_CONF = REPO / "nginx" / "nocturna-main.conf"
NGINX = "/usr/sbin/nginx"
UPSTREAM_NAME = "nocturna-img-production"
DEFAULT_UPSTREAM_FILE = "/etc/nginx/upstreams/nocturna-img-production.conf"
DEFAULT_SELECTION_DIR = "/var/lib/nocturna/switch"
WORKER_GROUP = "nogroup"
"""Group of this Nginx's workers (compiled-in default user nobody); www-data on Debian hosts."""


def _substitute(text: str, old: str, new: str, times: int = 1) -> str:
    count = text.count(old)
    assert count == times, f"shipped config: expected {old!r} {times} times, found {count}"
    return text.replace(old, new)


@dataclass(frozen=True)
class Site:
    """A shipped site config and the exact strings a test instance replaces in it."""

    conf: Path
    upstream_name: str
    listen: str
    verify_listen: str
    selection_tests: int
    """How often the site names the selection directory (0: one slot, nothing to test)."""
    health_ports: tuple[int, int]
    """The shipped direct-health ports for the instance's (blue, green) ports."""
    slots_log: str = ""
    """The JSON access log the watch reads (empty: the site has none)."""
    steps_includes: int = 0
    """How often the site includes the canary steps file (one per server that selects)."""

    @property
    def upstream_file(self) -> str:
        return f"/etc/nginx/upstreams/{self.upstream_name}.conf"

    @property
    def steps_include(self) -> str:
        return include_pattern(steps_path(Path(self.upstream_file)))

    @property
    def upstream_include(self) -> str:
        """How the site includes it: a pattern matching that one name, or nothing yet."""
        return include_pattern(self.upstream_file)


def include_pattern(path: Path | str) -> str:
    """`/x/name.conf` as the shipped sites include it: `/x/name.con[f]`."""
    text = str(path)
    return f"{text[:-1]}[{text[-1]}]"


PRODUCTION = Site(
    SITE_CONF,
    UPSTREAM_NAME,
    "listen 80 default_server;",
    "listen 127.0.0.1:8099;",
    2,
    (3014, 3012),
    "/var/log/nginx/nocturna-slots.log",
    2,
)
STAGING = Site(
    REPO / "nginx" / "nocturna-chart-staging.conf",
    "nocturna-img-staging",
    "listen 80;",
    "listen 127.0.0.1:8098;",
    0,
    (3013, 0),
)


def render_site_conf(
    site: Site,
    *,
    listen_port: int,
    verify_port: int,
    upstream_file: Path,
    selection_dir: Path,
    blue: int,
    green: int,
    slots_log: Path | None = None,
) -> str:
    """The shipped site config with test ports and paths; nothing else changes."""
    text = site.conf.read_text()
    text = _substitute(
        text, site.listen, site.listen.replace("listen 80", f"listen 127.0.0.1:{listen_port}")
    )
    text = _substitute(text, site.verify_listen, f"listen 127.0.0.1:{verify_port};")
    text = _substitute(
        text, f"include {site.upstream_include};", f"include {include_pattern(upstream_file)};"
    )
    text = _substitute(
        text,
        f"include {site.steps_include};",
        f"include {include_pattern(steps_path(upstream_file))};",
        times=site.steps_includes,
    )
    text = _substitute(
        text, f"{DEFAULT_SELECTION_DIR}/", f"{selection_dir}/", times=site.selection_tests
    )
    if site.slots_log:
        assert slots_log is not None, "the site writes a slots log: pass where"
        text = _substitute(text, "/var/log/nginx/access.log;", f"{slots_log.parent}/access.log;")
        text = _substitute(text, f"{site.slots_log} ", f"{slots_log} ")
        started = site.slots_log.replace(".log", "-started.log")
        text = _substitute(text, f"{started} ", f"{slots_log.parent}/{Path(started).name} ")
    for shipped, port in zip(site.health_ports, (blue, green), strict=True):
        if shipped:
            text = _substitute(text, f"127.0.0.1:{shipped}/health", f"127.0.0.1:{port}/health")
    return text


def render_wrapper_conf(prefix: Path) -> str:
    temp = prefix / "tmp"
    return f"""\
daemon on;
worker_processes 2;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log notice;
include {MAIN_CONF};
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {prefix}/extra.conf;
    include {prefix}/nocturna-chart.conf;
}}
"""


@dataclass
class NginxInstance:
    """Nginx under `prefix`, listening on 127.0.0.1 only. `extra_conf` is an http-context file
    standing for the operator's other vhosts (tests break it to make `nginx -t` fail)."""

    prefix: Path
    blue_port: int
    green_port: int
    listen_port: int = field(default_factory=free_port)
    verify_port: int = field(default_factory=free_port)
    site: Site = PRODUCTION

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def extra_conf(self) -> Path:
        return self.prefix / "extra.conf"

    @property
    def upstream_file(self) -> Path:
        return self.prefix / "upstreams" / f"{self.site.upstream_name}.conf"

    @property
    def steps_file(self) -> Path:
        """The server-level canary steps file the site includes (absent until written)."""
        return steps_path(self.upstream_file)

    @property
    def selection_dir(self) -> Path:
        return self.prefix / "selection"

    @property
    def slots_log(self) -> Path:
        """The site's JSON access log (the watch window reads it)."""
        return self.prefix / "logs" / "nocturna-slots.log"

    @property
    def started_log(self) -> Path:
        """The site's request-start log (mirror subrequests), read for requests in flight."""
        return self.prefix / "logs" / "nocturna-slots-started.log"

    @property
    def pid_file(self) -> Path:
        return self.prefix / "nginx.pid"

    def command(self, *args: str) -> list[str]:
        return [NGINX, "-p", str(self.prefix), "-c", str(self.conf), *args]

    @property
    def test_command(self) -> str:
        return shlex.join(self.command("-t", "-q"))

    @property
    def reload_command(self) -> str:
        return shlex.join(self.command("-s", "reload"))

    @property
    def start_command(self) -> str:
        """This instance's start (never the machine's own Nginx, the switch's default)."""
        return shlex.join(self.command())

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.listen_port}{path}"

    def verify_url(self, path: str = "/health") -> str:
        return f"http://127.0.0.1:{self.verify_port}{path}"

    def write_config(self) -> None:
        os.chmod(self.prefix, 0o755)  # workers run as nobody and need to traverse it
        (self.prefix / "tmp").mkdir(exist_ok=True)
        self.upstream_file.parent.mkdir(exist_ok=True)
        # As on a host: root-owned, readable (searchable) by the workers' group only.
        self.selection_dir.mkdir(mode=0o750, exist_ok=True)
        os.chown(self.selection_dir, 0, grp.getgrnam(WORKER_GROUP).gr_gid)
        self.extra_conf.write_text("# the operator's other http-context config\n")
        site = render_site_conf(
            self.site,
            listen_port=self.listen_port,
            verify_port=self.verify_port,
            upstream_file=self.upstream_file,
            selection_dir=self.selection_dir,
            blue=self.blue_port,
            green=self.green_port,
            slots_log=self.slots_log,
        )
        self.slots_log.parent.mkdir(exist_ok=True)
        (self.prefix / "nocturna-chart.conf").write_text(site)
        self.conf.write_text(render_wrapper_conf(self.prefix))

    def write_routing(self, live: str, servers: dict[str, str], at: datetime) -> None:
        """The upstream file and selection as an earlier switch to `live` left them."""
        groups = {slot: [server] for slot, server in servers.items()}
        self.upstream_file.write_text(render_upstreams(self.site.upstream_name, groups, at))
        (self.selection_dir / f"{self.site.upstream_name}.{live}").write_text(f"{live}\n")

    def start(self) -> None:
        subprocess.run(self.command(), check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.listen_port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        msg = f"nginx did not listen on {self.listen_port}"
        raise RuntimeError(msg)

    def master_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        pid = self.master_pid()
        if pid is None:
            return
        # SIGTERM is Nginx's fast shutdown; `nginx -s stop` would first parse the config,
        # which a test may have broken on purpose.
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not self.pid_file.exists():  # removed by the master as its last act
                return
            time.sleep(0.01)
        # The daemonised master leads its own process group: take the workers down with it.
        os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

    def slot_served(self, path: str = "/") -> str:
        """Which slot answers a request through the public server (fresh connection)."""
        with requests.Session() as session:
            session.trust_env = False
            response = session.get(self.url(path), timeout=5, headers={"Connection": "close"})
        response.raise_for_status()
        return response.headers["X-Slot"]


def switch_argv(
    nginx: NginxInstance, target: Backend, *extra: str, other: Backend | None = None
) -> list[str]:
    """Arguments of `python -m nocturna_infra.switch` routing `nginx` to a test backend.

    Short retries for tests; later `extra` flags override earlier ones (argparse keeps the
    last value). `other`: the other slot's backend, for a first switch (the upstream file
    does not define its group yet).
    """
    return [
        "--upstream-file", str(nginx.upstream_file),
        "--upstream-name", nginx.site.upstream_name,
        "--selection-dir", str(nginx.selection_dir),
        "--slot", target.slot,
        "--server", target.server,
        *(["--standby", f"{other.slot}={other.server}"] if other else []),
        "--health-url", target.url("/health"),
        "--verify-url", nginx.verify_url("/health"),
        "--nginx-test", nginx.test_command,
        "--nginx-reload", nginx.reload_command,
        "--nginx-start", nginx.start_command,
        "--nginx-pid-file", str(nginx.pid_file),
        "--attempts", "3",
        "--interval", "0.05",
        "--timeout", "2",
        "--verify-attempts", "5",
        *extra,
    ]  # fmt: skip
