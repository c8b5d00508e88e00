"""Pick the next token of each sequence from its logits.

Greedy rows are one batched argmax. Sampled rows apply, in transformers'
order, repetition penalty → temperature → top-k → top-p, then draw with the
sequence's own `torch.Generator`: a request with a seed gets the same tokens
whatever else shares its steps. Logprobs are those of the model's
distribution (before temperature and truncation), as vLLM reports them.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch

from modelport.inference.generative.types import SamplingParams, TokenLogprob


@dataclass
class SamplerRow:
    params: SamplingParams
    generator: torch.Generator | None  # None for greedy rows
    history: Seq[int]  # prompt + output so far, for the repetition penalty


def new_generator(seed: int | None) -> torch.Generator | None:
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def apply_repetition_penalty(logits: torch.Tensor, history: Seq[int], penalty: float) -> None:
    """In place, as transformers does: seen tokens' logits divided (>0) or multiplied (<0)."""
    if penalty == 1.0 or not history:
        return
    seen = torch.tensor(sorted(set(history)), dtype=torch.long)
    values = logits.index_select(0, seen)
    logits.index_copy_(0, seen, torch.where(values > 0, values / penalty, values * penalty))


def filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Logits with everything outside the top-k / nucleus set to -inf (1-D)."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=False)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cumulative <= (1 - top_p)
        drop_sorted[-1] = False  # always keep the most likely token
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample(logits: torch.Tensor, rows: list[SamplerRow]) -> list[int]:
    """logits: [len(rows), vocab] float → one token id per row."""
    greedy = logits.argmax(dim=-1).tolist()
    tokens = list(greedy)
    for i, row in enumerate(rows):
        p = row.params
        if p.greedy and p.repetition_penalty == 1.0:
            continue
        scores = logits[i].float().clone()
        apply_repetition_penalty(scores, row.history, p.repetition_penalty)
        if p.greedy:
            tokens[i] = int(scores.argmax())
            continue
        scores = filter_top_k_top_p(scores / p.temperature, p.top_k, p.top_p)
        probs = scores.softmax(-1)
        tokens[i] = int(torch.multinomial(probs, 1, generator=row.generator))
    return tokens


def batch_logprobs(
    logits: torch.Tensor, rows: list[int], tokens: list[int], tops: list[int]
) -> list[TokenLogprob]:
    """Logprobs of `tokens` at logits rows `rows`, with `tops[i]` alternatives each.

    One log-softmax and one top-k over all the rows that asked, not one per
    sequence: at 16 streams asking for logprobs the per-row calls cost more
    than the math.
    """
    logp = torch.log_softmax(logits[rows].float(), dim=-1)
    chosen = logp.gather(1, torch.tensor(tokens, dtype=torch.long)[:, None])[:, 0].tolist()
    k = max(tops)
    best_values: list[list[float]] = [[] for _ in rows]
    best_ids: list[list[int]] = [[] for _ in rows]
    if k:
        values, ids = torch.topk(logp, k, dim=-1)
        best_values, best_ids = values.tolist(), ids.tolist()
    return [
        TokenLogprob(
            token_id=token,
            logprob=value,
            top=tuple(zip(best_ids[i][:top], best_values[i][:top], strict=True)),
        )
        for i, (token, value, top) in enumerate(zip(tokens, chosen, tops, strict=True))
    ]
