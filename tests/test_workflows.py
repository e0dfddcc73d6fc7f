"""The GitHub workflows lint clean with actionlint and keep the trust rules of issue 13."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.workflow_rules import (
    VERIFIED_PINS,
    Environments,
    Workflow,
    drift_alarm_problems,
    host_labels,
    host_runner_problems,
    permission_problems,
    persisted_credentials,
    preview_preflight_problems,
    secret_problems,
    unpinned_actions,
)

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW_PATHS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
CONFIG = ROOT / ".github" / "actionlint.yaml"
# main's preview.yml before the redesign (commit 7a60a2d): every rule must flag it.
BEFORE = Workflow.load(
    Path(__file__).parent / "workflow_fixtures" / "preview-main-7a60a2d.yml", "old preview.yml"
)
WORKFLOWS = [Workflow.load(path) for path in WORKFLOW_PATHS]
LABELS = host_labels(CONFIG.read_text())
ENVIRONMENTS = Environments.from_docs((ROOT / "docs" / "operations.md").read_text())
STACKS = sorted(path.name.split(".")[1] for path in ROOT.glob("Pulumi.*.yaml"))
PINNED = re.compile(r"@([0-9a-f]{40}) # (v(\d+)(?:\.\d+)*)$", re.MULTILINE)


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


def with_major_tags(text: str) -> str:
    """The workflow with each SHA pin replaced by its major tag (`@v7`).

    actionlint checks the inputs of popular actions only when they are referenced by tag;
    linting this copy as well keeps a misspelt input from passing unseen.
    """
    return PINNED.sub(lambda match: f"@v{match[3]}", text)


def test_there_are_test_preview_and_drift_workflows() -> None:
    assert [path.name for path in WORKFLOW_PATHS] == ["drift.yml", "preview.yml", "test.yml"]


@pytest.mark.parametrize("workflow", WORKFLOW_PATHS, ids=lambda path: path.name)
def test_workflow_lints_clean(workflow: Path, tmp_path: Path) -> None:
    tagged = tmp_path / workflow.name
    tagged.write_text(with_major_tags(workflow.read_text()))

    for path in (workflow, tagged):
        result = actionlint(path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout == ""


def test_every_pin_is_linted_by_its_tag() -> None:
    for path in WORKFLOW_PATHS:
        assert re.search(r"@[0-9a-f]{40}", with_major_tags(path.read_text())) is None, path.name


def test_a_misspelt_pulumi_action_input_is_caught(tmp_path: Path) -> None:
    broken = tmp_path / "preview.yml"
    text = (ROOT / ".github" / "workflows" / "preview.yml").read_text()
    broken.write_text(
        with_major_tags(text.replace("comment-on-summary: true", "coment-on-summary: true"))
    )

    result = actionlint(broken)

    assert result.returncode != 0
    assert 'input "coment-on-summary" is not defined in action "pulumi/actions@v7"' in result.stdout


def test_the_documented_environments() -> None:
    expected = Environments(
        reviewed=frozenset({"preview"}), main_only=frozenset({"production-host"})
    )

    assert expected == ENVIRONMENTS
    assert sorted(LABELS) == ["pulumi-state"]


RULES: dict[str, Callable[[Workflow], list[str]]] = {
    "pinned actions": unpinned_actions,
    "least permissions": permission_problems,
    "no persisted credentials": persisted_credentials,
    "host runner only from main": lambda workflow: host_runner_problems(
        workflow, LABELS, ENVIRONMENTS
    ),
    "secrets only behind an environment": lambda workflow: secret_problems(workflow, ENVIRONMENTS),
    "previews wait for the preflight": lambda workflow: preview_preflight_problems(
        workflow, LABELS
    ),
}


@pytest.mark.parametrize("rule", RULES, ids=str)
@pytest.mark.parametrize("workflow", WORKFLOWS, ids=lambda workflow: workflow.name)
def test_workflow_keeps_rule(rule: str, workflow: Workflow) -> None:
    assert RULES[rule](workflow) == []


def test_the_old_preview_had_unpinned_actions() -> None:
    assert unpinned_actions(BEFORE) == [
        "old preview.yml: unit-tests: actions/checkout@v4 is not pinned to a full commit SHA",
        "old preview.yml: unit-tests: actions/setup-python@v5 is not pinned to a full commit SHA",
        "old preview.yml: preview: actions/checkout@v4 is not pinned to a full commit SHA",
        "old preview.yml: preview: actions/checkout@v4 is not pinned to a full commit SHA",
        "old preview.yml: preview: pulumi/actions@v7 is not pinned to a full commit SHA",
    ]


def test_the_old_preview_had_broad_permissions() -> None:
    assert permission_problems(BEFORE) == [
        "old preview.yml: top-level permissions must be {}, "
        "got {'contents': 'read', 'pull-requests': 'write'}",
        "old preview.yml: unit-tests: no job-level permissions map",
        "old preview.yml: preview: no job-level permissions map",
    ]


def test_the_old_preview_persisted_credentials() -> None:
    assert persisted_credentials(BEFORE) == [
        "old preview.yml: unit-tests: actions/checkout without `persist-credentials: false`",
        "old preview.yml: preview: actions/checkout without `persist-credentials: false`",
        "old preview.yml: preview: actions/checkout without `persist-credentials: false`",
    ]


def test_the_old_preview_ran_pull_requests_on_the_host() -> None:
    assert host_runner_problems(BEFORE, LABELS, ENVIRONMENTS) == [
        "old preview.yml: preview: runs on the Docker host but is triggered by pull_request",
        "old preview.yml: preview: runs on the Docker host without an environment documented "
        "as main-only (got None)",
    ]


def test_the_old_preview_gave_pull_requests_the_passphrase() -> None:
    assert secret_problems(BEFORE, ENVIRONMENTS) == [
        "old preview.yml: preview: secrets.PULUMI_BACKEND_URL without an environment "
        "documented as requiring a reviewer (got None)",
        "old preview.yml: preview: secrets.PULUMI_CONFIG_PASSPHRASE without an environment "
        "documented as requiring a reviewer (got None)",
    ]


def test_the_preview_before_the_preflight_is_flagged() -> None:
    """main's preview.yml before issue 20 ran every preview whatever the runner could reach."""
    before = Workflow.load(
        Path(__file__).parent / "workflow_fixtures" / "preview-main-24788a3.yml",
        "preview.yml at 24788a3",
    )

    assert preview_preflight_problems(before, LABELS) == [
        "preview.yml at 24788a3: preview: no `preflight` step running "
        "nocturna_infra.preview_preflight"
    ]


