"""The real Pulumi CLI applies Pulumi.yaml's config schema to the committed stack files, and
runs this program through the Python language host (tests/engine/real_engine.py).

A full `pulumi up` needs the docker and command provider plugins, which cannot be built here
(tools/pulumi-engine/README.md); these tests stop where the program would first need one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pulumi import automation as auto
from real_engine import project_copy, workspace

MISSING_CONTEXT = "no-such-build-context"


def new_stack(tmp_path: Path, name: str) -> auto.Stack:
    return auto.Stack.create(name, workspace(project_copy(tmp_path), tmp_path))


def preview_error(stack: auto.Stack) -> str:
    with pytest.raises(auto.CommandError) as failed:
        stack.preview()
    return str(failed.value)


@pytest.mark.parametrize("name", ["production", "staging"])
def test_stack_without_api_key_is_refused_before_the_program_runs(tmp_path, name):
    stack = new_stack(tmp_path, name)

    error = preview_error(stack)

    assert f"Stack '{name}' is missing configuration value 'apiKey'" in error


@pytest.mark.parametrize(
    ("key", "value", "declared"),
    [
        pytest.param("bluePort", "3014x", "integer", id="integer"),
        pytest.param("memoryMb", "1.5", "integer", id="integer-not-float"),
        pytest.param("allowNonLoopbackBind", "maybe", "boolean", id="boolean"),
        pytest.param("buildArgs", "VERSION=2", "object", id="object"),
        pytest.param("hosts", "render2", "array<object>", id="array-of-objects"),
    ],
)
def test_value_of_the_wrong_type_is_refused_naming_key_and_type(tmp_path, key, value, declared):
    stack = new_stack(tmp_path, "production")
    stack.set_config("apiKey", auto.ConfigValue("k", secret=True))
    stack.set_config(key, auto.ConfigValue(value))

    error = preview_error(stack)

    assert (
        f"Stack 'production' with configuration key '{key}' must be of type '{declared}'" in error
    )


@pytest.mark.parametrize("name", ["production", "staging"])
def test_committed_stack_file_passes_the_cli_and_the_program_reads_it(tmp_path, name):
    """Every value in the stack file has its declared type, config reaches the program, and
    the program's own refusal is what the user reads (no traceback)."""
    stack = new_stack(tmp_path, name)
    stack.set_config("apiKey", auto.ConfigValue("k", secret=True))
    stack.set_config("buildContext", auto.ConfigValue(MISSING_CONTEXT))

    error = preview_error(stack)

    assert "validating stack config" not in error
    assert (
        f"nocturna-infra:buildContext: must name an existing directory "
        f"(relative to {stack.workspace.work_dir}); got '{MISSING_CONTEXT}'." in error
    )
    assert "Traceback" not in error
