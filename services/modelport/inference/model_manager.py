"""Which models are loaded, in which versions, and their lifecycle.

Loading happens beside whatever is serving: the new versions are loaded and
warmed up in a worker thread, then swapped in with one dict assignment, and the
versions they replace are retired once their in-flight requests have finished
(a version the reload dropped first lingers `LINGER_SECONDS` for requests that
name it, sent by routers that had not yet heard of the swap).
A model that fails to load leaves every other model serving and reports why.
Loading an ensemble loads the members it needs first. A load may replace the
config (and the files) of the repository's model for that load, as Triton's
RepositoryModelLoad `config` and `file:` parameters do.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modelport.artifacts import repository
from modelport.artifacts.config import (
    PLATFORM_ENSEMBLE,
    PLATFORM_EXPORT,
    PLATFORM_GENERATIVE,
    ModelSpec,
    build_spec,
    check_exported_batch,
    complete_from_program,
    infer_platform,
    parse_config_text,
    read_config,
)
from modelport.artifacts.loaders import load_exported_program
from modelport.artifacts.sealed_archives import SealedArchive
from modelport.artifacts.torch_backend import (
    Backend,
    BackendLoader,
    close_backend,
    load_backend,
    sealed_backend,
)
from modelport.artifacts.warmup import warm_up
from modelport.common import openmp
from modelport.common.generative_load import GenerativeLoad
from modelport.errors import FailedPrecondition, InvalidInput, ModelportError, NotFound, Unavailable
from modelport.inference import codec
from modelport.inference.ensemble_members import check_members
from modelport.inference.generative.served import ServedGenerative
from modelport.inference.load_overrides import Override
from modelport.inference.load_phases import LOADING as LOAD_PHASE
from modelport.inference.load_phases import WARMING_UP, LoadPhases
from modelport.inference.served import Served, ServedEnsemble, ServedVersion
from modelport.proto.inference import model_config_pb2 as mc

log = logging.getLogger(__name__)

# How long a version a reload dropped keeps answering requests that name it.
LINGER_SECONDS = 2.0

# Loads one generative version (blocking): spec, version number, version folder.
GenerativeLoader = Callable[[ModelSpec, int, Path], ServedGenerative]
# What a loaded version is served by: a torch model, an ensemble or a generative engine.
AnyServed = Served | ServedGenerative
Loaded = Backend | ServedGenerative | None


def _default_generative(spec: ModelSpec, version: int, version_dir: Path) -> ServedGenerative:
    from modelport.inference.generative.loading import EngineOverrides, load_generative

    return load_generative(spec, version, version_dir, EngineOverrides())


READY, LOADING, UNLOADING, UNAVAILABLE = "READY", "LOADING", "UNLOADING", "UNAVAILABLE"


def _same_torch_threads(model_threads: int = 0) -> Callable[[], None]:
    """OpenMP's thread count is a per-thread setting: executor threads start with
    one per core whatever torch.set_num_threads said in the main thread (or
    the model's own INTRA_OP_THREAD_COUNT)."""
    import torch

    threads = model_threads or torch.get_num_threads()
    return lambda: torch.set_num_threads(threads)


def _load_then_release_workers(
    load: Callable[[PhaseSink], tuple[ModelSpec, dict[int, Loaded]]], on_phase: PhaseSink
) -> tuple[ModelSpec, dict[int, Loaded]]:
    """Runs `load` on this executor thread, then frees the OpenMP workers it left idle:
    the model runs on other threads, which those workers would slow (common/openmp.py)."""
    try:
        return load(on_phase)
    finally:
        openmp.release_idle_workers()


@dataclass
class ModelEntry:
    name: str
    state: str
    reason: str = ""
    versions: dict[int, AnyServed] = field(default_factory=dict)
    spec: ModelSpec | None = None
    source: Path | None = None
    override: Override | None = None  # the files of a load with `file:` overrides

    @property
    def default_version(self) -> AnyServed:
        return self.versions[max(self.versions)]


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    state: str
    reason: str


class ModelManager:
    def __init__(
        self,
        repository_dir: Path | None = None,
        *,
        load: BackendLoader = load_backend,
        generative: GenerativeLoader | None = None,
    ) -> None:
        self.repository = repository_dir
        self._load = load  # model file -> Backend (the torch backend unless told otherwise)
        self._generative = generative or _default_generative
        self._models: dict[str, ModelEntry] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._loading: list[str] = []  # names being loaded, to catch ensemble cycles
        self.draining = False
        self._started = False
        # Told (model name, ready) after every change; the app points health at it.
        self.listeners: list[Callable[[str, bool], None]] = []
        self.phases = LoadPhases()  # models on their way (pushed to routers)
        # Told after any change of what the replica serves or whether it takes traffic.
        self.state_listeners: list[Callable[[], None]] = []
        # Versions a reload dropped still answer requests that name them for
        # `linger_seconds`: routers move traffic when this replica's push reaches
        # them, and a request they sent just before must not fail NOT_FOUND.
        self.linger_seconds = LINGER_SECONDS
        self._lingering: dict[str, dict[int, AnyServed]] = {}
        self._linger_tasks: set[asyncio.Task[None]] = set()

    # -- the server's state ---------------------------------------------------------

    @property
    def serving(self) -> bool:
        """Started and not draining: what ServerReady reports."""
        return self._started and not self.draining

    def mark_started(self) -> None:
        self._started = True
        self._changed("", True)

    def begin_drain(self) -> None:
        """New requests are refused with UNAVAILABLE from now on."""
        self.draining = True
        self._changed("", False)  # "": the whole server (routers stop sending at once)

    def _changed(self, name: str, ready: bool) -> None:
        for listener in self.listeners:
            listener(name, ready)
        self._state_changed()

    def _state_changed(self) -> None:
        for listener in list(self.state_listeners):
            listener()

    # -- lookups (hot path: no awaits, no I/O) ----------------------------------

    def get(self, name: str, version: str = "") -> AnyServed:
        """The version to serve; Triton's wording first, where its clients read it."""
        entry = self._models.get(name)
        if entry is None or not entry.versions:
            if entry is not None and entry.state in (LOADING, UNLOADING, UNAVAILABLE):
                why = f": {entry.reason}" if entry.reason else ""
                raise Unavailable(
                    f"Request for unknown model: '{name}' has no available versions "
                    f"(model is {entry.state.lower()}{why})"
                )
            raise NotFound(
                f"Request for unknown model: '{name}' is not found (not loaded on this server)"
            )
        if self.draining:
            raise Unavailable("server is shutting down; retry on another replica")
        if not version:
            return entry.default_version
        try:
            number = int(version)
        except ValueError:
            raise InvalidInput(
                f"failed to get model version from specified version string '{version}' "
                f"(model '{name}'), version should be an integral value > 0"
            ) from None
        served = entry.versions.get(number)
        if served is None:  # a version a reload just dropped still answers for a moment
            served = self._lingering.get(name, {}).get(number)
        if served is None:
            loaded = ", ".join(str(v) for v in sorted(entry.versions))
            raise NotFound(
                f"Request for unknown model: '{name}' version {version} is not found "
                f"(loaded: {loaded})"
            )
        return served

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

    def generative_loads(self) -> list[GenerativeLoad]:
        """The load of every generative version served here (for the router's balancing)."""
        return [
            served.load()
            for entry in self._models.values()
            for served in entry.versions.values()
            if isinstance(served, ServedGenerative)
        ]

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

    async def load(self, name: str, override: Override | None = None) -> None:
        """Load (or reload) a model from the repository, or from an override's files."""
        if override is not None and override.folder is not None:
            await self.load_directory(name, override.folder, config=override.config,
                                      override=override)  # fmt: skip
            return
        if self.repository is None:
            raise FailedPrecondition("this server has no model repository")
        try:
            model_dir = repository.model_dir(self.repository, name)
        except NotFound:
            raise NotFound(
                f"failed to load '{name}', failed to poll from model repository "
                f"(no folder '{name}' in it)"
            ) from None
        config = override.config if override is not None else None
        await self.load_directory(name, model_dir, config=config)

    async def load_directory(
        self,
        name: str,
        model_dir: Path,
        versions: Sequence[int] | None = None,
        *,
        config: mc.ModelConfig | None = None,
        override: Override | None = None,
    ) -> None:
        """Load `name` from a Triton-layout folder, replacing what serves now without a gap.

        `config` replaces the folder's config.pbtxt for this load.
        """
        if name in self._loading:
            chain = " -> ".join([*self._loading, name])
            raise InvalidInput(f"failed to load model '{name}': ensembles include each other "
                               f"({chain})")  # fmt: skip
        self._loading.append(name)
        try:
            load = functools.partial(
                _load_versions, name, model_dir, versions, self._load, config, self._generative
            )
            await self._load_locked(name, load, model_dir, override)
        finally:
            self._loading.remove(name)

    async def load_sealed(self, name: str, archives: Mapping[int, SealedArchive]) -> None:
        """Load `name`'s versions from encrypted archives, decrypting in memory only."""
        load = functools.partial(_load_sealed_versions, name, archives, self._generative)
        await self._load_locked(name, load, None, None)

    async def _load_locked(
        self,
        name: str,
        load: Callable[[PhaseSink], tuple[ModelSpec, dict[int, Loaded]]],
        model_dir: Path | None,
        override: Override | None,
    ) -> None:
        async with self._lock(name):
            current = self._models.get(name)
            if current is None or not current.versions:
                self._models[name] = ModelEntry(name, LOADING)
            on_phase = self.phases.from_thread(asyncio.get_running_loop())
            try:
                spec, loaded = await asyncio.to_thread(_load_then_release_workers, load, on_phase)
                if spec.ensemble is not None:
                    await self._ensure_members(spec)
                served = self._serve(spec, loaded)
                await _start_versions(served)
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
                if override is not None:
                    override.remove()
                raise InvalidInput(f"failed to load model '{name}': {reason}") from None
            finally:
                # After the worker thread's phase changes, which are queued on the loop.
                asyncio.get_running_loop().call_soon(self.phases.done, name)
            self._models[name] = ModelEntry(name, READY, "", served, spec, model_dir, override)
            log.info("model '%s' ready (versions %s)", name, sorted(served))
            self._changed(name, True)
            replaced: list[AnyServed] = list(self._lingering.get(name, {}).values())
            self._lingering.pop(name, None)
            if current is not None and current.versions:
                dropped = {v: sv for v, sv in current.versions.items() if v not in served}
                replaced += [sv for v, sv in current.versions.items() if v in served]
                if dropped:
                    self._linger(name, dropped)
                if current.override is not None and current.override is not override:
                    current.override.remove()
            await asyncio.gather(*(v.retire() for v in replaced))

    def _linger(self, name: str, dropped: dict[int, AnyServed]) -> None:
        self._lingering[name] = dropped

        async def retire_later() -> None:
            try:
                await asyncio.sleep(self.linger_seconds)
            finally:
                if self._lingering.get(name) is dropped:
                    del self._lingering[name]
                await asyncio.gather(*(v.retire() for v in dropped.values()))

        task = asyncio.get_running_loop().create_task(retire_later())
        self._linger_tasks.add(task)
        task.add_done_callback(self._linger_tasks.discard)

    def served(self) -> dict[str, tuple[str, list[int]]]:
        """model -> (state, versions taking requests): what this replica pushes to routers."""
        return {name: (e.state, sorted(e.versions)) for name, e in self._models.items()}

    def _serve(self, spec: ModelSpec, loaded: dict[int, Loaded]) -> dict[int, AnyServed]:
        generative = {v: b for v, b in loaded.items() if isinstance(b, ServedGenerative)}
        if generative:
            return dict(generative)
        if spec.ensemble is not None:
            return {v: ServedEnsemble(spec, v, self._member_infer) for v in loaded}
        threads = _same_torch_threads(spec.intra_op_threads)
        return {
            v: ServedVersion(spec, v, b, threads)
            for v, b in loaded.items()
            if b is not None and not isinstance(b, ServedGenerative)
        }

    async def _ensure_members(self, spec: ModelSpec) -> None:
        """Load the members an ensemble needs (from the repository), then check its wiring."""
        assert spec.ensemble is not None
        for member, _ in spec.ensemble.members:
            entry = self._models.get(member)
            if (entry is None or not entry.versions) and self.repository is not None:
                await self.load(member)
        check_members(spec, lambda model, version: self.get(model, version).spec)

    async def _member_infer(
        self, model: str, version: int, inputs: dict[str, np.ndarray], deadline: float | None
    ) -> dict[str, np.ndarray]:
        """One ensemble step: the member's inputs checked like a request's, then its batcher."""
        served = self.get(model, str(version) if version > 0 else "")
        if isinstance(served, ServedGenerative):
            raise InvalidInput(f"model '{model}' is generative and cannot be an ensemble step")
        spec = served.spec
        arrays = [inputs.get(t.name) for t in spec.inputs]
        rows, signature = codec.check_arrays(spec, arrays)
        outputs = await served.infer(arrays, rows, signature, deadline)
        return {t.name: array for t, array in zip(spec.outputs, outputs, strict=True)}

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
            if entry.override is not None:
                entry.override.remove()
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
        for task in list(self._linger_tasks):
            task.cancel()  # retires its versions at once
        await asyncio.gather(*self._linger_tasks, return_exceptions=True)
        retiring = [v for e in self._models.values() for v in e.versions.values()]
        await asyncio.gather(*(v.retire() for v in retiring))
        for entry in self._models.values():
            if entry.override is not None:
                entry.override.remove()

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())


