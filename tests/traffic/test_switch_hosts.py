"""The switch with one server per host in each slot's group (several Docker hosts), against a
real Nginx. The second "host" here is a second backend on loopback; the rehearsal runs the
same against a second Docker engine reached over SSH."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from nocturna_infra.traffic.exits import ExitCode
from nocturna_infra.traffic.switch import main
from tests.backends import Backend
from tests.nginx_instance import NginxInstance, switch_argv
from tests.traffic.switch_helpers import (
    BLUE_SELECTED,
    GREEN_SELECTED,
    NOW,
    selection,
    state,
)

pytestmark = pytest.mark.nginx


@pytest.fixture
def green_h2() -> Iterator[Backend]:
    backend = Backend("green").start()
    yield backend
    backend.stop()


def two_host_argv(nginx: NginxInstance, green: Backend, green_h2: Backend) -> list[str]:
    return switch_argv(
        nginx,
        green,
        "--server", green_h2.server,
        "--health-url", green_h2.url("/health"),
        "--verify-attempts", "10",
    )  # fmt: skip


def test_switch_to_a_slot_on_two_hosts_probes_both_and_both_answer_through_nginx(
    nginx, blue, green, green_h2, capsys
) -> None:
    code = main(two_host_argv(nginx, green, green_h2), now=lambda: NOW)

    out = capsys.readouterr().out
    assert code == ExitCode.OK
    assert f"probe {green.url('/health')}: 200" in out
    assert f"probe {green_h2.url('/health')}: 200" in out
    assert f"verify: every server answered through Nginx ({green.server}, {green_h2.server})" in out
    group = f"-green {{\n    server {green.server};\n    server {green_h2.server};\n"
    assert group in nginx.upstream_file.read_text()
    assert selection(nginx) == GREEN_SELECTED


def test_one_unhealthy_host_refuses_the_switch_naming_that_host(
    nginx, blue, green, green_h2, capsys
) -> None:
    green_h2.health_status = 503
    before = state(nginx)

    code = main(two_host_argv(nginx, green, green_h2), now=lambda: NOW)

    err = capsys.readouterr().err
    assert code == ExitCode.UNHEALTHY
    assert re.fullmatch(
        rf"switch: green not healthy after \d+\.\ds \({re.escape(green_h2.url('/health'))} "
        r"returned 503, expected 200\)\n",
        err,
    )
    assert state(nginx) == before
    assert selection(nginx) == BLUE_SELECTED


def test_a_smoke_url_failing_on_one_host_refuses_the_switch_naming_that_host(
    nginx, blue, green, green_h2, capsys
) -> None:
    green_h2.render_status = 500
    before = state(nginx)
    argv = [
        *two_host_argv(nginx, green, green_h2),
        "--smoke-url", green_h2.url("/render"), "--smoke-url", green.url("/render"),
        "--smoke-method", "POST", "--attempts", "2", "--interval", "0.1",
    ]  # fmt: skip

    code = main(argv, now=lambda: NOW)

    err = capsys.readouterr().err
    assert code == ExitCode.UNHEALTHY
    assert green_h2.url("/render") in err
    assert state(nginx) == before
    assert selection(nginx) == BLUE_SELECTED
