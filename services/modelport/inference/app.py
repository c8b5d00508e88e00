"""Composition root of the inference service: settings → manager → servicer → server.

Owns start-up (load models, then report ready), health per model, and the
SIGTERM drain: readiness false, new requests refused with UNAVAILABLE,
in-flight ones finish within the grace period, then exit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from modelport.common import logs, metrics, tracing
from modelport.common.server import (
    GrpcServer,
    ServerOptions,
    install_stop_signals,
    use_fast_event_loop,
)
from modelport.inference.model_manager import ModelManager
from modelport.inference.registry_follower import RegistryFollower
from modelport.inference.servicer import InferenceServicer
from modelport.inference.shared_memory import SystemSharedMemory
from modelport.proto.inference import grpc_service_pb2, grpc_service_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


@dataclass
class InferenceSettings:
    model_repository: Path | None = None
    host: str = "0.0.0.0"
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_message_mb: int = 64
    grace_seconds: float = 25.0
    model_control_mode: str = "none"  # none: load everything at start; explicit: on request
    load_models: list[str] = field(default_factory=list)
    torch_threads: int = 0  # 0: one per core
    reuse_port: bool = False
    workers: int = 1  # > 1: that many processes share the gRPC port (see workers.py)
    # Clients on this host may register /dev/shm regions and pass tensors through
    # them; off by default, as Triton's --allow-client-shm (a registered region
    # can name any shared memory object this server's user may open).
    allow_shared_memory: bool = False
    log_level: str = "info"
    log_format: str = "text"
    otlp_endpoint: str = ""
    # Follow models in a registry: "NAME@ALIAS", "NAME:VERSION" or "NAME".
    registry: str = ""
    models: list[str] = field(default_factory=list)
    cache_dir: Path = Path("~/.cache/modelport/artifacts")


class InferenceApp:
    def __init__(self, settings: InferenceSettings, *, private_port: bool = False) -> None:
        self.settings = settings
        self.manager = ModelManager(settings.model_repository)
        explicit = settings.model_control_mode == "explicit"
        self.shm = SystemSharedMemory(enabled=settings.allow_shared_memory)
        self.servicer = InferenceServicer(
            self.manager, explicit_control=explicit, shared_memory=self.shm
        )
        self.server = GrpcServer(
            ServerOptions(
                host=settings.host,
                port=settings.grpc_port,
                max_message_bytes=settings.max_message_mb * 1024 * 1024,
                reuse_port=settings.reuse_port,
                extra_addresses=("127.0.0.1:0",) if private_port else (),
            )
        )
        self.server.add_service(
            SERVICE_NAME,
            lambda s: grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
                self.servicer, s
            ),
        )
        self.manager.listeners.append(self._health_changed)
        self._pending_health: set[asyncio.Task[None]] = set()
        self.follower: RegistryFollower | None = None
        self.port = 0

    @property
    def private_port(self) -> int:
        return self.server.extra_ports[0]

    def _health_changed(self, name: str, ready: bool) -> None:
        task = asyncio.get_running_loop().create_task(self.server.set_serving(name, ready))
        self._pending_health.add(task)
        task.add_done_callback(self._pending_health.discard)

    async def start(self) -> int:
        """Bind the port first (live), then load models, then report ready."""
        settings = self.settings
        await self.server.set_serving("", False)
        self.port = await self.server.start()
        if settings.model_control_mode == "explicit":
            names = [] if "*" in settings.load_models else settings.load_models
            if "*" in settings.load_models:
                await self.manager.load_all()
            else:
                await self.manager.load_all(names)
        else:
            await self.manager.load_all()
        if settings.registry and settings.models:
            self.follower = RegistryFollower(
                self.manager, settings.registry, settings.models, settings.cache_dir.expanduser()
            )
            self.follower.start()
            await self.follower.ready.wait()
        self.servicer.ready = True
        await self.server.set_serving("", True)
        if self._pending_health:
            await asyncio.gather(*self._pending_health)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        grace = self.settings.grace_seconds if grace is None else grace
        if self.follower is not None:
            await self.follower.stop()
        self.manager.draining = True
        self.servicer.ready = False
        await self.server.drain(grace)
        await self.manager.close()
        self.shm.close()


def configure_torch(threads: int) -> None:
    # The executor thread re-takes the GIL between aten ops of an FX program;
    # with the default 5 ms switch interval each hand-off can wait that long
    # behind a busy event loop. A short interval hands the GIL over quickly.
    sys.setswitchinterval(float(os.environ.get("MODELPORT_SWITCH_INTERVAL", "0.0002")))
    if threads <= 0:
        threads = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    torch.set_num_threads(threads)


async def serve(settings: InferenceSettings) -> None:
    configure_torch(settings.torch_threads)
    tracing.configure("inference", settings.otlp_endpoint)
    if settings.metrics_port >= 0:
        metrics.serve_metrics(settings.host, settings.metrics_port)
    app = InferenceApp(settings)
    stopped = install_stop_signals(app.stop)
    await app.start()
    log.info("inference service ready on %s:%d", settings.host, app.port)
    await stopped.wait()
    tracing.shutdown()
    log.info("inference service stopped")


def run(settings: InferenceSettings) -> None:
    if settings.workers > 1:
        from modelport.inference.workers import supervise

        supervise(settings)
        return
    logs.configure(settings.log_level, settings.log_format)
    use_fast_event_loop()
    asyncio.run(serve(settings))
