from __future__ import annotations

import dataclasses
import shlex
import subprocess
from pathlib import Path

import pytest
from program_runs import make_project

from nocturna_infra.program import render
from nocturna_infra.settings import Settings, parse_settings
from nocturna_infra.slot import Slot

IMAGE = "sha256:" + "ab" * 32


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def settings_for(project: Path, **overrides: str) -> Settings:
    raw = {"buildContext": "service", **overrides}
    return parse_settings(raw, api_key="k", project_dir=project)


@pytest.mark.parametrize(
    ("slot", "expected"),
    [
        pytest.param(Slot.BLUE, "nocturna-chart-blue", id="blue"),
        pytest.param(Slot.GREEN, "nocturna-chart-green", id="green"),
        pytest.param(Slot.STAGING, "nocturna-chart-staging", id="staging"),
    ],
)
def test_container_name(slot: Slot, expected: str) -> None:
    assert render.container_name("nocturna-chart", slot) == expected


@pytest.mark.parametrize(
    ("bind", "expected"),
    [
        pytest.param("127.0.0.1", "http://127.0.0.1:3012/health", id="loopback"),
        pytest.param("0.0.0.0", "http://127.0.0.1:3012/health", id="all-interfaces"),
        pytest.param("::", "http://[::1]:3012/health", id="all-interfaces-v6"),
        pytest.param("::1", "http://[::1]:3012/health", id="loopback-v6"),
    ],
)
def test_slot_url_reaches_the_published_port_from_the_host(bind: str, expected: str) -> None:
    assert render.slot_url(bind, 3012, "/health") == expected


def test_blue_container_arguments(project: Path) -> None:
    settings = settings_for(project, env='{"LOG_LEVEL": "info"}')

    assert render.container_args(settings, Slot.BLUE, IMAGE) == {
        "name": "nocturna-chart-blue",
        "image": IMAGE,
        "envs": [
            "DEPLOYMENT_SLOT=blue",
            "HOST=0.0.0.0",
            "LOG_LEVEL=info",
            "NODE_ENV=production",
            "PORT=3011",
            "PUPPETEER_EXECUTABLE_PATH=/usr/bin/chromium-headless-shell",
        ],
        "labels": [
            {"label": "com.nocturna.environment", "value": "production"},
            {"label": "com.nocturna.service", "value": "chart-service"},
            {"label": "com.nocturna.slot", "value": "blue"},
        ],
        "ports": [{"internal": 3011, "external": 3014, "ip": "127.0.0.1", "protocol": "tcp"}],
        "networks_advanced": [{"name": "nocturna-network", "aliases": ["nocturna-chart-blue"]}],
        "restart": "unless-stopped",
        "memory": 1024,
        "memory_reservation": 512,
        "memory_swap": 1024,
        "cpus": "0.9",
        "shm_size": 512,
        "tmpfs": {
            "/tmp": "rw,nosuid,nodev,noexec,size=256m",
            "/home/node/.config": "rw,nosuid,nodev,noexec,size=16m,uid=1000,gid=1000,mode=0700",
        },
        "ulimits": [{"name": "nproc", "soft": 4096, "hard": 4096}],
        "read_only": True,
        "init": True,
        "security_opts": ["no-new-privileges:true"],
        "capabilities": {"drops": ["ALL"]},
        "log_driver": "json-file",
        "log_opts": {
            "max-size": "10m",
            "max-file": "5",
            "compress": "false",
            "mode": "blocking",
            "tag": "{{.Name}}",
            "labels": "com.nocturna.slot",
            "labels-regex": "^com\\.nocturna\\.slot$",
            "env": "DEPLOYMENT_SLOT",
            "env-regex": "^DEPLOYMENT_SLOT$",
            "cache-disabled": "true",
            "cache-max-size": "20m",
            "cache-max-file": "5",
            "cache-compress": "true",
        },
        "stop_signal": "SIGTERM",
        "stop_timeout": 40,
        "destroy_grace_seconds": 40,
        "healthcheck": {
            "tests": [
                "CMD",
                "node",
                "-e",
                "require('http').get({host:'127.0.0.1',port:3011,path:process.argv[1]},"
                "r=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1))",
                "/health",
            ],
            "interval": "10s",
            "timeout": "5s",
            "retries": 3,
            "start_period": "30s",
        },
        "wait": True,
        "wait_timeout": 70,
    }


def test_staging_container_has_no_slot_label_and_staging_node_env(project: Path) -> None:
    args = render.container_args(settings_for(project, environment="staging"), Slot.STAGING, IMAGE)

    assert args["name"] == "nocturna-chart-staging"
    assert "NODE_ENV=staging" in args["envs"]
    assert [label["label"] for label in args["labels"]] == [
        "com.nocturna.environment",
        "com.nocturna.service",
    ]
    assert args["ports"] == [
        {"internal": 3011, "external": 3013, "ip": "127.0.0.1", "protocol": "tcp"}
    ]


