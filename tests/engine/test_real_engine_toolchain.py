"""The engine that scripts/install-pulumi.sh provides runs a Python program end to end with the
pinned SDK: `up`, then `preview --expect-no-changes`, config and secrets included.

The program is a provider-free stand-in written here: this project's program needs the docker
and command plugins, which cannot be built here (tools/pulumi-engine/README.md). What this
proves is the chain CLI -> language host -> exec script -> SDK that every real run uses.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from pulumi import automation as auto
from real_engine import workspace

PROGRAM = textwrap.dedent(
    """\
    import pulumi

    class Slot(pulumi.ComponentResource):
        def __init__(self, name, opts=None):
            super().__init__("nocturna:index:Slot", name, None, opts)
            self.register_outputs({})

    config = pulumi.Config()
    slot = Slot(config.get("activeSlot"))
    pulumi.export("slotUrn", slot.urn)
    pulumi.export("port", config.get_int("bluePort"))
    pulumi.export("apiKey", config.require_secret("apiKey"))
    pulumi.export("organization", pulumi.get_organization())
    """
)
PROJECT = textwrap.dedent(
    """\
    name: engine-check
    runtime: python
    config:
      activeSlot: {type: string, default: blue}
      bluePort: {type: integer, default: 3014}
    """
)


def test_up_then_preview_expects_no_changes(tmp_path: Path):
    work = tmp_path / "program"
    work.mkdir()
    (work / "Pulumi.yaml").write_text(PROJECT)
    (work / "__main__.py").write_text(PROGRAM)
    stack = auto.Stack.create("check", workspace(work, tmp_path))
    stack.set_config("apiKey", auto.ConfigValue("s3cret", secret=True))

    up = stack.up()
    preview = stack.preview(expect_no_changes=True)

    assert up.summary.result == "succeeded"
    assert up.summary.resource_changes == {"create": 2}
    assert {name: out.value for name, out in up.outputs.items()} == {
        "slotUrn": "urn:pulumi:check::engine-check::nocturna:index:Slot::blue",
        "port": 3014,
        "apiKey": "s3cret",
        # The file backend's organization (the stateStack default depends on it).
        "organization": "organization",
    }
    assert up.outputs["apiKey"].secret
    assert preview.change_summary == {"same": 2}
