"""Load tests for generative models: streams of tokens, timed as a caller sees them.

Per request: time to first token (TTFT), the gaps between tokens (ITL),
end-to-end latency and output tokens/s; for the run: aggregate output
tokens/s and request rate. Closed loop (N callers, each sends its next prompt
when the last is done) or open loop (Poisson arrivals at a rate, in flight
bounded). Both stop at `duration_s` or after `max_requests`, whichever first.

Prompts come from a file (JSON lines `{"prompt": ..., "max_tokens": ...}`, or
plain text one per line) or are synthetic with given input/output length
distributions; synthetic prompts are token ids, so their length is exact.
The transport is a `StreamFn`: `openai_stream` (SSE over HTTP) or `grpc_stream`
(ModelStreamInfer through the SDK's `generate`).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class GenPrompt:
    prompt: str | list[int]
    max_tokens: int


@dataclass(frozen=True)
class Lengths:
    """`fixed:N`, `uniform:LO-HI` or `normal:MEAN,STD` (clipped to at least 1)."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Lengths:
        kind, _, spec = text.partition(":")
        try:
            if kind == "fixed":
                return cls(kind, int(spec))
            if kind == "uniform":
                lo, hi = (int(x) for x in spec.split("-"))
                if lo > hi:
                    raise ValueError
                return cls(kind, lo, hi)
            if kind == "normal":
                mean, std = (float(x) for x in spec.split(","))
                return cls(kind, mean, std)
        except ValueError:
            pass
        raise ValueError(
            f"length distribution {text!r}: use fixed:N, uniform:LO-HI or normal:MEAN,STD"
        )

    def draw(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            return max(1, int(self.a))
        if self.kind == "uniform":
            return rng.randint(int(self.a), int(self.b))
        return max(1, round(rng.gauss(self.a, self.b)))


def synthetic_prompts(
    n: int, input_len: Lengths, output_len: Lengths, *, vocab: int = 500, seed: int = 0
) -> list[GenPrompt]:
    rng = random.Random(seed)
    return [
        GenPrompt(
            [rng.randrange(3, vocab) for _ in range(input_len.draw(rng))], output_len.draw(rng)
        )
        for _ in range(n)
    ]


def prompts_from_file(path: Path, default_max_tokens: int) -> list[GenPrompt]:
    prompts = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                item = json.loads(line)
                prompts.append(
                    GenPrompt(item["prompt"], int(item.get("max_tokens", default_max_tokens)))
                )
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{number}: not a prompt object ({error})") from None
        else:
            prompts.append(GenPrompt(line, default_max_tokens))
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts


@dataclass(frozen=True)
class Total:
    """The server's own count of the tokens it generated (e.g. OpenAI's usage), sent last."""

    tokens: int


# A StreamFn sends one prompt and yields, per delta, how many tokens it carried,
# then optionally a Total (deltas whose text is still empty are not visible to it).
StreamFn = Callable[[GenPrompt], AsyncIterator["int | Total"]]


@dataclass
class GenRecord:
    start: float
    ttft: float | None = None
    itls: list[float] = field(default_factory=list)
    e2e: float | None = None
    tokens: int = 0
    error: str | None = None


async def _one(stream: StreamFn, prompt: GenPrompt, records: list[GenRecord]) -> None:
    record = GenRecord(start=time.perf_counter())
    records.append(record)
    last = record.start
    try:
        async for count in stream(prompt):
            now = time.perf_counter()
            if isinstance(count, Total):
                record.tokens = max(record.tokens, count.tokens)
                continue
            if count <= 0:
                continue
            if record.ttft is None:
                record.ttft = now - record.start
            else:
                record.itls.append((now - last) / count)
            record.tokens += count
            last = now
        record.e2e = time.perf_counter() - record.start
    except Exception as error:  # a failed request is counted, not fatal to the run
        record.error = type(error).__name__ + (f": {error}" if str(error) else "")


async def run_generation_load(
    stream: StreamFn,
    prompts: list[GenPrompt],
    *,
    concurrency: int = 0,
    rate: float = 0.0,
    duration_s: float = 30.0,
    max_requests: int = 0,
    max_in_flight: int = 1024,
    seed: int = 0,
) -> tuple[list[GenRecord], float]:
    """Records of every request sent and the wall time; closed loop if `concurrency`, else open."""
    if (concurrency > 0) == (rate > 0):
        raise ValueError("give a concurrency (closed loop) or a rate (open loop), not both")
    records: list[GenRecord] = []
    started = time.perf_counter()
    stop_at = started + duration_s
    sent = 0

    def more() -> bool:
        return time.perf_counter() < stop_at and (not max_requests or sent < max_requests)

    def next_prompt() -> GenPrompt:
        nonlocal sent
        prompt = prompts[sent % len(prompts)]
        sent += 1
        return prompt

    if concurrency:

        async def caller() -> None:
            while more():
                await _one(stream, next_prompt(), records)

        await asyncio.gather(*(caller() for _ in range(concurrency)))
    else:
        rng = random.Random(seed)
        gate = asyncio.Semaphore(max_in_flight)
        tasks: set[asyncio.Task[None]] = set()

        async def bounded(prompt: GenPrompt) -> None:
            async with gate:
                await _one(stream, prompt, records)

        next_at = started
        while more():
            task = asyncio.create_task(bounded(next_prompt()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            next_at += rng.expovariate(rate)
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await asyncio.gather(*tasks)
    return records, time.perf_counter() - started


def _percentiles(values: list[float], scale: float = 1000.0) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values) * scale
    return {f"p{q}": float(np.percentile(array, q)) for q in (50, 90, 99)} | {
        "mean": float(array.mean())
    }


def summarize_generation(records: list[GenRecord], wall_s: float) -> dict[str, Any]:
    done = [r for r in records if r.error is None and r.e2e is not None]
    errors: dict[str, int] = {}
    for r in records:
        if r.error:
            key = r.error.split(":")[0]
            errors[key] = errors.get(key, 0) + 1
    tokens = sum(r.tokens for r in done)
    per_request = [r.tokens / r.e2e for r in done if r.e2e]
    return {
        "requests": len(records),
        "completed": len(done),
        "errors": errors,
        "wall_s": wall_s,
        "output_tokens": tokens,
        "output_tokens_per_s": tokens / wall_s if wall_s else 0.0,
        "requests_per_s": len(done) / wall_s if wall_s else 0.0,
        "ttft_ms": _percentiles([r.ttft for r in done if r.ttft is not None]),
        "itl_ms": _percentiles([x for r in done for x in r.itls]),
        "e2e_ms": _percentiles([r.e2e for r in done if r.e2e is not None]),
        "tokens_per_s_per_request": _percentiles(per_request, scale=1.0),
    }


def plot_generation(records: list[GenRecord], path: Path) -> None:
    """TTFT, ITL and end-to-end latency distributions (CDFs) as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in records if r.error is None]
    series = {
        "time to first token": [r.ttft * 1000 for r in done if r.ttft is not None],
        "inter-token latency": [x * 1000 for r in done for x in r.itls],
        "end to end": [r.e2e * 1000 for r in done if r.e2e is not None],
    }
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for ax, (title, values) in zip(axes, series.items(), strict=True):
        if values:
            ordered = np.sort(values)
            ax.plot(ordered, np.linspace(0, 1, len(ordered)))
        ax.set_title(title)
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of samples")
        ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def openai_stream(
    base_url: str, model: str, *, session: Any, extra: dict[str, Any] | None = None
) -> StreamFn:
    """Stream `/v1/completions` over SSE with an aiohttp session.

    Deltas are timed as they arrive (one per token from modelport; a token whose
    text is not complete yet arrives with the next); the total comes from usage."""

    async def stream(prompt: GenPrompt) -> AsyncIterator[int | Total]:
        body = {
            "model": model,
            "prompt": prompt.prompt,
            "max_tokens": prompt.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
            **(extra or {}),
        }
        async with session.post(f"{base_url}/v1/completions", json=body) as reply:
            if reply.status != 200:
                detail = (await reply.json()).get("error", {}).get("message", "")
                raise RuntimeError(f"HTTP {reply.status} {detail}")
            async for raw in reply.content:
                line = raw.strip()
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    raise RuntimeError(event["error"].get("message", "stream error"))
                if event.get("usage"):
                    yield Total(int(event["usage"]["completion_tokens"]))
                choices = event.get("choices") or [{}]
                if choices[0].get("text"):
                    yield 1  # modelport sends one content delta per token

    return stream


def grpc_stream(client: Any, model: str, *, extra: dict[str, Any] | None = None) -> StreamFn:
    """Stream over ModelStreamInfer with an `AsyncInferenceClient` (router or replica).

    One response per delta; the final one carries the server's completion_tokens."""

    async def stream(prompt: GenPrompt) -> AsyncIterator[int | Total]:
        sampling = {"max_tokens": prompt.max_tokens, **(extra or {})}
        async for chunk in client.generate(model, prompt.prompt, **sampling):
            if chunk.text:
                yield 1
            if chunk.final:
                yield Total(int(chunk.usage.get("completion_tokens", 0)))

    return stream
