"""`modelport samples DIR`: write the sample models into a model repository."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--encoder", is_flag=True, help="Also build the transformer encoder (benchmarks).")
def samples(directory: Path, encoder: bool) -> None:
    """Build the sample models (simple, mlp) deterministically into DIRECTORY."""
    from modelport.inference.samples import build_samples

    build_samples(directory, encoder=encoder)
    click.echo(f"sample models written to {directory}")
