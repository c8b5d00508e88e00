"""`GenerationEngine` over vLLM, which runs in its own process and environment.

vLLM schedules, batches and samples (vllm_worker.py, under .venv-vllm); this
side keeps what every modelport engine owes its callers the same way:
- admission: at most `max_num_seqs` sequences are handed to vLLM, the rest wait
  here in a queue bounded by `max_waiting` (full → QueueFull), so load() is
  exact and the refusal is the same as the continuous engine's;
- the prompt checks (empty, context, vocabulary) and their InvalidInput;
- text: modelport's tokenizer and IncrementalDetokenizer (vLLM runs without
  one), so stop strings are cut here and the sequence aborted in vLLM;
- end of sequence: vLLM has no tokenizer to learn EOS from, so the model's EOS
  ids travel as stop token ids unless the caller ignores EOS;
- deadlines, and cancellation (a closed stream or cancelled consumer) → abort;
- one delta per token, and the timings, measured as the tokens arrive here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelport.errors import DeadlineExceeded, InvalidInput, QueueFull, Unavailable
from modelport.inference.generative.detokenizer import IncrementalDetokenizer
from modelport.inference.generative.engine import EngineObserver
from modelport.inference.generative.protocol import Tokenizer
from modelport.inference.generative.types import (
    EngineLoad,
    FinishReason,
    GenerationOutput,
    SamplingParams,
    Timings,
    TokenLogprob,
    prompt_length_problem,
    token_range_problem,
)
from modelport.inference.generative.vllm_process import (
    VllmConfig,
    VllmWorker,
    max_model_len,
    read_model_config,
)

_FINISH = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "abort": FinishReason.CANCELLED,
    "error": FinishReason.ERROR,
}
_DEADLINE = {"op": "deadline"}
_CLOSED = {"op": "closed"}


@dataclass
class VllmCounters:
    worker: VllmWorker
    prompt_tokens: int = 0
    generated_tokens: int = 0
    finished: dict[str, int] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        """vLLM's engine steps (all engines sharing the worker)."""
        return self.worker.steps


@dataclass(eq=False)
class _Request:
    wid: str  # the worker's id: unique even when callers reuse request ids
    request_id: str
    prompt: list[int]
    params: dict[str, Any]  # vLLM's SamplingParams keys
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[dict[str, Any]]
    arrival: float
    dispatched: float | None = None
    sent: bool = False  # its submit is written to the worker
    aborted: bool = False
    counted: bool = False  # its finish is in the counters (once, by whoever saw it first)
    tokens_seen: int = 0


