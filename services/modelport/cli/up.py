"""`modelport up`: the whole stack on one machine, for trying modelport out."""

from __future__ import annotations

from pathlib import Path

import click

from modelport.cli.options import option


@click.command()
@option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".modelport"),
    help="Where sample models (and later registry data) live.",
)
@option("--host", default="127.0.0.1", help="Address to listen on.")
@option("--grpc-port", type=int, default=8001, help="The one gRPC address clients use.")
@option("--metrics-port", type=int, default=8002, help="Prometheus /metrics port.")
def up(data_dir: Path, host: str, grpc_port: int, metrics_port: int) -> None:
    """Build the sample models if missing and serve them on one address."""
    from modelport.inference.app import InferenceSettings, run
    from modelport.inference.samples import build_samples

    repo = build_samples(data_dir / "models")
    click.echo(f"modelport up: serving {repo} on {host}:{grpc_port} (metrics :{metrics_port})")
    run(
        InferenceSettings(
            model_repository=repo, host=host, grpc_port=grpc_port, metrics_port=metrics_port
        )
    )
