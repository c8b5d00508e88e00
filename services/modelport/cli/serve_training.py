"""`modelport serve training`: fine-tuning jobs as a gRPC service."""

from __future__ import annotations

from pathlib import Path

import click

from modelport.cli.options import option, split_multi


@click.command("training")
@option("--host", default="0.0.0.0", help="Address to listen on.")
@option("--grpc-port", type=int, default=8004, help="gRPC port.")
@option("--metrics-port", type=int, default=8002, help="Prometheus /metrics port (-1 disables).")
@option("--max-message-mb", type=int, default=64, help="Largest gRPC message, in MiB.")
@option("--grace-seconds", type=float, default=25.0, help="On SIGTERM, time to drain.")
@option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info")
@option("--log-format", type=click.Choice(["text", "json"]), default="text")
@option("--otlp-endpoint", default="", help="OTLP/gRPC collector for traces (none when empty).")
@option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("modelport-training"),
    help="Jobs, their checkpoints and exports (a PVC in the cluster).",
)
@option("--registry", default="127.0.0.1:8003", help="Registry: base models, datasets, results.")
@option(
    "--executor",
    type=click.Choice(["local", "kubernetes"]),
    default="local",
    help="local: torchrun processes here; kubernetes: a Job (or Kubeflow TrainJob) per job.",
)
@option("--max-concurrent-jobs", type=int, default=1, help="Jobs running at once.")
@option("--max-restarts", type=int, default=2, help="Worker-group restarts from a checkpoint.")
@option("--namespace", default="", help="kubernetes: where jobs run (default: this pod's).")
@option("--image", default="", help="kubernetes: the worker image (default: this pod's).")
@option(
    "--service-address",
    default="",
    help="kubernetes: how workers reach this service's gRPC port (ReportEvents).",
)
@option(
    "--node-selector",
    multiple=True,
    help="kubernetes: KEY=VALUE for GPU worker pods (repeatable).",
)
@option(
    "--use-trainjob/--no-use-trainjob",
    default=True,
    help="kubernetes: a Kubeflow TrainJob when its CRD is installed, else a batch/v1 Job.",
)
def serve_training(
    host: str,
    grpc_port: int,
    metrics_port: int,
    max_message_mb: int,
    grace_seconds: float,
    log_level: str,
    log_format: str,
    otlp_endpoint: str,
    data_dir: Path,
    registry: str,
    executor: str,
    max_concurrent_jobs: int,
    max_restarts: int,
    namespace: str,
    image: str,
    service_address: str,
    node_selector: tuple[str, ...],
    use_trainjob: bool,
) -> None:
    """Serve fine-tuning jobs (create, watch, cancel; results registered in the registry)."""
    import asyncio
    import signal

    from modelport.common import tracing
    from modelport.common.logs import configure
    from modelport.common.metrics import serve_metrics
    from modelport.common.runtime import use_fast_event_loop
    from modelport.training.server import TrainingServer, TrainingSettings

    configure(log_level, log_format)
    tracing.configure("training", otlp_endpoint)
    selectors = dict(item.split("=", 1) for item in split_multi(node_selector) if "=" in item)
    settings = TrainingSettings(
        data_dir=data_dir,
        registry=registry,
        host=host,
        grpc_port=grpc_port,
        executor=executor,
        max_concurrent_jobs=max_concurrent_jobs,
        max_restarts=max_restarts,
        max_message_bytes=max_message_mb * 1024 * 1024,
        kubernetes={
            "namespace": namespace,
            "image": image,
            "service_address": service_address,
            "node_selector": selectors,
            "use_trainjob": use_trainjob,
            "max_restarts": max_restarts,
        },
    )

    async def run() -> None:
        server = TrainingServer(settings)
        await server.start()
        if metrics_port >= 0:
            serve_metrics(host, metrics_port)
        stopped = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopped.set)
        await stopped.wait()
        await server.stop(grace_seconds)
        tracing.shutdown()

    use_fast_event_loop()
    asyncio.run(run())
