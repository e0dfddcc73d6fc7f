"""Pulumi.yaml, the stack files and the README's config table agree with settings/schema.py."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from program_runs import make_project

from nocturna_infra.program import render
from nocturna_infra.settings import CONFIG_SCHEMA, PROJECT, parse_settings
from nocturna_infra.slot import Slot

ROOT = Path(__file__).resolve().parent.parent


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / name).read_text())


def test_pulumi_yaml_declares_every_key_with_type_default_and_description() -> None:
    declared = load("Pulumi.yaml")["config"]

    expected = {}
    for key in CONFIG_SCHEMA:
        entry: dict[str, Any] = {"type": key.type, "description": key.description}
        if key.items:
            entry["items"] = {"type": key.items}
        if key.secret:
            entry["secret"] = True
        else:
            entry["default"] = key.default
        expected[key.name] = entry
    assert declared == expected


def test_pulumi_yaml_names_the_project_and_its_venv() -> None:
    project = load("Pulumi.yaml")

    assert project["name"] == PROJECT
    assert project["runtime"] == {
        "name": "python",
        "options": {"toolchain": "pip", "virtualenv": "venv"},
    }


@pytest.mark.parametrize("stack", ["production", "staging"])
def test_stack_files_hold_only_declared_keys_with_valid_values(stack: str, tmp_path: Path) -> None:
    config = load(f"Pulumi.{stack}.yaml")["config"]
    declared = {key.name for key in CONFIG_SCHEMA}
    raw = {}
    for full_key, value in config.items():
        namespace, _, key = full_key.partition(":")
        assert namespace == PROJECT and key in declared, full_key
        raw[key] = value if isinstance(value, str) else json.dumps(value)

    project = make_project(tmp_path)
    shutil.copytree(ROOT / "smoke", project / "smoke")  # the example smoke check's body
    settings = parse_settings({**raw, "buildContext": "service"}, api_key="k", project_dir=project)
    assert settings.environment.value == stack


def test_readme_config_table_matches_the_schema() -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- config-table:start -->")[1].split("<!-- config-table:end -->")[0]
    rows = re.findall(r"^\| `(\w+)` \| (\w+) \| (.+?) \| (.+) \|$", table, re.MULTILINE)

    assert [name for name, *_ in rows] == [key.name for key in CONFIG_SCHEMA]
    for (name, type_, default, description), key in zip(rows, CONFIG_SCHEMA, strict=True):
        assert type_ == key.type, name
        assert description == key.description.replace("|", "/"), name
        if key.secret:
            assert default == "(secret, required)", name
        elif key.default == "":
            assert default == "(empty)", name
        else:
            shown = key.default if isinstance(key.default, str) else json.dumps(key.default)
            assert default == f"`{shown}`", name


def test_operations_doc_break_glass_commands_are_the_routers_for_default_settings() -> None:
    doc = (ROOT / "docs" / "operations.md").read_text()
    shown = re.findall(r"^venv/bin/python -m nocturna_infra\.switch .+$", doc, re.MULTILINE)
    settings = parse_settings({}, api_key="k", project_dir=None)

    assert shown == [
        render.switch_command(settings, slot, settings.slot_ports)
        for slot in (Slot.BLUE, Slot.GREEN)
    ]
