"""The StackReference the program reads its record through, under the real engine on a file
backend: the name the program's own settings choose resolves, in both of the file backend's
layouts, and the last run's `deployment` output is read back (tests/engine/real_engine.py).

The stand-in program is this project's: `Settings.from_config` picks the `stateStack` default
and `checked_previous_state` declares the reference and parses the record, exactly as
`program.stack.main` does. It declares no resource of a provider (the docker and command
plugins cannot be built here), and exports a `deployment` record for the next run to read.
Pulumi Cloud cannot run here: its form (`<organization>/<project>/<stack>`) is tested under
the mocks only (tests/program/test_stack.py).
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
from pulumi import automation as auto
from real_engine import ROOT, project_copy, workspace

STAND_IN = textwrap.dedent(
    """\
    from pathlib import Path

    import pulumi

    from nocturna_infra.program.stack import checked_previous_state
    from nocturna_infra.settings import Settings

    settings = Settings.from_config(pulumi.Config(), Path.cwd())
    previous = checked_previous_state(settings)
    pulumi.export("stateStack", settings.state_stack)
    pulumi.export("readLiveSlot", previous.live_slot.value if previous else "(no record)")
    pulumi.export(
        "deployment",
        {"version": 1, "liveSlot": settings.active_slot.value, "slots": {}},
    )
    """
)
# The file backend's layouts: per project (the default) and the legacy one (stacks of every
# project in one directory), which an old state directory keeps; CLI 3.274 refuses it unless
# told to ignore its deprecation.
LAYOUTS = {
    "project": {},
    "legacy": {
        "PULUMI_DIY_BACKEND_LEGACY_LAYOUT": "true",
        "PULUMI_DIY_BACKEND_IGNORE_DEPRECATION_ERROR": "1",
    },
}


def stand_in_stack(tmp_path: Path, layout: str) -> auto.Stack:
    """Stack `production` of the stand-in on a file backend of its own under tmp_path."""
    tmp_path.mkdir(exist_ok=True)
    work = project_copy(tmp_path)
    (work / "__main__.py").unlink()
    (work / "__main__.py").write_text(STAND_IN)
    for build_file in ("Dockerfile", "Dockerfile.dockerignore"):
        shutil.copy(ROOT / build_file, work / build_file)
    (work / "service").mkdir()
    ws = workspace(work, tmp_path)
    ws.env_vars.update(LAYOUTS[layout])
    stack = auto.Stack.create("production", ws)
    stack.set_config("apiKey", auto.ConfigValue("k", secret=True))
    stack.set_config("buildContext", auto.ConfigValue("service"))
    return stack


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_the_default_state_stack_reads_the_last_runs_record(tmp_path: Path, layout: str):
    stack = stand_in_stack(tmp_path, layout)

    first = stack.up()
    stack.set_config("activeSlot", auto.ConfigValue("green"))
    second = stack.up()

    assert first.outputs["stateStack"].value == "production"
    assert first.outputs["readLiveSlot"].value == "(no record)"  # a fresh stack
    assert second.outputs["readLiveSlot"].value == "blue"  # what the first run recorded


def test_the_three_part_name_reads_in_the_project_layout_only(tmp_path: Path):
    """Why the file backend's default is the bare name, and not Pulumi Cloud's form."""
    full_name = auto.ConfigValue("organization/nocturna-infra/production")
    project_layout = stand_in_stack(tmp_path / "project-layout", "project")
    project_layout.up()
    project_layout.set_config("stateStack", full_name)
    legacy = stand_in_stack(tmp_path / "legacy-layout", "legacy")
    legacy.set_config("stateStack", full_name)

    read = project_layout.up()
    with pytest.raises(auto.CommandError) as failed:
        legacy.up()

    assert read.outputs["readLiveSlot"].value == "blue"
    assert (
        "a stack name may only contain alphanumeric, hyphens, underscores, or periods: "
        "invalid character '/' at position 12"
    ) in str(failed.value)


def test_a_set_state_stack_reads_another_stack_on_the_same_backend(tmp_path: Path):
    """`stateStack` as the README says to set it on a self-managed backend: the bare name."""
    production = stand_in_stack(tmp_path, "project")
    production.set_config("activeSlot", auto.ConfigValue("green"))
    production.up()
    staging = auto.Stack.create("staging", production.workspace)
    staging.set_config("apiKey", auto.ConfigValue("k", secret=True))
    staging.set_config("buildContext", auto.ConfigValue("service"))
    staging.set_config("stateStack", auto.ConfigValue("production"))

    read = staging.up()

    assert read.outputs["stateStack"].value == "production"
    assert read.outputs["readLiveSlot"].value == "green"  # production's record, not staging's
