"""Which models are loaded, in which versions, and their lifecycle.

Loading happens beside whatever is serving: the new versions are loaded and
warmed up in a worker thread, then swapped in with one dict assignment, and the
versions they replace are retired once their in-flight requests have finished.
A model that fails to load leaves every other model serving and reports why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelport.artifacts import repository
from modelport.artifacts.config import (
    PLATFORM_EXPORT,
    ModelSpec,
    build_spec,
    complete_from_program,
    infer_platform,
    read_config,
)
from modelport.artifacts.loaders import load_exported_program
from modelport.errors import FailedPrecondition, InvalidInput, ModelportError, NotFound, Unavailable
from modelport.inference.backends import Backend, BackendLoader, load_backend
from modelport.inference.batcher import DynamicBatcher
from modelport.inference.stats import VersionStats
from modelport.proto.inference import model_config_pb2 as mc

log = logging.getLogger(__name__)

READY, LOADING, UNLOADING, UNAVAILABLE = "READY", "LOADING", "UNLOADING", "UNAVAILABLE"


class ServedVersion:
    """One loaded version: its backend, batcher and statistics."""

    def __init__(self, spec: ModelSpec, version: int, backend: Backend) -> None:
        self.spec = spec
        self.version = version
        self.label = f"model '{spec.name}' version {version}"
        self.backend = backend
        self.stats = VersionStats(spec.name, version)
        self.batcher = DynamicBatcher(
            self.label,
            backend.run,
            max_batch_size=spec.max_batch_size,
            batching=spec.batching,
            instances=spec.instance_count,
            stats=self.stats,
            thread_initializer=_same_torch_threads(spec.intra_op_threads),
            run_async=getattr(backend, "run_async", None)
            if os.environ.get("X_ASYNC", "1") == "1"
            else None,
        )
        self._idle = asyncio.Event()
        self._retiring = False

    async def infer(
        self,
        inputs: Sequence[np.ndarray],
        rows: int,
        signature: tuple[tuple[int, ...], ...],
        deadline: float | None,
    ) -> list[np.ndarray]:
        stats = self.stats
        stats.in_flight += 1
        start = time.perf_counter_ns()
        try:
            outputs = await self.batcher.submit(inputs, rows, signature, deadline)
        except ModelportError as exc:
            stats.request_failed(time.perf_counter_ns() - start, exc.code)
            raise
        except asyncio.CancelledError:
            stats.request_failed(time.perf_counter_ns() - start, "CANCELLED")
            raise
        finally:
            stats.in_flight -= 1
            if self._retiring and stats.in_flight == 0:
                self._idle.set()
        stats.request_done(time.perf_counter_ns() - start)
        return outputs

    async def retire(self) -> None:
        """Wait for requests already holding this version, then stop its batcher."""
        self._retiring = True
        if self.stats.in_flight:
            await self._idle.wait()
        await self.batcher.close()
        await asyncio.to_thread(close_backend, self.backend)
        self.stats.close()


def _same_torch_threads(model_threads: int = 0) -> Callable[[], None]:
    """OpenMP's thread count is a per-thread setting: executor threads start with
    one per core whatever torch.set_num_threads said in the main thread (or
    the model's own INTRA_OP_THREAD_COUNT)."""
    import torch

    threads = model_threads or torch.get_num_threads()
    return lambda: torch.set_num_threads(threads)


@dataclass
class ModelEntry:
    name: str
    state: str
    reason: str = ""
    versions: dict[int, ServedVersion] = field(default_factory=dict)
    spec: ModelSpec | None = None
    source: Path | None = None

    @property
    def default_version(self) -> ServedVersion:
        return self.versions[max(self.versions)]


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    state: str
    reason: str


class ModelManager:
    def __init__(
        self, repository_dir: Path | None = None, *, load: BackendLoader = load_backend
    ) -> None:
        self.repository = repository_dir
        self._load = load  # model file -> Backend (the torch backend unless told otherwise)
        self._models: dict[str, ModelEntry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self.draining = False
        self._started = False
        # Told (model name, ready) after every change; the app points health at it.
        self.listeners: list[Callable[[str, bool], None]] = []

    # -- the server's state ---------------------------------------------------------

    @property
    def serving(self) -> bool:
        """Started and not draining: what ServerReady reports."""
        return self._started and not self.draining

    def mark_started(self) -> None:
        self._started = True

    def begin_drain(self) -> None:
        """New requests are refused with UNAVAILABLE from now on."""
        self.draining = True

    def _changed(self, name: str, ready: bool) -> None:
        for listener in self.listeners:
            listener(name, ready)

    # -- lookups (hot path: no awaits, no I/O) ----------------------------------

    def get(self, name: str, version: str = "") -> ServedVersion:
        entry = self._models.get(name)
        if entry is None or not entry.versions:
            if entry is not None and entry.state in (LOADING, UNLOADING, UNAVAILABLE):
                why = f": {entry.reason}" if entry.reason else ""
                raise Unavailable(f"model '{name}' is not ready ({entry.state.lower()}{why})")
            raise NotFound(f"model '{name}' is not loaded on this server")
        if self.draining:
            raise Unavailable("server is shutting down; retry on another replica")
        if not version:
            return entry.default_version
        try:
            return entry.versions[int(version)]
        except (ValueError, KeyError):
            loaded = ", ".join(str(v) for v in sorted(entry.versions))
            raise NotFound(
                f"model '{name}' has no version '{version}' (loaded: {loaded})"
            ) from None

    def is_ready(self, name: str, version: str = "") -> bool:
        try:
            self.get(name, version)
        except ModelportError:
            return False
        return True

    def entry(self, name: str) -> ModelEntry:
        entry = self._models.get(name)
        if entry is None or entry.spec is None or not entry.versions:
            self.get(name)  # raises the right error
        return self._models[name]

    def loaded(self) -> list[ModelEntry]:
        return [e for e in self._models.values() if e.versions]

    def index(self, ready_only: bool = False) -> list[IndexEntry]:
        names = set(self._models)
        if self.repository is not None:
            names.update(repository.model_names(self.repository))
        out: list[IndexEntry] = []
        for name in sorted(names):
            entry = self._models.get(name)
            if entry is not None and entry.versions:
                out.extend(IndexEntry(name, str(v), READY, "") for v in sorted(entry.versions))
                continue
            if ready_only:
                continue
            state, reason = (entry.state, entry.reason) if entry else (UNAVAILABLE, "unloaded")
            out.append(IndexEntry(name, "", state, reason))
        return out

    # -- lifecycle ------------------------------------------------------------------

    async def load(self, name: str) -> None:
        """Load (or reload) a model from the repository."""
        if self.repository is None:
            raise FailedPrecondition("this server has no model repository")
        await self.load_directory(name, repository.model_dir(self.repository, name))

    async def load_directory(
        self, name: str, model_dir: Path, versions: Sequence[int] | None = None
    ) -> None:
        """Load `name` from a Triton-layout folder, replacing what serves now without a gap."""
        async with self._lock(name):
            current = self._models.get(name)
            if current is None or not current.versions:
                self._models[name] = ModelEntry(name, LOADING)
            try:
                spec, loaded = await asyncio.to_thread(
                    _load_versions, name, model_dir, versions, self._load
                )
            except Exception as exc:
                reason = (
                    str(exc) if isinstance(exc, ModelportError) else f"{type(exc).__name__}: {exc}"
                )
                log.error("model '%s' failed to load: %s", name, reason)
                if current is None or not current.versions:
                    self._models[name] = ModelEntry(name, UNAVAILABLE, reason=reason)
                    self._changed(name, False)
                else:
                    current.reason = f"reload failed, still serving: {reason}"
                raise InvalidInput(f"failed to load model '{name}': {reason}") from None
            served = {v: ServedVersion(spec, v, backend) for v, backend in loaded.items()}
            for version in served.values():
                version.batcher.start()
            self._models[name] = ModelEntry(name, READY, "", served, spec, model_dir)
            log.info("model '%s' ready (versions %s)", name, sorted(served))
            self._changed(name, True)
            if current is not None and current.versions:
                await asyncio.gather(*(v.retire() for v in current.versions.values()))

    async def unload(self, name: str) -> None:
        async with self._lock(name):
            entry = self._models.get(name)
            if entry is None or not entry.versions:
                if self.repository is None or name not in repository.model_names(self.repository):
                    raise NotFound(f"model '{name}' is not loaded")
                return
            entry.state = UNLOADING
            retiring = list(entry.versions.values())
            self._models[name] = ModelEntry(name, UNAVAILABLE, "unloaded", source=entry.source)
            self._changed(name, False)
            await asyncio.gather(*(v.retire() for v in retiring))
            log.info("model '%s' unloaded", name)

    async def load_all(self, names: Sequence[str] | None = None) -> None:
        """Load the named models (default: the whole repository); failures are recorded."""
        if names is None:
            names = repository.model_names(self.repository) if self.repository else []
        for name in names:
            with contextlib.suppress(ModelportError):  # recorded in the index
                await self.load(name)

    async def close(self) -> None:
        self.draining = True
        retiring = [v for e in self._models.values() for v in e.versions.values()]
        await asyncio.gather(*(v.retire() for v in retiring))

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())


def _load_versions(
    name: str, model_dir: Path, versions: Sequence[int] | None, load: BackendLoader
) -> tuple[ModelSpec, dict[int, Backend]]:
    """Blocking: read config, pick versions, load and warm up each (worker thread)."""
    config = read_config(model_dir) or mc.ModelConfig()
    available = repository.available_versions(model_dir)
    if versions is None:
        versions = repository.select_versions(name, available, config.version_policy)
    else:
        missing = [v for v in versions if v not in available]
        if missing:
            raise InvalidInput(f"model '{name}': no version folder(s) {missing} in {model_dir}")
    first_dir = model_dir / str(versions[0])
    config.platform = infer_platform(config, first_dir)
    if config.platform == PLATFORM_EXPORT and (not config.input or not config.output):
        filename = config.default_model_filename or "model.pt2"
        complete_from_program(config, load_exported_program(first_dir / filename, name))
    spec = build_spec(name, config)
    loaded: dict[int, Backend] = {}
    try:
        for version in versions:
            backend = load(spec, model_dir / str(version))
            loaded[version] = backend
            warm_up(spec, backend)
    except BaseException:
        for backend in loaded.values():
            close_backend(backend)  # compute processes of a load that failed
        raise
    return spec, loaded


def close_backend(backend: Backend) -> None:
    """Release what a backend holds beyond memory (a compute backend's processes)."""
    close = getattr(backend, "close", None)
    if close is not None:
        close()


def warm_up(spec: ModelSpec, backend: Backend) -> None:
    """Run zero-filled batches (1 and the largest) so the first request is not slow,
    and fail the load here if the model cannot run on its declared inputs."""
    sizes = [1] if spec.max_batch_size == 0 else sorted({1, spec.max_batch_size})
    for rows in sizes:
        arrays = []
        for tensor in spec.inputs:
            dims = [d if d > 0 else 1 for d in tensor.dims]
            shape = dims if spec.max_batch_size == 0 else [rows, *dims]
            if tensor.datatype.name == "BYTES":
                arrays.append(np.full(shape, b"", dtype=np.object_))
            else:
                dtype = tensor.datatype.numpy if tensor.datatype.numpy is not None else np.uint16
                arrays.append(np.zeros(shape, dtype=dtype))
        try:
            outputs = backend.run(arrays)
        except ModelportError:
            raise
        except Exception as exc:
            raise InvalidInput(
                f"model '{spec.name}' failed its warm-up run (zero inputs, batch {rows}): {exc}"
            ) from None
        if spec.max_batch_size > 0:
            for out_spec, output in zip(spec.outputs, outputs, strict=True):
                if output.ndim == 0 or output.shape[0] != rows:
                    raise InvalidInput(
                        f"model '{spec.name}': output '{out_spec.name}' has shape "
                        f"{list(output.shape)} for a batch of {rows}; max_batch_size > 0 "
                        "needs the batch as dim 0"
                    )
