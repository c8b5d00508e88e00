"""OpenAI request bodies, validated, and the response bodies built from engine deltas.

Only what modelport serves is accepted: one choice (`n` 1), no penalties other
than vLLM's `repetition_penalty`; unknown fields are ignored as OpenAI's own
server ignores them. vLLM's extra sampling fields (`top_k`,
`repetition_penalty`, `ignore_eos`, `stop_token_ids`) are accepted too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from modelport.client.generation import TokenLogprob
from modelport.errors import InvalidInput

MAX_LOGPROBS = 20  # the engine's limit (inference.generative.types.MAX_LOGPROBS)


class _Sampling(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float = Field(default=0.0, ge=0.0, le=0.0)
    frequency_penalty: float = Field(default=0.0, ge=0.0, le=0.0)
    stream_options: dict[str, Any] | None = None
    user: str | None = None
    # vLLM's extensions
    top_k: int = Field(default=0, ge=-1)
    repetition_penalty: float = Field(default=1.0, gt=0.0, le=10.0)
    ignore_eos: bool = False
    stop_token_ids: list[int] = Field(default_factory=list)

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        items = [value] if isinstance(value, str) else (value or [])
        if len(items) > 4 or any(not s for s in items):
            raise ValueError("at most 4 non-empty stop strings")
        return value

    def sampling_parameters(self, default_max_tokens: int) -> dict[str, Any]:
        """The same keys the gRPC `sampling_parameters` JSON takes (vLLM's names)."""
        params: dict[str, Any] = {
            "max_tokens": self.max_tokens or default_max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "repetition_penalty": self.repetition_penalty,
            "ignore_eos": self.ignore_eos,
        }
        if self.stop:
            params["stop"] = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        if self.stop_token_ids:
            params["stop_token_ids"] = list(self.stop_token_ids)
        if self.seed is not None:
            params["seed"] = self.seed
        return params

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class CompletionRequest(_Sampling):
    prompt: str | list[int] | list[str]
    echo: bool = False
    # The sampled token's logprob and this many alternatives (OpenAI allows 5, vLLM 20).
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)

    def sampling_parameters(self, default_max_tokens: int) -> dict[str, Any]:
        params = super().sampling_parameters(default_max_tokens)
        if self.logprobs is not None:
            params["logprobs"] = self.logprobs
        return params

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[int] | list[str]) -> str | list[int] | list[str]:
        if isinstance(value, list) and value and isinstance(value[0], str) and len(value) != 1:
            raise ValueError("one prompt per request (n=1)")
        if not value:
            raise ValueError("the prompt is empty")
        return value

    def prompt_input(self) -> str | list[int]:
        """Text, or token ids for callers that tokenize themselves."""
        if isinstance(self.prompt, list) and isinstance(self.prompt[0], str):
            return str(self.prompt[0])
        return self.prompt


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text":
                raise ValueError(f"content parts of type {part.get('type')!r} are not served")
            parts.append(str(part.get("text", "")))
        return "".join(parts)


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    add_generation_prompt: bool = True

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def template_messages(self) -> list[dict[str, str]]:
        try:
            return [{"role": m.role, "content": m.text()} for m in self.messages]
        except ValueError as error:
            raise InvalidInput(f"messages: {error}") from None

    def sampling_parameters(self, default_max_tokens: int) -> dict[str, Any]:
        params = super().sampling_parameters(default_max_tokens)
        if self.max_completion_tokens:
            params["max_tokens"] = self.max_completion_tokens
        if self.logprobs:
            params["logprobs"] = self.top_logprobs or 0
        return params


def parse(kind: type[_Sampling], body: Any) -> Any:
    """A validated request, or InvalidInput naming the first field at fault."""
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object")
    try:
        return kind.model_validate(body)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise InvalidInput(f"{where}: {first['msg']}") from None


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """A chat choice's `logprobs`: one entry per token, its alternatives most likely first."""

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode())}

    return {
        "content": [
            {**entry(e.token, e.logprob), "top_logprobs": [entry(t, v) for t, v in e.top]}
            for e in entries
        ],
        "refusal": None,
    }


def completion_logprobs(entries: Sequence[TokenLogprob], offset: int) -> dict[str, Any]:
    """A completion choice's `logprobs` (the legacy shape); offsets count from `offset`."""
    offsets = []
    for e in entries:
        offsets.append(offset)
        offset += len(e.token)
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [dict(e.top) for e in entries],
        "text_offset": offsets,
    }


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
