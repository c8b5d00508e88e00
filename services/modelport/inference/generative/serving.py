"""A generative model as the inference service serves it: OIP request in, responses out.

The servicer's ModelStreamInfer (decoupled: zero or more responses per
request) iterates `stream`; ModelInfer awaits `infer`, the whole completion.
Transport-free: it deals in protobuf messages but knows nothing of grpc.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from modelport.errors import Internal
from modelport.inference.generative.oip import GenerationCall, build_response, parse_request
from modelport.inference.generative.protocol import GenerationEngine
from modelport.inference.generative.types import FinishReason, GenerationOutput, TokenLogprob
from modelport.proto.inference import grpc_service_pb2 as pb


class GenerativeModel:
    def __init__(
        self,
        engine: GenerationEngine,
        name: str,
        version: str,
        sampling_defaults: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.name = name
        self.version = version
        self.sampling_defaults = dict(sampling_defaults or {})

    def _outputs(
        self, call: GenerationCall, deadline: float | None
    ) -> AsyncIterator[GenerationOutput]:
        ids = call.prompt_ids
        if ids is None:
            ids = self.engine.tokenizer.encode(call.prompt_text or "", add_special_tokens=False)
        return self.engine.generate(
            ids, call.params, request_id=call.request_id or None, deadline=deadline
        )

    async def stream(
        self, request: pb.ModelInferRequest, *, deadline: float | None = None
    ) -> AsyncIterator[pb.ModelInferResponse]:
        """Decoupled answers: one per delta when `stream` is true, else one final response."""
        call = parse_request(request, self.name, self.sampling_defaults)
        if not call.stream:
            yield await self._whole(call, deadline)
            return
        async for out in self._outputs(call, deadline):
            _raise_on_error(out)
            yield build_response(
                call,
                self.name,
                self.version,
                out,
                text=out.text,
                token_ids=out.token_ids,
                final=out.finished,
                logprobs=out.logprobs,
                token_text=self._token_text,
            )

    async def infer(
        self, request: pb.ModelInferRequest, *, deadline: float | None = None
    ) -> pb.ModelInferResponse:
        """Unary: the whole completion, whatever `stream` says."""
        call = parse_request(request, self.name, self.sampling_defaults)
        return await self._whole(call, deadline)

    async def _whole(self, call: GenerationCall, deadline: float | None) -> pb.ModelInferResponse:
        text: list[str] = []
        ids: list[int] = []
        logprobs: list[TokenLogprob] = []
        last: GenerationOutput | None = None
        async for out in self._outputs(call, deadline):
            text.append(out.text)
            ids.extend(out.token_ids)
            logprobs.extend(out.logprobs)
            last = out
        assert last is not None
        _raise_on_error(last)
        call.stream = False
        return build_response(
            call,
            self.name,
            self.version,
            last,
            text="".join(text),
            token_ids=ids,
            final=True,
            logprobs=logprobs,
            token_text=self._token_text,
        )

    def _token_text(self, token_id: int) -> str:
        """One token as text, as a logprob entry names it."""
        return self.engine.tokenizer.decode([token_id])


def _raise_on_error(out: GenerationOutput) -> None:
    if out.finish_reason is FinishReason.ERROR:
        raise Internal(out.error or "generation failed")
