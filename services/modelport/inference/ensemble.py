"""Ensembles run inside one inference service: a checked plan's steps as tasks.

A step starts as soon as all its inputs exist, so independent branches run
concurrently; each member call goes through that member's own batcher
(`MemberInfer`), so ensemble traffic is batched with the member's other
traffic. Each step counts its runs, failures and time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from modelport.artifacts.ensembles import EnsemblePlan, Step
from modelport.errors import Internal, InvalidInput, ModelportError

Arrays = dict[str, np.ndarray]
# (member model, version (-1: its default), inputs by member input name, deadline)
# -> outputs by member output name
MemberInfer = Callable[[str, int, Arrays, float | None], Awaitable[Arrays]]


@dataclass
class StepStats:
    """Per-step counters: runs, failures and the time spent in the member."""

    success: int = 0
    fail: int = 0
    ns: int = 0


class EnsembleScheduler:
    """Runs one request through the plan; `max_inflight` bounds each step's concurrency."""

    def __init__(self, plan: EnsemblePlan, infer: MemberInfer) -> None:
        self.plan = plan
        self.stats = [StepStats() for _ in plan.steps]
        self._infer = infer
        self._limits = [
            asyncio.Semaphore(plan.max_inflight) if plan.max_inflight else None for _ in plan.steps
        ]

    async def run(self, inputs: Arrays, deadline: float | None) -> Arrays:
        tensors: Arrays = dict(inputs)
        waiting = list(self.plan.steps)
        running: dict[asyncio.Task[Arrays], Step] = {}
        try:
            while waiting or running:
                for step in [s for s in waiting if set(s.input_map.values()) <= tensors.keys()]:
                    waiting.remove(step)
                    task = asyncio.ensure_future(self._run_step(step, tensors, deadline))
                    running[task] = step
                if not running:  # plan_ensemble makes this unreachable
                    raise InvalidInput(f"ensemble '{self.plan.name}': steps cannot start")
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    step = running.pop(task)
                    produced = task.result()  # a failed step fails the request here
                    for member_output, tensor in step.output_map.items():
                        tensors[tensor] = produced[member_output]
        finally:
            for task in running:
                task.cancel()
            if running:  # a step failed: the others are cancelled and reaped
                await asyncio.gather(*running, return_exceptions=True)
        return {name: tensors[name] for name in self.plan.outputs}

    async def _run_step(self, step: Step, tensors: Arrays, deadline: float | None) -> Arrays:
        member_inputs = {member: tensors[tensor] for member, tensor in step.input_map.items()}
        stats = self.stats[step.index]
        limit = self._limits[step.index]
        start = time.perf_counter_ns()
        try:
            if limit is None:
                produced = await self._infer(step.model, step.version, member_inputs, deadline)
            else:
                async with limit:
                    produced = await self._infer(step.model, step.version, member_inputs, deadline)
        except ModelportError as exc:
            stats.fail += 1
            # Same code, with where it happened.
            raise type(exc)(f"ensemble '{self.plan.name}' {step.label}: {exc}") from None
        except Exception:
            stats.fail += 1
            raise
        missing = [m for m in step.output_map if m not in produced]
        if missing:
            stats.fail += 1
            raise Internal(
                f"ensemble '{self.plan.name}' {step.label}: the member has no output(s) {missing}"
            )
        stats.success += 1
        stats.ns += time.perf_counter_ns() - start
        return produced
