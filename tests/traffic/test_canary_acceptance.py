"""Issue 18's acceptance: the progressive switch against a real Nginx running the shipped
site, fixture backends and mixed keep-alive client traffic. Before issue 18 there was no
--canary-steps: every case fails on that code (usage error, exit 2)."""

from __future__ import annotations

import json
import time
from collections import Counter

from nocturna_infra.traffic.canary import record_path
from nocturna_infra.traffic.exits import ExitCode
from nocturna_infra.traffic.switch import main
from tests.nginx_instance import NginxInstance, switch_argv
from tests.traffic.test_gates import NOW, selection, watch_flags
from tests.traffic.test_watch_acceptance import MixedLoad

CHART = "/chart"
CHART_CLASS = json.dumps([{"method": "GET", "pathPrefix": CHART, "minRequests": 3}])
LOAD = [("GET", "/", 0.002), ("GET", "/", 0.002), ("GET", CHART, 0.005)]


def canary_flags(nginx: NginxInstance, shares: str = "5,25,50") -> list[str]:
    return [
        *watch_flags(nginx, "2", "--watch-routes", CHART_CLASS),
        "--canary-steps", shares,
        "--canary-min-requests", "20",
        "--canary-step-seconds", "60",
    ]  # fmt: skip


def with_steps_written(nginx: NginxInstance, blue, green) -> None:
    """As on a host where an earlier switch already ran with --canary-steps: the maps and
    the steps file are loaded (writing them is a reload, done once, as for new servers)."""
    argv = switch_argv(nginx, blue, *canary_flags(nginx), other=green)
    assert main(argv, now=lambda: NOW) == ExitCode.OK
    assert nginx.steps_file.exists()


def canary_record(nginx: NginxInstance) -> dict:
    return json.loads(record_path(nginx.upstream_file).read_text())


def test_release_failing_one_route_is_aborted_at_the_first_step(nginx, blue, green, capsys) -> None:
    green.fail_routes = (CHART,)
    with_steps_written(nginx, blue, green)
    argv = switch_argv(nginx, green, *canary_flags(nginx))

    with MixedLoad(nginx, LOAD) as load:
        code = main(argv, now=lambda: NOW)
        time.sleep(0.3)

    captured = capsys.readouterr()
    assert code == ExitCode.CANARY_ABORTED, captured.err
    assert "regressed at step 1 (5 %): GET /chart" in captured.err
    assert selection(nginx) == ["nocturna-img-production.blue"]  # no step marker left
    saved = canary_record(nginx)
    assert (saved["result"], saved["share"], len(saved["steps"])) == ("aborted", 0, 1)
    counts = load.counts()
    green_chart_failed = counts[("green", f"GET {CHART}", 500)]
    chart_total = sum(n for (_, route, _), n in counts.items() if route == f"GET {CHART}")
    print(f"\naborted canary: {green_chart_failed} of {chart_total} GET {CHART} failed (green)")
    failures = [a for a in load.answers if a[2] != 200]
    assert {(slot, route) for slot, route, _ in failures} == {("green", f"GET {CHART}")}
    assert 3 <= green_chart_failed <= 0.05 * chart_total + 20, (green_chart_failed, chart_total)
    step = saved["steps"][0]
    row = next(r for r in step["comparison"] if r["class"] == f"GET {CHART}")
    assert row["after"]["failedPercent"] == 100.0
    assert row["before"]["failedPercent"] == 0.0


def test_good_release_steps_through_every_share_to_100(nginx, blue, green, capsys) -> None:
    with_steps_written(nginx, blue, green)
    argv = switch_argv(nginx, green, *canary_flags(nginx))

    with MixedLoad(nginx, LOAD) as load:
        code = main(argv, now=lambda: NOW)
        time.sleep(0.3)

    captured = capsys.readouterr()
    assert code == ExitCode.OK, captured.err
    assert selection(nginx) == ["nocturna-img-production.green"]
    assert nginx.slot_served() == "green"
    saved = canary_record(nginx)
    assert (saved["result"], saved["share"]) == ("passed", 100)
    assert [(s["share"], s["result"]) for s in saved["steps"]] == [
        (5, "passed"),
        (25, "passed"),
        (50, "passed"),
    ]
    assert [a for a in load.answers if a[2] != 200] == []
    assert "servers unchanged; not rewritten, no reload" in captured.out
    assert "nginx reload" not in captured.out.split("switch nocturna-img-production to green")[1]
    assert Counter(slot for slot, _, _ in load.answers)["green"] > 0
    out = captured.out
    assert "at most 180s before the full flip" in out
    for index, share in enumerate((5, 25, 50), start=1):
        assert f"canary step {index}/3: green {share} %" in out


def test_a_step_left_by_a_killed_switch_is_cleared_before_the_next_canary(
    nginx, blue, green, capsys
) -> None:
    """A SIGKILLed progressive switch back to blue can leave `blue-50`: harmless while blue
    is selected, but half the traffic would go back to blue after the next flip to green."""
    with_steps_written(nginx, blue, green)
    (nginx.selection_dir / "nocturna-img-production.blue-50").write_text("blue 50%\n")

    with MixedLoad(nginx, LOAD):
        code = main(switch_argv(nginx, green, *canary_flags(nginx)), now=lambda: NOW)

    assert code == ExitCode.OK, capsys.readouterr().err
    assert selection(nginx) == ["nocturna-img-production.green"]
    assert {nginx.slot_served() for _ in range(40)} == {"green"}


def test_rejected_canary_maps_leave_both_files_as_they_were(nginx, blue, green, capsys) -> None:
    """`nginx -t` fails (the operator's other config is broken): the upstream file is put
    back byte for byte and the steps file, which names the new maps, is gone again."""
    before = nginx.upstream_file.read_bytes()
    nginx.extra_conf.write_text("this is not nginx config;\n")

    code = main(switch_argv(nginx, green, *canary_flags(nginx)), now=lambda: NOW)

    assert code == ExitCode.CONFIG_REJECTED, capsys.readouterr().err
    assert nginx.upstream_file.read_bytes() == before
    assert not nginx.steps_file.exists()
    assert selection(nginx) == ["nocturna-img-production.blue"]
