"""Torch equivalents of the models Triton's client examples talk to.

`build_triton_examples(repo)` writes the eight models of Triton's example
repository (docs/examples/model_repository) under the same names, inputs and
outputs, as TorchScript: simple, simple_int8, simple_string, simple_identity,
simple_sequence, simple_dyna_sequence, densenet_onnx and inception_onnx (the
names are Triton's, the models are small deterministic torch modules).
`build_triton_extras(repo)` adds what the other examples need: the decoupled
repeat_int32, simple_string_dyna_sequence (string correlation ids, implicit
state), custom_identity_int32 and the preprocess_inception_ensemble pipeline.
With both, Triton's gRPC Python examples run unchanged against
`modelport serve inference`.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple  # noqa: UP035 (TorchScript reads these annotations)

import torch
from torch import nn

from modelport.inference import triton_sample_configs as configs


class AddSub(nn.Module):
    def forward(
        self, INPUT0: torch.Tensor, INPUT1: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:  # noqa: UP006
        return INPUT0 + INPUT1, INPUT0 - INPUT1


class StringAddSub(nn.Module):
    """Numbers written as strings: their sum and difference, as strings."""

    def forward(
        self,
        INPUT0: list[str],
        INPUT1: List[str],  # noqa: UP006
    ) -> Tuple[List[str], List[str]]:  # noqa: UP006
        sums: List[str] = []  # noqa: UP006
        diffs: List[str] = []  # noqa: UP006
        for i in range(len(INPUT0)):
            a, b = int(INPUT0[i]), int(INPUT1[i])
            sums.append(str(a + b))
            diffs.append(str(a - b))
        return sums, diffs


class Identity(nn.Module):
    def forward(self, INPUT0: torch.Tensor) -> torch.Tensor:
        return INPUT0


class StringIdentity(nn.Module):
    def forward(self, INPUT0: List[str]) -> List[str]:  # noqa: UP006
        return INPUT0


class Sequence(nn.Module):
    """simple_sequence: the input, plus one on the first request of a sequence."""

    def forward(
        self, INPUT: torch.Tensor, START: torch.Tensor, READY: torch.Tensor
    ) -> torch.Tensor:
        return INPUT + START * READY


class DynaSequence(nn.Module):
    """simple_dyna_sequence: as simple_sequence, plus the correlation id on the last."""

    def forward(
        self,
        INPUT: torch.Tensor,
        START: torch.Tensor,
        END: torch.Tensor,
        READY: torch.Tensor,
        CORRID: torch.Tensor,
    ) -> torch.Tensor:
        corrid = CORRID.to(torch.int64)
        out = INPUT.to(torch.int64) + START + END * corrid
        return (out * READY).to(torch.int32)


class StringDynaSequence(nn.Module):
    """A running sum kept by the server (implicit state ACC), reset by START;
    the last request adds its string correlation id."""

    def forward(
        self,
        INPUT: torch.Tensor,
        START: torch.Tensor,
        END: torch.Tensor,
        CORRID: List[str],  # noqa: UP006
        ACC: torch.Tensor,
    ) -> Tuple[torch.Tensor, torch.Tensor]:  # noqa: UP006
        acc = torch.where(START > 0, INPUT, ACC + INPUT)
        ids = torch.tensor([int(c) if c != "" else 0 for c in CORRID], dtype=torch.int32)
        out = acc + END * ids.reshape(-1, 1)
        return out, acc


class Repeat(nn.Module):
    """repeat_int32 (decoupled): one response per element of IN, OUT = that
    element, IDX = its index; DELAY and WAIT are accepted and not waited on."""

    def forward(
        self, IN: torch.Tensor, DELAY: torch.Tensor, WAIT: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:  # noqa: UP006
        count = IN.shape[0]
        return IN.reshape(count, 1), torch.arange(count, dtype=torch.int64).reshape(count, 1)


class Classifier(nn.Module):
    """Channel means through a fixed linear map to `classes` scores (softmax)."""

    def __init__(self, channels: int, classes: int, channel_dim: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(7)
        self.weight = nn.Parameter(torch.randn(channels, classes, generator=generator))
        # every dimension but the batch and the channels (inputs are 4-D)
        self.reduce: List[int] = [d for d in range(1, 4) if d != channel_dim]  # noqa: UP006

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = x.mean(dim=self.reduce)
        return torch.softmax(means @ self.weight * 50.0, dim=-1)


class DensenetLike(nn.Module):
    """[1, 3, 224, 224] -> [1, 1000, 1, 1], as densenet_onnx's model sees it."""

    def __init__(self) -> None:
        super().__init__()
        self.classify = Classifier(3, 1000, channel_dim=1)

    def forward(self, data_0: torch.Tensor) -> torch.Tensor:
        return self.classify(data_0).reshape(1, 1000, 1, 1)


