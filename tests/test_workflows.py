"""The GitHub workflows lint clean with actionlint (offline, bundled binary)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
CONFIG = ROOT / ".github" / "actionlint.yaml"


def actionlint(workflow: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("actionlint", path=str(Path(sys.executable).parent))
    assert binary, "actionlint is missing: pip install -r requirements.txt"
    return subprocess.run(
        [binary, "-no-color", "-config-file", str(CONFIG), str(workflow)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )


def test_there_are_test_and_preview_workflows() -> None:
    assert [path.name for path in WORKFLOWS] == ["preview.yml", "test.yml"]


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda path: path.name)
def test_workflow_lints_clean(workflow: Path) -> None:
    result = actionlint(workflow)

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_a_misspelt_pulumi_action_input_is_caught(tmp_path: Path) -> None:
    broken = tmp_path / "preview.yml"
    text = (ROOT / ".github" / "workflows" / "preview.yml").read_text()
    broken.write_text(text.replace("comment-on-pr: true", "coment-on-pr: true"))

    result = actionlint(broken)

    assert result.returncode != 0
    assert 'input "coment-on-pr" is not defined in action "pulumi/actions@v7"' in result.stdout
