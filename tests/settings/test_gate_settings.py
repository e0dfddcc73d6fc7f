"""The watch window's route-class keys (settings/gates.py): defaults, parsing, exact errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nocturna_infra.program import render
from nocturna_infra.settings import ConfigError, Settings, parse_settings
from nocturna_infra.traffic.routes import RouteClass
from tests.program_runs import make_project


def parse(project: Path, **overrides: str) -> Settings:
    return parse_settings(
        {"buildContext": "service", **overrides}, api_key="k", project_dir=project
    )


def assert_config_error(project: Path, message: str, **overrides: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(project, **overrides)
    assert str(caught.value) == message


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_project(tmp_path)


def test_by_default_health_is_excluded_and_no_route_has_its_own_class(project: Path) -> None:
    gates = parse(project).gates

    assert (gates.watch_routes, gates.watch_exclude_paths, gates.watch_probe_path) == (
        (),
        ("/health",),
        "",
    )


def test_render_route_class_reaches_the_switch_command(project: Path) -> None:
    routes = [{"method": "POST", "pathPrefix": "/api/v2/chart/render", "minRequests": 5}]
    settings = parse(project, watchRoutes=json.dumps(routes), watchProbePath="/health")

    assert settings.gates.watch_routes == (RouteClass("POST", "/api/v2/chart/render", 5),)
    argv = render.gate_argv(settings)
    assert argv[argv.index("--watch-routes") + 1] == (
        '[{"method":"POST","pathPrefix":"/api/v2/chart/render","minRequests":5}]'
    )
    assert "--watch-exclude-paths" not in argv  # the switch's default
    assert argv[argv.index("--watch-probe-path") + 1] == "/health"


def test_bad_route_class_names_the_key_field_and_value(project: Path) -> None:
    assert_config_error(
        project,
        "nocturna-infra:watchRoutes[0].method: must be one of GET, HEAD, POST, PUT, PATCH, "
        "DELETE, OPTIONS or *; got 'RENDER'.",
        watchRoutes='[{"method": "RENDER", "pathPrefix": "/render"}]',
    )


def test_route_classes_that_are_not_json_are_refused(project: Path) -> None:
    assert_config_error(
        project,
        "nocturna-infra:watchRoutes: must be a list of route classes (objects); got 'POST /r'.",
        watchRoutes="POST /r",
    )


def test_bad_excluded_path_is_refused(project: Path) -> None:
    assert_config_error(
        project,
        "nocturna-infra:watchExcludePaths: must be a list of URL paths starting with /; "
        "got ['health'].",
        watchExcludePaths='["health"]',
    )


def test_probe_path_must_be_a_path(project: Path) -> None:
    assert_config_error(
        project,
        "nocturna-infra:watchProbePath: must be empty or a URL path starting with / (a light "
        "GET, e.g. /health); got 'health'.",
        watchProbePath="health",
    )


def test_excluded_paths_other_than_the_default_reach_the_switch_command(project: Path) -> None:
    argv = render.gate_argv(parse(project, watchExcludePaths='["/health", "/metrics"]'))

    assert argv[argv.index("--watch-exclude-paths") + 1] == '["/health", "/metrics"]'


def test_canary_is_off_by_default_and_the_router_command_keeps_its_flags(project: Path) -> None:
    settings = parse(project)

    assert settings.gates.canary_steps == ()
    assert not [flag for flag in render.gate_argv(settings) if flag.startswith("--canary")]


def test_canary_steps_reach_the_switch_command_with_only_what_differs(project: Path) -> None:
    settings = parse(project, canarySteps="5, 25,50", canaryKey="cookie:uid")

    assert render.canary_argv(settings) == [
        "--canary-steps", "5,25,50", "--canary-key", "cookie:uid",
    ]  # fmt: skip
    assert render.gate_argv(settings)[-4:] == render.canary_argv(settings)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        pytest.param(
            {"canarySteps": "25,5"},
            "nocturna-infra:canarySteps: must be empty (off) or rising whole percents from 1 "
            "to 99, e.g. 5,25,50; got '25,5'.",
            id="falling",
        ),
        pytest.param(
            {"canarySteps": "5,100"},
            "nocturna-infra:canarySteps: must be empty (off) or rising whole percents from 1 "
            "to 99, e.g. 5,25,50; got '5,100'.",
            id="hundred",
        ),
        pytest.param(
            {"canaryKey": "header:x"},
            "nocturna-infra:canaryKey: must be request, client or cookie:<name>; got 'header:x'.",
            id="key",
        ),
        pytest.param(
            {"canarySteps": "5", "watchSeconds": "0"},
            "nocturna-infra:canarySteps: needs watchSeconds above 0 (the steps are judged from "
            "the watch log); got '5'.",
            id="no-watch",
        ),
    ],
)
def test_bad_canary_keys_name_the_key_and_value(
    project: Path, overrides: dict[str, str], message: str
) -> None:
    assert_config_error(project, message, **overrides)


def test_preview_says_the_switch_is_progressive_and_how_long_it_may_take(project: Path) -> None:
    settings = parse(project, canarySteps="5,25,50", canaryStepSeconds="120")

    assert render.progressive_note(settings, settings.active_slot) == (
        f"the switch to {settings.active_slot} is progressive: 5% -> 25% -> 50% -> 100%, each "
        "step judged against the old slot; the steps take at most 360s (canaryStepSeconds 120 "
        f"x 3), then the {settings.gates.watch_seconds}s watch"
    )
    assert render.progressive_note(parse(project), settings.active_slot) == ""


def test_canary_without_a_verification_url_is_refused_not_ignored(project: Path) -> None:
    assert_config_error(
        project,
        "nocturna-infra:canarySteps: needs environment production and a verifyUrl (the steps "
        "are judged by the watch); got '5,25'.",
        canarySteps="5,25",
        verifyUrl="",
    )
