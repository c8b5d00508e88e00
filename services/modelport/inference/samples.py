"""Sample models, built deterministically (seeded, no downloads).

- `simple`: Triton's classic example as TorchScript: INT32 [16] INPUT0, INPUT1 →
  OUTPUT0 = sum, OUTPUT1 = difference; max_batch_size 8.
- `mlp`: FP32 [b, 256] → Linear 1024 → ReLU → Linear 1024 → ReLU → Linear 16,
  a torch.export program with a dynamic batch dimension, dynamic batching on.
- `encoder` (benchmarks): nn.TransformerEncoder, d_model 256, 4 layers, 4 heads,
  FP32 [b, 64, 256] → mean-pooled [b, 256].
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

SIMPLE_CONFIG = """\
name: "simple"
platform: "pytorch_libtorch"
max_batch_size: 8
input [
  { name: "INPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "INPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
output [
  { name: "OUTPUT0" data_type: TYPE_INT32 dims: [ 16 ] },
  { name: "OUTPUT1" data_type: TYPE_INT32 dims: [ 16 ] }
]
dynamic_batching { }
"""

MLP_CONFIG = """\
name: "mlp"
platform: "torch_export"
max_batch_size: 64
input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ 256 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ 16 ] } ]
dynamic_batching {
  max_queue_delay_microseconds: 200
  default_queue_policy { max_queue_size: 2048 }
}
instance_group [ { count: 1 kind: KIND_CPU } ]
# Small GEMMs: a second OpenMP thread costs more CPU than it saves time, CPU
# the transport needs (benchmarks/README.md).
parameters { key: "INTRA_OP_THREAD_COUNT" value: { string_value: "1" } }
"""

ENCODER_CONFIG = """\
name: "encoder"
platform: "torch_export"
max_batch_size: 16
input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ 64, 256 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ 256 ] } ]
dynamic_batching {
  preferred_batch_size: [ 8, 16 ]
  max_queue_delay_microseconds: 2000
}
# Two single-thread instances (two compute processes) beat one instance with a
# 2-thread OpenMP team on 2 cores: no barrier waits on a core the transport
# took (0.97 of the best-batch floor against 0.77; benchmarks/README.md).
instance_group [ { count: 2 kind: KIND_CPU } ]
parameters { key: "INTRA_OP_THREAD_COUNT" value: { string_value: "1" } }
"""


class Simple(nn.Module):
    def forward(
        self, INPUT0: torch.Tensor, INPUT1: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return INPUT0 + INPUT1, INPUT0 - INPUT1


def mlp_module() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 16)
    ).eval()


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(256, 4, dim_feedforward=1024, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 4, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x).mean(dim=1)


def encoder_module() -> nn.Module:
    torch.manual_seed(0)
    return Encoder().eval()


def _write(repo: Path, name: str, config: str) -> Path:
    version_dir = repo / name / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    (repo / name / "config.pbtxt").write_text(config)
    return version_dir


def _export(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=1024)
    with torch.no_grad():
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    tmp = path.with_name(path.stem + ".partial.pt2")
    torch.export.save(program, str(tmp))
    tmp.replace(path)


def build_simple(repo: Path) -> None:
    path = _write(repo, "simple", SIMPLE_CONFIG) / "model.pt"
    if not path.exists():
        torch.jit.script(Simple()).save(str(path))


def build_mlp(repo: Path) -> None:
    path = _write(repo, "mlp", MLP_CONFIG) / "model.pt2"
    if not path.exists():
        _export(mlp_module(), torch.zeros(4, 256), path)


def build_encoder(repo: Path) -> None:
    path = _write(repo, "encoder", ENCODER_CONFIG) / "model.pt2"
    if not path.exists():
        _export(encoder_module(), torch.zeros(4, 64, 256), path)


def build_samples(repo: Path, *, encoder: bool = False) -> Path:
    """Write the sample models into `repo` (skipping those already there)."""
    repo.mkdir(parents=True, exist_ok=True)
    build_simple(repo)
    build_mlp(repo)
    if encoder:
        build_encoder(repo)
    return repo
