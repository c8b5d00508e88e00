"""What a derive job is asked to do, checked before any work starts.

The steps always run in one order — prune, cast, quantize, compile — since
each later step keeps what the earlier ones did (a pruned weight quantizes to
zero; an AOTInductor package bakes in whatever the graph computes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from modelport.errors import InvalidInput

QUANTIZE = ("int8-dynamic", "int8-weight-only", "int4-weight-only", "fp8")
DTYPES = ("fp16", "bf16")
PRUNE_PATTERNS = ("unstructured", "2:4")
COMPILERS = ("aoti",)
METRICS = ("max-abs-diff", "mse", "top1", "perplexity")
# fp8 matmuls need compute capability 8.9+ (Ada, Hopper); 2:4 sparse kernels 8.0+.
FP8_CAPABILITY = (8, 9)
SPARSE_24_CAPABILITY = (8, 0)


@dataclass(frozen=True)
class DeriveSpec:
    prune: float = 0.0
    prune_pattern: str = ""
    dtype: str = ""
    quantize: str = ""
    compile: str = ""

    def check(self) -> None:
        def bad(flag: str, value: object, allowed: tuple[str, ...]) -> InvalidInput:
            return InvalidInput(f"derive: {flag} '{value}' is not one of {', '.join(allowed)}")

        if not 0.0 <= self.prune < 1.0:
            raise InvalidInput(f"derive: --prune {self.prune} must be at least 0 and below 1")
        if self.prune_pattern and self.prune_pattern not in PRUNE_PATTERNS:
            raise bad("--prune-pattern", self.prune_pattern, PRUNE_PATTERNS)
        if self.prune_pattern == "2:4" and self.prune not in (0.0, 0.5):
            raise InvalidInput("derive: 2:4 sparsity zeroes exactly half: use --prune 0.5")
        if self.prune_pattern and not self.prune:
            raise InvalidInput("derive: --prune-pattern needs --prune RATIO")
        if self.dtype and self.dtype not in DTYPES:
            raise bad("--dtype", self.dtype, DTYPES)
        if self.quantize and self.quantize not in QUANTIZE:
            raise bad("--quantize", self.quantize, QUANTIZE)
        if self.compile and self.compile not in COMPILERS:
            raise bad("--compile", self.compile, COMPILERS)
        if self.dtype and self.quantize:
            raise InvalidInput(
                f"derive: --quantize {self.quantize} picks its own dtypes; drop --dtype"
            )
        if self.is_empty():
            raise InvalidInput(
                "derive: nothing to do: give --quantize, --dtype, --prune or --compile"
            )

    def is_empty(self) -> bool:
        return not (self.prune or self.dtype or self.quantize or self.compile)

    @property
    def pattern(self) -> str:
        return self.prune_pattern or "unstructured"

    def method(self) -> str:
        """The lineage's method name: the steps joined by '+', in the order they run."""
        steps = []
        if self.prune:
            steps.append(f"prune-{self.pattern}")
        if self.dtype:
            steps.append(self.dtype)
        if self.quantize:
            steps.append(self.quantize)
        if self.compile:
            steps.append(self.compile)
        return "+".join(steps)

    def needs_gpu(self) -> bool:
        """Methods that only run on a CUDA GPU (the Kubernetes Job gets a GPU node)."""
        return self.quantize == "fp8" or (bool(self.prune) and self.pattern == "2:4")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeriveSpec:
        return cls(
            prune=float(data.get("prune", 0.0)),
            prune_pattern=str(data.get("prune_pattern", "")),
            dtype=str(data.get("dtype", "")),
            quantize=str(data.get("quantize", "")),
            compile=str(data.get("compile", "")),
        )


def cuda_capability() -> tuple[int, int] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return int(major), int(minor)


def check_runnable_here(spec: DeriveSpec, capability: tuple[int, int] | None) -> None:
    """Refuse, with the reason, what this machine cannot do (before loading anything)."""
    where = f"compute capability {capability[0]}.{capability[1]}" if capability else "no CUDA GPU"
    if spec.quantize == "fp8" and (capability is None or capability < FP8_CAPABILITY):
        raise InvalidInput(
            "derive: fp8 needs a CUDA GPU of compute capability 8.9 or later (Ada, Hopper: "
            f"fp8 matmul kernels); this machine has {where}. Use int8-dynamic or "
            "int8-weight-only here, or run the job on a GPU node"
        )
    if (
        spec.prune
        and spec.pattern == "2:4"
        and (capability is None or capability < SPARSE_24_CAPABILITY)
    ):
        raise InvalidInput(
            "derive: 2:4 sparsity needs a CUDA GPU of compute capability 8.0 or later "
            f"(semi-structured sparse kernels); this machine has {where}. "
            "Use --prune RATIO (unstructured) here"
        )
