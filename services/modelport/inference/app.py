"""Composition root of the inference service: settings → manager → servicer → server.

Owns start-up (load models, then report ready), health per model, and the
drain: readiness false, new requests refused with UNAVAILABLE, in-flight ones
finish within the grace period. `run` hands it to the common service runtime
(logs, signals, metrics, the `--workers` supervisor).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from modelport.artifacts.torch_backend import BackendLoader, load_backend
from modelport.auth.audit import LogSink
from modelport.common.access_config import build_access_control
from modelport.common.encryption import sealing_of
from modelport.common.runtime import run_service
from modelport.common.server import GrpcServer
from modelport.common.tls import ChannelMaker
from modelport.inference.artifact_cache import ArtifactCache
from modelport.inference.fleet import ModelControl
from modelport.inference.front_end import FrontEnd, choose
from modelport.inference.model_manager import ModelManager
from modelport.inference.peers import PeerGroup
from modelport.inference.pool import ModelPool
from modelport.inference.pool import install_metrics as install_pool_metrics
from modelport.inference.pool_servicer import SERVICE_NAME as POOL_SERVICE
from modelport.inference.pool_servicer import PoolServicer
from modelport.inference.pool_servicer import register as register_pool
from modelport.inference.pool_source import RegistryPoolSource
from modelport.inference.registry_follower import RegistryFollower
from modelport.inference.servicer import InferenceServicer
from modelport.inference.serving import DataPlane, SendToOwner
from modelport.inference.settings import InferenceSettings
from modelport.inference.shared_memory import SystemSharedMemory
from modelport.proto.inference import grpc_service_pb2, grpc_service_pb2_grpc

if TYPE_CHECKING:
    from modelport.artifacts.config import ModelSpec
    from modelport.inference.generative.loading import EngineOverrides
    from modelport.inference.generative.served import ServedGenerative

log = logging.getLogger(__name__)
SERVICE_NAME = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name

__all__ = ["InferenceApp", "InferenceSettings", "run"]


class InferenceApp:
    def __init__(self, settings: InferenceSettings) -> None:
        self.settings = settings
        overrides = settings.engine_overrides(_torch_threads())
        self.manager = ModelManager(
            settings.model_repository,
            load=backend_loader(settings),
            generative=functools.partial(_load_generative, overrides=overrides),
        )
        self.peers = PeerGroup()  # sibling workers, when several share the port
        explicit = settings.model_control_mode == "explicit"
        self.shm = SystemSharedMemory(enabled=settings.allow_shared_memory)
        self.control = ModelControl(
            self.manager, self.peers, explicit=explicit, shared_memory=self.shm
        )
        self.pool: ModelPool | None = None
        self.pool_source: RegistryPoolSource | None = None
        if settings.pool:
            self.pool_source = RegistryPoolSource(settings.registry, settings.pool_alias)
            self.pool = ModelPool(
                self.manager,
                self.pool_source,
                ArtifactCache(settings.cache_dir.expanduser()),
                settings.pool_budget_bytes(),
            )
        self.serving = DataPlane(self.manager, self.shm, self._sequence_owner, self.pool)
        self.servicer = InferenceServicer(self.manager, self.control, self.serving)
        extra = ("127.0.0.1:0",) if settings.private_port else ()
        # Model-control calls are audited (JSON lines); with a policy or --allowed-peer
        # every call is checked (siblings on the private loopback port are trusted).
        access = build_access_control(
            "inference", settings, audit_sink=LogSink(), trust_local_plaintext=bool(extra)
        )
        options = settings.server_options(reuse_port=settings.reuse_port, extra_addresses=extra)
        # With the Go front (`--fast-path`) on the public address, this server listens on
        # a private loopback port behind it and ModelInfer comes over its Unix socket.
        self.front: FrontEnd | None = None
        front = choose(settings)
        if settings.fast_path != "off":
            log.info("fast path %s: %s", "on" if front.binary else "off", front.reason)
        if front.binary is not None:
            self.front = FrontEnd(
                front.binary, self._infer_from_front,
                max_message_bytes=options.max_message_bytes,
                grace_seconds=settings.grace_seconds,
            )  # fmt: skip
            options = dataclasses.replace(
                options, host="127.0.0.1", port=0, listening_label="gRPC behind the fast path"
            )
        self.server = GrpcServer(options, access=access)
        self.server.add_service(
            SERVICE_NAME,
            lambda s: grpc_service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
                self.servicer, s
            ),
        )
        self.manager.listeners.append(self._health_changed)
        self._pending_health: set[asyncio.Task[None]] = set()
        self.follower: RegistryFollower | None = None
        # Every replica pushes its state to routers (served versions, loads, pool).
        pool_servicer = PoolServicer(self.manager, self.pool)
        self.server.add_service(POOL_SERVICE, lambda s: register_pool(s, pool_servicer))
        self.port = 0

    @property
    def private_port(self) -> int:
        return self.server.extra_ports[0]

    def sibling_address(self) -> str:
        return f"127.0.0.1:{self.private_port}"

    async def join_siblings(self, addresses: list[str]) -> None:
        self.peers.connect(addresses, own_address=self.sibling_address())

    def _sequence_owner(self, key: str) -> SendToOwner | None:
        """The sibling worker holding a sequence, as a call (None: this worker)."""
        stub = self.peers.owner(key) if self.peers else None
        if stub is None:
            return None
        return functools.partial(self.peers.infer, stub, timeout=None)

    async def _infer_from_front(
        self, request: grpc_service_pb2.ModelInferRequest, remaining: float | None
    ) -> grpc_service_pb2.ModelInferResponse:
        return await self.serving.infer(request, remaining)

    def _health_changed(self, name: str, ready: bool) -> None:
        task = asyncio.get_running_loop().create_task(self.server.set_serving(name, ready))
        self._pending_health.add(task)
        task.add_done_callback(self._pending_health.discard)

    async def start(self) -> int:
        """Bind the port first (live), then load models, then report ready."""
        settings = self.settings
        await self.server.set_serving("", False)
        self.port = await self.server.start()
        if self.front is not None:
            private = f"127.0.0.1:{self.port}"
            self.port = await self.front.start(settings.host, settings.grpc_port, private)
        if settings.model_control_mode == "explicit":
            if "*" in settings.load_models:
                await self.manager.load_all()
            else:
                await self.manager.load_all(settings.load_models)
        else:
            await self.manager.load_all()
        if self.pool is not None:
            if settings.metrics_port >= 0:
                install_pool_metrics(self.pool)
            log.info("pool: models load on demand within %d bytes", self.pool.cache.budget_bytes)
        if settings.registry and settings.models:
            self.follower = RegistryFollower(
                self.manager,
                settings.registry,
                settings.models,
                settings.cache_dir.expanduser(),
                channels=ChannelMaker(settings.upstream_tls),
                sealing=sealing_of(settings.kek_file),
            )
            self.follower.start()
            await self.follower.ready.wait()
        self.manager.mark_started()
        await self.server.set_serving("", True)
        if self._pending_health:
            await asyncio.gather(*self._pending_health)
        return self.port

    async def stop(self, grace: float | None = None) -> None:
        grace = self.settings.grace_seconds if grace is None else grace
        if self.follower is not None:
            await self.follower.stop()
        self.manager.begin_drain()
        if self.front is None:
            await self.server.drain(grace)
        else:  # readiness false on both at once; the front's calls are answered meanwhile
            await asyncio.gather(self.front.stop(grace), self.server.drain(grace))
        if self.pool is not None:
            await self.pool.close()
        if self.pool_source is not None:
            await self.pool_source.close()
        await self.manager.close()
        await self.peers.close()
        self.shm.close()


def backend_loader(settings: InferenceSettings) -> BackendLoader:
    """--executor: where torch models run (generative models have their own engine)."""
    if settings.executor == "thread" or settings.pool:
        # A pool replica runs its models in this process: its budget charges the bytes
        # measured at load, and a compute process per model would add a runtime each.
        return load_backend
    from modelport.inference.compute import process_loader

    return process_loader(_torch_threads())


def _torch_threads() -> int:
    """The threads configured for this process (OpenMP's count is per thread: the engine
    thread is told explicitly)."""
    import torch

    return torch.get_num_threads()


def _load_generative(
    spec: ModelSpec, version: int, version_dir: Path, *, overrides: EngineOverrides
) -> ServedGenerative:
    from modelport.inference.generative.loading import load_generative

    return load_generative(spec, version, version_dir, overrides)


def configure_torch(threads: int) -> None:
    import torch

    # The executor thread re-takes the GIL between aten ops of an FX program;
    # with the default 5 ms switch interval each hand-off can wait that long
    # behind a busy event loop. A short interval hands the GIL over quickly.
    sys.setswitchinterval(float(os.environ.get("MODELPORT_SWITCH_INTERVAL", "0.0002")))
    if threads <= 0:
        threads = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
    torch.set_num_threads(threads)


def build(settings: InferenceSettings) -> InferenceApp:
    configure_torch(settings.torch_threads)
    return InferenceApp(settings)


def run(settings: InferenceSettings) -> None:
    run_service("inference", settings, build, workers=settings.workers)
