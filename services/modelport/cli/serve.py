"""`modelport serve <service>`: run one service in the foreground."""

from __future__ import annotations

import click

from modelport.cli.serve_inference import serve_inference
from modelport.cli.serve_registry import serve_registry
from modelport.cli.serve_router import serve_router


@click.group()
def serve() -> None:
    """Run one modelport service (inference, registry, router)."""


serve.add_command(serve_inference)
serve.add_command(serve_registry)
serve.add_command(serve_router)
