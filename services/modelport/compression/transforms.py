"""The derive methods on a module whose Linear layers are `nn.Linear` (see `linear_lift`).

- prune: torch.nn.utils.prune — L1 (magnitude) unstructured per layer, or a
  2:4 pattern (the 2 largest of every 4 weights along the input) which, on a
  GPU with the kernels, is stored as torch's semi-structured sparse tensor;
- cast: the layers compute in fp16/bf16 while inputs and outputs keep their
  declared datatypes (a child must answer the parent's requests unchanged);
- quantize: torchao `quantize_` with the config for the method and device;
- export / compile: torch.export with a dynamic batch dimension, and an
  AOTInductor package (`aoti_compile_and_package`) of that program.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from modelport.errors import InvalidInput

log = logging.getLogger(__name__)

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
# torchao's CPU int4 path groups 32 weights per scale; its CUDA tinygemm path 128.
INT4_GROUP_CPU = 32
INT4_GROUP_CUDA = 128


class SemiStructured24(torch_prune.BasePruningMethod):
    """Keep the 2 largest-magnitude weights of every 4 consecutive inputs."""

    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        if t.shape[-1] % 4:
            raise InvalidInput(f"2:4 sparsity needs input sizes divisible by 4, got {t.shape[-1]}")
        groups = t.abs().reshape(-1, 4)
        keep = groups.topk(2, dim=1).indices
        mask = torch.zeros_like(groups).scatter_(1, keep, 1.0)
        return mask.reshape(t.shape) * default_mask


def sparsity(layers: Sequence[nn.Linear]) -> float:
    total = sum(layer.weight.numel() for layer in layers)
    zeros = sum(int((layer.weight == 0).sum()) for layer in layers)
    return zeros / total if total else 0.0


def prune(layers: Sequence[nn.Linear], ratio: float, pattern: str, device: str) -> dict[str, str]:
    """Zero weights in place; returns what the lineage records (the sparsity achieved)."""
    for layer in layers:
        if pattern == "2:4":
            SemiStructured24.apply(layer, "weight")
        else:
            torch_prune.l1_unstructured(layer, "weight", amount=ratio)
        torch_prune.remove(layer, "weight")  # make the zeros permanent, drop the mask
    achieved = sparsity(layers)
    if pattern == "2:4" and device == "cuda":
        from torch.sparse import to_sparse_semi_structured

        for layer in layers:
            layer.weight = nn.Parameter(
                to_sparse_semi_structured(layer.weight.half().cuda()), requires_grad=False
            )
    return {
        "prune_ratio": f"{ratio:g}",
        "prune_pattern": pattern,
        "achieved_sparsity": f"{achieved:.4f}",
    }


class CastInside(nn.Module):
    """Runs `inner` in another dtype; floating inputs/outputs are cast at the edges."""

    def __init__(self, inner: nn.Module, dtype: torch.dtype, output_dtypes: Sequence[torch.dtype]):
        super().__init__()
        self.inner = inner.to(dtype)
        self.dtype = dtype
        self.output_dtypes = list(output_dtypes)

    def forward(self, *args: torch.Tensor) -> Any:
        cast = [a.to(self.dtype) if a.is_floating_point() else a for a in args]
        result = self.inner(*cast)
        values = list(result) if isinstance(result, (list, tuple)) else [result]
        out = [v.to(d) for v, d in zip(values, self.output_dtypes, strict=False)]
        return tuple(out) if isinstance(result, (list, tuple)) else out[0]


def quantize_config(method: str, device: str) -> tuple[Any, str]:
    """The torchao config for a method on a device, and its name for the lineage."""
    from torchao.quantization import (
        Float8DynamicActivationFloat8WeightConfig,
        Int4WeightOnlyConfig,
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
        IntxWeightOnlyConfig,
    )
    from torchao.quantization.granularity import PerGroup

    if method == "int8-dynamic":
        return Int8DynamicActivationInt8WeightConfig(), "Int8DynamicActivationInt8WeightConfig"
    if method == "int8-weight-only":
        return Int8WeightOnlyConfig(), "Int8WeightOnlyConfig"
    if method == "int4-weight-only":
        if device == "cuda":
            config = Int4WeightOnlyConfig(
                group_size=INT4_GROUP_CUDA, int4_packing_format="tile_packed_to_4d"
            )
            return config, f"Int4WeightOnlyConfig(group_size={INT4_GROUP_CUDA}, tile_packed_to_4d)"
        # torchao's int4 packings are CUDA kernels; on a CPU int4 values with a
        # scale per group run through its intx path (one value per byte).
        int4 = torch.int4  # type: ignore[attr-defined]  # a dtype the stubs lack
        config = IntxWeightOnlyConfig(weight_dtype=int4, granularity=PerGroup(INT4_GROUP_CPU))
        return config, f"IntxWeightOnlyConfig(int4, PerGroup({INT4_GROUP_CPU}))"
    if method == "fp8":
        return (
            Float8DynamicActivationFloat8WeightConfig(),
            "Float8DynamicActivationFloat8WeightConfig",
        )
    raise InvalidInput(f"derive: unknown quantization '{method}'")


def quantize(
    module: nn.Module, layers: Sequence[nn.Linear], method: str, device: str
) -> dict[str, str]:
    from torchao.quantization import quantize_

    config, name = quantize_config(method, device)
    if method == "int4-weight-only" and device == "cuda":
        module.to(torch.bfloat16)  # the tinygemm kernels take bf16 activations
    before = [type(layer.weight) for layer in layers]
    quantize_(module, config, device=device if device == "cuda" else None)
    changed = sum(
        1 for layer, old in zip(layers, before, strict=True) if type(layer.weight) is not old
    )
    if not changed:
        raise InvalidInput(
            f"derive: {method} quantized no layer (torchao skips Linear layers whose "
            "input size does not fit its group size)"
        )
    return {"torchao_config": name, "quantized_layers": f"{changed}/{len(layers)}"}


def example_inputs(specs: Sequence[Any], batch: int, device: str) -> tuple[torch.Tensor, ...]:
    """Zeros shaped like the config's inputs (-1 dims as 8) with a leading batch."""
    tensors = []
    for spec in specs:
        if spec.datatype.torch_name is None:
            raise InvalidInput(f"derive: input '{spec.name}' is BYTES; only tensors can be derived")
        shape = [batch, *(8 if d == -1 else d for d in spec.dims)]
        tensors.append(
            torch.zeros(shape, dtype=getattr(torch, spec.datatype.torch_name), device=device)
        )
    return tuple(tensors)


