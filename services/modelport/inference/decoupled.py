"""Decoupled models: zero or more responses per request, streamed as they come.

The seam is `ResponseStream`: anything that, given a request's inputs, yields
`Response`s (outputs in config order) and may mark one of them final. The
servicer sends each response as soon as it is yielded over ModelStreamInfer and
flags the last one with Triton's `triton_final_response`; when a stream ends
without a response marked final, the final flag travels in an empty response,
which is sent only when the client asked for it
(`triton_enable_empty_final_response`), as Triton does.

Two producers plug in here: a torch model run through the batcher whose outputs
carry a leading responses dimension (`split_responses`: response i is row i of
every output, zero rows is zero responses), and the generative engine, which
yields tokens as it decodes them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from modelport.errors import Internal

FINAL_PARAMETER = "triton_final_response"
EMPTY_FINAL_PARAMETER = "triton_enable_empty_final_response"
Parameter = bool | int | float | str


@dataclass(frozen=True, slots=True)
class Response:
    """One response: outputs in config order, and whether it is the request's last."""

    outputs: Sequence[np.ndarray]
    final: bool = False
    parameters: dict[str, Parameter] = field(default_factory=dict)


@runtime_checkable
class ResponseStream(Protocol):
    """A decoupled model: one request in, an async stream of responses out.

    What the model manager serves for a decoupled model implements this (a
    torch model's `ServedVersion`, or a generative engine's version); the
    data plane streams whatever it yields.
    """

    def stream(
        self,
        inputs: Sequence[np.ndarray],
        rows: int,
        signature: tuple[tuple[int, ...], ...],
        deadline: float | None,
    ) -> AsyncIterator[Response]: ...


def split_responses(outputs: Sequence[np.ndarray], model: str) -> list[Response]:
    """Row i of every output (their shared leading dimension) is response i."""
    if not outputs:
        return []
    counts = {int(o.shape[0]) if o.ndim else -1 for o in outputs}
    if len(counts) != 1 or -1 in counts:
        shapes = [list(o.shape) for o in outputs]
        raise Internal(
            f"model '{model}' is decoupled: every output needs the same leading "
            f"responses dimension, got shapes {shapes}"
        )
    (count,) = counts
    return [Response([o[i] for o in outputs], final=i == count - 1) for i in range(count)]


@dataclass(frozen=True, slots=True)
class Flagged:
    """What the servicer sends: a response (None: an empty one) and its final flag."""

    response: Response | None
    final: bool


async def with_final_flags(
    responses: AsyncIterator[Response], *, empty_final: bool
) -> AsyncIterator[Flagged]:
    """Flag each response; after the last, an empty final response if asked for.

    Nothing follows a response marked final: the producer is closed there.
    """
    try:
        async for response in responses:
            if response.final:
                yield Flagged(response, True)
                return
            yield Flagged(response, False)
        if empty_final:
            yield Flagged(None, True)
    finally:
        aclose = getattr(responses, "aclose", None)
        if aclose is not None:
            await aclose()
