"""A tiny seeded MLP in Triton layout (torch.export, dynamic batch), and data to evaluate it on."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

NAME = "tiny"
CONFIG = """\
name: "tiny"
platform: "torch_export"
max_batch_size: 64
input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ 32 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ 8 ] } ]
dynamic_batching { max_queue_delay_microseconds: 20000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


def tiny_module() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8)
    ).eval()


def write_tiny(root: Path) -> Path:
    """`root/tiny/{config.pbtxt,1/model.pt2}`."""
    model_dir = root / NAME
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(CONFIG)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with torch.no_grad():
        program = torch.export.export(
            tiny_module(), (torch.zeros(2, 32),), dynamic_shapes=({0: batch},)
        )
    torch.export.save(program, str(model_dir / "1" / "model.pt2"))
    return model_dir


def inputs(samples: int = 128) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((samples, 32)).astype(np.float32)


def expected(x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return tiny_module()(torch.from_numpy(x)).numpy()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()
