from __future__ import annotations

import harness

from nocturna_infra.program.components.router import Router, RouterArgs

ARGS = RouterArgs(
    switch_command="venv/bin/python -m nocturna_infra.switch --slot green",
    live_slot="green",
    upstream_file="/etc/nginx/upstreams/app.conf",
    upstream_name="app",
    live_server="127.0.0.1:3012",
    live_container="c0ffee",
    standby_servers="blue=127.0.0.1:3014",
    selection_dir="/var/lib/nocturna/switch",
)


def test_router_runs_the_switch_and_never_undoes_it() -> None:
    run = harness.run(lambda: Router("svc", ARGS))

    switch = run.mocks.resources["svc-switch"]
    assert switch.typ == "command:local:Command"
    assert switch.inputs == {
        "create": "venv/bin/python -m nocturna_infra.switch --slot green",
        "triggers": [
            "green",
            "127.0.0.1:3012",
            "blue=127.0.0.1:3014",
            "/etc/nginx/upstreams/app.conf",
            "app",
            "/var/lib/nocturna/switch",
            "c0ffee",
        ],
        "logging": "stdoutAndStderr",
    }
    assert "delete" not in switch.inputs
    assert list(run.monitor.requests["svc-switch"].replaceOnChanges) == ["triggers[*]"]
    assert run.monitor.requests["svc"].type == "nocturna:index:Router"
