"""Which sequences run in the next engine step, under a token and a KV budget.

Every step (vLLM's and Orca's "iteration-level" scheduling):
1. sequences whose caller left or whose deadline passed are dropped, their
   blocks freed (so a slot is free within one step);
2. running sequences get their next token, or the next chunk of their prompt,
   within `max_num_batched_tokens`: a long prompt is prefilled in chunks so the
   streams already running keep their pace (chunked prefill);
3. when a running sequence needs a block and none is free, the most recently
   admitted sequence is preempted: its blocks are freed and it goes back to
   the front of the waiting queue, to be recomputed from its tokens later;
4. waiting sequences are admitted first-come first-served while the token
   budget, `max_num_seqs` and the free blocks allow.
The waiting queue is bounded: `submit` raises QueueFull when it is full
(sequences that a free slot takes at the next step do not count).
Not thread-safe by itself: the engine calls it under its lock.
"""

from __future__ import annotations

import collections
import enum
from dataclasses import dataclass, field
from typing import Any

from modelport.errors import InvalidInput, QueueFull
from modelport.inference.generative.kv_cache import BlockAllocator, blocks_for
from modelport.inference.generative.types import (
    FinishReason,
    SamplingParams,
    prompt_length_problem,
)


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    arrival: float
    deadline: float | None = None
    output_ids: list[int] = field(default_factory=list)
    num_computed: int = 0  # tokens whose keys/values are in the cache
    blocks: list[int] = field(default_factory=list)
    status: Status = Status.WAITING
    finish_reason: FinishReason | None = None
    preemptions: int = 0
    first_scheduled: float | None = None
    first_token_at: float | None = None
    last_token_at: float | None = None
    state: Any = None  # the engine's per-sequence state (sampler, detokenizer, sink)

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    def token_at(self, index: int) -> int:
        n = len(self.prompt_ids)
        return self.prompt_ids[index] if index < n else self.output_ids[index - n]

    def tokens(self, start: int, stop: int) -> list[int]:
        return (self.prompt_ids + self.output_ids)[start:stop]


@dataclass
class ScheduledStep:
    decode: list[Sequence]  # one new token each
    prefill: list[tuple[Sequence, int]]  # (sequence, chunk length)
    dropped: list[Sequence]  # aborted or past their deadline, blocks already freed
    preempted: list[Sequence]

    @property
    def empty(self) -> bool:
        return not self.decode and not self.prefill


@dataclass(frozen=True)
class SchedulerLimits:
    num_blocks: int
    block_size: int = 16
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 256
    max_waiting: int = 256
    max_model_len: int = 2048


class Scheduler:
    def __init__(self, limits: SchedulerLimits) -> None:
        if limits.max_num_batched_tokens < limits.max_num_seqs:
            raise InvalidInput("max_num_batched_tokens must be at least max_num_seqs")
        self.limits = limits
        self.allocator = BlockAllocator(limits.num_blocks)
        self.waiting: collections.deque[Sequence] = collections.deque()
        self.running: list[Sequence] = []
        self._aborted: set[str] = set()
        self._fresh_waiting = 0  # waiting sequences not put back by preemption
        self.preemptions_total = 0

    # -- requests in and out ------------------------------------------------
    def check_fits(self, num_prompt_tokens: int) -> None:
        problem = prompt_length_problem(num_prompt_tokens, self.limits.max_model_len)
        if problem:
            raise InvalidInput(problem)

    def submit(self, seq: Sequence) -> None:
        self.check_fits(len(seq.prompt_ids))
        # Sequences that a free slot will take at the next step are not queued: only
        # those beyond the free slots count against max_waiting.
        free_slots = max(0, self.limits.max_num_seqs - len(self.running))
        queued = self._fresh_waiting - free_slots
        if queued >= self.limits.max_waiting:
            raise QueueFull(
                f"{queued} sequences are waiting for a slot (max_waiting {self.limits.max_waiting})"
            )
        self.waiting.append(seq)
        self._fresh_waiting += 1

    def abort(self, request_id: str) -> None:
        self._aborted.add(request_id)

    def finish(self, seq: Sequence, reason: FinishReason) -> None:
        """Called by the engine when a sequence stops; frees its blocks."""
        if seq.status is Status.FINISHED:
            return
        if seq.status is Status.RUNNING:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
            if seq.preemptions == 0:
                self._fresh_waiting -= 1
        self._release(seq)
        seq.status = Status.FINISHED
        seq.finish_reason = reason
        self._aborted.discard(seq.request_id)

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    # -- one step ------------------------------------------------------------
    def schedule(self, now: float) -> ScheduledStep:
        dropped = self._drop_aborted(now)
        budget = self.limits.max_num_batched_tokens
        decode: list[Sequence] = []
        prefill: list[tuple[Sequence, int]] = []
        preempted: list[Sequence] = []
        i = 0
        while i < len(self.running):
            seq = self.running[i]
            need = seq.num_tokens - seq.num_computed
            n = min(need, budget)
            if n == 0:
                break
            while not self._reserve(seq, seq.num_computed + n):
                victim = self.running[-1]
                self._preempt(victim)
                preempted.append(victim)
                if victim is seq:
                    break
            if seq.status is not Status.RUNNING:
                break  # it preempted itself: everything after it is gone too
            if need == 1:
                decode.append(seq)
            else:
                prefill.append((seq, n))
            budget -= n
            i += 1
        while self.waiting and budget > 0 and len(self.running) < self.limits.max_num_seqs:
            seq = self.waiting[0]
            n = min(seq.num_tokens - seq.num_computed, budget)
            if not self._reserve(seq, seq.num_computed + n):
                break
            self.waiting.popleft()
            if seq.preemptions == 0:
                self._fresh_waiting -= 1
            seq.status = Status.RUNNING
            if seq.first_scheduled is None:
                seq.first_scheduled = now
            self.running.append(seq)
            if n == 1 and seq.num_computed > 0:
                decode.append(seq)
            else:
                prefill.append((seq, n))
            budget -= n
        return ScheduledStep(decode=decode, prefill=prefill, dropped=dropped, preempted=preempted)

    def _reserve(self, seq: Sequence, num_tokens: int) -> bool:
        need = blocks_for(num_tokens, self.limits.block_size) - len(seq.blocks)
        if need <= 0:
            return True
        blocks = self.allocator.allocate(need)
        if blocks is None:
            return False
        seq.blocks.extend(blocks)
        return True

    def _preempt(self, seq: Sequence) -> None:
        self.running.remove(seq)
        self._release(seq)
        seq.status = Status.WAITING
        seq.preemptions += 1
        self.preemptions_total += 1
        self.waiting.appendleft(seq)

    def _release(self, seq: Sequence) -> None:
        self.allocator.free(seq.blocks)
        seq.blocks = []
        seq.num_computed = 0

    def _drop_aborted(self, now: float) -> list[Sequence]:
        dropped = []
        for seq in [*self.running, *self.waiting]:
            expired = seq.deadline is not None and now >= seq.deadline
            if seq.request_id in self._aborted or expired:
                self.finish(seq, FinishReason.CANCELLED)
                dropped.append(seq)
        self._aborted.clear()
        return dropped
