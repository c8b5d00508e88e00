"""Derive a child model folder from a parent folder (Triton layout, one version).

The parent must be a torch.export program (`torch_export`) with a batch
dimension; a generative model (Hugging Face folder) goes to `decoder`. The
child keeps the parent's config — same inputs, outputs and batching, so it
answers the parent's requests and can take a slice of its traffic — except
for the platform (`torch_aoti` for a compiled package) and, for methods that
only run on a GPU, a GPU instance group.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format

from modelport.artifacts import loaders
from modelport.artifacts.config import (
    CONFIG_FILE,
    PLATFORM_AOTI,
    PLATFORM_EXPORT,
    PLATFORM_TORCHSCRIPT,
    build_spec,
    read_config,
)
from modelport.artifacts.repository import available_versions
from modelport.compression.spec import DeriveSpec
from modelport.errors import InvalidInput
from modelport.proto.inference import model_config_pb2 as mc

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
CHILD_VERSION = 1


def _quiet(_stage: str, _fraction: float) -> None:
    pass


@dataclass(frozen=True)
class Derived:
    model_dir: Path  # config.pbtxt + 1/<model file>
    parameters: dict[str, str]  # what the lineage records


def version_dir_of(model_dir: Path) -> Path:
    versions = available_versions(model_dir)
    if len(versions) != 1:
        raise InvalidInput(f"derive: '{model_dir}' must hold exactly one version folder")
    return model_dir / str(versions[0])


def derive_folder(
    parent_dir: Path, spec: DeriveSpec, out_dir: Path, progress: Progress = _quiet
) -> Derived:
    """Write the child of `parent_dir` into `out_dir` (which must not exist yet)."""
    from modelport.compression import decoder

    spec.check()
    config = read_config(parent_dir)
    if config is None:
        raise InvalidInput(f"derive: '{parent_dir}' has no {CONFIG_FILE}")
    if decoder.is_decoder(config):
        return decoder.derive_decoder(parent_dir, config, spec, out_dir, progress)
    name = config.name or parent_dir.name
    if config.platform == PLATFORM_TORCHSCRIPT:
        raise InvalidInput(
            f"derive: model '{name}' is TorchScript; derived versions are made from "
            "torch.export programs (export the model with torch.export and push that)"
        )
    if config.platform == PLATFORM_AOTI:
        raise InvalidInput(
            f"derive: model '{name}' is already an AOTInductor package; derive from its parent"
        )
    if config.platform != PLATFORM_EXPORT:
        raise InvalidInput(f"derive: model '{name}' platform '{config.platform}' is not derivable")
    model_spec = build_spec(name, config)
    if model_spec.max_batch_size < 1:
        raise InvalidInput(
            f"derive: model '{name}' has max_batch_size 0; derived versions keep a dynamic "
            "batch dimension, so the parent needs one"
        )
    version_dir = version_dir_of(parent_dir)
    out_dir.mkdir(parents=True)
    try:
        parameters = _derive_program(
            version_dir / model_spec.model_filename, model_spec, config, spec, out_dir, progress
        )
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return Derived(out_dir, parameters)


def _derive_program(
    model_file: Path,
    model_spec: object,
    config: mc.ModelConfig,
    spec: DeriveSpec,
    out_dir: Path,
    progress: Progress,
) -> dict[str, str]:
    import torch

    from modelport.compression import transforms
    from modelport.compression.linear_lift import lift_linears

    name = config.name
    device = "cuda" if spec.needs_gpu() else "cpu"
    progress("loading parent", 0.0)
    program = loaders.load_exported_program(model_file, name)
    module = program.module().to(device)
    layers = lift_linears(module)
    if (spec.prune or spec.quantize) and not layers:
        raise InvalidInput(
            f"derive: model '{name}' has no Linear layer with constant weights to "
            f"{'prune' if spec.prune else 'quantize'}"
        )
    parameters = {"device": device, "torch": torch.__version__.split("+")[0]}
    if spec.prune:
        progress("pruning", 0.2)
        parameters |= transforms.prune(layers, spec.prune, spec.pattern, device)
    inputs = model_spec.inputs  # type: ignore[attr-defined]
    outputs = model_spec.outputs  # type: ignore[attr-defined]
    if spec.dtype:
        progress(f"casting to {spec.dtype}", 0.3)
        out_dtypes = [getattr(torch, t.datatype.torch_name) for t in outputs]
        module = transforms.CastInside(module, transforms.DTYPES[spec.dtype], out_dtypes)
        parameters["compute_dtype"] = spec.dtype
    if spec.quantize:
        import torchao

        progress(f"quantizing ({spec.quantize})", 0.4)
        parameters |= transforms.quantize(module, layers, spec.quantize, device)
        parameters["torchao"] = torchao.__version__
    progress("exporting", 0.6)
    max_batch = int(config.max_batch_size)
    exported = transforms.export(module, inputs, max_batch, device)
    child = mc.ModelConfig()
    child.CopyFrom(config)
    target = out_dir / str(CHILD_VERSION) / "model.pt2"
    target.parent.mkdir(parents=True)
    if spec.compile == "aoti":
        progress("compiling (AOTInductor)", 0.7)
        parameters |= transforms.compile_aoti(exported, target, max_batch)
        child.platform = PLATFORM_AOTI
    else:
        torch.export.save(exported, str(target))
    child.ClearField("default_model_filename")
    if device == "cuda":
        del child.instance_group[:]
        child.instance_group.add(count=1, kind=mc.ModelInstanceGroup.KIND_GPU)
    elif spec.compile == "aoti":  # compiled for the CPU: it must not be sent to a GPU
        if not child.instance_group:
            child.instance_group.add(count=1)
        for group in child.instance_group:
            group.kind = mc.ModelInstanceGroup.KIND_CPU
    (out_dir / CONFIG_FILE).write_text(text_format.MessageToString(child))
    progress("derived", 0.8)
    return parameters
