"""`modelport serve inference`: the data plane."""

from __future__ import annotations

from pathlib import Path

import click

from modelport.cli.options import common_server_options, option, split_multi


@click.command("inference")
@option(
    "--model-repository",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Triton-layout model repository (<model>/config.pbtxt, <model>/<version>/model.pt2).",
)
@option(
    "--model-control-mode",
    type=click.Choice(["none", "explicit"]),
    default="none",
    help="none: load every model at start; explicit: load/unload on request.",
)
@option(
    "--load-model",
    multiple=True,
    help="With explicit control: model to load at start (repeatable; '*' = all).",
)
@option("--torch-threads", type=int, default=0, help="Intra-op threads (0: cores / workers).")
@option(
    "--workers",
    type=int,
    default=1,
    help="Processes sharing the gRPC port (SO_REUSEPORT); one per 1-2 cores for small models.",
)
@option(
    "--reuse-port/--no-reuse-port",
    default=False,
    help="Bind with SO_REUSEPORT so several processes share the gRPC port.",
)
@option("--registry", default="", help="Registry address to follow models from (with --model).")
@option(
    "--model", multiple=True, help="NAME@ALIAS, NAME:VERSION or NAME to serve from the registry."
)
@option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("~/.cache/modelport/artifacts"),
    help="Where registry artifacts are cached (by sha256) across restarts.",
)
@common_server_options(grpc_port=8001)
def serve_inference(**flags: object) -> None:
    """Serve PyTorch models over the KServe v2 / Triton gRPC protocol."""
    from modelport.inference.app import InferenceSettings, run

    flags["load_models"] = split_multi(flags.pop("load_model"))  # type: ignore[arg-type]
    flags["models"] = split_multi(flags.pop("model"))  # type: ignore[arg-type]
    run(InferenceSettings(**flags))  # type: ignore[arg-type]
