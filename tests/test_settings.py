from __future__ import annotations

import json
from pathlib import Path

import pytest
from program_runs import make_project

from nocturna_infra.settings import (
    CONFIG_SCHEMA,
    ConfigError,
    Environment,
    Settings,
    parse_settings,
    read_stack_file,
)
from nocturna_infra.slot import Slot

BASELINE = {"buildContext": "service"}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def parse(project: Path, **overrides: str) -> Settings:
    return parse_settings({**BASELINE, **overrides}, api_key="k", project_dir=project)


def assert_config_error(project: Path, message: str, **overrides: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(project, **overrides)
    assert str(caught.value) == message


def test_defaults_give_the_original_production_layout(project: Path) -> None:
    settings = parse(project)

    assert settings.environment is Environment.PRODUCTION
    assert settings.active_slot is Slot.BLUE
    assert settings.standby_slot is Slot.GREEN
    assert dict(settings.slot_ports) == {Slot.BLUE: 3014, Slot.GREEN: 3012}
    assert settings.app_port == 3011
    assert settings.bind_address == "127.0.0.1"
    assert settings.network_name == "nocturna-network"
    assert settings.image.name == "nocturna-chart-service:production"
    assert settings.router.upstream_file == "/etc/nginx/upstreams/nocturna-img-production.conf"
    assert settings.limits.memory_mb == 1024
    assert settings.limits.memory_reservation_mb == 512
    assert settings.limits.stop_timeout_seconds == 40


def test_staging_runs_one_slot_on_3013(project: Path) -> None:
    settings = parse(project, environment="staging")

    assert settings.slots == (Slot.STAGING,)
    assert dict(settings.slot_ports) == {Slot.STAGING: 3013}
    assert settings.standby_slot is None
    assert settings.image.name == "nocturna-chart-service:staging"


def test_user_env_and_build_args_are_read_as_strings(project: Path) -> None:
    settings = parse(
        project,
        env='{"LOG_LEVEL": "debug", "MAX_CONCURRENT_RENDERS": 3, "ENABLE_METRICS": true}',
        buildArgs='{"VERSION": "1.2.3"}',
    )

    assert dict(settings.env) == {
        "LOG_LEVEL": "debug",
        "MAX_CONCURRENT_RENDERS": "3",
        "ENABLE_METRICS": "true",
    }
    assert dict(settings.image.build_args) == {"VERSION": "1.2.3"}


def test_the_service_is_pointed_at_the_headless_shell_the_image_installs(project: Path) -> None:
    assert parse(project).puppeteer_executable_path == "/usr/bin/chromium-headless-shell"


def test_the_full_browser_is_chosen_by_build_arg_and_path_together(project: Path) -> None:
    settings = parse(
        project,
        buildArgs='{"CHROMIUM_PACKAGE": "chromium"}',
        puppeteerExecutablePath="/usr/bin/chromium",
    )

    assert settings.puppeteer_executable_path == "/usr/bin/chromium"
    assert settings.image.build_args["CHROMIUM_PACKAGE"] == "chromium"


def test_tools_that_only_read_accept_the_old_browser_path() -> None:
    """status reads a stack file while the live slots may still run the full-browser image."""
    raw = {"puppeteerExecutablePath": "/usr/bin/chromium"}

    settings = parse_settings(raw, api_key="", project_dir=None)

    assert settings.puppeteer_executable_path == "/usr/bin/chromium"


def test_a_browser_path_of_an_own_image_is_taken_as_given(project: Path) -> None:
    settings = parse(project, puppeteerExecutablePath="/opt/google/chrome/chrome")

    assert settings.puppeteer_executable_path == "/opt/google/chrome/chrome"


def test_every_declared_key_has_a_default_or_is_secret() -> None:
    assert all((key.default is not None) != key.secret for key in CONFIG_SCHEMA)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param(
            {"activeSlot": "purple"},
            "nocturna-infra:activeSlot: must be one of blue, green; got 'purple'. "
            "Run `pulumi config set activeSlot blue`.",
            id="active-slot",
        ),
        pytest.param(
            {"environment": "prod"},
            "nocturna-infra:environment: must be one of production, staging; got 'prod'. "
            "Run `pulumi config set environment production`.",
            id="environment",
        ),
        pytest.param(
            {"environment": "staging", "activeSlot": "green"},
            "nocturna-infra:activeSlot: staging runs a single container and has no blue/green "
            "slots; got 'green'. Run `pulumi config rm activeSlot`.",
            id="staging-given-slots",
        ),
        pytest.param(
            {"bluePort": "70000"},
            "nocturna-infra:bluePort: must be between 1 and 65535; got 70000.",
            id="port-out-of-range",
        ),
        pytest.param(
            {"greenPort": "3014"},
            "nocturna-infra:greenPort: must differ from bluePort, since both slots run at once; "
            "got 3014.",
            id="ports-collide",
        ),
        pytest.param(
            {"appPort": "web"},
            "nocturna-infra:appPort: must be a whole number (ASCII digits); got 'web'.",
            id="port-not-a-number",
        ),
        pytest.param(
            {"bluePort": "\uff13\uff10\uff11\uff14"},
            "nocturna-infra:bluePort: must be a whole number (ASCII digits); "
            "got '\uff13\uff10\uff11\uff14'.",
            id="port-fullwidth-digits",
        ),
        pytest.param(
            {"greenPort": "\u0663\u0660\u0661\u0662"},
            "nocturna-infra:greenPort: must be a whole number (ASCII digits); "
            "got '\u0663\u0660\u0661\u0662'.",
            id="port-arabic-indic-digits",
        ),
        pytest.param(
            {"appPort": "3_011"},
            "nocturna-infra:appPort: must be a whole number (ASCII digits); got '3_011'.",
            id="port-underscore",
        ),
        pytest.param(
            {"bindAddress": "0.0.0.0"},
            "nocturna-infra:bindAddress: publishes the slots beyond this host, where clients "
            "bypass Nginx; must be a loopback address such as 127.0.0.1 or ::1; got '0.0.0.0'. "
            "Run `pulumi config set allowNonLoopbackBind true` if that is intended.",
            id="bind-all-interfaces",
        ),
        pytest.param(
            {"bindAddress": "::"},
            "nocturna-infra:bindAddress: publishes the slots beyond this host, where clients "
            "bypass Nginx; must be a loopback address such as 127.0.0.1 or ::1; got '::'. "
            "Run `pulumi config set allowNonLoopbackBind true` if that is intended.",
            id="bind-all-interfaces-v6",
        ),
        pytest.param(
            {"bindAddress": "10.0.0.5"},
            "nocturna-infra:bindAddress: publishes the slots beyond this host, where clients "
            "bypass Nginx; must be a loopback address such as 127.0.0.1 or ::1; got '10.0.0.5'. "
            "Run `pulumi config set allowNonLoopbackBind true` if that is intended.",
            id="bind-private-address",
        ),
        pytest.param(
            {"allowNonLoopbackBind": "yes", "bindAddress": "0.0.0.0"},
            "nocturna-infra:allowNonLoopbackBind: must be true or false; got 'yes'.",
            id="allow-non-loopback-not-boolean",
        ),
        pytest.param(
            {"upstreamFile": "/etc/nginx/upstreams/../nginx.conf"},
            "nocturna-infra:upstreamFile: must be a normalised absolute path without '.', '..' "
            "or empty components; got '/etc/nginx/upstreams/../nginx.conf'.",
            id="upstream-file-dot-dot",
        ),
        pytest.param(
            {"upstreamFile": "/etc/nginx//upstreams/app.conf"},
            "nocturna-infra:upstreamFile: must be a normalised absolute path without '.', '..' "
            "or empty components; got '/etc/nginx//upstreams/app.conf'.",
            id="upstream-file-empty-component",
        ),
        pytest.param(
            {"healthPath": "/health',process.exit(0),'"},
            "nocturna-infra:healthPath: must be a URL path starting with / of letters, digits "
            "and . _ ~ / - % ? = &; got \"/health',process.exit(0),'\".",
            id="health-path-quote",
        ),
        pytest.param(
            {"healthStartPeriodSeconds": "0"},
            "nocturna-infra:healthStartPeriodSeconds: must be between 1 and 3600; got 0.",
            id="start-period-zero-inherits-the-image",
        ),
        pytest.param(
            {"cpus": "0.05"},
            "nocturna-infra:cpus: reads back from Docker as '0.1' through the docker provider, "
            "a different value that would replace both slots on every run; choose another "
            "value (e.g. two decimals such as 0.15, or one such as 0.1); got '0.05'.",
            id="cpus-read-back-rounded",
        ),
        pytest.param(
            {"cpus": "1e0"},
            "nocturna-infra:cpus: must be a number of CPUs between 0.01 and 1024; got '1e0'.",
            id="cpus-exponent",
        ),
        pytest.param(
            {"cpus": "0.0000000001"},
            "nocturna-infra:cpus: must be a number of CPUs between 0.01 and 1024; "
            "got '0.0000000001'.",
            id="cpus-too-precise",
        ),
        pytest.param(
            {"env": '{"LOG_LEVEL": "info\\nX=1"}'},
            "nocturna-infra:env.LOG_LEVEL: must not contain control characters; got 'info\\nX=1'.",
            id="env-value-newline",
        ),
        pytest.param(
            {"buildArgs": '{"VERSION": "1.0\\u0000"}'},
            "nocturna-infra:buildArgs.VERSION: must not contain control characters; "
            "got '1.0\\x00'.",
            id="build-arg-value-nul",
        ),
        pytest.param(
            {"buildArgs": '{"GIT-SHA": "abc"}'},
            "nocturna-infra:buildArgs: names must be letters, digits and _, not starting with a "
            "digit; got 'GIT-SHA'.",
            id="build-arg-name",
        ),
        pytest.param(
            {"bluePort": "3013"},
            "nocturna-infra:bluePort: must differ from bluePort/stagingPort (3013): a staging and "
            "a production stack on one host would publish the same port; set the same bluePort, "
            "greenPort and stagingPort in both stacks; got 3013.",
            id="production-port-is-the-staging-port",
        ),
        pytest.param(
            {"environment": "staging", "stagingPort": "3012"},
            "nocturna-infra:stagingPort: must differ from greenPort/stagingPort (3012): a staging "
            "and a production stack on one host would publish the same port; set the same "
            "bluePort, greenPort and stagingPort in both stacks; got 3012.",
            id="staging-port-is-a-production-port",
        ),
        pytest.param(
            {"bindAddress": "localhost"},
            "nocturna-infra:bindAddress: must be an IP address such as 127.0.0.1; got 'localhost'.",
            id="bind-address",
        ),
        pytest.param(
            {"healthPath": "health"},
            "nocturna-infra:healthPath: must be a URL path starting with / of letters, digits "
            "and . _ ~ / - % ? = &; got 'health'.",
            id="health-path",
        ),
        pytest.param(
            {"healthTimeoutSeconds": "10"},
            "nocturna-infra:healthTimeoutSeconds: must be below healthIntervalSeconds (10); "
            "got 10.",
            id="health-timeout",
        ),
        pytest.param(
            {"memoryMb": "128"},
            "nocturna-infra:memoryMb: must be between 256 and 1048576; got 128.",
            id="memory-floor",
        ),
        pytest.param(
            {"memoryReservationMb": "2048"},
            "nocturna-infra:memoryReservationMb: must not exceed memoryMb (1024); got 2048.",
            id="reservation-above-limit",
        ),
        pytest.param(
            {"cpus": "lots"},
            "nocturna-infra:cpus: must be a number of CPUs between 0.01 and 1024; got 'lots'.",
            id="cpus",
        ),
        pytest.param(
            {"stopTimeoutSeconds": "10"},
            "nocturna-infra:stopTimeoutSeconds: must be between 31 and 3600; got 10.",
            id="stop-timeout-below-drain",
        ),
        pytest.param(
            {"env": '{"PORT": "80"}'},
            "nocturna-infra:env: PORT is set by the program; managed names are API_KEY, "
            "DEPLOYMENT_SLOT, HOST, NODE_ENV, PORT, PUPPETEER_EXECUTABLE_PATH; got 'PORT'. "
            "Use apiKey for API_KEY and the matching keys for the others.",
            id="env-managed-name",
        ),
        pytest.param(
            {"env": '{"1BAD": "x"}'},
            "nocturna-infra:env: names must be letters, digits and _, not starting with a "
            "digit; got '1BAD'.",
            id="env-bad-name",
        ),
        pytest.param(
            {"env": '["LOG_LEVEL=debug"]'},
            "nocturna-infra:env: must be an object of name -> value; got ['LOG_LEVEL=debug'].",
            id="env-not-an-object",
        ),
        pytest.param(
            {"env": '{"NESTED": {"a": 1}}'},
            "nocturna-infra:env.NESTED: must be a string, number or boolean; got {'a': 1}.",
            id="env-nested-value",
        ),
        pytest.param(
            {"serviceName": "Nocturna Chart"},
            "nocturna-infra:serviceName: must be lower-case letters, digits, '.', '_' or '-'; "
            "got 'Nocturna Chart'.",
            id="service-name",
        ),
        pytest.param(
            {"imageName": "Nocturna:latest"},
            "nocturna-infra:imageName: must be a lower-case image repository name; "
            "got 'Nocturna:latest'.",
            id="image-name",
        ),
        pytest.param(
            {"buildArgs": '{"BASE_IMAGE": "debian"}'},
            "nocturna-infra:buildArgs: BASE_IMAGE is set by the program from "
            "baseImage/extraCaCertsDir; got 'BASE_IMAGE'.",
            id="build-args-owned",
        ),
        pytest.param(
            {"upstreamFile": "upstreams/app.conf"},
            "nocturna-infra:upstreamFile: must be an absolute path; got 'upstreams/app.conf'.",
            id="upstream-file",
        ),
        pytest.param(
            {"selectionDir": "var/lib/nocturna"},
            "nocturna-infra:selectionDir: must be an absolute directory path without '..' "
            "(letters, digits, '.', '_', '-'); got 'var/lib/nocturna'.",
            id="selection-dir-relative",
        ),
        pytest.param(
            {"selectionDir": "/var/lib/../tmp"},
            "nocturna-infra:selectionDir: must be an absolute directory path without '..' "
            "(letters, digits, '.', '_', '-'); got '/var/lib/../tmp'.",
            id="selection-dir-dotdot",
        ),
        pytest.param(
            {"selectionDir": "/"},
            "nocturna-infra:selectionDir: must be an absolute directory path without '..' "
            "(letters, digits, '.', '_', '-'); got '/'.",
            id="selection-dir-root",
        ),
        pytest.param(
            {"upstreamName": "nocturna img"},
            "nocturna-infra:upstreamName: must be letters, digits, '.', '_' or '-'; "
            "got 'nocturna img'.",
            id="upstream-name",
        ),
        pytest.param(
            {"nginxReloadCommand": "  "},
            "nocturna-infra:nginxReloadCommand: must be a command line such as 'nginx -t'; "
            "got '  '.",
            id="reload-command",
        ),
        pytest.param(
            {"nginxStartCommand": "nginx 'unclosed"},
            "nocturna-infra:nginxStartCommand: must be empty or a command line such as 'nginx'; "
            'got "nginx \'unclosed".',
            id="start-command",
        ),
        pytest.param(
            {"verifyUrl": "http://10.0.0.5/verify"},
            "nocturna-infra:verifyUrl: must be empty or an http(s) URL on a loopback address, "
            "such as http://127.0.0.1:8099/nocturna-verify; got 'http://10.0.0.5/verify'.",
            id="verify-url-not-loopback",
        ),
        pytest.param(
            {"verifyUrl": "http://localhost:8099/nocturna-verify"},
            "nocturna-infra:verifyUrl: localhost may resolve to ::1, where any local user may "
            "listen and would receive the smoke checks' bearer key during the watch; use "
            "127.0.0.1 (as Nginx's verification server listens), e.g. "
            "http://127.0.0.1:8099/nocturna-verify; got 'http://localhost:8099/nocturna-verify'.",
            id="verify-url-localhost",
        ),
        pytest.param(
            {"smokePath": "render"},
            "nocturna-infra:smokePath: must be empty or a URL path starting with /; got 'render'.",
            id="smoke-path",
        ),
        pytest.param(
            {"probeAttempts": "0"},
            "nocturna-infra:probeAttempts: must be between 1 and 1000; got 0.",
            id="probe-attempts",
        ),
        pytest.param(
            {"routerPython": "python; rm -rf /"},
            "nocturna-infra:routerPython: must be a path to a Python interpreter; "
            "got 'python; rm -rf /'.",
            id="router-python",
        ),
        pytest.param(
            {"stateStack": "organization/nocturna infra/production"},
            "nocturna-infra:stateStack: must be empty or a stack name such as "
            "production or organization/<project>/<stack>; "
            "got 'organization/nocturna infra/production'.",
            id="state-stack",
        ),
        pytest.param(
            {"healthContains": "healthy\n"},
            "nocturna-infra:healthContains: must be empty or printable text of at most 200 "
            "characters; got 'healthy\\n'.",
            id="health-contains",
        ),
        pytest.param(
            {"networkName": "-net"},
            "nocturna-infra:networkName: must be lower-case letters, digits, '.', '_' or '-'; "
            "got '-net'.",
            id="network-name",
        ),
        pytest.param(
            {"baseImage": "node 20"},
            "nocturna-infra:baseImage: must be an image reference; got 'node 20'.",
            id="base-image",
        ),
        pytest.param(
            {"puppeteerExecutablePath": "chromium"},
            "nocturna-infra:puppeteerExecutablePath: must be an absolute path; got 'chromium'.",
            id="puppeteer-path",
        ),
        pytest.param(
            {"puppeteerExecutablePath": "/usr/bin/chromium"},
            "nocturna-infra:puppeteerExecutablePath: is the full Chromium browser, which the "
            "image no longer installs (it installs chromium-headless-shell unless "
            "buildArgs.CHROMIUM_PACKAGE is chromium): the service would exit at start with "
            '"Browser was not found", and the new container never become healthy; '
            "got '/usr/bin/chromium'. Run `pulumi config rm puppeteerExecutablePath` to use "
            "/usr/bin/chromium-headless-shell, or keep the full browser with "
            "`pulumi config set --path buildArgs.CHROMIUM_PACKAGE chromium` (docs/dockerfile.md).",
            id="puppeteer-path-of-the-old-image",
        ),
        pytest.param(
            {"buildArgs": '{"CHROMIUM_PACKAGE": "chromium"}'},
            "nocturna-infra:puppeteerExecutablePath: must be /usr/bin/chromium when "
            "buildArgs.CHROMIUM_PACKAGE is chromium: the image holds no other browser, and the "
            'service would exit at start with "Browser was not found"; '
            "got '/usr/bin/chromium-headless-shell'. "
            "Run `pulumi config set puppeteerExecutablePath /usr/bin/chromium`.",
            id="full-browser-with-the-default-path",
        ),
        pytest.param(
            {"buildArgs": '{"CHROMIUM_PACKAGE": "google-chrome"}'},
            "nocturna-infra:buildArgs.CHROMIUM_PACKAGE: must be one of chromium-headless-shell, "
            "chromium (the browser the image installs); got 'google-chrome'. "
            "Run `pulumi config rm --path buildArgs.CHROMIUM_PACKAGE` for the headless shell.",
            id="chromium-package",
        ),
        pytest.param(
            {"nginxTestCommand": "nginx 'unterminated"},
            "nocturna-infra:nginxTestCommand: must be a command line such as 'nginx -t'; "
            'got "nginx \'unterminated".',
            id="test-command-unparsable",
        ),
        pytest.param(
            {"buildArgs": "VERSION=1"},
            "nocturna-infra:buildArgs: must be an object of name -> value; got 'VERSION=1'.",
            id="build-args-not-json",
        ),
        pytest.param(
            {"platform": "amd64"},
            "nocturna-infra:platform: must be one of linux/amd64, linux/amd64/v2, linux/amd64/v3, "
            "linux/arm64, linux/arm/v7, linux/arm/v6, linux/386, linux/ppc64le, linux/s390x, "
            "linux/riscv64; got 'amd64'. Run `pulumi config set platform linux/amd64`.",
            id="platform",
        ),
        pytest.param(
            {"platform": "windows/amd64"},
            "nocturna-infra:platform: must be one of linux/amd64, linux/amd64/v2, linux/amd64/v3, "
            "linux/arm64, linux/arm/v7, linux/arm/v6, linux/386, linux/ppc64le, linux/s390x, "
            "linux/riscv64; got 'windows/amd64'. Run `pulumi config set platform linux/amd64`.",
            id="platform-not-linux",
        ),
    ],
)
def test_invalid_value_is_rejected_with_key_value_and_allowed(
    project: Path, overrides: dict[str, str], message: str
) -> None:
    assert_config_error(project, message, **overrides)


