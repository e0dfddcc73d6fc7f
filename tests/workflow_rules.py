"""Trust rules for the GitHub workflows that actionlint cannot see (issue 13).

Each rule takes parsed workflows and returns problems as sentences; an empty list means the
rule holds. tests/test_workflows.py applies them to .github/workflows and to main's
preview.yml as it was before the redesign (every rule must flag that file).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

# Pins checked against the actions' own repositories (tag -> commit, `git rev-parse
# vX.Y.Z^{commit}` in a snapshot of each repository, 2026-11-30). Updating an action means
# updating this table after checking the new tag the same way.
VERIFIED_PINS: Mapping[tuple[str, str], str] = {
    ("actions/checkout", "v7.0.1"): "3d3c42e5aac5ba805825da76410c181273ba90b1",
    ("actions/setup-python", "v7.0.0"): "5fda3b95a4ea91299a34e894583c3862153e4b97",
    ("pulumi/actions", "v7.0.0"): "8e5e406f4007fca908480587cb9893c07090f58d",
}

# Triggers under which only code from main runs (and the PR's copy of a workflow never does).
MAIN_ONLY_TRIGGERS = frozenset({"push", "schedule", "workflow_dispatch"})
# Triggers that run a pull request's code or its copy of the workflow.
PULL_REQUEST_TRIGGERS = frozenset({"pull_request", "pull_request_target"})

_SHA = re.compile(r"^[0-9a-f]{40}$")
_SECRET = re.compile(r"secrets\.([A-Za-z_][A-Za-z0-9_]*)|secrets\[")


@dataclass(frozen=True)
class Workflow:
    name: str
    text: str
    doc: Mapping[Any, Any]

    @classmethod
    def load(cls, path: Path, name: str | None = None) -> Workflow:
        text = path.read_text()
        return cls(name or path.name, text, yaml.safe_load(text))

    @property
    def on(self) -> Any:
        # PyYAML reads the bare key `on` as the boolean True.
        return self.doc.get("on", self.doc.get(True))

    @property
    def triggers(self) -> frozenset[str]:
        on = self.on
        if isinstance(on, str):
            return frozenset({on})
        if isinstance(on, list):
            return frozenset(on)
        return frozenset(on or {})

    @property
    def jobs(self) -> Mapping[str, Mapping[str, Any]]:
        return dict(self.doc.get("jobs") or {})

    def push_branches(self) -> list[str]:
        push = self.on.get("push") if isinstance(self.on, dict) else None
        return list((push or {}).get("branches") or [])


@dataclass(frozen=True)
class Environments:
    """GitHub environments as docs/operations.md documents them (its environments table)."""

    reviewed: frozenset[str]
    """Environments that require a reviewer before a job using them starts."""
    main_only: frozenset[str]
    """Environments whose deployment branches are main only."""

    @classmethod
    def from_docs(cls, operations_md: str) -> Environments:
        reviewed, main_only = set(), set()
        for line in operations_md.splitlines():
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if len(cells) < 4 or not re.fullmatch(r"`[a-z-]+`", cells[0]):
                continue
            name = cells[0].strip("`")
            if cells[2] == "`main` only":
                main_only.add(name)
            if cells[3].startswith("yes"):
                reviewed.add(name)
        return cls(frozenset(reviewed), frozenset(main_only))


def host_labels(actionlint_config: str) -> frozenset[str]:
    """Labels that only the Docker host's runner carries (from .github/actionlint.yaml)."""
    config = yaml.safe_load(actionlint_config)
    return frozenset(config["self-hosted-runner"]["labels"])