class InceptionLike(nn.Module):
    """[B, 299, 299, 3] (NHWC) -> [B, 1001]."""

    def __init__(self) -> None:
        super().__init__()
        self.classify = Classifier(3, 1001, channel_dim=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(x)


class ImagePreprocess(nn.Module):
    """Encoded image bytes (one uint8 tensor per image) -> NHWC [B, 299, 299, 3] in [-1, 1].

    Stands in for JPEG decoding (not in TorchScript): the picture is a
    deterministic function of the bytes, so different files classify differently.
    """

    def forward(self, INPUT: List[torch.Tensor]) -> torch.Tensor:  # noqa: UP006
        pictures: List[torch.Tensor] = []  # noqa: UP006
        for data in INPUT:
            codes = torch.cat([data[:4096].to(torch.float32), torch.zeros(3)])
            usable = (codes.numel() // 3) * 3
            channels = codes[:usable].reshape(-1, 3).mean(dim=0)
            picture = (channels / 127.5 - 1.0).reshape(1, 1, 3).expand(299, 299, 3)
            pictures.append(picture)
        return torch.stack(pictures)


def _save(repo: Path, name: str, config: str, module: nn.Module | None, **files: str) -> None:
    folder = repo / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(config)
    for filename, text in files.items():
        (folder / filename).write_text(text)
    if module is not None:
        path = folder / "1" / "model.pt"
        if not path.exists():
            torch.jit.script(module.eval()).save(str(path))


def _labels(prefix: str, count: int) -> str:
    return "".join(f"{prefix}_{i}\n" for i in range(count))


def build_triton_examples(repo: Path) -> Path:
    """The eight models of Triton's example repository, as torch models."""
    repo.mkdir(parents=True, exist_ok=True)
    _save(repo, "simple", configs.SIMPLE, AddSub())
    _save(repo, "simple_int8", configs.SIMPLE_INT8, AddSub())
    _save(repo, "simple_string", configs.SIMPLE_STRING, StringAddSub())
    _save(repo, "simple_identity", configs.SIMPLE_IDENTITY, StringIdentity())
    _save(repo, "simple_sequence", configs.SIMPLE_SEQUENCE, Sequence())
    _save(repo, "simple_dyna_sequence", configs.SIMPLE_DYNA_SEQUENCE, DynaSequence())
    _save(repo, "densenet_onnx", configs.DENSENET, DensenetLike(),
          **{"densenet_labels.txt": _labels("densenet", 1000)})  # fmt: skip
    _save(repo, "inception_onnx", configs.INCEPTION,
          InceptionLike(), **{"inception_labels.txt": _labels("inception", 1001)})  # fmt: skip
    return repo


def build_triton_extras(repo: Path) -> Path:
    """Models the remaining examples use: decoupled, string sequences, an ensemble."""
    repo.mkdir(parents=True, exist_ok=True)
    _save(repo, "repeat_int32", configs.REPEAT_INT32, Repeat())
    _save(repo, "custom_identity_int32", configs.IDENTITY_INT32, Identity())
    _save(repo, "simple_string_dyna_sequence", configs.STRING_DYNA_SEQUENCE, StringDynaSequence())
    _save(repo, "image_preprocess", configs.IMAGE_PREPROCESS, ImagePreprocess())
    # Batched and labelled like Triton's inception_graphdef (image_client.py -b N).
    _save(repo, "inception_batched", configs.INCEPTION_BATCHED, InceptionLike(),
          **{"inception_labels.txt": _labels("inception", 1001)})  # fmt: skip
    _save(repo, "preprocess_inception_ensemble", configs.ENSEMBLE, None,
          **{"inception_labels.txt": _labels("inception", 1001)})  # fmt: skip
    return repo