def test_a_preview_not_waiting_for_the_preflight_is_flagged() -> None:
    preview = next(workflow for workflow in WORKFLOWS if workflow.name == "preview.yml")
    text = preview.text.replace("steps.preflight.outputs.production == ''", "true")
    text = text.replace("preview_preflight staging production", "preview_preflight staging")
    changed = Workflow("preview.yml", text, yaml.safe_load(text))

    assert preview_preflight_problems(changed, LABELS) == [
        "preview.yml: preview: the preflight does not check stack production",
        "preview.yml: preview: the preview of production does not wait for the preflight's verdict",
    ]


def test_every_stack_has_a_drift_alarm() -> None:
    assert STACKS == ["production", "staging"]
    assert drift_alarm_problems(WORKFLOWS, STACKS, LABELS) == []


def test_the_old_workflows_had_no_drift_alarm() -> None:
    assert drift_alarm_problems([BEFORE], STACKS, LABELS) == [
        "stack production: no scheduled `pulumi preview --expect-no-changes` on the Docker host",
        "stack staging: no scheduled `pulumi preview --expect-no-changes` on the Docker host",
    ]


def test_the_pull_request_preview_covers_every_stack_off_the_host() -> None:
    preview = next(workflow for workflow in WORKFLOWS if workflow.name == "preview.yml")
    job = preview.jobs["preview"]
    stacks = sorted(
        step["with"]["stack-name"]
        for step in job["steps"]
        if str(step.get("uses", "")).startswith("pulumi/actions@")
    )

    assert stacks == STACKS
    assert job["runs-on"] == "ubuntu-latest"
    assert job["environment"] in ENVIRONMENTS.reviewed
    # A refresh would read the runner's own (empty) Docker daemon as if it were the host's.
    assert all(
        "refresh" not in step.get("with", {})
        for step in job["steps"]
        if str(step.get("uses", "")).startswith("pulumi/actions@")
    )