# Told (model, phase, version) from the loading thread as a load moves on.
PhaseSink = Callable[[str, str, str], None]


def _no_phase(name: str, phase: str, version: str) -> None:
    pass


def _load_versions(
    name: str,
    model_dir: Path,
    versions: Sequence[int] | None,
    load: BackendLoader,
    override: mc.ModelConfig | None = None,
    generative: GenerativeLoader | None = None,
    on_phase: PhaseSink = _no_phase,
) -> tuple[ModelSpec, dict[int, Loaded]]:
    """Blocking: read config, pick versions, load and warm up each (worker thread).

    An ensemble has no backend: its versions map to None. A generative model's
    versions are served by their engines, built here.
    """
    config = mc.ModelConfig()
    config.CopyFrom(override if override is not None else read_config(model_dir) or config)
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
        program = load_exported_program(first_dir / filename, name)
        complete_from_program(config, program)
        check_exported_batch(f"model '{name}' config", config, program)
    spec = build_spec(name, config, model_dir)
    if spec.platform == PLATFORM_ENSEMBLE:
        return spec, dict.fromkeys(versions)
    loaded: dict[int, Loaded] = {}
    if spec.platform == PLATFORM_GENERATIVE:
        generative = generative or _default_generative
        for version in versions:
            on_phase(name, LOAD_PHASE, str(version))
            loaded[version] = generative(spec, version, model_dir / str(version))
        return spec, loaded
    try:
        for version in versions:
            on_phase(name, LOAD_PHASE, str(version))
            backend = load(spec, model_dir / str(version))
            loaded[version] = backend
            on_phase(name, WARMING_UP, str(version))
            warm_up(spec, backend)
    except BaseException:
        for done in loaded.values():
            close_backend(done)  # the compute processes of a load that failed
        raise
    return spec, loaded