INTEGER_RANGES = [
    ("appPort", 1, 65535),
    ("bluePort", 1, 65535),
    ("greenPort", 1, 65535),
    ("healthIntervalSeconds", 1, 3600),
    ("healthTimeoutSeconds", 1, 3600),
    ("healthRetries", 1, 100),
    ("healthStartPeriodSeconds", 1, 3600),
    ("memoryMb", 256, 1048576),
    ("memoryReservationMb", 0, 1048576),
    ("shmSizeMb", 1, 1048576),
    ("tmpfsSizeMb", 1, 1048576),
    ("stopTimeoutSeconds", 31, 3600),
    ("logMaxSizeMb", 1, 10240),
    ("logMaxFiles", 1, 100),
    ("maxProcesses", 256, 1048576),
    ("probeAttempts", 1, 1000),
    ("probeIntervalSeconds", 1, 600),
    ("probeTimeoutSeconds", 1, 600),
    ("watchSeconds", 0, 3600),
    ("watchErrorPercent", 1, 100),
    ("watchMinRequests", 1, 1000000),
    ("watchFailedProbes", 1, 100),
    ("watchRequestTimeoutSeconds", 1, 3600),
    ("reloadTimeoutSeconds", 1, 3600),
    ("watchBaselineSeconds", 0, 86400),
    ("watchRegressionFactor", 0, 100),
    ("canaryMinRequests", 1, 1_000_000),
    ("canaryStepSeconds", 1, 86400),
]