def test_a_pin_that_does_not_match_its_version_comment_is_flagged() -> None:
    checkout = VERIFIED_PINS["actions/checkout", "v7.0.1"]
    text = (
        "on: push\npermissions: {}\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
        f"      - uses: actions/checkout@{checkout} # v6.0.3\n"
        f"      - uses: actions/checkout@{checkout}\n"
    )
    workflow = Workflow("w.yml", text, yaml.safe_load(text))

    assert unpinned_actions(workflow) == [
        f"w.yml: a: actions/checkout@{checkout} is not the verified commit of "
        "actions/checkout v6.0.3",
        f"w.yml: a: actions/checkout@{checkout} is not the verified commit of "
        "actions/checkout v6.0.3",
    ]


# The comment job's script, run with a stand-in `gh` that records its calls.
FAKE_GH = """#!/bin/sh
echo "$*" >> "$GH_LOG"
for arg in "$@"; do
  case "$arg" in body=@*) cat "${arg#body=@}" > "$GH_BODY" ;; esac
done
case "$*" in *--paginate*) [ -n "$EXISTING" ] && echo "$EXISTING" ;; esac
exit 0
"""


def run_comment_step(
    tmp_path: Path, existing: str, staging: str, **blocked: str
) -> tuple[list[str], str]:
    preview = next(workflow for workflow in WORKFLOWS if workflow.name == "preview.yml")
    step = preview.jobs["comment"]["steps"][0]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    gh = bin_dir / "gh"
    gh.write_text(FAKE_GH)
    gh.chmod(gh.stat().st_mode | stat.S_IEXEC)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "GH_LOG": str(tmp_path / "calls"),
        "GH_BODY": str(tmp_path / "body"),
        "EXISTING": existing,
        "GH_REPO": "owner/nocturna-infra",
        "PR_NUMBER": "12",
        "RESULT": "success",
        "RUN_URL": "https://github.com/owner/nocturna-infra/actions/runs/9",
        "STAGING": staging,
        "PRODUCTION": "",
        **blocked,
    }
    subprocess.run(["bash", "-c", step["run"]], cwd=tmp_path, env=env, check=True)
    return (tmp_path / "calls").read_text().splitlines(), (tmp_path / "body").read_text()


def test_the_comment_job_posts_one_comment(tmp_path: Path) -> None:
    calls, body = run_comment_step(tmp_path, existing="", staging="~ docker:index:Container")

    assert (
        calls[-1]
        == "api --method POST repos/owner/nocturna-infra/issues/12/comments -F body=@comment.md"
    )
    assert body == (
        "<!-- nocturna-infra preview -->\n## Pulumi preview: success\n\n"
        "### staging\n\n```diff\n~ docker:index:Container\n```\n\n"
        "### production\n\nNo preview output: the preview failed or did not run; "
        "see the run log.\n\n"
        "[Run log](https://github.com/owner/nocturna-infra/actions/runs/9)\n"
    )


def test_the_comment_job_edits_its_earlier_comment(tmp_path: Path) -> None:
    calls, _ = run_comment_step(tmp_path, existing="4242", staging="x")

    assert (
        calls[-1]
        == "api --method PATCH repos/owner/nocturna-infra/issues/comments/4242 -F body=@comment.md"
    )
    assert not any("POST" in call for call in calls)


def test_the_comment_says_why_a_stack_was_not_previewed(tmp_path: Path) -> None:
    reason = "the preview of production cannot run on this runner: host render2's dockerHost"
    _, body = run_comment_step(tmp_path, existing="", staging="x", PRODUCTION_BLOCKED=reason)

    assert body.startswith(
        "<!-- nocturna-infra preview -->\n## Pulumi preview: success, not previewed: production\n"
    )
    assert f"### production\n\nNot previewed: {reason}\n\n" in body
    assert "### staging\n\n```diff\nx\n```\n\n" in body
