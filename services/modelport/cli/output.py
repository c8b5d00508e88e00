"""Printing for the client commands: tables for people, `--json` for scripts."""

from __future__ import annotations

import json
from typing import Any

import click


def to_dict(message: Any) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    Console().print(table)


def emit(as_json: bool, message: Any, text: str) -> None:
    """One result: the message as JSON for scripts, else one line for people."""
    if as_json:
        print_json(to_dict(message))
    else:
        click.echo(text)


def when(stamp: Any) -> str:
    return stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") if stamp.seconds else ""


def pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        for part in item.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise click.BadParameter(f"'{part}': expected KEY=VALUE", param_hint=what)
            out[key.strip()] = value.strip()
    return out