@pytest.mark.parametrize(("key", "low", "high"), INTEGER_RANGES)
def test_integer_keys_reject_values_out_of_range(
    project: Path, key: str, low: int, high: int
) -> None:
    assert_config_error(
        project,
        f"nocturna-infra:{key}: must be between {low} and {high}; got {low - 1}.",
        **{key: str(low - 1)},
    )


def test_staging_port_is_range_checked_in_staging(project: Path) -> None:
    assert_config_error(
        project,
        "nocturna-infra:stagingPort: must be between 1 and 65535; got 0.",
        environment="staging",
        stagingPort="0",
    )


def test_every_integer_key_has_a_range_test() -> None:
    integer_keys = {key.name for key in CONFIG_SCHEMA if key.type == "integer"}
    assert integer_keys - {key for key, _, _ in INTEGER_RANGES} == {"stagingPort"}


def test_missing_build_context_names_the_key_and_directory(project: Path) -> None:
    assert_config_error(
        project,
        f"nocturna-infra:buildContext: must name an existing directory (relative to {project}); "
        "got '../nocturna-image'.",
        buildContext="../nocturna-image",
    )


def test_missing_dockerfile_names_the_key(project: Path) -> None:
    assert_config_error(
        project,
        f"nocturna-infra:dockerfile: must name an existing file (relative to {project}); "
        "got 'docker/Dockerfile'.",
        dockerfile="docker/Dockerfile",
    )