def test_container_arguments_never_carry_the_api_key(project: Path) -> None:
    args = render.container_args(settings_for(project), Slot.GREEN, IMAGE)

    assert not [env for env in args["envs"] if env.startswith("API_KEY=")]


PORTS = {Slot.BLUE: 3014, Slot.GREEN: 3012}


def test_switch_command_routes_to_the_slot_port(project: Path) -> None:
    assert render.switch_command(settings_for(project), Slot.GREEN, PORTS) == (
        "venv/bin/python -m nocturna_infra.switch --slot green"
        " --upstream-file /etc/nginx/upstreams/nocturna-img-production.conf"
        " --upstream-name nocturna-img-production --selection-dir /var/lib/nocturna/switch"
        " --fallback-slot blue --server 127.0.0.1:3012 --standby blue=127.0.0.1:3014"
        ' --health-url http://127.0.0.1:3012/health --health-contains \'"status":"healthy"\''
        " --verify-url http://127.0.0.1:8099/health --attempts 30 --interval 2 --timeout 5"
        " --nginx-test 'nginx -t' --nginx-reload 'nginx -s reload'"
    )


def test_switch_command_adds_smoke_and_verification_when_configured(project: Path) -> None:
    settings = settings_for(
        project,
        smokePath="/api/v1/ping",
        verifyUrl="http://127.0.0.1:8099/nocturna-verify",
        nginxReloadCommand="systemctl reload nginx",
        selectionDir="/run/nocturna",
    )

    assert render.switch_argv(settings, Slot.BLUE, PORTS) == [
        "venv/bin/python", "-m", "nocturna_infra.switch", "--slot", "blue",
        "--upstream-file", "/etc/nginx/upstreams/nocturna-img-production.conf",
        "--upstream-name", "nocturna-img-production",
        "--selection-dir", "/run/nocturna",
        "--fallback-slot", "blue",
        "--server", "127.0.0.1:3014",
        "--standby", "green=127.0.0.1:3012",
        "--health-url", "http://127.0.0.1:3014/health",
        "--health-contains", '"status":"healthy"',
        "--smoke-url", "http://127.0.0.1:3014/api/v1/ping",
        "--verify-url", "http://127.0.0.1:8099/nocturna-verify",
        "--attempts", "30", "--interval", "2", "--timeout", "5",
        "--nginx-test", "nginx -t",
        "--nginx-reload", "systemctl reload nginx",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("configured", "flags"),
    [
        pytest.param("nginx", [], id="default-not-rendered-so-an-upgrade-keeps-the-command"),
        pytest.param(
            "sudo -n systemctl start nginx",
            ["--nginx-start", "sudo -n systemctl start nginx"],
            id="systemd",
        ),
        pytest.param("", ["--nginx-start", ""], id="never"),
    ],
)
def test_switch_command_names_the_nginx_start_command_unless_default(
    project: Path, configured: str, flags: list[str]
) -> None:
    settings = settings_for(project, nginxStartCommand=configured)

    argv = render.switch_argv(settings, Slot.BLUE, PORTS)

    assert argv[argv.index("--nginx-reload") + 2 :] == flags


def test_smoke_path_is_requested_from_the_target_on_every_host(project: Path) -> None:
    settings = settings_for(project, smokePath="/api/v1/ping")
    more = [("10.0.0.2", {Slot.BLUE: 3114, Slot.GREEN: 3112})]

    argv = render.switch_argv(settings, Slot.GREEN, PORTS, more)

    smoke = [argv[i + 1] for i, flag in enumerate(argv) if flag == "--smoke-url"]
    assert smoke == ["http://127.0.0.1:3012/api/v1/ping", "http://10.0.0.2:3112/api/v1/ping"]


def test_switch_command_can_skip_text_check_and_verification(project: Path) -> None:
    settings = settings_for(project, environment="staging", healthContains="", verifyUrl="")

    assert render.switch_command(settings, Slot.STAGING, {Slot.STAGING: 3013}) == (
        "venv/bin/python -m nocturna_infra.switch --slot staging"
        " --upstream-file /etc/nginx/upstreams/nocturna-img-production.conf"
        " --upstream-name nocturna-img-production --selection-dir /var/lib/nocturna/switch"
        " --fallback-slot staging --server 127.0.0.1:3013"
        " --health-url http://127.0.0.1:3013/health --attempts 30 --interval 2 --timeout 5"
        " --nginx-test 'nginx -t' --nginx-reload 'nginx -s reload'"
    )


