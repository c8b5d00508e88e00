"""`modelport up`: the whole stack on one machine, for trying modelport out."""

from __future__ import annotations

import sys
from pathlib import Path

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
        click.echo(next_steps(stack.address, f"{settings.host}:{stack.registry_port}",
                              settings.served_models()), err=True)  # fmt: skip

    run_service("modelport-up", settings, LocalStack, on_started=announce)


def next_steps(router: str, registry: str, models: tuple[str, ...]) -> str:
    """What to run next, printed last: a client call, a load test, the registry, Ctrl-C.

    Commands name this installation's python and `modelport` (a virtual environment's
    are not on PATH after `make run`)."""
    python = _short(Path(sys.executable))
    beside = Path(sys.executable).parent / "modelport"
    modelport = _short(beside) if beside.is_file() else "modelport"
    model = models[-1] if models else "mlp"  # the user's own model, when one was given
    client = (
        f"from modelport.client.inference import InferenceClient; "
        f"print(InferenceClient('{router}').model_metadata('{model}'))"
    )
    return "\n".join(
        [
            "next, from another shell:",
            f'  {python} -c "{client}"',
            f"  {modelport} loadtest --url {router} --model {model} --random --duration 10s",
            f"  {modelport} models list --registry {registry}"
            f"   # then: models alias {model} VERSION production",
            "Ctrl-C stops the stack.",
        ]
    )


def _short(path: Path) -> str:
    """`path` relative to the working directory when it lies inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
