"""Small TorchScript models for BYTES and output-shape tests (scripting needs a source file)."""

from __future__ import annotations

from pathlib import Path
from typing import List  # noqa: UP035 (TorchScript reads these annotations)

import torch
from torch import nn


class NestedUpper(nn.Module):
    """[B, N] BYTES in as List[List[str]], each string upper-cased, nested lists out."""

    def forward(self, TEXT: List[List[str]]) -> List[List[str]]:  # noqa: UP006
        return [[s.upper() for s in row] for row in TEXT]


class Exclaim(nn.Module):
    """BYTES in as a flat List[str], each with "!" added; the config gives the shape back."""

    def forward(self, TEXT: List[str]) -> List[str]:  # noqa: UP006
        return [s + "!" for s in TEXT]


class ByteCount(nn.Module):
    """Binary BYTES in (List[Tensor] of uint8), each element's bytes reversed."""

    def forward(self, DATA: List[torch.Tensor]) -> List[torch.Tensor]:  # noqa: UP006
        return [torch.flip(d, [0]) for d in DATA]


class EchoLength(nn.Module):
    """Its config declares output [1]; it returns as many values as it is given, so
    a longer input gets an answer the server must refuse."""

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return X * 2


MODELS = {
    "nested_upper": (
        NestedUpper,
        """
max_batch_size: 4
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ -1 ] } ]
output [ { name: "TEXT_OUT" data_type: TYPE_STRING dims: [ -1 ] } ]
dynamic_batching { }
""",
    ),
    "exclaim": (
        Exclaim,
        """
max_batch_size: 4
input [ { name: "TEXT" data_type: TYPE_STRING dims: [ 3 ] } ]
output [ { name: "TEXT_OUT" data_type: TYPE_STRING dims: [ 3 ] } ]
""",
    ),
    "reverse_bytes": (
        ByteCount,
        """
max_batch_size: 8
input [ { name: "DATA" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "REVERSED" data_type: TYPE_STRING dims: [ 1 ] } ]
""",
    ),
    "echo_length": (
        EchoLength,
        """
max_batch_size: 0
input [ { name: "X" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "Y" data_type: TYPE_FP32 dims: [ 1 ] } ]
""",
    ),
}


def build_string_models(repo: Path) -> Path:
    for name, (module, config) in MODELS.items():
        folder = repo / name
        (folder / "1").mkdir(parents=True, exist_ok=True)
        (folder / "config.pbtxt").write_text(f'platform: "pytorch_libtorch"\n{config}')
        torch.jit.script(module().eval()).save(str(folder / "1" / "model.pt"))
    return repo
