"""`modelport up`: the whole stack on one machine, for trying modelport out."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from modelport.cli.local_stack import SAMPLE_DECODER, StackSettings
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
        generative = SAMPLE_DECODER in settings.served_models() and stack.http_port > 0
        openai_url = f"http://{settings.host}:{stack.http_port}" if generative else ""
        click.echo(next_steps(stack.address, f"{settings.host}:{stack.registry_port}",
                              settings.served_models(), openai_url), err=True)  # fmt: skip

    run_service("modelport-up", settings, LocalStack, on_started=announce)


def next_steps(router: str, registry: str, models: tuple[str, ...], openai_url: str = "") -> str:
    """What to run next, printed last: a client call, a load test, the registry, a
    streamed generation when the generative sample runs (`openai_url`), Ctrl-C.

    Commands name this installation's python and `modelport` (a virtual environment's
    are not on PATH after `make run`)."""
    python = _short(Path(sys.executable))
    beside = Path(sys.executable).parent / "modelport"
    modelport = _short(beside) if beside.is_file() else "modelport"
    # The user's own model when one was given, else a tensor sample: --random
    # tensors are what a tensor model takes (the generative sample takes prompts).
    tensor_models = [name for name in models if name != SAMPLE_DECODER]
    model = tensor_models[-1] if tensor_models else "mlp"
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
            *(
                [
                    f"  {modelport} loadtest --generate --url {openai_url} --model {SAMPLE_DECODER}"
                    " --max-requests 16   # streams tokens from the generative sample"
                ]
                if openai_url
                else []
            ),
            "Ctrl-C stops the stack.",
        ]
    )


def _short(path: Path) -> str:
    """`path` relative to the working directory when it lies inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
