"""Ensembles run inside one inference service: a checked plan's steps as tasks.

A step starts as soon as all its inputs exist, so independent branches run
concurrently; each member call goes through that member's own batcher
(`MemberInfer`), so ensemble traffic is batched with the member's other
traffic. Each step counts its runs, failures and time (`stats`), and exports
them as `modelport_ensemble_step_duration_seconds{model,step,member,outcome}`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from modelport.artifacts.ensembles import EnsemblePlan, Step
from modelport.common import metrics
from modelport.errors import Internal, InvalidInput, ModelportError

Arrays = dict[str, np.ndarray]
# (member model, version (-1: its default), inputs by member input name, deadline)
# -> outputs by member output name
MemberInfer = Callable[[str, int, Arrays, float | None], Awaitable[Arrays]]


_step_duration = None


def _histogram() -> object:
    """The process-wide step histogram, made on first use (like the other instruments)."""
    global _step_duration
    if _step_duration is None:
        _step_duration = metrics.meter("modelport.inference").create_histogram(
            "modelport_ensemble_step_duration", unit="s",
            description="Time an ensemble step spent in its member model",
        )  # fmt: skip
    return _step_duration


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
        self._attributes = [
            {"model": plan.name, "step": str(s.index), "member": s.model} for s in plan.steps
        ]
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
        start = time.perf_counter_ns()
        outcome = "failure"
        try:
            produced = await self._call_member(step, tensors, deadline)
            outcome = "success"
            return produced
        finally:
            elapsed = time.perf_counter_ns() - start
            stats = self.stats[step.index]
            if outcome == "success":
                stats.success += 1
                stats.ns += elapsed
            else:
                stats.fail += 1
            _histogram().record(  # type: ignore[attr-defined]
                elapsed / 1e9, {**self._attributes[step.index], "outcome": outcome}
            )

    async def _call_member(self, step: Step, tensors: Arrays, deadline: float | None) -> Arrays:
        member_inputs = {member: tensors[tensor] for member, tensor in step.input_map.items()}
        limit = self._limits[step.index]
        try:
            if limit is None:
                produced = await self._infer(step.model, step.version, member_inputs, deadline)
            else:
                async with limit:
                    produced = await self._infer(step.model, step.version, member_inputs, deadline)
        except ModelportError as exc:
            # Same error and code, saying where it happened.
            exc.args = (f"ensemble '{self.plan.name}' {step.label}: {exc}",)
            raise
        missing = [m for m in step.output_map if m not in produced]
        if missing:
            raise Internal(
                f"ensemble '{self.plan.name}' {step.label}: the member has no output(s) {missing}"
            )
        return produced
