"""`modelport …`: one CLI for every service and tool.

Commands import their heavy dependencies (torch, grpc servers) lazily, so
`modelport --help` stays fast.
"""

from __future__ import annotations

from typing import Any

import click

from modelport import __version__
from modelport.cli.audit import audit
from modelport.cli.datasets import datasets
from modelport.cli.finetune import finetune
from modelport.cli.keys import keys
from modelport.cli.loadtest import loadtest
from modelport.cli.models import models
from modelport.cli.routes import routes
from modelport.cli.samples import samples
from modelport.cli.serve import serve
from modelport.cli.up import up


class Commands(click.Group):
    """The CLI's one error boundary: an expected failure (bad input, an
    unreachable or refusing server, a file that cannot be read) ends as one
    `Error: …` line and exit status 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            message = expected_failure(exc)
            if message is None:
                raise  # a bug: its traceback is what a report needs
            raise click.ClickException(message) from None


def expected_failure(exc: Exception) -> str | None:
    """The one-line message of a failure a user can act on; None for anything else.
    (Imports here, not at the top: `modelport --help` stays fast.)"""
    import grpc

    from modelport.client.channel import ModelportClientError
    from modelport.errors import ModelportError

    if isinstance(exc, (ModelportError, ModelportClientError, OSError)):
        return one_line(str(exc) or type(exc).__name__)
    if isinstance(exc, grpc.RpcError) and isinstance(exc, grpc.Call):
        return one_line(f"{exc.code().name}: {exc.details()}")
    return None


def one_line(message: str) -> str:
    return " ".join(message.split())


@click.group(
    cls=Commands,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="modelport")
def main() -> None:
    """modelport: PyTorch models as gRPC services (KServe OIP v2 / Triton protocol)."""


main.add_command(serve)
main.add_command(up)
main.add_command(samples)
main.add_command(loadtest)
main.add_command(models)
main.add_command(routes)
main.add_command(audit)
main.add_command(keys)
main.add_command(datasets)
main.add_command(finetune)
