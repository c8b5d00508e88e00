"""Small, seeded models in Triton layout for registry tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

CONFIG = """
name: "{name}"
platform: "torch_export"
max_batch_size: 8
input [ {{ name: "INPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
output [ {{ name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 4 ] }} ]
"""


class Scale(torch.nn.Module):
    """OUTPUT0 = INPUT0 * factor: each version answers distinguishably."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = torch.nn.Parameter(torch.tensor(float(factor)), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def export_scale(path: Path, factor: float) -> Path:
    torch.manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=8)
    program = torch.export.export(Scale(factor), (torch.ones(2, 4),), dynamic_shapes=({0: batch},))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))
    return path


def scale_model_dir(root: Path, name: str, factor: float, *, cache: Path) -> Path:
    """`root/name/{config.pbtxt,1/model.pt2}`; exports once per factor into `cache`."""
    cached = cache / f"scale-{factor}.pt2"
    if not cached.exists():
        export_scale(cached, factor)
    model_dir = root / name
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(CONFIG.format(name=name))
    shutil.copy(cached, model_dir / "1" / "model.pt2")
    return model_dir
