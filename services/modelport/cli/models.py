"""`modelport models …`: push, list, show, pull, delete (aliases and policies: `models_aliases`).

Talks to the registry at `--registry` (default localhost:8003, or MODELPORT_REGISTRY).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from modelport.cli.models_aliases import alias, history, policy, pool, rollback
from modelport.cli.models_common import common, describe_policy, registry_client
from modelport.cli.models_derive import compare, derive, derive_worker, jobs, metric_rows
from modelport.cli.output import emit, pairs, print_json, table, to_dict, when


def _version_rows(versions: list[Any]) -> list[list[Any]]:
    return [
        [
            v.version,
            ", ".join(v.aliases),
            v.sha256[:12],
            f"{v.size_bytes / 1024:.1f} KiB",
            v.parent,
            v.lineage.method,
            v.status,
            when(v.created_at),
        ]
        for v in versions
    ]


VERSION_COLUMNS = ["version", "aliases", "sha256", "size", "parent", "method", "status", "created"]


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
@click.option(
    "--force",
    is_flag=True,
    help="Move --alias even to a version with another signature.",
)
@common
def push(
    model_dir: Path,
    name: str,
    aliases: tuple[str, ...],
    parent: str,
    labels: tuple[str, ...],
    metrics: tuple[str, ...],
    description: str,
    force: bool,
    registry: str,
    as_json: bool,
) -> None:
    """Upload MODEL_DIR (config.pbtxt + <version>/model.pt2|model.pt, or a lone
    model.pt2) as a new version; the registry loads and warms it up first."""
    try:
        metric_values = {k: float(v) for k, v in pairs(metrics, "--metric").items()}
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--metric") from None
    with registry_client(registry) as client:
        version = client.push(
            model_dir,
            name=name,
            aliases=aliases,
            parent=parent,
            labels=pairs(labels, "--label"),
            metrics=metric_values,
            description=description,
            force=force,
        )
    moved = f" ({', '.join(version.aliases)})" if version.aliases else ""
    emit(
        as_json, version, f"pushed {version.model}:{version.version}{moved} sha256={version.sha256}"
    )


@models.command("list")
@common
def list_models(registry: str, as_json: bool) -> None:
    """Every model with its aliases and latest version."""
    with registry_client(registry) as client:
        found = client.list_models()
    if as_json:
        print_json([to_dict(m) for m in found])
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
    table("models", ["name", "versions", "latest", "aliases", "description"], rows)


@models.command("show")
@click.argument("name")
@common
def show(name: str, registry: str, as_json: bool) -> None:
    """A model's versions, aliases and traffic policy."""
    with registry_client(registry) as client:
        model = client.get_model(name)
        versions = client.list_versions(name)
        policy = client.get_policy(name)
    if as_json:
        print_json(
            {
                "model": to_dict(model),
                "versions": [to_dict(v) for v in versions],
                "policy": to_dict(policy),
            }
        )
        return
    table(f"{name}: versions", VERSION_COLUMNS, _version_rows(versions))
    measured = [v for v in versions if v.metrics]
    if measured:
        rows = metric_rows([dict(v.metrics) for v in measured])
        table(f"{name}: metrics", ["metric", *(f"v{v.version}" for v in measured)], rows)
    click.echo(f"policy: {describe_policy(policy)}")


@models.command("pull")
@click.argument("ref")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@common
def pull(ref: str, dest: Path, registry: str, as_json: bool) -> None:
    """Download REF (NAME@ALIAS, NAME:VERSION or NAME) as a Triton model folder DEST."""
    with registry_client(registry) as client:
        version = client.pull(ref, dest)
    emit(as_json, version, f"pulled {version.model}:{version.version} into {dest}")


@models.command("delete")
@click.argument("ref")
@click.option("--force", is_flag=True, help="Delete a model even while it has aliases.")
@common
def delete(ref: str, force: bool, registry: str, as_json: bool) -> None:
    """Delete a model (NAME) or one version (NAME:VERSION)."""
    name, _, version = ref.partition(":")
    with registry_client(registry) as client:
        if version:
            if not version.isdigit():
                raise click.BadParameter(f"'{ref}': expected NAME or NAME:VERSION")
            client.delete_version(name, int(version))
        else:
            client.delete_model(name, force=force)
    if as_json:
        print_json({"deleted": ref})
        return
    click.echo(f"deleted {ref}")


models.add_command(alias)
models.add_command(rollback)
models.add_command(history)
models.add_command(policy)
models.add_command(derive)
models.add_command(compare)
models.add_command(jobs)
models.add_command(derive_worker)
models.add_command(pool)
