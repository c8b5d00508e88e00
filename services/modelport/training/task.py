"""The seam between the training loop and a kind of model (`TrainingTask`).

A task owns the model being trained and knows how to turn example indices
into a batch, how to score a batch (a *sum* of per-token or per-example
losses and how many there were, so the loop can normalise by the global
batch and data-parallel training matches one process exactly), which
parameters are trained, and how to export the result in the format the
inference service serves.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any, Protocol

import torch

from modelport.artifacts.config import CONFIG_FILE


class TrainingTask(Protocol):
    model: torch.nn.Module

    def size(self, split: str) -> int:
        """Examples in "train" or "validation"."""
        ...

    def count(self, split: str, indices: list[int]) -> int:
        """What the loss is averaged over for these examples: tokens or examples."""
        ...

    def loss_sum(self, model: torch.nn.Module, split: str, indices: list[int]) -> torch.Tensor:
        """Summed loss of these examples, through `model` (the DDP wrapper when distributed)."""
        ...

    def trainable_state(self) -> dict[str, torch.Tensor]: ...

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None: ...

    def export(self, output_dir: Path) -> None:
        """Write a Triton model folder: `config.pbtxt` + `1/…`."""
        ...


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [name for name in state if name not in params]
    if missing:
        raise ValueError(f"checkpoint names parameters this model lacks: {missing[:3]}")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def start_output(base_model_dir: Path, output_dir: Path) -> Path:
    """A fresh `output_dir` with the base version's config.pbtxt; returns `output_dir/1`."""
    shutil.rmtree(output_dir, ignore_errors=True)
    (output_dir / "1").mkdir(parents=True)
    shutil.copyfile(base_model_dir / CONFIG_FILE, output_dir / CONFIG_FILE)
    return output_dir / "1"


def version_dir(base_model_dir: Path) -> Path:
    """The one numbered folder of a pulled model (`pull` writes `<dir>/<N>/`)."""
    numbered = sorted(p for p in base_model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    if len(numbered) != 1:
        raise ValueError(f"{base_model_dir} must hold exactly one version folder")
    return numbered[0]


def detect_kind(base_model_dir: Path) -> str:
    """ "decoder" (Hugging Face layout), "tensor" (torch.export) or "torchscript"."""
    folder = version_dir(base_model_dir)
    if (folder / "config.json").is_file():
        return "decoder"
    if (folder / "model.pt2").is_file():
        return "tensor"
    if (folder / "model.pt").is_file():
        return "torchscript"
    return "unknown"


def set_training(model: torch.nn.Module, training: bool) -> None:
    """train()/eval() where the module allows it (an unlifted torch.export module does not)."""
    with contextlib.suppress(NotImplementedError):
        model.train(training)


def cpu(state: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}
