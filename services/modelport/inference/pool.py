"""`serve inference --pool`: any model of the registry, loaded on its first request,
kept under a memory budget, evicted least recently used.

Each request goes through `use(name)`: a model not resident is resolved in the
registry (`NAME@--pool-alias`), downloaded into the sha256-keyed artifact cache
(kept on disk, so a model evicted and asked for again is only re-loaded), loaded
and warmed up by the `ModelManager`, and pinned while the request runs. The
`ModelCache` keeps the budget: a load is charged the version's memory estimate
(its `pool.modelport.io/memory-bytes` label, else the archive's size) and then the
bytes its tensors really hold; idle models make room, least recently used first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc

from modelport.errors import NotFound, Unavailable
from modelport.inference.artifact_cache import Artifact, ArtifactCache
from modelport.inference.model_cache import Loaded, ModelCache
from modelport.inference.model_manager import ModelManager
from modelport.inference.registry_follower import fetch_artifact
from modelport.proto.modelport.registry.v1 import registry_pb2 as pb
from modelport.proto.modelport.registry.v1 import registry_pb2_grpc

log = logging.getLogger(__name__)

MEMORY_LABEL = "pool.modelport.io/memory-bytes"


def tensor_bytes(module: object) -> int:
    """Bytes of a loaded model's parameters and buffers (shared storage counted once)."""
    seen: set[int] = set()
    total = 0
    tensors = [*module.parameters(), *module.buffers()]  # type: ignore[attr-defined]
    for tensor in tensors:
        storage = tensor.untyped_storage()
        if storage.data_ptr() in seen:
            continue
        seen.add(storage.data_ptr())
        total += storage.nbytes()
    return total


class ModelPool:
    def __init__(
        self,
        manager: ModelManager,
        registry: str,
        cache_dir: Path | str,
        budget_bytes: int,
        alias: str = "production",
    ) -> None:
        self.manager = manager
        self.registry = registry
        self.alias = alias
        self.artifacts = ArtifactCache(cache_dir)
        self.cache: ModelCache[Artifact] = ModelCache(
            budget_bytes, self._load, self._unload, estimate=self._estimate, on_change=self._changed
        )
        # Told after every change of what is loaded (the Watch streams to routers).
        self.listeners: list[Callable[[], None]] = []
        self._prefetches: set[asyncio.Task[None]] = set()
        self._estimates: dict[str, int] = {}
        self._wanted: dict[str, Artifact] = {}
        self._channel: grpc.aio.Channel | None = None
        self._stub: registry_pb2_grpc.ModelRegistryAsyncStub | None = None

    async def start(self) -> None:
        self._channel = grpc.aio.insecure_channel(self.registry)
        self._stub = registry_pb2_grpc.ModelRegistryStub(self._channel)  # type: ignore[assignment]

    async def close(self) -> None:
        await self.cache.close()
        if self._channel is not None:
            await self._channel.close()

    @contextlib.asynccontextmanager
    async def use(self, name: str, deadline: float | None) -> AsyncIterator[None]:
        """`name` loaded (resolving, downloading and evicting as needed) and pinned."""
        state = self.cache.state().get(name)
        if state is None or state[0] != "READY":
            await self._resolve(name)
        async with self.cache.use(name, deadline):
            yield

    # -- the cache's loader and unloader ---------------------------------------------

    async def _resolve(self, name: str) -> None:
        assert self._stub is not None, "start() first"
        ref = f"{name}@{self.alias}"
        try:
            version = await self._stub.GetVersion(pb.GetVersionRequest(ref=ref), timeout=10)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"model '{name}': {exc.details()}") from None
            raise Unavailable(
                f"model '{name}': the registry at {self.registry} is unreachable "
                f"({exc.code().name}); models already loaded keep serving"
            ) from None
        self._wanted[name] = Artifact(name, version.version, version.sha256)
        label = version.labels.get(MEMORY_LABEL, "")
        self._estimates[name] = int(label) if label.isdigit() else int(version.size_bytes)

    def _estimate(self, name: str) -> int:
        return self._estimates.get(name, 0)

    async def _load(self, name: str) -> Loaded[Artifact]:
        assert self._stub is not None
        artifact = self._wanted[name]
        if not await asyncio.to_thread(self.artifacts.has, artifact.sha256):
            await fetch_artifact(self._stub, self.artifacts, artifact)
        model_dir = await asyncio.to_thread(self.artifacts.model_dir, name, [artifact])
        await self.manager.load_directory(name, model_dir, versions=[artifact.version])
        served = self.manager.entry(name).versions[artifact.version]
        module = getattr(served.backend, "module", None)  # torch backends hold one
        size = tensor_bytes(module) if module is not None else self._estimate(name)
        log.info("pool: model '%s' version %d loaded (%d bytes)", name, artifact.version, size)
        return Loaded(artifact, size)

    async def _unload(self, name: str, artifact: Artifact) -> None:
        await self.manager.unload(name)
        log.info("pool: model '%s' evicted", name)

    def prefetch(self, name: str) -> None:
        """Load `name` without a request (a router spreading a hot model); errors are logged."""

        async def load() -> None:
            try:
                async with self.use(name, None):
                    pass
            except Exception as exc:
                log.warning("pool: prefetch of model '%s' failed: %s", name, exc)

        task = asyncio.get_running_loop().create_task(load())
        self._prefetches.add(task)
        task.add_done_callback(self._prefetches.discard)

    def _changed(self) -> None:
        for listener in list(self.listeners):
            listener()


def install_metrics(pool: ModelPool) -> None:
    """modelport_inference_pool_*: memory, models resident, hits/loads/evictions, load time."""
    from opentelemetry.metrics import CallbackOptions, Observation

    from modelport.common import metrics

    meter = metrics.meter("modelport.inference.pool")
    cache = pool.cache

    def memory(_: CallbackOptions) -> list[Observation]:
        return [
            Observation(cache.charged_bytes, {"kind": "used"}),
            Observation(cache.budget_bytes, {"kind": "budget"}),
        ]

    def models(_: CallbackOptions) -> list[Observation]:
        return [Observation(sum(1 for s, _, _ in cache.state().values() if s == "READY"))]

    def counts(_: CallbackOptions) -> list[Observation]:
        stats = cache.stats
        return [
            Observation(stats.hits, {"outcome": "hit"}),
            Observation(stats.misses, {"outcome": "load"}),
            Observation(stats.joins, {"outcome": "join"}),
            Observation(stats.evictions, {"outcome": "eviction"}),
            Observation(stats.load_failures, {"outcome": "load_failure"}),
        ]

    def load_seconds(_: CallbackOptions) -> list[Observation]:
        return [Observation(sum(cache.stats.load_seconds))]

    meter.create_observable_gauge(
        "modelport_inference_pool_bytes", [memory], description="Pool memory charged and budget."
    )
    meter.create_observable_gauge(
        "modelport_inference_pool_models", [models], description="Models loaded in the pool."
    )
    meter.create_observable_counter(
        "modelport_inference_pool_events", [counts],
        description="Pool requests by outcome (hit, load, join) and evictions.",
    )  # fmt: skip
    meter.create_observable_counter(
        "modelport_inference_pool_load_seconds", [load_seconds], unit="s",
        description="Time spent loading models into the pool.",
    )  # fmt: skip