def test_missing_ca_directory_names_the_key(project: Path) -> None:
    assert_config_error(
        project,
        f"nocturna-infra:extraCaCertsDir: must name an existing directory (relative to "
        f"{project}); got '/nowhere/certs'.",
        extraCaCertsDir="/nowhere/certs",
    )


def test_read_only_tools_can_parse_without_the_build_inputs() -> None:
    settings = parse_settings({"environment": "staging"}, api_key="", project_dir=None)

    assert settings.image.context == "../nocturna-image"
    assert dict(settings.slot_ports) == {Slot.STAGING: 3013}


def test_stack_file_values_are_read_as_the_engine_sends_them(tmp_path: Path) -> None:
    (tmp_path / "Pulumi.production.yaml").write_text(
        "config:\n"
        "  nocturna-infra:activeSlot: green\n"
        "  nocturna-infra:bluePort: 4014\n"
        "  nocturna-infra:env:\n"
        "    LOG_LEVEL: debug\n"
        "  nocturna-infra:apiKey:\n"
        "    secure: v1:abc\n"
        "  nocturna-infra:buildArgs:\n"
        "    TOKEN:\n"
        "      secure: v1:def\n"
        "  docker:host: unix:///var/run/docker.sock\n"
    )

    assert read_stack_file(tmp_path, "production") == {
        "activeSlot": "green",
        "bluePort": "4014",
        "env": '{"LOG_LEVEL": "debug"}',
    }


