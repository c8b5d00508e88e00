"""Paged KV cache under a memory budget, plugged into transformers' models.

The cache is a pool of fixed-size blocks per layer (`[num_blocks * block_size,
kv_heads, head_dim]`, one flat "slot" per token); a sequence owns a list of
blocks, so memory is reserved as it grows, not for the longest possible
sequence, and the budget is counted in blocks (admission and preemption in
`scheduler.py` work on these counts).

A step packs every scheduled token of every sequence into one row (`[1, N]`,
decode tokens first, then prefill chunks) so the model's linear layers run
once on all of them. transformers calls `PagedKVCache.update` per layer (we
write the new keys and values into their slots) and then the attention
function registered here as `modelport_paged`, which attends each sequence to
its own history: the decode tokens as one padded batch gathered from the pool,
each prefill chunk on its own with a causal mask offset by what it has seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache

ATTENTION_NAME = "modelport_paged"


class BlockAllocator:
    """Free-list of block numbers; all-or-nothing allocation."""

    def __init__(self, num_blocks: int) -> None:
        self.total = num_blocks
        self._free = list(range(num_blocks - 1, -1, -1))

    @property
    def free_count(self) -> int:
        return len(self._free)

    @property
    def used_count(self) -> int:
        return self.total - len(self._free)

    def allocate(self, n: int) -> list[int] | None:
        if n > len(self._free):
            return None
        if n == 0:
            return []
        taken = self._free[-n:]
        del self._free[-n:]
        return taken

    def free(self, blocks: list[int]) -> None:
        self._free.extend(blocks)


def blocks_for(num_tokens: int, block_size: int) -> int:
    return -(-num_tokens // block_size)


@dataclass
class PrefillChunk:
    start: int  # index of its first token in the packed step
    length: int
    context: int  # tokens already in the cache before this chunk
    gather: torch.Tensor | None  # slots of context + chunk, when context > 0
    mask: torch.Tensor | None  # [length, context + length], when context > 0


@dataclass
class StepLayout:
    """Where every token of one step lives; built once, read by every layer."""

    num_decode: int
    write_slots: torch.Tensor  # [N] slot of each packed token
    decode_blocks: torch.Tensor | None = None  # [num_decode * B] block numbers (padded with 0)
    decode_mask: torch.Tensor | None = None  # [num_decode, 1, 1, B * block_size] True where valid
    prefills: list[PrefillChunk] = field(default_factory=list)


def build_layout(
    block_tables: list[list[int]],
    contexts: list[int],
    lengths: list[int],
    num_decode: int,
    block_size: int,
) -> StepLayout:
    """Slots for a step of sequences given their blocks, cached tokens and new tokens.

    The first `num_decode` sequences add one token each; the rest add a chunk.
    Index tensors are built from Python lists in one call each: a step at 64
    streams would otherwise spend more time creating small tensors than attending.
    """
    bs = block_size
    write: list[int] = []
    for table, ctx, n in zip(block_tables, contexts, lengths, strict=True):
        write.extend(table[p // bs] * bs + p % bs for p in range(ctx, ctx + n))
    layout = StepLayout(num_decode=num_decode, write_slots=torch.tensor(write, dtype=torch.long))
    offsets = torch.arange(bs)
    if num_decode:
        # Decode attention gathers whole blocks (one contiguous copy of
        # block_size tokens each) rather than single slots: the same bytes in a
        # sixteenth of the rows, and no slot index to build per step (about 3%
        # of a 16-stream step here). The mask hides a block's unused tail.
        totals = torch.tensor(contexts[:num_decode]) + 1
        blocks = -(-int(totals.max()) // bs)
        tables = [t[:blocks] + [0] * (blocks - len(t[:blocks])) for t in block_tables[:num_decode]]
        layout.decode_blocks = torch.tensor(tables, dtype=torch.long).view(-1)
        layout.decode_mask = (torch.arange(blocks * bs)[None, :] < totals[:, None]).view(
            num_decode, 1, 1, blocks * bs
        )
    start = num_decode
    for i in range(num_decode, len(lengths)):
        ctx, n = contexts[i], lengths[i]
        chunk = PrefillChunk(start=start, length=n, context=ctx, gather=None, mask=None)
        if ctx:
            blocks_of = torch.tensor(block_tables[i], dtype=torch.long)
            chunk.gather = (blocks_of[:, None] * bs + offsets).view(-1)[: ctx + n]
            chunk.mask = torch.arange(ctx + n)[None, :] <= (ctx + torch.arange(n))[:, None]
        layout.prefills.append(chunk)
        start += n
    return layout


class PagedKVCache(Cache):
    """transformers' cache seam: `update` writes a step's keys/values into their slots."""

    def __init__(
        self,
        num_layers: int,
        num_blocks: int,
        block_size: int,
        kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        # No per-layer objects: transformers' mask helpers treat an empty list as
        # "every layer is full attention", and our attention needs no mask from them.
        self.layers = []
        self.block_size = block_size
        self.num_blocks = num_blocks
        shape = (num_blocks * block_size, kv_heads, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]

    @staticmethod
    def bytes_per_block(
        num_layers: int, block_size: int, kv_heads: int, head_dim: int, dtype: torch.dtype
    ) -> int:
        itemsize = torch.empty((), dtype=dtype).element_size()
        return 2 * num_layers * block_size * kv_heads * head_dim * itemsize

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *args: Any,
        kwargs: dict[str, Any] | None = None,
        **extra: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        layout: StepLayout = (kwargs or extra)["modelport_step"]
        # [1, kv_heads, N, head_dim] → [N, kv_heads, head_dim], one row per slot
        self.keys[layer_idx].index_copy_(0, layout.write_slots, key_states[0].transpose(0, 1))
        self.values[layer_idx].index_copy_(0, layout.write_slots, value_states[0].transpose(0, 1))
        return key_states, value_states

    def gather_blocks(self, layer: int, blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The blocks' keys and values, [len(blocks), block_size * kv_heads * head_dim]."""
        keys = self.keys[layer].view(self.num_blocks, -1).index_select(0, blocks)
        values = self.values[layer].view(self.num_blocks, -1).index_select(0, blocks)
        return keys, values

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0