def _steps(job: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(job.get("steps") or [])


def _uses(workflow: Workflow) -> Iterator[tuple[str, str]]:
    for job_name, job in workflow.jobs.items():
        if "uses" in job:
            yield job_name, str(job["uses"])
        for step in _steps(job):
            if "uses" in step:
                yield job_name, str(step["uses"])


def _environment(job: Mapping[str, Any]) -> str | None:
    environment = job.get("environment")
    name = environment.get("name") if isinstance(environment, dict) else environment
    return None if name is None else str(name)


def _runs_on_host(job: Mapping[str, Any], labels: frozenset[str]) -> bool:
    runs_on = job.get("runs-on")
    if isinstance(runs_on, dict):
        names = [runs_on.get("group"), *(runs_on.get("labels") or [])]
    elif isinstance(runs_on, list):
        names = runs_on
    else:
        names = [runs_on]
    return any(name == "self-hosted" or name in labels for name in names)


def unpinned_actions(workflow: Workflow) -> list[str]:
    """Every action is pinned to the full commit SHA of a checked tag, named in a comment."""
    problems = []
    for job_name, uses in _uses(workflow):
        if uses.startswith(("./", "docker://")):
            continue
        action, _, ref = uses.partition("@")
        where = f"{workflow.name}: {job_name}: {uses}"
        if not _SHA.match(ref):
            problems.append(f"{where} is not pinned to a full commit SHA")
            continue
        comment = re.search(
            rf"uses:\s*{re.escape(uses)}\s*#\s*(v\d+(?:\.\d+)*)\s*$", workflow.text, re.MULTILINE
        )
        if comment is None:
            problems.append(f"{where} has no `# vX.Y.Z` comment naming its version")
        elif VERIFIED_PINS.get((action, comment[1])) != ref:
            problems.append(f"{where} is not the verified commit of {action} {comment[1]}")
    return problems


def permission_problems(workflow: Workflow) -> list[str]:
    """`permissions: {}` at the top; each job grants itself only what it needs.

    A job that checks out code may read contents and nothing else; a write permission
    belongs only in a job that runs no checked-out code.
    """
    problems = []
    if workflow.doc.get("permissions", None) != {}:
        problems.append(
            f"{workflow.name}: top-level permissions must be {{}}, "
            f"got {workflow.doc.get('permissions')!r}"
        )
    for job_name, job in workflow.jobs.items():
        permissions = job.get("permissions")
        if not isinstance(permissions, dict):
            problems.append(f"{workflow.name}: {job_name}: no job-level permissions map")
            continue
        checks_out = any(
            str(step.get("uses", "")).startswith("actions/checkout@") for step in _steps(job)
        )
        for scope, level in permissions.items():
            if level == "write" and checks_out:
                problems.append(
                    f"{workflow.name}: {job_name}: `{scope}: write` in a job that checks out code"
                )
            elif checks_out and (scope, level) != ("contents", "read"):
                problems.append(f"{workflow.name}: {job_name}: `{scope}: {level}` is not needed")
    return problems


def persisted_credentials(workflow: Workflow) -> list[str]:
    """No checkout leaves the job token in .git/config (nothing here pushes)."""
    return [
        f"{workflow.name}: {job_name}: actions/checkout without `persist-credentials: false`"
        for job_name, job in workflow.jobs.items()
        for step in _steps(job)
        if str(step.get("uses", "")).startswith("actions/checkout@")
        and (step.get("with") or {}).get("persist-credentials") is not False
    ]


def host_runner_problems(
    workflow: Workflow, labels: frozenset[str], environments: Environments
) -> list[str]:
    """A job on the Docker host runs only main's code, with a main-only environment.

    So no pull-request workflow names the host's runner at all (approved or not), and the
    host's secrets are released only to runs from main.
    """
    problems = []
    for job_name, job in workflow.jobs.items():
        if not _runs_on_host(job, labels):
            continue
        where = f"{workflow.name}: {job_name}: runs on the Docker host"
        foreign = sorted(workflow.triggers - MAIN_ONLY_TRIGGERS)
        if foreign:
            problems.append(f"{where} but is triggered by {', '.join(foreign)}")
        if "push" in workflow.triggers and workflow.push_branches() != ["main"]:
            problems.append(f"{where} on pushes to branches other than main")
        name = _environment(job)
        if name not in environments.main_only:
            problems.append(
                f"{where} without an environment documented as main-only (got {name!r})"
            )
    return problems


def secret_problems(workflow: Workflow, environments: Environments) -> list[str]:
    """Secrets only inside environment-gated jobs (there are no repository secrets).

    In a pull-request workflow the environment must require a reviewer; elsewhere it must
    be main-only. `secrets.GITHUB_TOKEN` is the job token, not a secret of ours.
    """
    problems = []
    outside_jobs = {key: value for key, value in workflow.doc.items() if key != "jobs"}
    for secret in _secret_names(outside_jobs):
        problems.append(f"{workflow.name}: secrets.{secret} outside any job")
    from_pull_requests = bool(workflow.triggers & PULL_REQUEST_TRIGGERS)
    allowed = environments.reviewed if from_pull_requests else environments.main_only
    for job_name, job in workflow.jobs.items():
        name = _environment(job)
        if name in allowed:
            continue
        for secret in _secret_names(job):
            kind = "requiring a reviewer" if from_pull_requests else "main-only"
            problems.append(
                f"{workflow.name}: {job_name}: secrets.{secret} without an environment "
                f"documented as {kind} (got {name!r})"
            )
    return problems


def _secret_names(node: Any) -> list[str]:
    text = yaml.safe_dump(node, width=10_000)
    return sorted(
        {match[1] or "[...]" for match in _SECRET.finditer(text)} - {"GITHUB_TOKEN"},
    )


def drift_alarm_problems(
    workflows: list[Workflow], stacks: list[str], labels: frozenset[str]
) -> list[str]:
    """Every stack has a scheduled, manually startable `preview --expect-no-changes` on the host."""
    covered: set[str] = set()
    for workflow in workflows:
        if not {"schedule", "workflow_dispatch"} <= workflow.triggers:
            continue
        for job in workflow.jobs.values():
            if not _runs_on_host(job, labels):
                continue
            matrix = (job.get("strategy") or {}).get("matrix") or {}
            for step in _steps(job):
                given = step.get("with") or {}
                if not str(step.get("uses", "")).startswith("pulumi/actions@"):
                    continue
                if given.get("command") != "preview" or given.get("expect-no-changes") is not True:
                    continue
                stack = str(given.get("stack-name", ""))
                if stack == "${{ matrix.stack }}":
                    covered.update(str(name) for name in matrix.get("stack") or [])
                else:
                    covered.add(stack)
    return [
        f"stack {stack}: no scheduled `pulumi preview --expect-no-changes` on the Docker host"
        for stack in stacks
        if stack not in covered
    ]


PREFLIGHT_MODULE: Final = "nocturna_infra.preview_preflight"


def preview_preflight_problems(workflow: Workflow, labels: frozenset[str]) -> list[str]:
    """Off the host, every `pulumi preview` step runs only if the preflight step (which checks
    the Docker daemons the provider pings at start-up) named its stack runnable, so a preview
    that cannot run says why instead of failing with the provider's hostless error."""
    problems: list[str] = []
    for job_name, job in workflow.jobs.items():
        if _runs_on_host(job, labels):
            continue
        steps = _steps(job)
        previews = [
            step
            for step in steps
            if str(step.get("uses", "")).startswith("pulumi/actions@")
            and (step.get("with") or {}).get("command") == "preview"
        ]
        if not previews:
            continue
        where = f"{workflow.name}: {job_name}"
        preflight = next((step for step in steps if step.get("id") == "preflight"), None)
        run = str(preflight.get("run", "")) if preflight else ""
        if PREFLIGHT_MODULE not in run:
            problems.append(f"{where}: no `preflight` step running {PREFLIGHT_MODULE}")
            continue
        for step in previews:
            stack = str((step.get("with") or {}).get("stack-name", ""))
            if stack not in run.split():
                problems.append(f"{where}: the preflight does not check stack {stack}")
            if f"steps.preflight.outputs.{stack} == ''" not in str(step.get("if", "")):
                problems.append(
                    f"{where}: the preview of {stack} does not wait for the preflight's verdict"
                )
    return problems
