"""Runs one scheduled step through a transformers causal LM on the paged cache."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from modelport.inference.generative.kv_cache import ATTENTION_NAME, PagedKVCache, build_layout
from modelport.inference.generative.scheduler import ScheduledStep, Sequence


@dataclass(frozen=True)
class ModelShape:
    num_layers: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    max_positions: int

    @classmethod
    def of(cls, config: object) -> ModelShape:
        heads = config.num_attention_heads  # type: ignore[attr-defined]
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads  # type: ignore[attr-defined]
        return cls(
            num_layers=config.num_hidden_layers,  # type: ignore[attr-defined]
            kv_heads=getattr(config, "num_key_value_heads", None) or heads,
            head_dim=head_dim,
            vocab_size=config.vocab_size,  # type: ignore[attr-defined]
            max_positions=getattr(config, "max_position_embeddings", 2048),
        )


class PretransposedLinear(torch.nn.Module):
    """nn.Linear with its weight stored [in, out], multiplied as `x @ w`.

    On CPU, MKL's fp32 GEMM with the weight as the transposed operand (what
    `F.linear` asks for) is slower than the same product with the weight laid
    out [in, out]: on one Zen 1 core the 32,000-wide output projection takes
    4.2 vs 1.9 ms for one row and 15.7 vs 11.6 ms for 16, and a whole decode
    step of the benchmark's model 12.5 vs 9.8 ms (1 row), 43.4 vs 40.0 ms (16).
    """

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.weight_t = torch.nn.Parameter(
            linear.weight.detach().t().contiguous(), requires_grad=False
        )
        self.bias = linear.bias

    @property
    def weight(self) -> torch.Tensor:
        """The [out, in] view, for code that reads a linear layer's weight."""
        return self.weight_t.t()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.matmul(x, self.weight_t)
        return y if self.bias is None else y + self.bias


def pretranspose_linears(model: torch.nn.Module) -> int:
    """Swaps the plain fp32 nn.Linear layers of a CPU model; returns how many.

    Quantized layers (tensor-subclass weights) and other dtypes keep their own
    kernels: the measured gain is for MKL's fp32 path only.
    """
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (
                type(child) is torch.nn.Linear
                and type(child.weight) is torch.nn.Parameter
                and child.weight.dtype == torch.float32
                and child.weight.device.type == "cpu"
            ):
                setattr(parent, name, PretransposedLinear(child))
                swapped += 1
    return swapped


class ModelRunner:
    """Owns the model and its KV pool; `run` returns logits for the rows to sample."""

    def __init__(self, model: torch.nn.Module, num_blocks: int, block_size: int) -> None:
        self.model = model.eval()
        model.set_attn_implementation(ATTENTION_NAME)  # type: ignore[operator]
        pretranspose_linears(model)
        self.shape = ModelShape.of(model.config)
        param = next(model.parameters())
        self.device = param.device
        self.cache = PagedKVCache(
            self.shape.num_layers,
            num_blocks,
            block_size,
            self.shape.kv_heads,
            self.shape.head_dim,
            param.dtype,
            param.device,
        )

    def run(self, step: ScheduledStep) -> tuple[list[Sequence], torch.Tensor | None]:
        """Compute the step; returns the sequences that get a token and their logits."""
        seqs = list(step.decode) + [s for s, _ in step.prefill]
        lengths = [1] * len(step.decode) + [n for _, n in step.prefill]
        contexts = [s.num_computed for s in seqs]
        ids: list[int] = []
        positions: list[int] = []
        keep: list[int] = []
        sampled: list[Sequence] = []
        for seq, ctx, n in zip(seqs, contexts, lengths, strict=True):
            ids.extend([seq.token_at(ctx)] if n == 1 else seq.tokens(ctx, ctx + n))
            positions.extend(range(ctx, ctx + n))
            if ctx + n == seq.num_tokens:  # the prompt is complete: a new token is due
                keep.append(len(ids) - 1)
                sampled.append(seq)
        layout = build_layout(
            [s.blocks for s in seqs], contexts, lengths, len(step.decode), self.cache.block_size
        )
        layout.write_slots = layout.write_slots.to(self.device)
        out = self.model(
            input_ids=torch.tensor([ids], device=self.device),
            position_ids=torch.tensor([positions], device=self.device),
            cache=self.cache,
            use_cache=True,
            logits_to_keep=torch.tensor(keep, dtype=torch.long, device=self.device),
            modelport_step=layout,
            modelport_cache=self.cache,
        )
        for seq, n in zip(seqs, lengths, strict=True):
            seq.num_computed += n
        if not sampled:
            return [], None
        return sampled, out.logits[0]