@pytest.mark.parametrize(
    ("given", "declared"),
    [
        pytest.param("0.9", "0.9", id="default-kept"),
        pytest.param("1", "1.0", id="whole-gets-one-decimal"),
        pytest.param("2", "2.0", id="two"),
        pytest.param("0.5", "0.5", id="half"),
        pytest.param("1.25", "1.25", id="two-decimals"),
        pytest.param("1.50", "1.5", id="trailing-zero-dropped"),
        pytest.param("10", "10.", id="ten-reads-back-with-a-bare-point"),
    ],
)
def test_cpus_are_declared_in_the_providers_read_back_form(
    project: Path, given: str, declared: str
) -> None:
    assert parse(project, cpus=given).limits.cpus == declared


def test_non_loopback_bind_needs_the_opt_in(project: Path) -> None:
    settings = parse(project, bindAddress="0.0.0.0", allowNonLoopbackBind="true")

    assert settings.bind_address == "0.0.0.0"


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1"])
def test_loopback_bind_needs_no_opt_in(project: Path, address: str) -> None:
    assert parse(project, bindAddress=address).bind_address == address


@pytest.mark.parametrize("platform", ["linux/amd64", "linux/arm64", "linux/arm/v7"])
def test_documented_linux_platforms_are_accepted(project: Path, platform: str) -> None:
    assert parse(project, platform=platform).image.platform == platform


