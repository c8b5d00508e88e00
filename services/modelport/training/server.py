"""Composition root of the training service: settings → executor → core → gRPC server."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from modelport.common.server import GrpcServer, ServerOptions
from modelport.training.executors import Executor, LocalExecutor
from modelport.training.service import TrainingService
from modelport.training.servicer import SERVICE_NAME, TrainingServicer, register


@dataclass(frozen=True)
class TrainingSettings:
    data_dir: Path = Path("modelport-training")
    registry: str = "127.0.0.1:8003"
    host: str = "127.0.0.1"
    grpc_port: int = 0
    executor: str = "local"
    max_concurrent_jobs: int = 1
    max_restarts: int = 2
    max_message_bytes: int = 64 * 1024 * 1024
    # Kubernetes executor (see training/kubernetes.py).
    kubernetes: dict[str, object] = field(default_factory=dict)


def build_executor(settings: TrainingSettings) -> Executor:
    if settings.executor == "kubernetes":
        from modelport.training.kubernetes import KubernetesExecutor, KubernetesSettings

        return KubernetesExecutor(KubernetesSettings(**settings.kubernetes))  # type: ignore[arg-type]
    return LocalExecutor(max_restarts=settings.max_restarts)


class TrainingServer:
    def __init__(self, settings: TrainingSettings, executor: Executor | None = None) -> None:
        self.settings = settings
        self.service = TrainingService(
            settings.data_dir,
            settings.registry,
            executor or build_executor(settings),
            max_concurrent_jobs=settings.max_concurrent_jobs,
        )
        self.grpc: GrpcServer | None = None

    @property
    def address(self) -> str:
        assert self.grpc is not None
        return f"{self.settings.host}:{self.grpc.port}"

    async def start(self) -> int:
        await self.service.start()
        self.grpc = GrpcServer(
            ServerOptions(
                host=self.settings.host,
                port=self.settings.grpc_port,
                max_message_bytes=self.settings.max_message_bytes,
            )
        )
        servicer = TrainingServicer(self.service)
        self.grpc.add_service(SERVICE_NAME, lambda server: register(server, servicer))
        port = await self.grpc.start()
        await self.grpc.set_serving("", True)
        await self.grpc.set_serving(SERVICE_NAME, True)
        return port

    async def stop(self, grace_seconds: float = 5.0) -> None:
        if self.grpc is not None:
            await self.grpc.drain(grace_seconds)
        await self.service.stop()

    async def wait(self) -> None:
        assert self.grpc is not None
        await self.grpc.wait()
