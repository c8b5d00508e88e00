"""What `modelport up` runs: registry, one inference service per model, router, training.

Everything runs in this one process, each service on its own port, as the
cluster runs them in their own pods: the router on the address clients use
(8001) balances over the inference services it is given (static discovery)
and follows the registry (8003) for aliases and traffic policies. The sample
models are pushed to the registry once (alias `production` → version 1),
so `modelport models policy` works against the stack out of the box.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StackSettings:
    data_dir: Path
    host: str = "127.0.0.1"
    grpc_port: int = 8001
    metrics_port: int = 8002
    registry_port: int = 8003
    training_port: int = 8004
    models: tuple[str, ...] = ("simple", "mlp")


class LocalStack:
    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.registry: Any = None
        self.inference: list[Any] = []
        self.router: Any = None
        self.training: Any = None

    async def start(self) -> str:
        """Start every service; returns the router's address."""
        from modelport.client.registry import ensure_pushed
        from modelport.common.metrics import serve_metrics
        from modelport.common.server import ServerOptions
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
        registry_port = await self.registry.start()
        registry_address = f"127.0.0.1:{registry_port}"
        for name in settings.models:
            await asyncio.to_thread(ensure_pushed, registry_address, repo / name, name)
        endpoints = []
        for name in settings.models:
            # Following the registry: a fine-tuned version aliased `canary` is served
            # beside `production`, and the router splits traffic between them.
            app = InferenceApp(
                InferenceSettings(
                    model_repository=repo,
                    host="127.0.0.1",
                    grpc_port=0,
                    metrics_port=-1,
                    model_control_mode="explicit",
                    registry=registry_address,
                    models=[f"{name}@production", f"{name}@canary"],
                    cache_dir=settings.data_dir / "cache",
                )
            )
            port = await app.start()
            self.inference.append(app)
            endpoints.append(Endpoint(name, f"127.0.0.1:{port}"))
        self.router = RouterApp(
            StaticDiscovery(endpoints),
            RegistryPolicySource(registry_address),
            ServerOptions(host=settings.host, port=settings.grpc_port),
            metrics=settings.metrics_port >= 0,
        )
        router_port = await self.router.start()
        self.training = TrainingServer(
            TrainingSettings(
                data_dir=settings.data_dir / "training",
                registry=registry_address,
                host=settings.host,
                grpc_port=settings.training_port,
            )
        )
        await self.training.start()
        if settings.metrics_port >= 0:
            serve_metrics(settings.host, settings.metrics_port)
        return f"{settings.host}:{router_port}"

    async def stop(self, grace: float = 5.0) -> None:
        if self.training is not None:
            await self.training.stop(grace)
        if self.router is not None:
            await self.router.stop(grace)
        for app in self.inference:
            await app.stop(grace)
        if self.registry is not None:
            await self.registry.stop(grace)
