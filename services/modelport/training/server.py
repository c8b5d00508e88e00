"""Composition root of the training service: settings → executor → core → gRPC server."""

from __future__ import annotations

from modelport.auth.audit import LogSink
from modelport.common.access_config import build_access_control
from modelport.common.runtime import run_service
from modelport.common.server import GrpcServer
from modelport.training.executors import Executor, LocalExecutor
from modelport.training.service import TrainingService
from modelport.training.servicer import SERVICE_NAME, TrainingServicer, register
from modelport.training.settings import TrainingSettings

__all__ = ["TrainingServer", "TrainingSettings", "build_executor", "run"]


def build_executor(settings: TrainingSettings) -> Executor:
    if settings.executor == "kubernetes":
        from modelport.training.kubernetes import KubernetesExecutor, KubernetesSettings

        return KubernetesExecutor(
            KubernetesSettings(
                namespace=settings.namespace,
                image=settings.image,
                service_address=settings.service_address,
                node_selector=settings.node_selector,
                tolerations=settings.tolerations,
                use_trainjob=settings.use_trainjob,
                max_restarts=settings.max_restarts,
                gpu_resource=settings.gpu_resource,
                cpu_request=settings.worker_cpu_request,
                memory_limit=settings.worker_memory_limit,
            )
        )
    return LocalExecutor(max_restarts=settings.max_restarts)


class TrainingServer:
    """The training service's gRPC server; `start` returns the bound port."""

    def __init__(self, settings: TrainingSettings, executor: Executor | None = None) -> None:
        self.settings = settings
        self.service = TrainingService(
            settings.data_dir,
            settings.registry,
            executor or build_executor(settings),
            max_concurrent_jobs=settings.max_concurrent_jobs,
            poll_seconds=settings.poll_seconds,
            worker_threads=settings.worker_threads,
        )
        self.grpc: GrpcServer | None = None

    @property
    def address(self) -> str:
        assert self.grpc is not None
        return f"{self.settings.host}:{self.grpc.port}"

    async def start(self) -> int:
        await self.service.start()
        # Job changes are audited (JSON lines); with a policy or --allowed-peer every
        # RPC is authenticated and authorized (a job pushes a version of its base model;
        # a job is seen and followed by the tenant that created it).
        access = build_access_control(
            "training", self.settings, audit_sink=LogSink(), owner_of=self.service.owner_of
        )
        self.grpc = GrpcServer(self.settings.server_options(), access=access)
        servicer = TrainingServicer(self.service)
        self.grpc.add_service(SERVICE_NAME, lambda server: register(server, servicer))
        port = await self.grpc.start()
        await self.grpc.set_serving("", True)
        await self.grpc.set_serving(SERVICE_NAME, True)
        return port

    async def stop(self, grace: float = 5.0) -> None:
        if self.grpc is not None:
            await self.grpc.drain(grace)
        await self.service.stop()


def run(settings: TrainingSettings) -> None:
    run_service("training", settings, TrainingServer)
