"""`serve inference --pool`: the models the registry marks pooled, each loaded on its
first request, kept under a memory budget, evicted lowest priority and least
recently used first.

Each request goes through `use(name, version)`: a model not resident is resolved
through a `PoolSource` (the registry: its pool placement — priority and memory
estimate — and the version, `NAME@--pool-alias` or the number the router asked
for), downloaded into the sha256-keyed artifact cache (kept on disk, so a model
evicted and asked for again is only re-loaded), loaded and warmed up by the
`ModelManager`, and pinned while the request runs. The `ModelCache` keeps the
budget: a load is charged the placement's memory estimate (else the archive's
size) and then the bytes its tensors really hold. A request for another version
than the one resident (an alias moved) waits for the old one's requests to end,
then loads the new one.

Transport-free: the registry is reached through `PoolSource` (gRPC in `pool_source`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from modelport.errors import Unavailable
from modelport.inference.artifact_cache import Artifact, ArtifactCache
from modelport.inference.load_phases import DOWNLOADING
from modelport.inference.model_cache import Loaded, ModelCache
from modelport.inference.model_manager import ModelManager

log = logging.getLogger(__name__)

# Tries of a request whose model turned out to hold another version once acquired.
MAX_VERSION_SWAPS = 3


@dataclass(frozen=True)
class PoolVersion:
    """What the registry says about a pooled model's version."""

    artifact: Artifact
    priority: int = 0
    estimate_bytes: int = 0


class PoolSource(Protocol):
    async def resolve(self, name: str, version: int | None) -> PoolVersion:
        """The version to load (None: the pool's alias). NotFound for a model the
        registry does not know or does not mark pooled."""
        ...

    async def fetch(self, artifact: Artifact, cache: ArtifactCache) -> None:
        """Download the version's archive into the cache (sha256-checked)."""
        ...


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
        source: PoolSource,
        artifacts: ArtifactCache,
        budget_bytes: int,
    ) -> None:
        self.manager = manager
        self.source = source
        self.artifacts = artifacts
        self.cache: ModelCache[Artifact] = ModelCache(
            budget_bytes, self._load, self._unload, estimate=self._estimate,
            on_change=self._changed, priority=self.priority,
        )  # fmt: skip
        # Told after every change of what is loaded (the Watch streams to routers).
        self.listeners: list[Callable[[], None]] = []
        self._prefetches: set[asyncio.Task[None]] = set()
        self._wanted: dict[str, PoolVersion] = {}  # what the next load of a model loads
        self._current: dict[str, PoolVersion] = {}  # what is loaded or loading

    async def close(self) -> None:
        for task in list(self._prefetches):
            task.cancel()
        await asyncio.gather(*self._prefetches, return_exceptions=True)
        await self.cache.close()

    def priority(self, name: str) -> int:
        current = self._current.get(name)
        return current.priority if current else 0

    def version(self, name: str) -> int:
        """The version loaded or loading (0: none)."""
        current = self._current.get(name)
        return current.artifact.version if current else 0

    @contextlib.asynccontextmanager
    async def use(self, name: str, version: str, deadline: float | None) -> AsyncIterator[None]:
        """`name` (at `version`, "" for the pool's alias) loaded — resolving,
        downloading and evicting as needed — and pinned."""
        want = int(version) if version.isdigit() else None
        for _ in range(MAX_VERSION_SWAPS):
            state = self.cache.state().get(name)
            if state is not None and want is not None and self.version(name) != want:
                await self.cache.evict(name, deadline)  # the old version's requests end first
                state = None
            if state is None or state[0] != "READY":
                self._wanted[name] = await self.source.resolve(name, want)
            async with self.cache.use(name, deadline) as artifact:
                if want is None or artifact.version == want:
                    yield
                    return
            # Another request's load of another version won the race: swap again.
        raise Unavailable(
            f"model '{name}' version {version}: other versions keep being asked for on "
            "this pool replica; retry"
        )

    # -- the cache's loader and unloader ---------------------------------------------

    def _estimate(self, name: str) -> int:
        wanted = self._wanted.get(name)
        return wanted.estimate_bytes if wanted else 0

    async def _load(self, name: str) -> Loaded[Artifact]:
        self._current[name] = wanted = self._wanted[name]
        try:
            return await self._load_version(name, wanted.artifact)
        except BaseException:
            self._current.pop(name, None)
            raise

    async def _load_version(self, name: str, artifact: Artifact) -> Loaded[Artifact]:
        if not await asyncio.to_thread(self.artifacts.has, artifact.sha256):
            phases = self.manager.phases
            phases.enter(name, DOWNLOADING, str(artifact.version))
            try:
                await self.source.fetch(artifact, self.artifacts)
            except BaseException:
                phases.done(name)
                raise
        model_dir = await asyncio.to_thread(self.artifacts.model_dir, name, [artifact])
        await self.manager.load_directory(name, model_dir, versions=[artifact.version])
        served = self.manager.entry(name).versions[artifact.version]
        module = getattr(served.backend, "module", None)  # torch backends hold one
        size = tensor_bytes(module) if module is not None else self._estimate(name)
        log.info("pool: model '%s' version %d loaded (%d bytes)", name, artifact.version, size)
        return Loaded(artifact, size)

    async def _unload(self, name: str, artifact: Artifact) -> None:
        self._current.pop(name, None)
        await self.manager.unload(name)
        log.info("pool: model '%s' version %d evicted", name, artifact.version)

    def prefetch(self, name: str) -> None:
        """Load `name` without a request (a router spreading a hot model); errors are logged."""

        async def load() -> None:
            try:
                async with self.use(name, "", None):
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
