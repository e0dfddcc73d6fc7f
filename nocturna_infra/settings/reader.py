"""Typed access to raw config strings, and the one error type every check raises."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final, NoReturn

import pulumi
import yaml

from nocturna_infra.settings.schema import PROJECT, SCHEMA_BY_NAME


class ConfigError(pulumi.RunError):
    """A stack configuration value is invalid; the CLI prints it without a traceback."""


ASCII_INTEGER: Final = re.compile(r"^-?[0-9]+$")


def read_stack_file(project_dir: Path, stack: str) -> dict[str, str]:
    """This project's plain config values from Pulumi.<stack>.yaml, as the engine sends them.

    For tools that run without the Pulumi CLI (status); secrets are left out.
    """
    path = project_dir / f"Pulumi.{stack}.yaml"
    document = yaml.safe_load(path.read_text()) or {}
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict | None):
        msg = f"{path}: expected a mapping with a `config:` mapping"
        raise ValueError(msg)
    raw: dict[str, str] = {}
    for full_key, value in (config or {}).items():
        namespace, _, name = str(full_key).partition(":")
        if namespace != PROJECT or _holds_secret(value):
            continue
        raw[name] = value if isinstance(value, str) else json.dumps(value)
    return raw


def _holds_secret(value: object) -> bool:
    """A stack-file value is, or contains (`--secret --path env.X`), an encrypted secret."""
    if isinstance(value, dict):
        return "secure" in value or any(_holds_secret(item) for item in value.values())
    if isinstance(value, list):
        return any(_holds_secret(item) for item in value)
    return False


class Reader:
    """Typed access to raw config strings, with defaults from CONFIG_SCHEMA."""

    def __init__(self, raw: Mapping[str, str | None], namespace: str) -> None:
        self._raw = raw
        self._namespace = namespace

    def key(self, name: str) -> str:
        return f"{self._namespace}:{name}"

    def fail(self, name: str, problem: str, value: object, remedy: str = "") -> NoReturn:
        msg = f"{self.key(name)}: {problem}; got {value!r}."
        if remedy:
            msg += f" {remedy}"
        raise ConfigError(msg) from None

    def string(self, name: str) -> str:
        value = self._raw.get(name)
        return str(SCHEMA_BY_NAME[name].default) if value is None else value

    def integer(self, name: str, low: int, high: int) -> int:
        text = self._raw.get(name)
        if text is None:
            value = int(SCHEMA_BY_NAME[name].default)
        else:
            if not ASCII_INTEGER.fullmatch(text):
                self.fail(name, "must be a whole number (ASCII digits)", text)
            value = int(text)
        if not low <= value <= high:
            self.fail(name, f"must be between {low} and {high}", value)
        return value

    def mapping(self, name: str) -> dict[str, str]:
        text = self._raw.get(name)
        if text is None:
            return dict(SCHEMA_BY_NAME[name].default)
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            self.fail(name, "must be an object of name -> value", text)
        if not isinstance(value, dict):
            self.fail(name, "must be an object of name -> value", value)
        result: dict[str, str] = {}
        for item_name, item in value.items():
            if isinstance(item, bool):
                item = "true" if item else "false"
            if not isinstance(item, str | int | float):
                self.fail(f"{name}.{item_name}", "must be a string, number or boolean", item)
            result[str(item_name)] = str(item)
        return result

    def json_value(self, name: str, expected: str) -> object:
        """A JSON-typed key (array, object): the parsed value, or its declared default."""
        text = self._raw.get(name)
        if text is None:
            return SCHEMA_BY_NAME[name].default
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            self.fail(name, f"must be {expected}", text)

    def boolean(self, name: str) -> bool:
        text = self.string(name)
        if text not in ("true", "false", "True", "False"):
            self.fail(name, "must be true or false", text)
        return text.lower() == "true"

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        value = self.string(name)
        if value not in allowed:
            self.fail(
                name,
                f"must be one of {', '.join(allowed)}",
                value,
                f"Run `pulumi config set {name} {allowed[0]}`.",
            )
        return value

    def matching(self, name: str, pattern: re.Pattern[str], allowed: str) -> str:
        value = self.string(name)
        if not pattern.fullmatch(value):
            self.fail(name, f"must be {allowed}", value)
        return value
