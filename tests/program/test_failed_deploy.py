"""What keeps traffic off a standby whose deploy failed, even once a refresh has hidden that.

A standby whose health `wait` failed is kept in the state with an initialization error, and
`#initerror` in its `replace_on_changes` makes the next `up` re-create it. A `pulumi refresh`
(or `up --refresh`) clears that error (the refresh step takes init errors only from Read), so
the retry then changes nothing and succeeds: the record and the state say the standby runs the
release. Nothing in the program can tell that standby from a healthy one; what keeps traffic
off it is the router's switch, which probes the target before it moves anything. This runs the
router command the program declares for the switch to that standby, for real, against a
standby answering 503 (docs/operations.md, "After a failed deploy").
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from ports import free_port
from program_runs import IMAGE_V1, IMAGE_V2, base_config, inputs_of, make_project, run_program

ROOT = Path(__file__).resolve().parents[2]
SWITCH = "nocturna-chart-switch"
GREEN = "nocturna-chart-green-container"


class Unhealthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def unhealthy_standby() -> Iterator[int]:
    """A green slot that runs but answers 503: its port."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Unhealthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_switch_to_a_standby_accepted_after_a_refresh_is_refused_by_its_probe(
    tmp_path: Path, unhealthy_standby: int
) -> None:
    (tmp_path / "project").mkdir()
    project = make_project(tmp_path / "project")
    upstream = tmp_path / "upstreams" / "nocturna-img-production.conf"
    upstream.parent.mkdir(mode=0o755)
    config = base_config(
        greenPort=str(unhealthy_standby),
        upstreamFile=str(upstream),
        selectionDir=str(tmp_path / "selection"),
        routerPython=sys.executable,
        probeAttempts="2",
        probeIntervalSeconds="1",
    )
    first = run_program(project, config)
    # The failed deploy of v2, refreshed and retried: the retry changes nothing, and the
    # record says green runs v2, as after a healthy deploy.
    retried = run_program(project, config, previous=first, image_id=IMAGE_V2)
    switch = run_program(project, config | {"activeSlot": "green"}, previous=retried)

    ran = subprocess.run(
        inputs_of(switch, SWITCH)["create"],
        shell=True,
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert inputs_of(retried, GREEN)["image"] == IMAGE_V2
    assert inputs_of(first, GREEN)["image"] == IMAGE_V1
    assert ran.returncode == 3, ran.stderr
    assert re.fullmatch(
        rf"switch: green not healthy after \d+\.\ds \(http://127\.0\.0\.1:{unhealthy_standby}"
        r"/health returned 503, expected 200\)\n",
        ran.stderr,
    )
    assert not upstream.exists()  # Nginx was never pointed anywhere
    assert not (tmp_path / "selection").exists()
