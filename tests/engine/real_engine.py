"""The real Pulumi CLI, found for the tests in tests/engine/, and a throwaway copy of the project.

The CLI is `$NOCTURNA_PULUMI_BIN/pulumi` (the bin directory scripts/install-pulumi.sh prints
last), else `pulumi` on PATH. Without one the tests skip, saying how to get it, unless
NOCTURNA_REQUIRE_ENGINE=1 (set by .ci/run after installing it): then they fail.

Every test gets its own file backend and PULUMI_HOME in a temporary directory, a passphrase,
and a copy of Pulumi.yaml and the stack files (`pulumi stack init` writes into them), with the
program itself linked, so nothing is written to the checkout or to ~/.pulumi.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from pulumi import automation as auto

ROOT = Path(__file__).resolve().parents[2]
PROGRAM_FILES = ("__main__.py", "nocturna_infra", "nginx", "venv")
# Copied, not linked: the settings refuse a smoke body file that resolves outside the project.
PROJECT_DATA = ("smoke",)


def pulumi_bin() -> Path:
    """The directory holding the `pulumi` CLI and pulumi-language-python, or skip/fail."""
    named = os.environ.get("NOCTURNA_PULUMI_BIN")
    found = Path(named) / "pulumi" if named else None
    if found is None or not found.is_file():
        on_path = shutil.which("pulumi")
        found = Path(on_path).resolve() if on_path else None
    if found is not None and found.is_file():
        return found.parent
    reason = (
        "no Pulumi CLI: run scripts/install-pulumi.sh and set NOCTURNA_PULUMI_BIN to the "
        "directory it prints last"
    )
    if os.environ.get("NOCTURNA_REQUIRE_ENGINE") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def engine_env(home: Path) -> dict[str, str]:
    """Environment for the CLI: offline, and the Python that runs these tests for programs.

    The language host built by scripts/install-pulumi.sh ignores Pulumi.yaml's `virtualenv`
    option (tools/pulumi-engine/README.md) and runs PULUMI_PYTHON_CMD.
    """
    return {
        "PULUMI_HOME": str(home),
        "PULUMI_CONFIG_PASSPHRASE": "engine-test-passphrase",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_PYTHON_CMD": sys.executable,
        "PATH": f"{pulumi_bin()}{os.pathsep}{os.environ.get('PATH', '')}",
    }


def workspace(work_dir: Path, tmp_path: Path) -> auto.LocalWorkspace:
    """A LocalWorkspace on work_dir, with a file backend under tmp_path."""
    home, state = tmp_path / "pulumi-home", tmp_path / "state"
    home.mkdir(exist_ok=True)
    state.mkdir(exist_ok=True)
    # root/bin/pulumi: the layout of scripts/install-pulumi.sh and of Pulumi's own installs.
    cli = auto.PulumiCommand(root=str(pulumi_bin().parent))
    env = engine_env(home) | {"PULUMI_BACKEND_URL": state.as_uri()}
    return auto.LocalWorkspace(work_dir=str(work_dir), env_vars=env, pulumi_command=cli)


def project_copy(tmp_path: Path) -> Path:
    """A work dir holding copies of Pulumi.yaml, the stack files and the smoke bodies, the
    program linked."""
    work = tmp_path / "project"
    work.mkdir()
    for stack_file in ROOT.glob("Pulumi*.yaml"):
        shutil.copy(stack_file, work / stack_file.name)
    for name in PROGRAM_FILES:
        if (ROOT / name).exists():
            (work / name).symlink_to(ROOT / name)
    for name in PROJECT_DATA:
        shutil.copytree(ROOT / name, work / name)
    return work