class VllmEngine:
    """A `GenerationEngine` whose sequences vLLM runs (in `worker`, shared or its own)."""

    def __init__(
        self,
        model_dir: Path,
        tokenizer: Tokenizer,
        config: VllmConfig | None = None,
        *,
        eos_token_ids: Iterable[int] = (),
        name: str = "model",
        worker: VllmWorker | None = None,
    ) -> None:
        self.config = config = config or VllmConfig()
        self.name = name
        self.tokenizer = tokenizer
        model_config = read_model_config(model_dir)
        self.max_model_len = max_model_len(config, model_config)
        self.vocab_size = int(model_config["vocab_size"])
        eos = set(eos_token_ids)
        if not eos and tokenizer.eos_token_id is not None:
            eos = {tokenizer.eos_token_id}
        self.eos_token_ids = frozenset(eos)
        self._owns_worker = worker is None
        self.worker = worker or VllmWorker(config.engine_args(model_dir, model_config), name=name)
        self.counters = VllmCounters(self.worker)
        self.observer: EngineObserver | None = None
        self._lock = threading.Lock()
        self._active: dict[str, _Request] = {}
        self._waiting: collections.deque[_Request] = collections.deque()
        self._started = False
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        if self._owns_worker and not self.worker.info:
            await self.worker.start(self.config.start_timeout_s)
        self._started = True

    async def close(self) -> None:
        with self._lock:
            self._stopping = True
            left = [*self._waiting, *self._active.values()]
            self._waiting.clear()
        for req in left:
            self._abort(req)
            _put(req, _CLOSED)
        if self._owns_worker:
            await self.worker.close()

    def load(self) -> EngineLoad:
        stats = self.worker.stats
        total = int(self.worker.info.get("kv_total_blocks", 0))
        with self._lock:
            active, waiting = len(self._active), len(self._waiting)
        behind = min(active, int(stats.get("waiting", 0)))  # handed to vLLM, not yet scheduled
        # vLLM frees an aborted or finished sequence's blocks in the step that ends it; when
        # it holds nothing, its last report (sent with that step's outputs) may be stale.
        used = round(float(stats.get("kv_usage", 0.0)) * total) if stats.get("active") else 0
        return EngineLoad(
            running=active - behind,
            waiting=waiting + behind,
            kv_used_blocks=used if active else 0,
            kv_total_blocks=total,
            extra={"preemptions": 0.0},
        )

    # -- the caller's side ---------------------------------------------------------
    def _check(self, prompt: list[int]) -> None:
        problem = prompt_length_problem(len(prompt), self.max_model_len) or token_range_problem(
            prompt, self.vocab_size
        )
        if problem:
            raise InvalidInput(f"model '{self.name}': {problem}")

    def _vllm_params(self, params: SamplingParams, prompt_len: int) -> dict[str, Any]:
        stop_ids = list(params.stop_token_ids)
        if not params.ignore_eos:
            stop_ids += sorted(self.eos_token_ids - set(stop_ids))
        out: dict[str, Any] = {
            "max_tokens": min(params.max_tokens, self.max_model_len - prompt_len),
            "temperature": params.temperature,
            "top_k": max(params.top_k, 0),
            "top_p": params.top_p,
            "repetition_penalty": params.repetition_penalty,
            "ignore_eos": params.ignore_eos,
            "stop_token_ids": stop_ids,
        }
        if params.seed is not None:
            out["seed"] = params.seed
        if params.logprobs is not None:
            out["logprobs"] = params.logprobs
        return out

    async def generate(
        self,
        prompt_token_ids: Sequence[int],
        params: SamplingParams,
        *,
        request_id: str | None = None,
        deadline: float | None = None,
    ) -> AsyncIterator[GenerationOutput]:
        if not self._started or self._stopping or self.worker.dead is not None:
            why = self.worker.dead or "the engine is not running"
            raise Unavailable(f"model '{self.name}': {why}")
        params.validate()
        prompt = [int(t) for t in prompt_token_ids]
        self._check(prompt)
        loop = asyncio.get_running_loop()
        req = _Request(
            wid=uuid.uuid4().hex,
            request_id=request_id or uuid.uuid4().hex,
            prompt=prompt,
            params=self._vllm_params(params, len(prompt)),
            loop=loop,
            queue=asyncio.Queue(),
            arrival=time.monotonic(),
        )
        with self._lock:
            admit = len(self._active) < self.config.max_num_seqs and not self._waiting
            if admit:
                self._admit(req)
            elif len(self._waiting) >= self.config.max_waiting:
                raise QueueFull(
                    f"model '{self.name}': {len(self._waiting)} sequences are waiting for a "
                    f"slot (max_waiting {self.config.max_waiting})"
                )
            else:
                self._waiting.append(req)
        if admit:
            self._send(req)
        timer = None
        if deadline is not None:
            timer = loop.call_later(max(0.0, deadline - time.monotonic()), _put, req, _DEADLINE)
        stream = _Stream(self, req, params)
        finished = False
        try:
            while True:
                message = await req.queue.get()
                # The timer's message queues behind the worker lines already received, and
                # when this loop was stalled (a loaded machine) those can run to the end: a
                # line that arrived after the deadline is never delivered, whatever the order.
                late = deadline is not None and message.get("at", 0.0) >= deadline
                if message is _DEADLINE or late:
                    finished = True  # the finally below must not abort twice
                    self._end_at_deadline(req)
                    raise DeadlineExceeded(
                        f"model '{self.name}': deadline passed after "
                        f"{stream.num_output} generated tokens"
                    )
                for out in stream.outputs(message):
                    finished = out.finished
                    yield out
                    if finished:
                        return
        finally:
            if timer is not None:
                timer.cancel()
            if not finished:
                self._abort(req)

    # -- to and from the worker ----------------------------------------------------
    def _admit(self, req: _Request) -> None:
        """Count `req` as vLLM's (with self._lock held); `_send` hands it over after."""
        self._active[req.wid] = req
        req.dispatched = time.monotonic()
        self.counters.prompt_tokens += len(req.prompt)

    def _send(self, req: _Request) -> None:
        """Write the submit outside the lock: a pipe write can wait on the worker, which can
        wait on the reader thread, which takes the lock."""
        try:
            self.worker.submit(req.wid, req.prompt, req.params, lambda m: self._on_message(req, m))
        except Unavailable as error:
            self._on_message(
                req, {"op": "out", "tokens": [], "finish": "error", "error": str(error)}
            )
            return
        with self._lock:
            req.sent = True
            aborted = req.aborted  # while the submit was being written
        if aborted:
            self._tell_abort(req)

    def _on_message(self, req: _Request, message: dict[str, Any]) -> None:
        """A worker line for `req` (on the reader thread)."""
        message["at"] = time.monotonic()
        tokens = len(message.get("tokens") or ())
        self.counters.generated_tokens += tokens
        req.tokens_seen += tokens
        admitted: list[_Request] = []
        if message.get("finish") is not None:
            with self._lock:
                self._active.pop(req.wid, None)
                while self._waiting and len(self._active) < self.config.max_num_seqs:
                    admitted.append(self._waiting.popleft())
                    self._admit(admitted[-1])
            if req.aborted:  # its caller left: nobody reads this finish, but it counts
                self._count_finish(req, self._left(req))
        _put(req, message)
        for other in admitted:
            self._send(other)

    @staticmethod
    def _left(req: _Request) -> GenerationOutput:
        return GenerationOutput(
            request_id=req.request_id,
            token_ids=(),
            text="",
            num_prompt_tokens=len(req.prompt),
            num_output_tokens=req.tokens_seen,
            finish_reason=FinishReason.CANCELLED,
        )

    def _abort(self, req: _Request) -> None:
        with self._lock:
            if req.aborted:
                return
            req.aborted = True
            try:
                self._waiting.remove(req)
                return
            except ValueError:
                pass
            tell = req.wid in self._active and req.sent  # else `_send` tells, once written
        if tell:
            self._tell_abort(req)

    def _end_at_deadline(self, req: _Request) -> None:
        """Abort `req`, or, when vLLM finished it already (its last lines came late),
        count it as the caller sees it: cancelled."""
        self._abort(req)
        with self._lock:
            done = req.wid not in self._active
        if done:
            self._count_finish(req, self._left(req))

    def _tell_abort(self, req: _Request) -> None:
        with contextlib.suppress(Unavailable):  # the worker is gone, and its sequences with it
            self.worker.abort(req.wid)

    def _count_finish(self, req: _Request, output: GenerationOutput) -> None:
        with self._lock:
            if req.counted:
                return
            req.counted = True
        reason = (output.finish_reason or FinishReason.CANCELLED).value
        self.counters.finished[reason] = self.counters.finished.get(reason, 0) + 1
        if self.observer is not None:
            self.observer.on_finish(output)


