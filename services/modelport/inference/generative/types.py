"""Value types shared by every engine and its callers."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelport.errors import InvalidInput

# vLLM's and OpenAI's names, so a Triton vLLM-backend caller's JSON works unchanged.
_KNOWN_KEYS = {
    "max_tokens",
    "temperature",
    "top_k",
    "top_p",
    "repetition_penalty",
    "seed",
    "stop",
    "stop_token_ids",
    "ignore_eos",
    "logprobs",
}
# Keys vLLM accepts that change nothing here; accepted so callers need not strip them.
_IGNORED_KEYS = {
    "n",
    "best_of",
    "presence_penalty",
    "frequency_penalty",
    "min_p",
    "use_beam_search",
}
MAX_LOGPROBS = 20


class FinishReason(enum.StrEnum):
    STOP = "stop"  # a stop string, a stop token or end of sequence
    LENGTH = "length"  # max_tokens or the model's context length
    CANCELLED = "cancelled"  # the caller left or its deadline passed
    ERROR = "error"  # the engine failed while running this sequence


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens and when to stop. temperature 0 means greedy."""

    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int = 0  # 0 or -1: no limit
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: int | None = None  # None: none; 0: the chosen token's; n: also the n most likely

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, Any], *, where: str = "sampling_parameters"
    ) -> SamplingParams:
        """Validate a caller's JSON object; every error names the key at fault."""
        unknown = set(values) - _KNOWN_KEYS - _IGNORED_KEYS
        if unknown:
            raise InvalidInput(f"{where}: unknown key(s) {sorted(unknown)}")
        kwargs: dict[str, Any] = {}
        for key in _KNOWN_KEYS & set(values):
            value = values[key]
            if value is None:
                continue
            kwargs[key] = _coerce(key, value, where)
        params = cls(**kwargs)
        params.validate(where)
        return params

    def validate(self, where: str = "sampling_parameters") -> None:
        def bad(key: str, why: str) -> InvalidInput:
            return InvalidInput(f"{where}: '{key}' {why} (got {getattr(self, key)!r})")

        if self.max_tokens < 1:
            raise bad("max_tokens", "must be at least 1")
        if not (0.0 <= self.temperature <= 100.0) or math.isnan(self.temperature):
            raise bad("temperature", "must be between 0 and 100")
        if self.top_k < -1:
            raise bad("top_k", "must be -1, 0 (no limit) or positive")
        if not (0.0 < self.top_p <= 1.0):
            raise bad("top_p", "must be in (0, 1]")
        if not (0.0 < self.repetition_penalty <= 10.0):
            raise bad("repetition_penalty", "must be in (0, 10]")
        if any(not s for s in self.stop) or len(self.stop) > 16:
            raise bad("stop", "must hold at most 16 non-empty strings")
        if any(t < 0 for t in self.stop_token_ids):
            raise bad("stop_token_ids", "must be non-negative token ids")
        if self.logprobs is not None and not (0 <= self.logprobs <= MAX_LOGPROBS):
            raise bad("logprobs", f"must be between 0 and {MAX_LOGPROBS}")


def _coerce(key: str, value: Any, where: str) -> Any:
    try:
        if key in ("max_tokens", "top_k", "seed", "logprobs"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if key in ("temperature", "top_p", "repetition_penalty"):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if key == "ignore_eos":
            if not isinstance(value, bool):
                raise TypeError
            return value
        if key == "stop":
            items = [value] if isinstance(value, str) else list(value)
            if not all(isinstance(s, str) for s in items):
                raise TypeError
            return tuple(items)
        if key == "stop_token_ids":
            items = list(value)
            if not all(isinstance(t, int) and not isinstance(t, bool) for t in items):
                raise TypeError
            return tuple(items)
    except (TypeError, ValueError):
        raise InvalidInput(
            f"{where}: '{key}' has the wrong type ({type(value).__name__})"
        ) from None
    raise AssertionError(key)


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token id, logprob), most likely first


@dataclass(frozen=True)
class Timings:
    """Seconds, measured by the engine; the final response reports them."""

    queue_s: float  # submitted → first scheduled
    ttft_s: float  # submitted → first token
    mean_itl_s: float  # mean gap between consecutive tokens (0 with one token)
    e2e_s: float  # submitted → finished


@dataclass(frozen=True)
class GenerationOutput:
    """One delta of one sequence: the tokens and text new since the last one."""

    request_id: str
    token_ids: tuple[int, ...]
    text: str
    num_prompt_tokens: int
    num_output_tokens: int  # so far, including this delta
    finish_reason: FinishReason | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    timings: Timings | None = None  # on the final output only
    error: str | None = None  # with FinishReason.ERROR

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(frozen=True)
class EngineLoad:
    """What a replica reports so the router can balance streams by load."""

    running: int
    waiting: int
    kv_used_blocks: int
    kv_total_blocks: int
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def kv_usage(self) -> float:
        return self.kv_used_blocks / self.kv_total_blocks if self.kv_total_blocks else 0.0


# -- what every engine checks of a prompt, with the same words -------------------
def prompt_length_problem(num_prompt_tokens: int, max_model_len: int) -> str | None:
    """Why a prompt of this length cannot be served, or None."""
    if num_prompt_tokens < 1:
        return "the prompt is empty"
    if num_prompt_tokens >= max_model_len:
        return (
            f"the prompt has {num_prompt_tokens} tokens; the model's context is "
            f"{max_model_len} (prompt + at least one generated token)"
        )
    return None


def token_range_problem(prompt: list[int], vocab_size: int) -> str | None:
    """Why these token ids are not the model's, or None."""
    if any(t < 0 or t >= vocab_size for t in prompt):
        return f"token ids must be in [0, {vocab_size})"
    return None
