"""Flags that also read `MODELPORT_<FLAG>` from the environment (what Helm sets).

Server commands do not declare their flags by hand: `settings_options` makes
one click option per field of the service's settings dataclass, and
`settings_from` builds the settings back from the parsed values, so a setting,
its flag, its variable and its help cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import click

from modelport.common.settings import ServerSettings, cli_fields, env_of, flag_of
from modelport.errors import InvalidInput

S = TypeVar("S", bound=ServerSettings)


def option(flag: str, *more: str, **kwargs: Any) -> Callable[[Any], Any]:
    """`click.option` whose value may come from MODELPORT_<FLAG>.

    For repeatable flags the variable holds space- or comma-separated values.
    """
    kwargs.setdefault("envvar", env_of(flag))
    kwargs.setdefault("show_envvar", True)
    kwargs.setdefault("show_default", True)
    return click.option(flag, *more, **kwargs)


def split_multi(values: tuple[str, ...] | list[str]) -> list[str]:
    """Flatten repeatable values that may also be comma-separated."""
    out: list[str] = []
    for value in values:
        out.extend(part.strip() for part in value.split(",") if part.strip())
    return out


def _option_kwargs(field: dataclasses.Field[Any], hint: Any) -> dict[str, Any]:
    """click.option arguments for one settings field, from its type and metadata."""
    kwargs: dict[str, Any] = {"help": field.metadata.get("help", "")}
    default = field.default_factory() if callable(field.default_factory) else field.default
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    if hint is bool:
        kwargs.update(default=default, is_flag=True)
    elif typing.get_origin(hint) is Literal:
        kwargs.update(type=click.Choice([str(a) for a in args]), default=default)
    elif hint is Path:
        kind = field.metadata.get("path", "")
        kwargs.update(
            type=click.Path(path_type=Path, file_okay=kind != "dir", dir_okay=kind != "file"),
            default=default,
        )
    elif typing.get_origin(hint) is tuple:
        kwargs.update(multiple=True, default=default)
    elif hint in (int, float, str):
        kwargs.update(type=hint, default=default)
    else:  # pragma: no cover - a settings field of a type the CLI cannot parse
        raise TypeError(f"setting {field.name}: no CLI type for {hint!r}")
    return kwargs


def settings_options(cls: type[ServerSettings]) -> Callable[[Any], Any]:
    """Decorate a click command with one option per CLI field of `cls`."""
    hints = typing.get_type_hints(cls)

    def decorate(func: Any) -> Any:
        for field in reversed(cli_fields(cls)):
            flag = flag_of(field)
            kwargs = _option_kwargs(field, hints[field.name])
            kwargs["envvar"] = env_of(flag)
            if kwargs.get("is_flag"):
                flag = f"{flag}/--no-{flag.removeprefix('--')}"
            func = option(flag, field.name, **kwargs)(func)
        return func

    return decorate


def settings_from(cls: type[S], values: dict[str, Any]) -> S:
    """The settings for parsed option values (repeatable ones comma-split).

    Settings that contradict each other are a usage error, reported before
    anything starts.
    """
    hints = typing.get_type_hints(cls)
    parsed: dict[str, Any] = {}
    for field in cli_fields(cls):
        value = values[field.name]
        if typing.get_origin(hints[field.name]) is tuple:
            value = tuple(split_multi(value))
        parsed[field.name] = value
    try:
        return cls(**parsed)
    except InvalidInput as exc:
        raise click.UsageError(str(exc)) from None


class SettingsCommand(click.Command):
    """A command whose options are a settings class's fields; `settings` builds them."""

    def __init__(self, name: str, *, settings_class: type[ServerSettings], **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.settings_class = settings_class

    def settings(self, values: dict[str, Any]) -> ServerSettings:
        return settings_from(self.settings_class, values)


def settings_command(name: str, cls: type[S], run: Callable[[S], None], doc: str) -> click.Command:
    """A `serve <name>` command whose flags are `cls`'s settings and that calls `run`."""

    @click.command(name, cls=SettingsCommand, help=doc, settings_class=cls)
    @settings_options(cls)
    def command(**values: Any) -> None:
        run(settings_from(cls, values))

    return command
