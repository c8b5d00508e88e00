"""`modelport serve <service>`: run one service in the foreground.

Each command's flags are its service's settings dataclass (`settings_command`);
the service's module, with torch or the database drivers behind it, is
imported only when the command runs, so `--help` stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import click

from modelport.cli.options import settings_command
from modelport.common.settings import ServerSettings
from modelport.inference.settings import InferenceSettings
from modelport.registry.settings import RegistrySettings
from modelport.router.settings import RouterSettings
from modelport.training.settings import TrainingSettings


def _runner(module: str) -> Callable[[ServerSettings], None]:
    def run(settings: ServerSettings) -> None:
        importlib.import_module(module).run(settings)

    return run


@click.group()
def serve() -> None:
    """Run one modelport service (inference, registry, router, training)."""


serve.add_command(
    settings_command(
        "inference",
        InferenceSettings,
        _runner("modelport.inference.app"),
        "Serve PyTorch models over the KServe v2 / Triton gRPC protocol.",
    )
)
serve.add_command(
    settings_command(
        "router",
        RouterSettings,
        _runner("modelport.router.app"),
        "The front door: one OIP v2 address, requests balanced across replicas.",
    )
)
serve.add_command(
    settings_command(
        "registry",
        RegistrySettings,
        _runner("modelport.registry.server"),
        "Serve the model registry (models, versions, aliases, policies, Watch).",
    )
)
serve.add_command(
    settings_command(
        "training",
        TrainingSettings,
        _runner("modelport.training.server"),
        "Serve fine-tuning jobs (create, watch, cancel; results registered in the registry).",
    )
)
