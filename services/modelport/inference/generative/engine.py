"""The continuous-batching engine: one step loop on its own thread.

Requests join the running batch at any step and leave it the step they finish
(Orca's iteration-level scheduling): a short answer never waits for a long one
and a new request starts within a step. The torch work runs on a dedicated
thread so the event loop that serves gRPC/HTTP stays responsive; outputs go
back to each caller's loop with one `call_soon_threadsafe` per loop per step.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from modelport.artifacts.generative import GenerativeLimits
from modelport.common import openmp
from modelport.errors import DeadlineExceeded, InvalidInput, Unavailable
from modelport.inference.generative import sampler
from modelport.inference.generative.detokenizer import IncrementalDetokenizer
from modelport.inference.generative.kv_cache import PagedKVCache
from modelport.inference.generative.model_runner import ModelRunner, ModelShape
from modelport.inference.generative.protocol import Tokenizer
from modelport.inference.generative.scheduler import (
    ScheduledStep,
    Scheduler,
    SchedulerLimits,
)
from modelport.inference.generative.scheduler import (
    Sequence as Seq,
)
from modelport.inference.generative.types import (
    EngineLoad,
    FinishReason,
    GenerationOutput,
    SamplingParams,
    Timings,
    TokenLogprob,
    token_range_problem,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 256  # per step: decode tokens + prefill chunks
    max_waiting: int = 256
    block_size: int = 16
    kv_cache_bytes: int = 256 << 20
    max_model_len: int | None = None  # None: the model's max_position_embeddings
    torch_threads: int = 0  # the engine thread's intra-op threads; 0: the creating thread's

    @classmethod
    def from_limits(cls, limits: GenerativeLimits, torch_threads: int = 0) -> EngineConfig:
        return cls(
            max_num_seqs=limits.max_num_seqs,
            max_num_batched_tokens=limits.max_num_batched_tokens,
            max_waiting=limits.max_waiting,
            block_size=limits.block_size,
            kv_cache_bytes=limits.kv_cache_mb << 20,
            max_model_len=limits.max_model_len or None,
            torch_threads=torch_threads,
        )


@dataclass
class _SeqState:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[GenerationOutput]
    detok: IncrementalDetokenizer
    generator: torch.Generator | None
    itl_sum: float = 0.0


class EngineObserver(Protocol):
    """Told of every token gap and finished sequence, on the engine thread (keep it cheap)."""

    def on_first_token(self, seconds: float) -> None: ...

    def on_token_gap(self, seconds: float) -> None: ...

    def on_finish(self, output: GenerationOutput) -> None: ...


@dataclass
class EngineCounters:
    steps: int = 0
    sampling_steps: int = 0  # steps that sampled at least one token (not prefill-only)
    prompt_tokens: int = 0
    generated_tokens: int = 0
    finished: dict[str, int] = field(default_factory=dict)


class ContinuousBatchingEngine:
    """A `GenerationEngine` over any transformers causal LM using the attention interface."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Tokenizer,
        config: EngineConfig | None = None,
        *,
        eos_token_ids: Iterable[int] = (),
        name: str = "model",
    ) -> None:
        self.config = config = config or EngineConfig()
        self.name = name
        self.tokenizer = tokenizer
        shape = ModelShape.of(model.config)
        dtype = next(model.parameters()).dtype
        per_block = PagedKVCache.bytes_per_block(
            shape.num_layers, config.block_size, shape.kv_heads, shape.head_dim, dtype
        )
        num_blocks = max(1, config.kv_cache_bytes // per_block)
        self.max_model_len = min(
            config.max_model_len or shape.max_positions,
            shape.max_positions,
            num_blocks * config.block_size,
        )
        self.scheduler = Scheduler(
            SchedulerLimits(
                num_blocks=num_blocks,
                block_size=config.block_size,
                max_num_seqs=config.max_num_seqs,
                max_num_batched_tokens=config.max_num_batched_tokens,
                max_waiting=config.max_waiting,
                max_model_len=self.max_model_len,
            )
        )
        self.runner = ModelRunner(model, num_blocks, config.block_size)
        eos = set(eos_token_ids)
        if not eos and tokenizer.eos_token_id is not None:
            eos = {tokenizer.eos_token_id}
        self.eos_token_ids = frozenset(eos)
        self.counters = EngineCounters()
        self.observer: EngineObserver | None = None
        self._ids = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        # OpenMP's thread count is per thread: the engine thread must be told.
        self._torch_threads = config.torch_threads or torch.get_num_threads()
        # The thread that built the model and its KV pool (a loader) keeps idle
        # OpenMP workers that would slow every step of the engine's own (common/openmp.py).
        openmp.release_idle_workers()

    # -- lifecycle -----------------------------------------------------------
    async def start(self) -> None:
        if self._thread is None:
            openmp.release_idle_workers()  # the event loop's, as in __init__
            self._thread = threading.Thread(
                target=self._loop, name=f"engine-{self.name}", daemon=True
            )
            self._thread.start()

    async def close(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
            self._thread = None
        with self._wake:
            left = [*self.scheduler.running, *self.scheduler.waiting]
            for seq in left:
                self.scheduler.finish(seq, FinishReason.CANCELLED)
        self._deliver([self._final(seq, (), "", ()) for seq in left], left)

    def load(self) -> EngineLoad:
        s = self.scheduler
        return EngineLoad(
            running=len(s.running),
            waiting=len(s.waiting),
            kv_used_blocks=s.allocator.used_count,
            kv_total_blocks=s.allocator.total,
            extra={"preemptions": float(s.preemptions_total)},
        )

    # -- the caller's side -----------------------------------------------------
    async def generate(
        self,
        prompt_token_ids: Sequence[int],
        params: SamplingParams,
        *,
        request_id: str | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[GenerationOutput]:
        if self._thread is None or self._stopping:
            raise Unavailable(f"model '{self.name}': the engine is not running")
        params.validate()
        request_id = request_id or uuid.uuid4().hex
        prompt = [int(t) for t in prompt_token_ids]
        problem = token_range_problem(prompt, self.runner.shape.vocab_size)
        if problem:
            raise InvalidInput(f"model '{self.name}': {problem}")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[GenerationOutput] = asyncio.Queue()
        seq = Seq(
            request_id=request_id,
            prompt_ids=prompt,
            params=params,
            arrival=time.monotonic(),
            deadline=deadline,
        )
        seq.state = _SeqState(
            loop=loop,
            queue=queue,
            detok=IncrementalDetokenizer(self.tokenizer, params.stop),
            generator=None if params.greedy else sampler.new_generator(params.seed),
        )
        with self._wake:
            self.scheduler.submit(seq)  # QueueFull / InvalidInput raise here
            self._wake.notify()
        finished = False
        try:
            while True:
                out = await queue.get()
                if (
                    out.finish_reason is FinishReason.CANCELLED
                    and deadline is not None
                    and time.monotonic() >= deadline
                ):
                    finished = True
                    raise DeadlineExceeded(
                        f"model '{self.name}': deadline passed after "
                        f"{out.num_output_tokens} generated tokens"
                    )
                finished = out.finished
                yield out
                if finished:
                    return
        finally:
            if not finished:
                self.abort(request_id)

    def abort(self, request_id: str) -> None:
        with self._wake:
            self.scheduler.abort(request_id)
            self._wake.notify()

    # -- the engine thread -----------------------------------------------------
    def _loop(self) -> None:
        torch.set_num_threads(self._torch_threads)
        with torch.inference_mode():
            while True:
                with self._wake:
                    while not self._stopping and not self.scheduler.has_work:
                        self._wake.wait()
                    if self._stopping:
                        return
                    step = self.scheduler.schedule(time.monotonic())
                if step.dropped:
                    self._deliver([self._final(s, (), "", ()) for s in step.dropped], step.dropped)
                if step.empty:
                    time.sleep(0.001)  # everything waits for blocks another finish will free
                    continue
                try:
                    self._step(step)
                except Exception as error:  # a model failure ends this step's sequences only
                    log.exception("model '%s': engine step failed", self.name)
                    self._fail([*step.decode, *(s for s, _ in step.prefill)], error)

    def _step(self, step: ScheduledStep) -> None:
        self.counters.steps += 1
        self.counters.prompt_tokens += sum(n for s, n in step.prefill if s.preemptions == 0)
        seqs, logits = self.runner.run(step)
        if logits is None:
            return
        self.counters.sampling_steps += 1
        rows = [
            sampler.SamplerRow(s.params, s.state.generator, s.prompt_ids + s.output_ids)
            if s.params.repetition_penalty != 1.0
            else sampler.SamplerRow(s.params, s.state.generator, ())
            for s in seqs
        ]
        tokens = sampler.sample(logits, rows)
        asked = [i for i, s in enumerate(seqs) if s.params.logprobs is not None]
        logprobs: dict[int, TokenLogprob] = {}
        if asked:
            found = sampler.batch_logprobs(
                logits,
                asked,
                [tokens[i] for i in asked],
                [seqs[i].params.logprobs or 0 for i in asked],
            )
            logprobs = dict(zip(asked, found, strict=True))
        now = time.monotonic()
        outputs: list[GenerationOutput] = []
        finished: list[Seq] = []
        for i, (seq, token) in enumerate(zip(seqs, tokens, strict=True)):
            lp = (logprobs[i],) if i in logprobs else ()
            outputs.append(self._advance(seq, token, lp, now, finished))
        self.counters.generated_tokens += len(seqs)
        if finished:
            with self._wake:
                for seq in finished:
                    self.scheduler.finish(seq, seq.finish_reason or FinishReason.STOP)
        self._deliver(outputs, seqs)

    def _advance(
        self,
        seq: Seq,
        token: int,
        logprobs: tuple[TokenLogprob, ...],
        now: float,
        finished: list[Seq],
    ) -> GenerationOutput:
        state: _SeqState = seq.state
        p = seq.params
        observer = self.observer
        if seq.first_token_at is None:
            seq.first_token_at = now
            if observer is not None:
                observer.on_first_token(now - seq.arrival)
        elif seq.last_token_at is not None:
            state.itl_sum += now - seq.last_token_at
            if observer is not None:
                observer.on_token_gap(now - seq.last_token_at)
        seq.last_token_at = now
        seq.output_ids.append(token)
        reason: FinishReason | None = None
        if token in p.stop_token_ids or (token in self.eos_token_ids and not p.ignore_eos):
            reason = FinishReason.STOP
            text = ""
        else:
            text = state.detok.add(token)
            if state.detok.stopped:
                reason = FinishReason.STOP
        if reason is None and (
            len(seq.output_ids) >= p.max_tokens or seq.num_tokens >= self.max_model_len
        ):
            reason = FinishReason.LENGTH
        if reason is None:
            return GenerationOutput(
                request_id=seq.request_id,
                token_ids=(token,),
                text=text,
                num_prompt_tokens=len(seq.prompt_ids),
                num_output_tokens=len(seq.output_ids),
                logprobs=logprobs,
            )
        seq.finish_reason = reason
        finished.append(seq)
        return self._final(seq, (token,), text + state.detok.flush(), logprobs)

    def _final(
        self,
        seq: Seq,
        token_ids: tuple[int, ...],
        text: str,
        logprobs: tuple[TokenLogprob, ...],
        error: str | None = None,
    ) -> GenerationOutput:
        now = time.monotonic()
        n = len(seq.output_ids)
        first = seq.first_token_at
        timings = Timings(
            queue_s=(seq.first_scheduled or now) - seq.arrival,
            ttft_s=(first - seq.arrival) if first is not None else 0.0,
            mean_itl_s=seq.state.itl_sum / (n - 1) if n > 1 else 0.0,
            e2e_s=now - seq.arrival,
        )
        reason = seq.finish_reason or FinishReason.CANCELLED
        self.counters.finished[reason.value] = self.counters.finished.get(reason.value, 0) + 1
        output = GenerationOutput(
            request_id=seq.request_id,
            token_ids=token_ids,
            text=text,
            num_prompt_tokens=len(seq.prompt_ids),
            num_output_tokens=n,
            finish_reason=reason,
            logprobs=logprobs,
            timings=timings,
            error=error,
        )
        if self.observer is not None:
            self.observer.on_finish(output)
        return output

    def _fail(self, seqs: list[Seq], error: Exception) -> None:
        with self._wake:
            for seq in seqs:
                self.scheduler.finish(seq, FinishReason.ERROR)
        message = f"model '{self.name}': generation failed ({type(error).__name__})"
        self._deliver([self._final(s, (), "", (), message) for s in seqs], seqs)

    @staticmethod
    def _deliver(outputs: list[GenerationOutput], seqs: Sequence[Seq]) -> None:
        by_loop: dict[
            asyncio.AbstractEventLoop, list[tuple[asyncio.Queue[Any], GenerationOutput]]
        ] = {}
        for out, seq in zip(outputs, seqs, strict=True):
            by_loop.setdefault(seq.state.loop, []).append((seq.state.queue, out))
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody left to tell
                loop.call_soon_threadsafe(_put_all, items)


def _put_all(items: list[tuple[asyncio.Queue[Any], GenerationOutput]]) -> None:
    for queue, out in items:
        queue.put_nowait(out)
