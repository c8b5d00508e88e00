"""`modelport models …`: push, list, show, alias, rollback, pull, delete, policy.

Tables for people, `--json` for scripts. Talks to the registry at `--registry`
(default localhost:8003, or MODELPORT_REGISTRY).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from modelport.common.cli_options import option

DEFAULT_REGISTRY = "localhost:8003"


def _common(func: Callable[..., Any]) -> Callable[..., Any]:
    """--registry and --json on every subcommand; gRPC errors become one readable line."""

    @option("--registry", default=DEFAULT_REGISTRY, help="Registry gRPC address.")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from modelport.client.channel import ModelportClientError

        try:
            return func(*args, **kwargs)
        except ModelportClientError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


def _client(registry: str) -> Any:
    from modelport.client.registry import RegistryClient

    return RegistryClient(registry)


def _to_dict(message: Any) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True)


def _print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    Console().print(table)


def _emit(as_json: bool, message: Any, text: str) -> None:
    """One result: the message as JSON for scripts, else one line for people."""
    if as_json:
        _print_json(_to_dict(message))
    else:
        click.echo(text)


def _when(stamp: Any) -> str:
    return stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") if stamp.seconds else ""


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in values:
        for part in item.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise click.BadParameter(f"'{part}': expected KEY=VALUE", param_hint=what)
            out[key.strip()] = value.strip()
    return out


def _version_rows(versions: list[Any]) -> list[list[Any]]:
    return [
        [
            v.version,
            ", ".join(v.aliases),
            v.sha256[:12],
            f"{v.size_bytes / 1024:.1f} KiB",
            v.parent,
            _when(v.created_at),
        ]
        for v in versions
    ]


VERSION_COLUMNS = ["version", "aliases", "sha256", "size", "parent", "created"]


@click.group("models")
def models() -> None:
    """Manage models in the registry: versions, aliases, traffic policies."""


@models.command("push")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--name", required=True, help="Model name in the registry.")
@click.option("--alias", "aliases", multiple=True, help="Point this alias at the new version.")
@click.option("--parent", default="", help="Lineage: the source, MODEL:VERSION or MODEL@ALIAS.")
@click.option("--label", "labels", multiple=True, help="KEY=VALUE (repeatable).")
@click.option("--metric", "metrics", multiple=True, help="KEY=NUMBER, e.g. accuracy=0.93.")
@click.option("--description", default="", help="Model description (when it is created).")
@_common
def push(
    model_dir: Path,
    name: str,
    aliases: tuple[str, ...],
    parent: str,
    labels: tuple[str, ...],
    metrics: tuple[str, ...],
    description: str,
    registry: str,
    as_json: bool,
) -> None:
    """Upload MODEL_DIR (config.pbtxt + <version>/model.pt2|model.pt) as a new version."""
    try:
        metric_values = {k: float(v) for k, v in _pairs(metrics, "--metric").items()}
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--metric") from None
    with _client(registry) as client:
        version = client.push(
            model_dir,
            name=name,
            aliases=aliases,
            parent=parent,
            labels=_pairs(labels, "--label"),
            metrics=metric_values,
            description=description,
        )
    moved = f" ({', '.join(version.aliases)})" if version.aliases else ""
    _emit(
        as_json, version, f"pushed {version.model}:{version.version}{moved} sha256={version.sha256}"
    )


@models.command("list")
@_common
def list_models(registry: str, as_json: bool) -> None:
    """Every model with its aliases and latest version."""
    with _client(registry) as client:
        found = client.list_models()
    if as_json:
        _print_json([_to_dict(m) for m in found])
        return
    rows = [
        [
            m.name,
            m.version_count,
            m.latest_version or "",
            ", ".join(f"{a}→{v}" for a, v in sorted(m.aliases.items())),
            m.description,
        ]
        for m in found
    ]
    _table("models", ["name", "versions", "latest", "aliases", "description"], rows)


@models.command("show")
@click.argument("name")
@_common
def show(name: str, registry: str, as_json: bool) -> None:
    """A model's versions, aliases and traffic policy."""
    with _client(registry) as client:
        model = client.get_model(name)
        versions = client.list_versions(name)
        policy = client.get_policy(name)
    if as_json:
        _print_json(
            {
                "model": _to_dict(model),
                "versions": [_to_dict(v) for v in versions],
                "policy": _to_dict(policy),
            }
        )
        return
    _table(f"{name}: versions", VERSION_COLUMNS, _version_rows(versions))
    click.echo(f"policy: {_describe_policy(policy)}")


