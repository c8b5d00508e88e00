"""`modelport …`: one CLI for every service and tool.

Commands import their heavy dependencies (torch, grpc servers) lazily, so
`modelport --help` stays fast.
"""

from __future__ import annotations

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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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
