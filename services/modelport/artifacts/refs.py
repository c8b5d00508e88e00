"""Model and alias names, and references to versions: `name@alias`, `name:version`, `name`.

The registry stores them, inference services follow them, the router resolves
them and the CLI parses them: one grammar for all.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelport.errors import InvalidInput

DEFAULT_ALIAS = "production"

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# Aliases start with a letter, so "7" is always a version and never an alias.
_ALIAS_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$")


def check_model_name(name: str) -> str:
    if not _MODEL_NAME.match(name or ""):
        raise InvalidInput(
            f"model name '{name}': use 1-128 letters, digits, '_', '.', '-' "
            "starting with a letter or digit"
        )
    return name


def check_alias_name(model: str, alias: str) -> str:
    if not _ALIAS_NAME.match(alias or ""):
        raise InvalidInput(
            f"model '{model}': alias '{alias}': use letters, digits, '_', '.', '-' "
            "starting with a letter"
        )
    return alias


@dataclass(frozen=True)
class Ref:
    """A parsed reference: `name@alias`, `name:version` or `name`."""

    model: str
    alias: str = ""
    version: int = 0

    @classmethod
    def parse(cls, text: str) -> Ref:
        text = text.strip()
        if "@" in text:
            model, _, alias = text.partition("@")
            return cls(check_model_name(model), alias=check_alias_name(model, alias))
        if ":" in text:
            model, _, number = text.partition(":")
            if not number.isdigit() or int(number) <= 0:
                raise InvalidInput(f"reference '{text}': version must be a positive integer")
            return cls(check_model_name(model), version=int(number))
        return cls(check_model_name(text))

    def __str__(self) -> str:
        if self.alias:
            return f"{self.model}@{self.alias}"
        if self.version:
            return f"{self.model}:{self.version}"
        return self.model