def export(module: nn.Module, specs: Sequence[Any], max_batch: int, device: str) -> Any:
    """torch.export with dim 0 of every input one dynamic batch dimension (1..max_batch)."""
    batch = torch.export.Dim("batch", min=1, max=max(max_batch, 2))
    dynamic = []
    for spec in specs:
        axes: dict[int, Any] = {0: batch}
        for axis, size in enumerate(spec.dims, start=1):
            if size == -1:
                axes[axis] = torch.export.Dim(f"{spec.name}_{axis}", min=1, max=1 << 16)
        dynamic.append(axes)
    # CastInside takes *args: export maps its shapes to that one (tuple) parameter.
    shapes = (tuple(dynamic),) if isinstance(module, CastInside) else tuple(dynamic)
    with torch.no_grad():
        return torch.export.export(module, example_inputs(specs, 2, device), dynamic_shapes=shapes)


def compile_aoti(program: Any, out: Path, max_batch: int) -> dict[str, str]:
    """An AOTInductor package (a .pt2 zip with the compiled model's shared library)."""
    import torch._inductor

    out.parent.mkdir(parents=True, exist_ok=True)
    torch._inductor.aoti_compile_and_package(program, package_path=str(out))
    return {"aoti_batch": f"1..{max(max_batch, 2)}"}