def test_build_args_put_program_owned_arguments_last(project: Path) -> None:
    settings = settings_for(project, buildArgs='{"VERSION": "2.0.0"}', baseImage="local/node:20")

    assert render.image_build_args(settings, "PEM") == {
        "VERSION": "2.0.0",
        "BASE_IMAGE": "local/node:20",
        "EXTRA_CA_CERTS": "PEM",
    }


def test_health_path_is_an_argument_of_the_health_check_never_its_code(project: Path) -> None:
    settings = settings_for(project, healthPath="/health?deep=1&x=%27")

    test = render.container_args(settings, Slot.BLUE, IMAGE)["healthcheck"]["tests"]

    assert test[:3] == ["CMD", "node", "-e"]
    assert "/health" not in test[3]
    assert test[4:] == ["/health?deep=1&x=%27"]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param(
            {},
            {"interval": "10s", "timeout": "5s", "start_period": "30s"},
            id="defaults",
        ),
        pytest.param(
            {
                "healthIntervalSeconds": "60",
                "healthTimeoutSeconds": "59",
                "healthStartPeriodSeconds": "90",
            },
            {"interval": "1m0s", "timeout": "59s", "start_period": "1m30s"},
            id="minutes",
        ),
        pytest.param(
            {"healthIntervalSeconds": "3600", "healthStartPeriodSeconds": "3599"},
            {"interval": "1h0m0s", "timeout": "5s", "start_period": "59m59s"},
            id="hours",
        ),
    ],
)
def test_health_durations_are_in_gos_duration_form(
    project: Path, overrides: dict[str, str], expected: dict[str, str]
) -> None:
    health = render.container_args(settings_for(project, **overrides), Slot.BLUE, IMAGE)[
        "healthcheck"
    ]

    assert {key: health[key] for key in expected} == expected


def test_memory_swap_equals_memory_so_the_service_never_swaps(project: Path) -> None:
    args = render.container_args(settings_for(project, memoryMb="2048"), Slot.GREEN, IMAGE)

    assert (args["memory"], args["memory_swap"]) == (2048, 2048)


def test_secret_env_goes_only_to_the_secret_variables(project: Path) -> None:
    settings = dataclasses.replace(
        settings_for(project), env={"DB_PASSWORD": "pw", "A": "1"}, env_secret=True
    )

    args = render.container_args(settings, Slot.GREEN, IMAGE)
    assert not [env for env in args["envs"] if "pw" in env or env.startswith("A=")]
    assert render.secret_env(settings) == {"A": "1", "DB_PASSWORD": "pw"}
    plain = dataclasses.replace(settings, env_secret=False)
    assert "DB_PASSWORD=pw" in render.container_args(plain, Slot.GREEN, IMAGE)["envs"]
    assert render.secret_env(plain) == {}


def test_gated_switch_command_adds_smoke_checks_and_the_watch(project: Path) -> None:
    checks = (
        '[{"name": "render", "method": "POST", "path": "/api/v2/chart/render", '
        '"headers": {"Authorization": "Bearer ${API_KEY}"}, "body": {"planets": {}}}]'
    )
    settings = settings_for(project, smokeChecks=checks, watchSeconds="45")

    gated = render.gated_switch_command(settings, Slot.GREEN, PORTS)

    assert gated == render.switch_command(settings, Slot.GREEN, PORTS) + (
        """ --smoke-checks '[{"name":"render","method":"POST","path":"/api/v2/chart/render","""
        """"headers":{"Authorization":"Bearer ${API_KEY}"},"body":"{\\"planets\\":{}}","""
        """"expectStatus":200,"timeoutSeconds":10.0}]'"""
        " --watch-seconds 45 --watch-log /var/log/nginx/nocturna-slots.log"
        " --watch-error-percent 5 --watch-min-requests 20 --watch-failed-probes 3"
        " --watch-started-log /var/log/nginx/nocturna-slots-started.log"
    )
    assert render.switch_environment_names(settings) == {"API_KEY"}


def test_the_shell_passes_the_key_template_through_unexpanded(project: Path) -> None:
    checks = '[{"name": "r", "path": "/r", "headers": {"Authorization": "Bearer ${API_KEY}"}}]'
    settings = settings_for(project, smokeChecks=checks)
    flags = render.gate_argv(settings)
    printf = shlex.join(["printf", "%s", flags[1]])

    done = subprocess.run(
        ["/bin/sh", "-c", printf], env={"API_KEY": "real-key"}, capture_output=True, text=True,
        check=True,
    )  # fmt: skip

    assert "Bearer ${API_KEY}" in done.stdout
    assert "real-key" not in done.stdout


def test_no_watch_in_staging_or_without_a_verification_url(project: Path) -> None:
    staging = settings_for(project, environment="staging")
    unverified = settings_for(project, verifyUrl="")

    assert render.gate_argv(staging) == render.gate_argv(unverified) == []
