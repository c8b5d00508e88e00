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
    help="Where the sample models and the registry's data live.",
)
@option("--host", default="127.0.0.1", help="Address to listen on.")
@option("--grpc-port", type=int, default=8001, help="The one gRPC address clients use (router).")
@option("--metrics-port", type=int, default=8002, help="Prometheus /metrics port (-1 disables).")
@option("--registry-port", type=int, default=8003, help="The registry's gRPC port.")
@option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info")
def up(
    data_dir: Path, host: str, grpc_port: int, metrics_port: int, registry_port: int, log_level: str
) -> None:
    """Registry, one inference service per sample model, and the router on one address."""
    import asyncio

    from modelport.cli.local_stack import LocalStack, StackSettings
    from modelport.common import logs
    from modelport.common.server import install_stop_signals, use_fast_event_loop

    logs.configure(log_level)
    settings = StackSettings(
        data_dir=data_dir,
        host=host,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        registry_port=registry_port,
    )

    async def run() -> None:
        stack = LocalStack(settings)
        address = await stack.start()
        click.echo(
            f"modelport up: router on {address} (models: {', '.join(settings.models)}); "
            f"registry on {host}:{stack.registry.grpc.port}",
            err=True,
        )
        stopped = install_stop_signals(lambda: stack.stop())
        await stopped.wait()

    use_fast_event_loop()
    asyncio.run(run())
