"""Supervised fine-tuning of a torch.export model on `.npz` inputs/targets.

The exported program is unlifted into a trainable module (whose parameters
are the program's own weight tensors), trained, and saved as the same
program with the trained weights: the graph, its inputs, outputs and
dynamic batch dimension stay the base version's, and no second trace
(seconds of torch.export per job) is needed. The loss follows the targets: integer targets are class
labels (cross-entropy over the first output), float targets are regressed
(mean squared error).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from modelport.artifacts import datasets as ds
from modelport.artifacts.config import build_spec, read_config
from modelport.artifacts.loaders import load_exported_program
from modelport.errors import InvalidInput
from modelport.training import task as t


class TensorTask:
    def __init__(self, base_model_dir: Path, dataset: Path, validation_fraction: float) -> None:
        config = read_config(base_model_dir)
        if config is None:
            raise InvalidInput(f"{base_model_dir} has no config.pbtxt")
        self.spec = build_spec(config.name or base_model_dir.name, config)
        self.base_model_dir = base_model_dir
        self.program = load_exported_program(
            t.version_dir(base_model_dir) / "model.pt2", self.spec.name
        )
        self.model = self.program.module()
        inputs, targets = ds.read_tensor_arrays(dataset)
        names = [spec.name for spec in self.spec.inputs]
        if list(inputs) == [""] and len(names) == 1:
            inputs = {names[0]: inputs[""]}
        if sorted(inputs) != sorted(names):
            raise InvalidInput(
                f"dataset inputs {sorted(inputs)} do not match "
                f"model '{self.spec.name}' inputs {names}"
            )
        for spec in self.spec.inputs:
            want = tuple(spec.dims)
            got = inputs[spec.name].shape[1:]
            if len(want) != len(got) or any(
                w not in (-1, g) for w, g in zip(want, got, strict=True)
            ):
                raise InvalidInput(
                    f"dataset input '{spec.name}' rows have shape {list(got)}, "
                    f"model '{self.spec.name}' expects {list(want)}"
                )
        self.inputs = [
            torch.from_numpy(np.ascontiguousarray(inputs[s.name])).to(_torch_dtype(s))
            for s in self.spec.inputs
        ]
        self.classify = targets.dtype.kind in "biu"
        self.targets = (
            torch.from_numpy(targets).long() if self.classify else torch.from_numpy(targets).float()
        )
        train, validation = ds.split(dataset, validation_fraction)
        self.splits = {"train": train, "validation": validation}

    def size(self, split: str) -> int:
        return len(self.splits[split])

    def count(self, split: str, indices: list[int]) -> int:
        return len(indices)

    def loss_sum(self, model: torch.nn.Module, split: str, indices: list[int]) -> torch.Tensor:
        rows = torch.tensor([self.splits[split][i] for i in indices])
        outputs = model(*(x[rows] for x in self.inputs))
        if isinstance(outputs, (tuple, list)):
            outputs = outputs[0]
        target = self.targets[rows]
        if self.classify:
            return torch.nn.functional.cross_entropy(outputs, target.reshape(-1), reduction="sum")
        if outputs.shape != target.shape:
            raise InvalidInput(
                f"targets rows have shape {list(target.shape[1:])}, model '{self.spec.name}' "
                f"outputs {list(outputs.shape[1:])}"
            )
        per_example = torch.nn.functional.mse_loss(outputs, target, reduction="none")
        return per_example.reshape(len(indices), -1).mean(dim=1).sum()

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return t.trainable_state(self.model)

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        t.load_trainable_state(self.model, state)

    def export(self, output_dir: Path) -> None:
        folder = t.start_output(self.base_model_dir, output_dir)
        self.model.to("cpu")  # the program's weights are these tensors: back on the CPU
        trained = self.model.state_dict()
        with torch.no_grad():
            for name, weight in self.program.state_dict.items():
                if name in trained and trained[name] is not weight:
                    weight.copy_(trained[name])
        torch.export.save(self.program, str(folder / "model.pt2"))


def _torch_dtype(spec: object) -> torch.dtype:
    name = getattr(getattr(spec, "datatype"), "torch_name")  # noqa: B009
    return getattr(torch, name)