def paged_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """query/key/value: [1, heads, N, head_dim] for the packed step → [1, N, heads, head_dim]."""
    layout: StepLayout = kwargs["modelport_step"]
    cache: PagedKVCache = kwargs["modelport_cache"]
    layer = int(module.layer_idx)  # type: ignore[arg-type]
    heads, kv_heads = query.shape[1], key.shape[1]
    gqa = heads != kv_heads
    out = torch.empty(query.shape[2], heads, query.shape[3], dtype=query.dtype, device=query.device)
    d = layout.num_decode
    if d:
        assert layout.decode_blocks is not None
        width = layout.decode_mask.shape[-1]  # type: ignore[union-attr]
        k, v = cache.gather_blocks(layer, layout.decode_blocks)
        k = k.view(d, width, kv_heads, -1).transpose(1, 2)
        v = v.view(d, width, kv_heads, -1).transpose(1, 2)
        q = query[0, :, :d].transpose(0, 1).unsqueeze(2)  # [d, heads, 1, head_dim]
        o = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=layout.decode_mask, scale=scaling, enable_gqa=gqa
        )
        out[:d] = o.squeeze(2)
    for chunk in layout.prefills:
        span = slice(chunk.start, chunk.start + chunk.length)
        q = query[:, :, span]
        if chunk.gather is None:
            k, v = key[:, :, span], value[:, :, span]
            o = torch.nn.functional.scaled_dot_product_attention(
                q, k, v, is_causal=True, scale=scaling, enable_gqa=gqa
            )
        else:
            k = cache.keys[layer].index_select(0, chunk.gather).transpose(0, 1).unsqueeze(0)
            v = cache.values[layer].index_select(0, chunk.gather).transpose(0, 1).unsqueeze(0)
            o = torch.nn.functional.scaled_dot_product_attention(
                q, k, v, attn_mask=chunk.mask, scale=scaling, enable_gqa=gqa
            )
        out[span] = o[0].transpose(0, 1)
    return out.unsqueeze(0), None


AttentionInterface.register(ATTENTION_NAME, paged_attention)
