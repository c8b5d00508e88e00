"""`modelport datasets push|list|show`: training datasets in the registry."""

from __future__ import annotations

from pathlib import Path

import click

from modelport.cli.models_common import common
from modelport.cli.output import emit, print_json, table, to_dict


@click.group()
def datasets() -> None:
    """Training datasets: JSONL prompt/completion or chat messages, .npz inputs/targets."""


def _format(dataset: object) -> str:
    from modelport.proto.modelport.registry.v1 import datasets_pb2 as pb

    return str(pb.DatasetFormat.Name(dataset.format)).lower()  # type: ignore[attr-defined]


@datasets.command("push")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", default="", help="Dataset name (default: the file's stem).")
@click.option(
    "--validation-fraction",
    type=float,
    default=0.0,
    help="Share of examples held out for validation (default 0.1, at least one).",
)
@common
def push(file: Path, name: str, validation_fraction: float, registry: str, as_json: bool) -> None:
    """Upload FILE; the registry checks it (schema, sizes) and records its split."""
    from modelport.client.datasets import DatasetClient

    with DatasetClient(registry) as client:
        dataset = client.push(file, name=name or file.stem, validation_fraction=validation_fraction)
    emit(
        as_json,
        dataset,
        f"{dataset.name}:{dataset.sha256[:12]}  {_format(dataset)}  {dataset.examples} examples "
        f"({dataset.train_examples} train / {dataset.validation_examples} validation)",
    )


@datasets.command("list")
@click.argument("name", required=False, default="")
@common
def list_datasets(name: str, registry: str, as_json: bool) -> None:
    """Uploaded datasets, newest first."""
    from modelport.client.datasets import DatasetClient

    with DatasetClient(registry) as client:
        found = client.list(name)
    if as_json:
        print_json([to_dict(d) for d in found])
        return
    rows = [
        [
            f"{d.name}:{d.sha256[:12]}",
            _format(d),
            d.examples,
            d.train_examples,
            d.validation_examples,
            d.size_bytes,
        ]
        for d in found
    ]
    table("datasets", ["ref", "format", "examples", "train", "validation", "bytes"], rows)


@datasets.command("show")
@click.argument("ref")
@common
def show(ref: str, registry: str, as_json: bool) -> None:
    """One dataset: NAME (latest) or NAME:SHA256-PREFIX."""
    from modelport.client.datasets import DatasetClient

    with DatasetClient(registry) as client:
        dataset = client.get(ref)
    print_json(to_dict(dataset)) if as_json else click.echo(
        "\n".join(f"{k}: {v}" for k, v in to_dict(dataset).items())
    )
