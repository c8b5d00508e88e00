"""`modelport up`: the whole stack on one machine, for trying modelport out."""

from __future__ import annotations

import click

from modelport.cli.local_stack import StackSettings
from modelport.cli.options import settings_from, settings_options


@click.command()
@settings_options(StackSettings)
def up(**values: object) -> None:
    """Registry, one inference service per sample model, and the router on one address."""
    from modelport.cli.local_stack import LocalStack
    from modelport.common.runtime import Service, run_service

    settings = settings_from(StackSettings, values)

    async def announce(service: Service) -> None:
        stack: LocalStack = service  # type: ignore[assignment]
        openai = (
            f"; OpenAI API on http://{settings.host}:{stack.http_port}/v1"
            if stack.http_port > 0
            else ""
        )
        click.echo(
            f"modelport up: router on {stack.address} "
            f"(models: {', '.join(settings.served_models())}); "
            f"registry on {settings.host}:{stack.registry_port}; "
            f"training on {settings.host}:{stack.training_port}{openai}",
            err=True,
        )

    run_service("modelport-up", settings, LocalStack, on_started=announce)
