"""A version's load as the inference service does it, run where a version is accepted.

The registry calls this on every push: the completed config is validated into a
`ModelSpec`, the model is bound to it and warmed up (batch 1 and max_batch_size,
zero inputs) on the CPU, so a version that would never become ready on a replica
(a negative max_batch_size, dims no batch can hold, a max_batch_size above the
exported program's batch bound, outputs that do not match the config) is refused
at push instead of being stored and aliased. torch is imported only when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelport.artifacts.config import (
    PLATFORM_EXPORT,
    PLATFORM_TORCHSCRIPT,
    ModelSpec,
    build_spec,
    check_exported_batch,
    infer_platform,
)
from modelport.errors import InvalidInput, ModelportError
from modelport.proto.inference import model_config_pb2 as mc


def check_serves(
    name: str, config: mc.ModelConfig, model_dir: Path, version_dir: Path, model: Any
) -> ModelSpec:
    """Validate, bind and warm up `model` (a loaded torch.export program or TorchScript
    module) under `config` as a replica would; raises InvalidInput saying why not.

    `config` is not changed (the check runs on a copy); `model_dir` holds the files
    the config names (labels, initial states)."""
    checked = mc.ModelConfig()
    checked.CopyFrom(config)
    checked.platform = infer_platform(checked, version_dir)
    spec = build_spec(name, checked, model_dir)
    if spec.platform not in (PLATFORM_EXPORT, PLATFORM_TORCHSCRIPT):
        return spec  # ensembles and generative versions have no torch module to run here
    import torch

    from modelport.artifacts.torch_backend import TorchBackend
    from modelport.artifacts.warmup import warm_up

    if spec.platform == PLATFORM_EXPORT:
        check_exported_batch(f"model '{name}' config", checked, model)
        module = model.module()
    else:
        module = model
    # The CPU whatever the config asks for: the registry has no GPU to honour it, and a
    # model that runs on a GPU runs there with the same inputs and outputs.
    try:
        warm_up(spec, TorchBackend(spec, module, torch.device("cpu")))
    except ModelportError as exc:
        if isinstance(exc, InvalidInput):
            raise
        # At push, what the model answered is the upload's fault (an output the config
        # does not declare), not the registry's.
        raise InvalidInput(f"model '{name}' failed its warm-up run: {exc}") from None
    return spec