def test_a_key_that_cannot_stay_secret_is_refused_when_set_with_secret(project: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(
            {**BASELINE, "verifyUrl": "http://127.0.0.1:8099/health"},
            api_key="k",
            project_dir=project,
            secret_keys=frozenset({"apiKey", "verifyUrl"}),
        )
    assert str(caught.value) == (
        "nocturna-infra:verifyUrl: is set with --secret, but its value would be shown in plain "
        "text in the stack's outputs, resource inputs and previews; got '[secret]'. Set it "
        "without --secret (`pulumi config set verifyUrl ...`); keep secrets in apiKey or env "
        "(`pulumi config set --secret --path env.NAME value`), which stay secret."
    )


def test_secret_env_is_marked_so_it_is_kept_out_of_plain_values(project: Path) -> None:
    settings = parse_settings(
        {**BASELINE, "env": '{"DB_PASSWORD": "pw"}'},
        api_key="k",
        project_dir=project,
        secret_keys=frozenset({"apiKey", "env"}),
    )

    assert settings.env_secret is True
    assert settings.env == {"DB_PASSWORD": "pw"}


# --- release gates ---------------------------------------------------------------------------

RENDER_CHECK = {
    "name": "render",
    "method": "POST",
    "path": "/api/v2/chart/render",
    "headers": {"Authorization": "Bearer ${API_KEY}"},
    "bodyFile": "smoke/chart.json",
    "expectStatus": 200,
    "expectContains": "iVBORw0KGgo",
    "timeoutSeconds": 15,
}


def test_gates_default_to_no_smoke_checks_and_a_30_second_watch(project: Path) -> None:
    gates = parse(project).gates

    assert gates.smoke_checks == ()
    assert (gates.watch_seconds, gates.watch_error_percent) == (30, 5)
    assert (gates.watch_min_requests, gates.watch_failed_probes) == (20, 3)
    assert gates.watch_log == "/var/log/nginx/nocturna-slots.log"


def test_smoke_check_body_file_is_read_relative_to_the_project(project: Path) -> None:
    (project / "smoke").mkdir()
    (project / "smoke" / "chart.json").write_text('{"type": "natal"}\n')

    (check,) = parse(project, smokeChecks=json.dumps([RENDER_CHECK])).gates.smoke_checks

    assert check.body == '{"type": "natal"}\n'
    assert check.headers == (("Authorization", "Bearer ${API_KEY}"),)
    assert (check.method, check.path, check.status, check.timeout) == (
        "POST",
        "/api/v2/chart/render",
        200,
        15.0,
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(
            {"method": "FETCH"},
            "nocturna-infra:smokeChecks[0].method: must be one of GET, HEAD, POST, PUT, PATCH, "
            "DELETE, OPTIONS; got 'FETCH'.",
            id="method",
        ),
        pytest.param(
            {"path": "api/v2"},
            "nocturna-infra:smokeChecks[0].path: is required: a URL path starting with / "
            "(no spaces); got 'api/v2'.",
            id="path",
        ),
        pytest.param(
            {"expectStatus": 700},
            "nocturna-infra:smokeChecks[0].expectStatus: must be an HTTP status 100-599; got 700.",
            id="status",
        ),
        pytest.param(
            {"bodyFile": "smoke/missing.json"},
            "nocturna-infra:smokeChecks[0].bodyFile: must name a readable UTF-8 file under "
            "{project} (No such file or directory); got 'smoke/missing.json'.",
            id="body-file",
        ),
        pytest.param(
            {"headers": {"Authorization": "Bearer ${api-key}"}},
            "nocturna-infra:smokeChecks[0].headers.Authorization: may only hold ${NAME} "
            "templates (letters, digits, _); got 'Bearer ${api-key}'.",
            id="template",
        ),
        pytest.param(
            {"expect": 200},
            "nocturna-infra:smokeChecks[0].expect: unknown field; allowed: name, method, path, "
            "headers, body, bodyFile, expectStatus, expectContains, expectJsonField, "
            "expectJsonValue, timeoutSeconds; got 200.",
            id="unknown-field",
        ),
        pytest.param(
            {"timeoutSeconds": 0},
            "nocturna-infra:smokeChecks[0].timeoutSeconds: must be a number of seconds > 0 "
            "and <= 300; got 0.",
            id="timeout",
        ),
    ],
)
def test_bad_smoke_check_is_refused_naming_key_index_and_field(
    project: Path, change: dict[str, object], message: str
) -> None:
    (project / "smoke").mkdir()
    (project / "smoke" / "chart.json").write_text("{}")
    checks = json.dumps([{**RENDER_CHECK, **change}])

    assert_config_error(project, message.replace("{project}", str(project)), smokeChecks=checks)