def _load_sealed_versions(
    name: str,
    archives: Mapping[int, SealedArchive],
    generative: GenerativeLoader | None = None,
    on_phase: PhaseSink = _no_phase,
) -> tuple[ModelSpec, dict[int, Loaded]]:
    """Blocking: the stored config (complete: checked at upload) of the first
    archive, then each version's model read through its decrypting reader."""
    versions = sorted(archives)
    if not versions:
        raise InvalidInput(f"model '{name}': no version to load")
    first = archives[versions[0]]
    config = parse_config_text(first.config_text(), source=f"model '{name}'")
    config.platform = infer_platform(config, None)  # stored configs name it, or a backend
    spec = build_spec(name, config)
    if spec.platform == PLATFORM_ENSEMBLE:
        return spec, dict.fromkeys(versions)
    loaded: dict[int, Loaded] = {}
    if spec.platform == PLATFORM_GENERATIVE:
        # Hugging Face loaders read a folder of files: decrypted into memory (tmpfs)
        # for the load only; the weights are in the engine's tensors afterwards.
        generative = generative or _default_generative
        for version in versions:
            with archives[version].version_in_memory() as folder:
                loaded[version] = generative(spec, version, folder)
        return spec, loaded
    for version in versions:
        on_phase(name, LOAD_PHASE, str(version))
        with sealed_backend(spec, archives[version]) as backend:
            on_phase(name, WARMING_UP, str(version))
            warm_up(spec, backend)
        loaded[version] = backend
    return spec, loaded


async def _start_versions(served: Mapping[int, AnyServed]) -> None:
    """Start what needs starting (a generative engine: its loop or its vLLM process); if
    one cannot start, none of them serves."""
    try:
        for version in served.values():
            started = version.start()
            if inspect.isawaitable(started):
                await started
    except BaseException:
        await asyncio.gather(*(v.retire() for v in served.values()), return_exceptions=True)
        raise
