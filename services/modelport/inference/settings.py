"""Settings of `modelport serve inference` (flags and MODELPORT_* variables come from here)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from modelport.common.settings import ServerSettings, setting


@dataclass(frozen=True)
class InferenceSettings(ServerSettings):
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
    registry: str = setting("", "Registry address to follow models from (with --model).")
    models: tuple[str, ...] = setting(
        (), "NAME@ALIAS, NAME:VERSION or NAME to serve from the registry.", flag="--model"
    )
    cache_dir: Path = setting(
        Path("~/.cache/modelport/artifacts"),
        "Where registry artifacts are cached (by sha256) across restarts.",
        path="dir",
    )
    # Set for the workers of a supervisor: a private loopback port for siblings.
    private_port: bool = setting(False, "Also listen on a loopback port for siblings.", cli=False)

    def for_worker(self, workers: int) -> InferenceSettings:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        threads = self.torch_threads or max(1, (cores or 1) // workers)
        return dataclasses.replace(
            self, workers=1, reuse_port=True, metrics_port=0, torch_threads=threads,
            private_port=True,
        )  # fmt: skip