def test_smoke_checks_must_be_a_list_with_unique_names(project: Path) -> None:
    assert_config_error(
        project,
        "nocturna-infra:smokeChecks: must be a list of checks (objects); got {'name': 'x'}.",
        smokeChecks='{"name": "x"}',
    )
    assert_config_error(
        project,
        "nocturna-infra:smokeChecks[1].name: must be unique among the checks; got 'health'.",
        smokeChecks='[{"name": "health", "path": "/health"}, {"name": "health", "path": "/"}]',
    )


def test_watch_log_must_be_an_absolute_path(project: Path) -> None:
    assert_config_error(
        project,
        "nocturna-infra:watchLog: must be an absolute file path without '..'; got 'slots.log'.",
        watchLog="slots.log",
    )


# --- templates and body files reach only what they may (issue 17, finding 3) -------------------


@pytest.mark.parametrize(
    "variable", ["PULUMI_CONFIG_PASSPHRASE", "AWS_SECRET_ACCESS_KEY", "HOME"], ids=str.lower
)
def test_smoke_header_naming_a_variable_of_the_pulumi_environment_is_refused(
    project: Path, variable: str
) -> None:
    checks = [{k: v for k, v in RENDER_CHECK.items() if k != "bodyFile"}]
    checks[0]["headers"] = {"Authorization": f"Bearer ${{{variable}}}"}

    assert_config_error(
        project,
        f"nocturna-infra:smokeChecks[0].headers.Authorization: names ${{{variable}}}, but a "
        "template may name only ${API_KEY} and the variables of env (the router hands the "
        f"switch only those); got 'Bearer ${{{variable}}}'. Declare it with `pulumi config set "
        f"--secret --path env.{variable} ...` if the service should have it too.",
        smokeChecks=json.dumps(checks),
    )