def _describe_policy(policy: Any) -> str:
    parts = []
    if policy.split:
        parts.append("split " + ", ".join(f"{w.alias}={w.weight}" for w in policy.split))
    if policy.shadow_alias:
        parts.append(f"shadow {policy.shadow_alias}")
    kind = policy.WhichOneof("kind")
    if kind == "ensemble":
        parts.append("ensemble " + ", ".join(policy.ensemble.members))
    elif kind == "scatter":
        parts.append("scatter")
    return "; ".join(parts) or "none"


@models.command("alias")
@click.argument("name")
@click.argument("version", type=int)
@click.argument("alias")
@_common
def alias(name: str, version: int, alias: str, registry: str, as_json: bool) -> None:
    """Point ALIAS of model NAME at VERSION."""
    with _client(registry) as client:
        moved = client.set_alias(name, version, alias)
    before = f" (was {moved.previous_version})" if moved.previous_version else ""
    _emit(as_json, moved, f"{name}@{alias} → {moved.version}{before}")


@models.command("rollback")
@click.argument("name")
@click.argument("alias")
@_common
def rollback(name: str, alias: str, registry: str, as_json: bool) -> None:
    """Move ALIAS back to the version it pointed at before its last move."""
    with _client(registry) as client:
        moved = client.rollback(name, alias)
    _emit(
        as_json,
        moved,
        f"{name}@{alias} → {moved.version} (rolled back from {moved.previous_version})",
    )


@models.command("history")
@click.argument("name")
@click.argument("alias", required=False, default="")
@_common
def history(name: str, alias: str, registry: str, as_json: bool) -> None:
    """Every move of the model's aliases, oldest first."""
    with _client(registry) as client:
        moves = client.alias_history(name, alias)
    if as_json:
        _print_json([_to_dict(m) for m in moves])
        return
    rows = [[m.alias, m.version or "(deleted)", m.revision, _when(m.moved_at)] for m in moves]
    _table(f"{name}: alias history", ["alias", "version", "revision", "moved"], rows)


@models.command("pull")
@click.argument("ref")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@_common
def pull(ref: str, dest: Path, registry: str, as_json: bool) -> None:
    """Download REF (NAME@ALIAS, NAME:VERSION or NAME) as a Triton model folder DEST."""
    with _client(registry) as client:
        version = client.pull(ref, dest)
    _emit(as_json, version, f"pulled {version.model}:{version.version} into {dest}")


@models.command("delete")
@click.argument("ref")
@click.option("--force", is_flag=True, help="Delete a model even while it has aliases.")
@_common
def delete(ref: str, force: bool, registry: str, as_json: bool) -> None:
    """Delete a model (NAME) or one version (NAME:VERSION)."""
    name, _, version = ref.partition(":")
    with _client(registry) as client:
        if version:
            if not version.isdigit():
                raise click.BadParameter(f"'{ref}': expected NAME or NAME:VERSION")
            client.delete_version(name, int(version))
        else:
            client.delete_model(name, force=force)
    if as_json:
        _print_json({"deleted": ref})
        return
    click.echo(f"deleted {ref}")


@models.command("policy")
@click.argument("name")
@click.option("--split", default="", help="ALIAS=WEIGHT,…, e.g. production=90,canary=10.")
@click.option("--shadow", default="", help="Also send a copy of each request to this alias.")
@click.option("--ensemble", default="", help="MODEL[@ALIAS|:VERSION],…: average the outputs.")
@click.option("--scatter", is_flag=True, help="Split batches across replicas.")
@click.option("--clear", is_flag=True, help="Remove the policy.")
@_common
def policy(
    name: str,
    split: str,
    shadow: str,
    ensemble: str,
    scatter: bool,
    clear: bool,
    registry: str,
    as_json: bool,
) -> None:
    """Show or set model NAME's traffic policy."""
    from modelport.client.registry import parse_policy

    if ensemble and scatter:
        raise click.UsageError("--ensemble and --scatter exclude each other")
    if clear and (split or shadow or ensemble or scatter):
        raise click.UsageError("--clear takes no other policy option")
    weights: dict[str, int] = {}
    for alias_name, weight in _pairs((split,) if split else (), "--split").items():
        if not weight.isdigit():
            raise click.BadParameter(
                f"weight '{weight}' is not a whole number", param_hint="--split"
            )
        weights[alias_name] = int(weight)
    members = [m.strip() for m in ensemble.split(",") if m.strip()]
    changing = clear or weights or shadow or members or scatter
    with _client(registry) as client:
        if changing:
            current = client.set_policy(
                name, parse_policy(weights, shadow_alias=shadow, ensemble=members, scatter=scatter)
            )
        else:
            current = client.get_policy(name)
    _emit(as_json, current, f"{name}: {_describe_policy(current)} (revision {current.revision})")
