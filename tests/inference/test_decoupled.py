"""The decoupled seam: responses split from outputs and final flags."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest
from modelport.errors import Internal
from modelport.inference.decoupled import Response, split_responses, with_final_flags

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)


def test_a_leading_responses_dimension_becomes_responses() -> None:
    out, idx = np.arange(3, dtype=np.int32).reshape(3, 1), np.arange(3, dtype=np.uint32)
    responses = split_responses([out, idx], "repeat")
    assert [r.outputs[0].tolist() for r in responses] == [[0], [1], [2]]
    assert [int(r.outputs[1]) for r in responses] == [0, 1, 2]
    assert [r.final for r in responses] == [False, False, True]
    assert split_responses([np.zeros((0, 1))], "repeat") == []


def test_outputs_that_disagree_on_the_responses_dimension_are_a_model_error() -> None:
    with pytest.raises(Internal, match="same leading responses dimension"):
        split_responses([np.zeros((2, 1)), np.zeros((3, 1))], "m")
    with pytest.raises(Internal):
        split_responses([np.float32(1.0).reshape(())], "m")


async def produce(*finals: bool, log: list[str]) -> AsyncIterator[Response]:
    try:
        for i, final in enumerate(finals):
            yield Response([np.array([i])], final=final)
        log.append("exhausted")
    finally:
        log.append("closed")


async def flags(finals: tuple[bool, ...], empty_final: bool) -> tuple[list[object], list[str]]:
    log: list[str] = []
    got = [
        (None if f.response is None else int(f.response.outputs[0][0]), f.final)
        async for f in with_final_flags(produce(*finals, log=log), empty_final=empty_final)
    ]
    return got, log


async def test_final_flags() -> None:
    # The producer marks its last response final: no empty response follows.
    assert (await flags((False, True), True))[0] == [(0, False), (1, True)]
    # It ends without marking one: the final flag comes alone, only if asked for.
    assert (await flags((False, False), True))[0] == [(0, False), (1, False), (None, True)]
    assert (await flags((False,), False))[0] == [(0, False)]
    # Zero responses.
    assert (await flags((), True))[0] == [(None, True)]
    assert (await flags((), False))[0] == []


async def test_nothing_is_taken_after_a_final_response() -> None:
    got, log = await flags((True, False, False), True)
    assert got == [(0, True)]
    assert log == ["closed"]  # closed at the final response, never exhausted
