"""Settings of `modelport serve inference` (flags and MODELPORT_* variables come from here)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from modelport.common.settings import ServerSettings, UpstreamSettings, setting
from modelport.errors import InvalidInput

if TYPE_CHECKING:
    from modelport.inference.generative.loading import EngineOverrides


@dataclass(frozen=True)
class InferenceSettings(ServerSettings, UpstreamSettings):
    model_repository: Path | None = setting(
        None,
        "Triton-layout model repository (<model>/config.pbtxt, <model>/<version>/model.pt2).",
        path="dir",
    )
    model_control_mode: Literal["none", "explicit"] = setting(
        "none", "none: load every model at start; explicit: load/unload on request."
    )
    load_models: tuple[str, ...] = setting(
        (), "With explicit control: model to load at start (repeatable; '*' = all).",
        flag="--load-model",
    )  # fmt: skip
    torch_threads: int = setting(0, "Intra-op threads (0: cores / workers).")
    executor: Literal["process", "thread"] = setting(
        "process",
        "Where models run: process (a compute process per instance, its own GIL: "
        "the transport never waits for the model) or thread (in this process).",
    )
    workers: int = setting(
        1, "Processes sharing the gRPC port (SO_REUSEPORT); one per 1-2 cores for small models."
    )
    reuse_port: bool = setting(
        False, "Bind with SO_REUSEPORT so several processes share the gRPC port."
    )
    fast_path: Literal["auto", "on", "off"] = setting(
        "auto",
        "Serve gRPC through modelport-fastpath (Go): it listens on the port and hands "
        "ModelInfer calls to this process over a Unix socket, the rest to this server on "
        "a private loopback port (auto: when built and the configuration allows: no TLS, "
        "access control, tracing or --workers).",
    )
    fast_path_binary: Path | None = setting(
        None, "The modelport-fastpath binary (default: on PATH, else build/fastpath/).", path="file"
    )
    # Off by default, as Triton's --allow-client-shm: a registered region can
    # name any shared memory object this server's user may open.
    allow_shared_memory: bool = setting(
        False, "Let clients on this host pass tensors through registered /dev/shm regions."
    )
    registry: str = setting("", "Registry address to follow models from (with --model).")
    models: tuple[str, ...] = setting(
        (), "NAME@ALIAS, NAME:VERSION or NAME to serve from the registry.", flag="--model"
    )
    cache_dir: Path = setting(
        Path("~/.cache/modelport/artifacts"),
        "Where registry artifacts are cached (by sha256) across restarts.",
        path="dir",
    )
    kek_file: Path | None = setting(
        None,
        "Key-encryption keys (a Secret): registry artifacts are cached encrypted and "
        "models decrypted in memory only; re-read on change.",
        path="file",
    )
    # Generative models: the config.pbtxt's limits, overridden per deployment (the chart).
    generative_engine: Literal["", "continuous", "vllm"] = setting(
        "", "Generative models: the engine (continuous: modelport's; vllm: vLLM in its own "
        "process, from `make vllm`'s venv or $MODELPORT_VLLM_PYTHON); empty keeps each config's."
    )  # fmt: skip
    kv_cache_mb: int = setting(0, "Generative models: KV cache pool in MiB (0: the config's).")
    kv_memory_fraction: float = setting(
        0.0, "Generative models: KV cache pool as a share of the memory free after the "
        "weights (the GPU's, or available RAM on CPU); 0 keeps the config's."
    )  # fmt: skip
    tensor_parallel_size: int = setting(
        0, "Generative models: GPUs a model is split across (vllm engine; 0: the config's)."
    )
    max_num_seqs: int = setting(
        0, "Generative models: sequences in the running batch at most (0: the config's)."
    )
    pool: bool = setting(
        False,
        "Serve any model of --registry on demand: loaded on its first request, evicted "
        "least recently used to stay within --memory-budget-mb.",
    )
    memory_budget_mb: int = setting(
        0, "With --pool: MiB of models kept loaded (0: 70% of the container's memory limit)."
    )
    pool_alias: str = setting("production", "With --pool: the alias each model is served at.")
    # Set for the workers of a supervisor: a private loopback port for siblings.
    private_port: bool = setting(False, "Also listen on a loopback port for siblings.", cli=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_pool()
        if self.fast_path == "on" and self.workers > 1:
            raise InvalidInput("--fast-path on fronts one process: drop --workers, or use auto")
        if not 0.0 <= self.kv_memory_fraction < 1.0:
            raise InvalidInput("--kv-memory-fraction must be in [0, 1)")
        for flag, value in (("--kv-cache-mb", self.kv_cache_mb),
                            ("--tensor-parallel-size", self.tensor_parallel_size),
                            ("--max-num-seqs", self.max_num_seqs)):  # fmt: skip
            if value < 0:
                raise InvalidInput(f"{flag} must be 0 (the config's) or positive")

    def engine_overrides(self, torch_threads: int) -> EngineOverrides:
        from modelport.inference.generative.loading import EngineOverrides

        return EngineOverrides(
            engine=self.generative_engine,
            kv_cache_mb=self.kv_cache_mb,
            kv_memory_fraction=self.kv_memory_fraction or -1.0,
            tensor_parallel_size=self.tensor_parallel_size,
            max_num_seqs=self.max_num_seqs,
            torch_threads=torch_threads,
        )

    def for_worker(self, workers: int) -> InferenceSettings:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = self.torch_threads or max(1, (cores or 1) // workers)
        return dataclasses.replace(
            self, workers=1, reuse_port=True, metrics_port=0, torch_threads=threads,
            private_port=True, fast_path="off",
        )  # fmt: skip

    def _check_pool(self) -> None:
        if self.pool and not self.registry:
            raise InvalidInput("--pool needs --registry (where the models come from)")
        if self.pool and (self.models or self.workers > 1):
            raise InvalidInput("--pool serves every model of the registry: drop --model/--workers")
        if self.memory_budget_mb < 0:
            raise InvalidInput("--memory-budget-mb must be 0 (derived) or positive")

    def pool_budget_bytes(self) -> int:
        if self.memory_budget_mb:
            return self.memory_budget_mb * 1024 * 1024
        return int(memory_limit_bytes() * 0.7)


CGROUP_MEMORY_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def memory_limit_bytes(paths: tuple[str, ...] = CGROUP_MEMORY_LIMITS) -> int:
    """The cgroup's memory limit (what Kubernetes' resources.limits.memory sets), else RAM."""
    for path in paths:
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
