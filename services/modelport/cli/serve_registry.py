"""`modelport serve registry`: the model registry's gRPC service."""

from __future__ import annotations

from pathlib import Path

import click

from modelport.cli.options import common_server_options, option


@click.command("registry")
@common_server_options(grpc_port=8003)
@option(
    "--database",
    default="sqlite:///modelport-registry/registry.db",
    help="Metadata database: a SQLAlchemy URL (sqlite:///…, postgresql://…) or a SQLite path.",
)
@option(
    "--blob-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("modelport-registry/blobs"),
    help="Where version archives are stored (a PVC in the cluster).",
)
@option("--max-upload-mb", type=int, default=2048, help="Largest accepted version archive.")
@option(
    "--stale-upload-minutes",
    type=float,
    default=60.0,
    help="Unfinished uploads untouched this long are removed (at start and every 10 min).",
)
def serve_registry(
    host: str,
    grpc_port: int,
    metrics_port: int,
    max_message_mb: int,
    grace_seconds: float,
    log_level: str,
    log_format: str,
    otlp_endpoint: str,
    database: str,
    blob_dir: Path,
    max_upload_mb: int,
    stale_upload_minutes: float,
) -> None:
    """Serve the model registry (models, versions, aliases, policies, Watch)."""
    import asyncio

    from modelport.common import tracing
    from modelport.common.logs import configure
    from modelport.common.metrics import serve_metrics
    from modelport.common.server import install_stop_signals, use_fast_event_loop
    from modelport.registry.server import RegistryServer, RegistrySettings

    configure(log_level, log_format)
    tracing.configure("registry", otlp_endpoint)
    settings = RegistrySettings(
        database=database,
        blob_dir=blob_dir,
        max_upload_mb=max_upload_mb,
        stale_upload_minutes=stale_upload_minutes,
        host=host,
        grpc_port=grpc_port,
        max_message_bytes=max_message_mb * 1024 * 1024,
    )

    async def run() -> None:
        server = RegistryServer(settings)
        await server.start()
        if metrics_port >= 0:
            serve_metrics(host, metrics_port)
        stopped = install_stop_signals(lambda: server.stop(grace_seconds))
        await stopped.wait()
        tracing.shutdown()

    use_fast_event_loop()
    asyncio.run(run())