def test_smoke_header_may_name_the_api_key_and_env_variables(project: Path) -> None:
    checks = [{k: v for k, v in RENDER_CHECK.items() if k != "bodyFile"}]
    checks[0]["headers"] = {"Authorization": "Bearer ${API_KEY}", "X-Tenant": "${TENANT}"}

    settings = parse(project, smokeChecks=json.dumps(checks), env='{"TENANT": "acme"}')

    assert settings.gates.smoke_checks[0].variables == {"API_KEY", "TENANT"}


@pytest.mark.parametrize(
    ("body_file", "problem"),
    [
        pytest.param(
            "../outside.json",
            "must be a file path inside the project directory (relative, no '..')",
            id="dot-dot",
        ),
        pytest.param(
            "smoke/../../outside.json",
            "must be a file path inside the project directory (relative, no '..')",
            id="dot-dot-inside",
        ),
        pytest.param(
            "smoke/link.json",
            "must stay inside {project} (it resolves to {outside})",
            id="symlink-out",
        ),
    ],
)
def test_smoke_body_file_outside_the_project_is_refused(
    tmp_path: Path, body_file: str, problem: str
) -> None:
    (tmp_path / "project").mkdir()
    project = make_project(tmp_path / "project")
    outside = tmp_path / "outside.json"
    outside.write_text('{"secret": "root:hash"}')
    (project / "smoke").mkdir()
    (project / "smoke" / "link.json").symlink_to(outside)
    checks = json.dumps([{**RENDER_CHECK, "bodyFile": body_file}])

    assert_config_error(
        project,
        f"nocturna-infra:smokeChecks[0].bodyFile: "
        f"{problem.format(project=project.resolve(), outside=outside)}; got {body_file!r}.",
        smokeChecks=checks,
    )


def test_verify_url_on_127_0_0_1_is_kept(project: Path) -> None:
    url = "http://127.0.0.1:8099/nocturna-verify"

    assert parse(project, verifyUrl=url).router.verify_url == url
