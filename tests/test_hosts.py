"""The `hosts` setting: defaults, per-host naming and exact messages for bad entries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from program_runs import make_project
from test_settings import BASELINE, assert_config_error, parse

from nocturna_infra.hosts import HostSettings, hosts_release, resource_name
from nocturna_infra.settings import parse_settings


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def hosts(*entries: dict[str, Any]) -> str:
    return json.dumps(list(entries))


H2 = {"name": "h2", "dockerHost": "ssh://deploy@10.0.0.2", "publishAddress": "10.0.0.2"}


def test_default_is_the_single_local_host_on_bind_address(project: Path) -> None:
    settings = parse(project, bindAddress="127.0.0.3")

    assert settings.hosts == (HostSettings("local", "", (), "127.0.0.3", "127.0.0.3"),)
    assert settings.hosts[0].server(3014) == "127.0.0.3:3014"


def test_two_hosts_over_ssh_with_options(project: Path) -> None:
    settings = parse(
        project,
        allowNonLoopbackBind="true",
        hosts=hosts(
            {"name": "local"},
            {**H2, "sshOpts": ["-o", "ConnectTimeout=5"], "nginxAddress": "h2.internal"},
        ),
    )

    assert settings.hosts == (
        HostSettings("local", "", (), "127.0.0.1", "127.0.0.1"),
        HostSettings(
            "h2", "ssh://deploy@10.0.0.2", ("-o", "ConnectTimeout=5"), "10.0.0.2", "h2.internal"
        ),
    )


def test_ipv6_nginx_address_is_bracketed(project: Path) -> None:
    settings = parse(project, hosts=hosts({"name": "local", "publishAddress": "::1"}))

    assert settings.hosts[0].server(3014) == "[::1]:3014"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"name": "a"}',
         "nocturna-infra:hosts: must be an array of host objects; got {'name': 'a'}."),
        ("[1", "nocturna-infra:hosts: must be an array of host objects; got '[1'."),
        ('["a"]', "nocturna-infra:hosts[0]: must be an object with name, dockerHost, sshOpts, "
         "publishAddress, nginxAddress; got 'a'."),
        (hosts({"name": "Local"}), "nocturna-infra:hosts[0].name: must be 1-31 lower-case "
         "letters, digits or '-', starting with a letter; got 'Local'."),
        (hosts({"name": "a", "port": 1}), "nocturna-infra:hosts[0].port: is not a host field; "
         "allowed: name, dockerHost, sshOpts, publishAddress, nginxAddress; got 'port'."),
        (hosts({"name": "a", "dockerHost": "tcp://10.0.0.2:2375"}),
         "nocturna-infra:hosts[0].dockerHost: must be unix:///path or ssh://user@host[:port]; "
         "got 'tcp://10.0.0.2:2375'."),
        (hosts({"name": "a"}, {"name": "b", "publishAddress": "127.0.0.2"}),
         "nocturna-infra:hosts[1].dockerHost: is required for every host but the first (which "
         "may use the stack's default docker provider); allowed: unix:///path or "
         "ssh://user@host[:port]; got ''."),
        (hosts({"name": "a"}, {"name": "b", "dockerHost": "ssh://u@h"}),
         "nocturna-infra:hosts[1].publishAddress: is required for every host but the first (the "
         "first defaults to bindAddress); an IP address of that host; got None."),
        (hosts({"name": "a"}, {**H2, "name": "a", "publishAddress": "127.0.0.2"}),
         "nocturna-infra:hosts[1].name: must be unique among the hosts; got 'a'."),
        (hosts({"name": "a"}, H2),
         "nocturna-infra:hosts[1].publishAddress: publishes the slots beyond that host, where "
         "clients could bypass Nginx; must be loopback unless allowNonLoopbackBind is true "
         "(then firewall the ports to the Nginx host); got '10.0.0.2'."),
        (hosts({"name": "a", "sshOpts": ["-o"]}),
         "nocturna-infra:hosts[0].sshOpts: is only used with an ssh:// dockerHost; got ['-o']."),
        (hosts({"name": "a", "dockerHost": "ssh://u@h", "sshOpts": ["-o", "A='b'"]}),
         "nocturna-infra:hosts[0].sshOpts: must be an array of ssh arguments (printable, no "
         "quotes or shell characters), e.g. [\"-o\", \"ConnectTimeout=5\"]; "
         "got ['-o', \"A='b'\"]."),
        (hosts({"name": "a", "publishAddress": "127.0.0.1", "nginxAddress": "localhost"}),
         "nocturna-infra:hosts[0].nginxAddress: must be an IP address or host name (not "
         "localhost) the Nginx host reaches that host by; got 'localhost'."),
        (hosts({"name": "a", "publishAddress": "host2"}),
         "nocturna-infra:hosts[0].publishAddress: must be an IP address of that host; "
         "got 'host2'."),
    ],
)  # fmt: skip
def test_bad_hosts_are_refused_naming_the_field(project: Path, value: str, message: str) -> None:
    assert_config_error(project, message, hosts=value)


def test_unspecified_publish_address_needs_an_nginx_address(project: Path) -> None:
    with pytest.raises(Exception, match=r"hosts\[0\]\.nginxAddress: is required when"):
        parse_settings(
            {
                **BASELINE,
                "allowNonLoopbackBind": "true",
                "hosts": hosts({"name": "a", "publishAddress": "0.0.0.0"}),
            },
            api_key="k",
            project_dir=project,
        )


def test_first_host_keeps_its_names_others_are_suffixed() -> None:
    host = HostSettings("h2", "ssh://u@h", (), "10.0.0.2", "10.0.0.2")

    assert resource_name("nocturna-chart-blue", host, first=True) == "nocturna-chart-blue"
    assert resource_name("nocturna-chart-blue", host, first=False) == "nocturna-chart-blue@h2"


def test_one_host_keeps_the_single_host_release_and_more_hosts_cover_every_build() -> None:
    assert hosts_release("sha256:aa", {}) == "sha256:aa"
    two = hosts_release("sha256:aa", {"h2": "sha256:" + "1" * 64})
    assert two != "sha256:aa"
    assert two != hosts_release("sha256:aa", {"h2": "sha256:" + "2" * 64})


# --- sshOpts: only what a deploy link needs (issue 17, finding 2) ------------------------------

SSH_KEY = "nocturna-infra:hosts[1].sshOpts"
ALLOWED = (
    "allowed: -i FILE, -p PORT, -l USER, -4, -6, -C, -q and -o with IdentityFile, "
    "IdentitiesOnly, UserKnownHostsFile, StrictHostKeyChecking=yes, BatchMode, ConnectTimeout, "
    "ConnectionAttempts, ServerAliveInterval, ServerAliveCountMax, TCPKeepAlive, Port, User, "
    "Compression, LogLevel"
)


def ssh_hosts(*opts: str) -> str:
    return hosts({"name": "local"}, {**H2, "publishAddress": "127.0.0.2", "sshOpts": list(opts)})


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        pytest.param(
            ["-oProxyCommand=nc %h %p"],
            f"{SSH_KEY}: ssh option 'ProxyCommand' is not allowed; {ALLOWED}; "
            "got 'ProxyCommand=nc %h %p'.",
            id="proxy-command-joined",
        ),
        pytest.param(
            ["-o", "PermitLocalCommand=yes", "-o", "LocalCommand=touch /tmp/pwned"],
            f"{SSH_KEY}: ssh option 'PermitLocalCommand' is not allowed; {ALLOWED}; "
            "got 'PermitLocalCommand=yes'.",
            id="permit-local-command",
        ),
        pytest.param(
            ["-o", "LocalCommand=touch /tmp/pwned"],
            f"{SSH_KEY}: ssh option 'LocalCommand' is not allowed; {ALLOWED}; "
            "got 'LocalCommand=touch /tmp/pwned'.",
            id="local-command",
        ),
        pytest.param(
            ["-F", "/tmp/evil_config"],
            f"{SSH_KEY}: '-F' is not an ssh option a deploy link needs; {ALLOWED}; got '-F'.",
            id="config-file",
        ),
        pytest.param(
            ["-E", "/etc/cron.d/x"],
            f"{SSH_KEY}: '-E' is not an ssh option a deploy link needs; {ALLOWED}; got '-E'.",
            id="log-file",
        ),
        pytest.param(
            ["-o", "StrictHostKeyChecking=no"],
            f"{SSH_KEY}: StrictHostKeyChecking must be yes (anything else accepts a host key "
            "nobody checked); pin the host key in a UserKnownHostsFile (docs/hosts.md); "
            "got 'StrictHostKeyChecking=no'.",
            id="strict-host-key-checking-no",
        ),
        pytest.param(
            ["-o", "StrictHostKeyChecking accept-new"],
            f"{SSH_KEY}: StrictHostKeyChecking must be yes (anything else accepts a host key "
            "nobody checked); pin the host key in a UserKnownHostsFile (docs/hosts.md); "
            "got 'StrictHostKeyChecking accept-new'.",
            id="accept-new-with-a-space",
        ),
        pytest.param(
            ["-o", "UserKnownHostsFile=/dev/null"],
            f"{SSH_KEY}: ssh option UserKnownHostsFile must be an absolute or ~/ path of a file "
            "(not /dev/null); got 'UserKnownHostsFile=/dev/null'.",
            id="known-hosts-dev-null",
        ),
        pytest.param(
            ["-o"],
            f"{SSH_KEY}: -o needs a value; {ALLOWED}; got '-o'.",
            id="dangling-o",
        ),
    ],
)
def test_ssh_options_that_run_commands_or_skip_host_keys_are_refused(
    project: Path, opts: list[str], message: str
) -> None:
    assert_config_error(project, message, allowNonLoopbackBind="true", hosts=ssh_hosts(*opts))


def test_documented_ssh_options_are_accepted(project: Path) -> None:
    documented = (
        "-i", "/etc/nocturna/deploy_key",
        "-o", "UserKnownHostsFile=/etc/nocturna/known_hosts",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=5",
        "-o", "IdentitiesOnly=yes",
        "-o", "ServerAliveInterval=15",
        "-p", "2222",
        "-oLogLevel=ERROR",
    )  # fmt: skip
    settings = parse(project, allowNonLoopbackBind="true", hosts=ssh_hosts(*documented))

    assert settings.hosts[1].ssh_opts == documented
