"""A GenerationBackend over engines in this process, for the OpenAI layer's tests.

The router's own backend reaches replicas over gRPC; this one calls the engine
directly, doing what a replica does with a request: tokenize text, validate
the sampling JSON into SamplingParams, stream the engine's deltas.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from modelport.errors import NotFound
from modelport.inference.generative.engine import ContinuousBatchingEngine
from modelport.inference.generative.types import SamplingParams
from modelport.router.openai.service import Delta, ModelInfo


class EngineBackend:
    def __init__(self, engines: dict[str, tuple[ContinuousBatchingEngine, str | None]]) -> None:
        self.engines = engines  # name → (engine, chat template)

    async def models(self) -> list[ModelInfo]:
        return [await self.model(name) for name in self.engines]

    async def model(self, name: str) -> ModelInfo:
        if name not in self.engines:
            raise NotFound(f"model '{name}' is not served")
        engine, template = self.engines[name]
        tok: Any = engine.tokenizer
        return ModelInfo(
            id=name,
            chat_template=template,
            bos_token=tok.bos_token or "",
            eos_token=tok.eos_token or "",
        )

    async def generate(
        self, model: str, prompt: str | list[int], sampling: dict[str, Any]
    ) -> AsyncIterator[Delta]:
        engine, _ = self.engines[model]
        ids = (
            engine.tokenizer.encode(prompt, add_special_tokens=False)
            if isinstance(prompt, str)
            else prompt
        )
        params = SamplingParams.from_mapping(sampling)
        async for out in engine.generate(ids, params):
            yield Delta(
                text=out.text,
                finish_reason=out.finish_reason.value if out.finish_reason else None,
                prompt_tokens=out.num_prompt_tokens,
                completion_tokens=out.num_output_tokens,
                error=out.error,
            )
