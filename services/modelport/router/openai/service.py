"""The OpenAI handlers, free of HTTP: bodies in, JSON or SSE byte chunks out.

They meet the models through `GenerationBackend`: the router's implementation
streams from a replica over gRPC (ModelStreamInfer), a test's may wrap an
engine in process. A streamed answer reads its first delta before it is
returned, so an unknown model, a full queue or a bad parameter is an HTTP
error status, not an error event in a 200 stream.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Protocol

from modelport.client.generation import TokenLogprob
from modelport.errors import Internal, InvalidInput, Unavailable
from modelport.router.openai import chat, schemas, sse
from modelport.router.openai.errors import from_error


@dataclass(frozen=True)
class Delta:
    text: str
    finish_reason: str | None  # stop, length, cancelled, error; None until the last
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None
    logprobs: tuple[TokenLogprob, ...] = ()  # when asked: this delta's tokens


@dataclass(frozen=True)
class ModelInfo:
    id: str
    created: int = 0
    owned_by: str = "modelport"
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""
    default_max_tokens: int = 16


class GenerationBackend(Protocol):
    async def models(self) -> list[ModelInfo]: ...

    async def model(self, name: str) -> ModelInfo:
        """NotFound for a model that is not served (or not generative)."""
        ...

    def generate(
        self, model: str, prompt: str | list[int], sampling: dict[str, Any]
    ) -> AsyncIterator[Delta]:
        """Deltas until one has a finish reason; closing it cancels the generation."""
        ...


Reply = dict[str, Any] | AsyncIterator[bytes]


class OpenAIService:
    def __init__(self, backend: GenerationBackend) -> None:
        self.backend = backend

    async def list_models(self) -> dict[str, Any]:
        cards = [
            {"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by}
            for m in await self.backend.models()
        ]
        return {"object": "list", "data": cards}

    async def completions(self, body: Any) -> Reply:
        request: schemas.CompletionRequest = schemas.parse(schemas.CompletionRequest, body)
        info = await self.backend.model(request.model)
        prompt = request.prompt_input()
        stream = self.backend.generate(
            info.id, prompt, request.sampling_parameters(info.default_max_tokens)
        )
        echo = prompt if request.echo and isinstance(prompt, str) else ""
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": info.id}
        asked = request.logprobs is not None
        offset = len(echo)  # text_offset counts from the start of the choice's text

        def body_of(
            text: str, reason: str | None, logprobs: tuple[TokenLogprob, ...] = ()
        ) -> dict[str, Any]:
            nonlocal offset
            lp = schemas.completion_logprobs(logprobs, offset) if asked else None
            offset += sum(len(e.token) for e in logprobs)
            choice = {"index": 0, "text": text, "logprobs": lp, "finish_reason": reason}
            return {**head, "object": "text_completion", "choices": [choice]}

        if not request.stream:
            text, last, logprobs = await _drain(stream)
            reply = body_of(echo + text, last.finish_reason, logprobs)
            reply["usage"] = schemas.usage(last.prompt_tokens, last.completion_tokens)
            return reply
        first = await _first(stream)

        async def events() -> AsyncIterator[bytes]:
            prefix = echo
            async for delta in _chain(first, stream):
                reason = _finish_reason(delta)
                if delta.text or reason or prefix or delta.logprobs:
                    yield sse.event(body_of(prefix + delta.text, reason, delta.logprobs))
                    prefix = ""
                if reason and request.include_usage:
                    yield sse.event(
                        {
                            **head,
                            "object": "text_completion",
                            "choices": [],
                            "usage": schemas.usage(delta.prompt_tokens, delta.completion_tokens),
                        }
                    )
            yield sse.DONE

        return _guarded(events())

    async def chat_completions(self, body: Any) -> Reply:
        request: schemas.ChatCompletionRequest = schemas.parse(schemas.ChatCompletionRequest, body)
        info = await self.backend.model(request.model)
        prompt = chat.render(
            request.template_messages(),
            info.chat_template,
            add_generation_prompt=request.add_generation_prompt,
            bos_token=info.bos_token,
            eos_token=info.eos_token,
        )
        stream = self.backend.generate(
            info.id, prompt, request.sampling_parameters(info.default_max_tokens)
        )
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": info.id}
        asked = bool(request.logprobs)
        if not request.stream:
            text, last, logprobs = await _drain(stream)
            message = {"role": "assistant", "content": text}
            choice = {
                "index": 0,
                "message": message,
                "logprobs": schemas.chat_logprobs(logprobs) if asked else None,
                "finish_reason": last.finish_reason,
            }
            return {
                **head,
                "object": "chat.completion",
                "choices": [choice],
                "usage": schemas.usage(last.prompt_tokens, last.completion_tokens),
            }
        first = await _first(stream)

        def chunk(
            delta: dict[str, Any], reason: str | None, logprobs: tuple[TokenLogprob, ...] = ()
        ) -> bytes:
            lp = schemas.chat_logprobs(logprobs) if asked and logprobs else None
            choice = {"index": 0, "delta": delta, "logprobs": lp, "finish_reason": reason}
            return sse.event({**head, "object": "chat.completion.chunk", "choices": [choice]})

        async def events() -> AsyncIterator[bytes]:
            yield chunk({"role": "assistant", "content": ""}, None)
            async for delta in _chain(first, stream):
                reason = _finish_reason(delta)
                if delta.text or delta.logprobs:
                    yield chunk({"content": delta.text}, None, delta.logprobs)
                if reason:
                    yield chunk({}, reason)
                    if request.include_usage:
                        yield sse.event(
                            {
                                **head,
                                "object": "chat.completion.chunk",
                                "choices": [],
                                "usage": schemas.usage(
                                    delta.prompt_tokens, delta.completion_tokens
                                ),
                            }
                        )
            yield sse.DONE

        return _guarded(events())


def _finish_reason(delta: Delta) -> str | None:
    """The OpenAI finish reason; a replica's error or cancellation becomes an exception."""
    if delta.finish_reason == "error":
        raise Internal(delta.error or "generation failed")
    if delta.finish_reason == "cancelled":
        raise Unavailable("the generation was cancelled by the server")
    return delta.finish_reason


async def _first(stream: AsyncIterator[Delta]) -> Delta:
    try:
        return await stream.__anext__()
    except StopAsyncIteration:
        raise Internal("the model answered nothing") from None
    except BaseException:
        await _close(stream)
        raise


async def _chain(first: Delta, stream: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    async with aclosing(stream):  # type: ignore[type-var]
        yield first
        if first.finish_reason is None:
            async for delta in stream:
                yield delta
                if delta.finish_reason is not None:
                    return


async def _drain(stream: AsyncIterator[Delta]) -> tuple[str, Delta, tuple[TokenLogprob, ...]]:
    parts: list[str] = []
    logprobs: list[TokenLogprob] = []
    last: Delta | None = None
    async for delta in _chain(await _first(stream), stream):
        parts.append(delta.text)
        logprobs.extend(delta.logprobs)
        last = delta
    assert last is not None
    _finish_reason(last)
    return "".join(parts), last, tuple(logprobs)


async def _guarded(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A failure after the stream began is reported as an error event, then [DONE]."""
    async with aclosing(events):  # type: ignore[type-var]
        try:
            async for data in events:
                yield data
        except (InvalidInput, Internal, Unavailable, Exception) as error:
            _, body = from_error(error)
            yield sse.event(body)
            yield sse.DONE


async def _close(stream: AsyncIterator[Delta]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
