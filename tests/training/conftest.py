"""Fixtures for training tests: a real registry, a real training server, small models and data."""

from __future__ import annotations

import asyncio
import atexit
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from modelport.training.server import TrainingServer, TrainingSettings

from tests.registry.registry_servers import ThreadedRegistry, registry_settings

TENSOR_CONFIG = """\
name: "{name}"
platform: "torch_export"
max_batch_size: 64
input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: [ 8 ] }} ]
output [ {{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ 4 ] }} ]
"""


_EXPORTED: dict[str, Path] = {}


def tensor_model_dir(folder: Path, name: str = "reg") -> Path:
    """A torch.export Linear(8→16→4) in a Triton folder, seeded (exported once per session:
    a first torch.export in a process takes seconds)."""
    if name in _EXPORTED and _EXPORTED[name].is_dir():
        shutil.copytree(_EXPORTED[name], folder)
        return folder
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    batch = torch.export.Dim("batch", min=1, max=1024)
    program = torch.export.export(module.eval(), (torch.zeros(2, 8),), dynamic_shapes=({0: batch},))
    (folder / "1").mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(folder / "1" / "model.pt2"))
    (folder / "config.pbtxt").write_text(TENSOR_CONFIG.format(name=name))
    cache = Path(tempfile.mkdtemp(prefix="modelport-tensor-base-"))
    atexit.register(shutil.rmtree, cache, True)
    _EXPORTED[name] = cache / name
    shutil.copytree(folder, _EXPORTED[name])
    return folder


def regression_npz(path: Path, rows: int = 96, seed: int = 0) -> Path:
    """targets = a fixed linear map of the inputs: learnable, so validation loss falls."""
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(rows, 8)).astype(np.float32)
    weights = rng.normal(size=(8, 4)).astype(np.float32)
    np.savez(path, inputs=inputs, targets=(inputs @ weights).astype(np.float32))
    return path


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ThreadedRegistry]:
    server = ThreadedRegistry(registry_settings(tmp_path / "registry"))
    try:
        yield server
    finally:
        server.stop()


class ThreadedTraining:
    """A real training gRPC server on its own event-loop thread (for sync clients)."""

    def __init__(self, settings: TrainingSettings) -> None:
        self.server = TrainingServer(settings)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(60)
        self.address = self.server.address

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(1.0), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def training_settings(tmp_path: Path, registry: str) -> TrainingSettings:
    # One torch thread per worker: the test machine's cores are shared, and OpenMP threads
    # waiting on each other there make a step many times slower.
    return TrainingSettings(
        data_dir=tmp_path / "training",
        registry=registry,
        host="127.0.0.1",
        grpc_port=0,
        worker_threads=1,
    )


@pytest.fixture
def training(tmp_path: Path, registry: ThreadedRegistry) -> Iterator[ThreadedTraining]:
    server = ThreadedTraining(training_settings(tmp_path, registry.address))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def torch_threads() -> Iterator[None]:
    """A worker run inside the test process sets torch's thread count: put it back after."""
    before = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(before)
