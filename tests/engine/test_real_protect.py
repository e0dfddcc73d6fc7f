"""`protect` under the real engine, and the flag that switches it off (tests/engine/real_engine.py).

The program protects the live slot so that no `up` can replace or delete it. CLI 3.256+ has
`pulumi up --ignore-protect`, which skips that check for the whole run: the runbook forbids it
(docs/operations.md, "Never `--ignore-protect`"). A replacement needs a provider, and the docker
plugin cannot be built here, so this shows the delete: a protected stand-in of the live slot
(a component of the same type, no provider) that the program stops declaring.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from pulumi import automation as auto
from real_engine import pulumi_bin, workspace

PROGRAM = textwrap.dedent(
    """\
    import pulumi

    class SlotContainer(pulumi.ComponentResource):
        def __init__(self, name, opts=None):
            super().__init__("nocturna:index:SlotContainer", name, None, opts)
            self.register_outputs({})

    if pulumi.Config().get_bool("declareLive") is not False:
        SlotContainer("nocturna-chart-blue", pulumi.ResourceOptions(protect=True))
    """
)
PROJECT = "name: protect-check\nruntime: python\n"
LIVE = "urn:pulumi:production::protect-check::nocturna:index:SlotContainer::nocturna-chart-blue"


def cli(*args: str) -> str:
    return subprocess.run(
        [str(pulumi_bin() / "pulumi"), *args], capture_output=True, text=True, check=True
    ).stdout


def test_up_help_offers_ignore_protect():
    assert (
        "--ignore-protect                          Ignore the protect resource option for this "
        "operation, allowing protected resources to be deleted or replaced."
    ) in cli("up", "--help")


def test_protect_stops_the_delete_and_ignore_protect_does_it(tmp_path: Path):
    work = tmp_path / "program"
    work.mkdir()
    (work / "Pulumi.yaml").write_text(PROJECT)
    (work / "__main__.py").write_text(PROGRAM)
    ws = workspace(work, tmp_path)
    stack = auto.Stack.create("production", ws)
    stack.up()
    stack.set_config("declareLive", auto.ConfigValue("false"))

    with pytest.raises(auto.CommandError) as refused:
        stack.up()
    forced = subprocess.run(
        [str(pulumi_bin() / "pulumi"), "up", "--yes", "--ignore-protect", "-s", "production"],
        cwd=work,
        env={**os.environ, **ws.env_vars},
        capture_output=True,
        text=True,
        check=False,
    )

    assert f'error: resource "{LIVE}" cannot be deleted\n    because it is protected.' in str(
        refused.value
    )
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "- 1 deleted" in forced.stdout
    assert stack.export_stack().deployment["resources"][1:] == []
