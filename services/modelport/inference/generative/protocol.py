"""The seam between the serving front ends and whatever runs the model.

Like vLLM's `EngineClient`, one small protocol: the OIP servicer, the OpenAI
layer, the benchmark and the conformance suite (tests/generative/conformance)
talk only to this, so an engine can be swapped without touching them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from modelport.inference.generative.types import EngineLoad, GenerationOutput, SamplingParams


class Tokenizer(Protocol):
    """The part of a tokenizer the front ends need (a transformers fast tokenizer fits)."""

    eos_token_id: int | None

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, token_ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


class GenerationEngine(Protocol):
    tokenizer: Tokenizer
    max_model_len: int

    async def start(self) -> None:
        """Load weights, allocate the KV cache, start stepping."""

    async def close(self) -> None:
        """Finish every open stream with `cancelled` and release the model."""

    def generate(
        self,
        prompt_token_ids: Sequence[int],
        params: SamplingParams,
        *,
        request_id: str | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[GenerationOutput]:
        """Stream deltas until one has a finish reason.

        Raises QueueFull when the waiting queue is full, InvalidInput when the
        prompt cannot fit, DeadlineExceeded when `deadline` (time.monotonic())
        passes. Closing the iterator (or cancelling its consumer) aborts the
        sequence; its KV blocks are free by the end of the engine's next step.
        """
        ...

    def load(self) -> EngineLoad:
        """Running and waiting sequences, KV blocks in use: cheap, any thread."""
        ...
