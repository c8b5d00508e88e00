"""The CPU kernel choices under the engine: pre-transposed linears and the block gather."""

from __future__ import annotations

import pytest
import torch
from modelport.inference.generative.kv_cache import PagedKVCache, build_layout
from modelport.inference.generative.model_runner import (
    PretransposedLinear,
    pretranspose_linears,
)

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)


def test_pretransposed_linears_compute_what_the_linears_did() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(32, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 8, bias=False),
        torch.nn.Linear(8, 8).to(torch.bfloat16),
    )
    x = torch.randn(5, 32)
    expected = model[:3](x)
    assert pretranspose_linears(model) == 2
    assert isinstance(model[0], PretransposedLinear) and isinstance(model[2], PretransposedLinear)
    assert type(model[3]) is torch.nn.Linear  # not fp32: left to its own kernel
    torch.testing.assert_close(model[:3](x), expected)
    assert model[0].weight.shape == (64, 32)  # readers of .weight still see [out, in]


def test_decode_gathers_whole_blocks_and_masks_their_unused_tails() -> None:
    bs = 4
    cache = PagedKVCache(1, 8, bs, kv_heads=1, head_dim=2, dtype=torch.float32, device="cpu")
    cache.keys[0].copy_(torch.arange(32 * 2, dtype=torch.float32).view(32, 1, 2))
    # two decode sequences: 5 cached tokens in blocks [6, 1], 2 cached in block [3]
    layout = build_layout([[6, 1], [3]], [5, 2], [1, 1], num_decode=2, block_size=bs)
    assert layout.decode_blocks.tolist() == [6, 1, 3, 0]
    assert layout.decode_mask.view(2, -1).sum(1).tolist() == [6, 3]  # context + the new token
    keys, _ = cache.gather_blocks(0, layout.decode_blocks)
    first = keys.view(2, 2 * bs, 2)[0, :6, 0].tolist()
    assert first == [48.0, 50.0, 52.0, 54.0, 8.0, 10.0]  # slots 24..27 then 4, 5
    assert layout.write_slots.tolist() == [1 * bs + 1, 3 * bs + 2]
