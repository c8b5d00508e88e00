"""`modelport samples DIR`: write the sample models into a model repository."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--encoder", is_flag=True, help="Also build the transformer encoder (benchmarks).")
@click.option(
    "--triton",
    type=click.Choice(["examples", "extras", "all"]),
    default=None,
    help="Instead, the torch equivalents of the models Triton's client examples use: "
    "'examples' (Triton's example repository, 8 models), 'extras' (decoupled, string "
    "sequence, ensemble) or 'all'.",
)
def samples(directory: Path, encoder: bool, triton: str | None) -> None:
    """Build the sample models (simple, mlp) deterministically into DIRECTORY."""
    if triton is not None:
        from modelport.inference.triton_samples import build_triton_examples, build_triton_extras

        if triton in ("examples", "all"):
            build_triton_examples(directory)
        if triton in ("extras", "all"):
            build_triton_extras(directory)
        click.echo(f"Triton example models written to {directory}")
        return
    from modelport.inference.samples import build_samples

    build_samples(directory, encoder=encoder)
    click.echo(f"sample models written to {directory}")
