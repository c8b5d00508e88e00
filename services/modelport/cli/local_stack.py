"""What `modelport up` runs: registry, one inference service per model, and the router.

Everything runs in this one process, each service on its own port, as the
cluster runs them in their own pods: the router on the address clients use
(8001) balances over the inference services it is given (static discovery)
and follows the registry (8003) for aliases and traffic policies; it also
serves the OpenAI-compatible API (8000) for the generative sample, `tiny-llama`,
a small decoder trained on text the project ships (on the first run, about a
minute on two cores; then cached in the data folder). The sample models are
pushed to the registry once (alias `production` → version 1), and each
inference service follows its model's `production` and `canary` aliases there:
a version derived with `modelport models derive … --alias canary` is loaded
beside production, and a split policy sends it a slice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelport.common.settings import ServerSettings, setting

SAMPLE_DECODER = "tiny-llama"  # the generative sample (inference.generative.sample_decoder)

log = logging.getLogger(__name__)

# What each inference service of the stack serves: production, and a canary once one is set.
FOLLOWED_ALIASES = ("production", "canary")


@dataclass(frozen=True)
class StackSettings(ServerSettings):
    """`modelport up`: the router's address is the stack's (TLS, if given, is the router's)."""

    host: str = setting("127.0.0.1", "Address to listen on.")
    grpc_port: int = setting(8001, "The one gRPC address clients use (router).")
    grace_seconds: float = setting(5.0, "On Ctrl-C, how long in-flight requests may take.")
    data_dir: Path = setting(
        Path(".modelport"), "Where the sample models and the registry's data live.", path="dir"
    )
    registry_port: int = setting(8003, "The registry's gRPC port.")
    http_port: int = setting(8000, "The OpenAI-compatible API of the router (-1 disables).")
    training_port: int = setting(8004, "The training service's gRPC port.")
    models: tuple[str, ...] = setting(
        ("simple", "mlp", SAMPLE_DECODER), "Sample models to serve.", cli=False
    )
    no_generative_sample: bool = setting(
        False, f"Leave out the generative sample '{SAMPLE_DECODER}' (its first start trains it)."
    )

    def served_models(self) -> tuple[str, ...]:
        if self.no_generative_sample:
            return tuple(name for name in self.models if name != SAMPLE_DECODER)
        return self.models


class LocalStack:
    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.registry: Any = None
        self.inference: list[Any] = []
        self.router: Any = None
        self.training: Any = None
        self.training_port = 0
        self.address = ""  # the router's, once started
        self.registry_port = 0
        self.http_port = 0

    async def start(self) -> int:
        """Start every service; returns the router's port."""
        from modelport.client.registry import ensure_pushed
        from modelport.inference.app import InferenceApp, InferenceSettings
        from modelport.inference.samples import build_samples
        from modelport.registry.server import RegistryServer, RegistrySettings
        from modelport.router.app import RouterApp
        from modelport.router.discovery import StaticDiscovery
        from modelport.router.registry_policies import RegistryPolicySource
        from modelport.router.replicas import Endpoint
        from modelport.training.server import TrainingServer, TrainingSettings

        settings = self.settings
        repo = await asyncio.to_thread(build_samples, settings.data_dir / "models")
        models = settings.served_models()
        if SAMPLE_DECODER in models:
            await asyncio.to_thread(_build_decoder, repo)
        state = settings.data_dir / "registry"
        state.mkdir(parents=True, exist_ok=True)
        self.registry = RegistryServer(
            RegistrySettings(
                database=f"sqlite:///{state / 'registry.db'}",
                blob_dir=state / "blobs",
                host=settings.host,
                grpc_port=settings.registry_port,
            )
        )
        self.registry_port = await self.registry.start()
        registry_address = f"127.0.0.1:{self.registry_port}"
        for name in models:
            await asyncio.to_thread(ensure_pushed, registry_address, repo / name, name)
        endpoints = []
        for name in models:
            # Following the registry: a fine-tuned version aliased `canary` is served
            # beside `production`, and the router splits traffic between them.
            app = InferenceApp(
                InferenceSettings(
                    host="127.0.0.1",
                    grpc_port=0,
                    metrics_port=-1,
                    registry=registry_address,
                    models=tuple(f"{name}@{alias}" for alias in FOLLOWED_ALIASES),
                    cache_dir=settings.data_dir / "cache",
                )
            )
            port = await app.start()
            self.inference.append(app)
            endpoints.append(Endpoint(name, f"127.0.0.1:{port}"))
        self.router = RouterApp(
            StaticDiscovery(endpoints),
            RegistryPolicySource(registry_address),
            settings.server_options(),
            metrics=settings.metrics_port >= 0,
            http_port=settings.http_port,
        )
        router_port = await self.router.start()
        self.address = f"{settings.host}:{router_port}"
        self.http_port = self.router.http_port
        self.training = TrainingServer(
            TrainingSettings(
                data_dir=settings.data_dir / "training",
                registry=registry_address,
                host=settings.host,
                grpc_port=settings.training_port,
            )
        )
        self.training_port = await self.training.start()
        return router_port

    async def stop(self, grace: float = 5.0) -> None:
        if self.training is not None:
            await self.training.stop(grace)
        if self.router is not None:
            await self.router.stop(grace)
        for app in self.inference:
            await app.stop(grace)
        if self.registry is not None:
            await self.registry.stop(grace)


def _build_decoder(repo: Path) -> None:
    from modelport.inference.generative.sample_decoder import build_sample_decoder, is_built

    if not is_built(repo):
        log.warning("training the sample decoder '%s' (first start only, about a minute)",
                    SAMPLE_DECODER)  # fmt: skip
    build_sample_decoder(repo)