class _Stream:
    """Worker lines of one sequence → GenerationOutputs, one per token."""

    def __init__(self, engine: VllmEngine, req: _Request, params: SamplingParams) -> None:
        self.engine = engine
        self.req = req
        self.params = params
        self.detok = IncrementalDetokenizer(engine.tokenizer, params.stop)
        self.num_output = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.itl_sum = 0.0

    def outputs(self, message: dict[str, Any]) -> list[GenerationOutput]:
        if message is _CLOSED:
            return [self._final((), "", (), FinishReason.CANCELLED)]
        at = float(message.get("at", time.monotonic()))
        tokens = [int(t) for t in message.get("tokens") or ()]
        logprobs = message.get("logprobs") or [None] * len(tokens)
        reason = _FINISH.get(message.get("finish") or "")
        error = message.get("error")
        if reason is FinishReason.ERROR:
            error = f"model '{self.engine.name}': generation failed ({error})"
        out: list[GenerationOutput] = []
        for i, (token, lp) in enumerate(zip(tokens, logprobs, strict=True)):
            self._tick(at)
            self.num_output += 1
            found = _token_logprob(lp)
            stop_token = token in self.params.stop_token_ids or (
                token in self.engine.eos_token_ids and not self.params.ignore_eos
            )
            text = "" if stop_token else self.detok.add(token)
            last = i == len(tokens) - 1
            if self.detok.stopped:  # a stop string: cut here, and vLLM stops too
                final = self._final((token,), text + self.detok.flush(), found, FinishReason.STOP)
                self.engine._abort(self.req)
                out.append(final)
                return out
            if last and reason is not None:
                out.append(self._final((token,), text + self.detok.flush(), found, reason, error))
                return out
            out.append(
                GenerationOutput(
                    request_id=self.req.request_id,
                    token_ids=(token,),
                    text=text,
                    num_prompt_tokens=len(self.req.prompt),
                    num_output_tokens=self.num_output,
                    logprobs=found,
                )
            )
        if reason is not None:  # a finish with no token (abort, error)
            out.append(self._final((), self.detok.flush(), (), reason, error))
        return out

    def _tick(self, at: float) -> None:
        observer = self.engine.observer
        if self.first_at is None:
            self.first_at = at
            if observer is not None:
                observer.on_first_token(at - self.req.arrival)
        elif self.last_at is not None:
            self.itl_sum += at - self.last_at
            if observer is not None:
                observer.on_token_gap(at - self.last_at)
        self.last_at = at

    def _final(
        self,
        token_ids: tuple[int, ...],
        text: str,
        logprobs: tuple[TokenLogprob, ...],
        reason: FinishReason,
        error: str | None = None,
    ) -> GenerationOutput:
        now = time.monotonic()
        n = self.num_output
        output = GenerationOutput(
            request_id=self.req.request_id,
            token_ids=token_ids,
            text=text,
            num_prompt_tokens=len(self.req.prompt),
            num_output_tokens=n,
            finish_reason=reason,
            logprobs=logprobs,
            timings=Timings(
                queue_s=(self.req.dispatched or now) - self.req.arrival,
                ttft_s=(self.first_at - self.req.arrival) if self.first_at is not None else 0.0,
                mean_itl_s=self.itl_sum / (n - 1) if n > 1 else 0.0,
                e2e_s=now - self.req.arrival,
            ),
            error=error,
        )
        self.engine._count_finish(self.req, output)
        return output


def _token_logprob(found: Any) -> tuple[TokenLogprob, ...]:
    if not found:
        return ()
    token, logprob, top = found
    return (TokenLogprob(int(token), float(logprob), tuple((int(t), float(p)) for t, p in top)),)


def _put(req: _Request, message: dict[str, Any]) -> None:
    with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody left to tell
        req.loop.call_soon_threadsafe(req.queue.put_nowait, message)
