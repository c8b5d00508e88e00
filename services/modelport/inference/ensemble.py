"""Ensembles: a DAG of member models run inside one inference service.

A config with `platform: "ensemble"` lists steps; each runs a member model
with `input_map` (member input → ensemble tensor) and `output_map` (member
output → ensemble tensor). The plan is checked at load: every tensor has one
producer (an ensemble input or one step's output), every step input and every
ensemble output is produced, and the steps form no cycle. At run time a step
starts as soon as all its inputs exist, so independent branches run
concurrently; each member call goes through that member's own batcher
(`MemberInfer`), so ensemble traffic is batched with the member's other traffic.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from modelport.errors import Internal, InvalidInput, ModelportError

Arrays = dict[str, np.ndarray]
# (member model, version (-1: its default), inputs by member input name, deadline)
# -> outputs by member output name
MemberInfer = Callable[[str, int, Arrays, float | None], Awaitable[Arrays]]


@dataclass(frozen=True)
class Step:
    index: int
    model: str
    version: int  # -1: the member's default version
    input_map: Mapping[str, str]  # member input -> ensemble tensor
    output_map: Mapping[str, str]  # member output -> ensemble tensor

    @property
    def label(self) -> str:
        return f"step {self.index} (model '{self.model}')"


@dataclass
class StepStats:
    """Per-step counters: runs, failures and the time spent in the member."""

    success: int = 0
    fail: int = 0
    ns: int = 0


@dataclass(frozen=True)
class EnsemblePlan:
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    steps: tuple[Step, ...]
    max_inflight: int = 0
    stats: tuple[StepStats, ...] = field(default=(), compare=False)

    @property
    def members(self) -> list[tuple[str, int]]:
        return sorted({(s.model, s.version) for s in self.steps})


def plan_ensemble(
    name: str,
    inputs: list[str],
    outputs: list[str],
    steps: list[tuple[str, int, Mapping[str, str], Mapping[str, str]]],
    max_inflight: int = 0,
) -> EnsemblePlan:
    """Check the DAG; raises InvalidInput naming the step and tensor at fault."""
    where = f"ensemble '{name}' config: ensemble_scheduling"
    if not steps:
        raise InvalidInput(f"{where} has no step")
    producer: dict[str, str] = {t: "an ensemble input" for t in inputs}
    plan_steps = []
    for index, (model, version, input_map, output_map) in enumerate(steps):
        step = Step(index, model, version if version > 0 else -1, dict(input_map), dict(output_map))
        if not model:
            raise InvalidInput(f"{where}: step {index} has no model_name")
        if model == name:
            raise InvalidInput(f"{where}: {step.label} is the ensemble itself")
        if not input_map or not output_map:
            raise InvalidInput(f"{where}: {step.label} needs an input_map and an output_map")
        for tensor in output_map.values():
            if tensor in producer:
                raise InvalidInput(
                    f"{where}: ensemble tensor '{tensor}' is produced by {step.label} "
                    f"and by {producer[tensor]}"
                )
            producer[tensor] = step.label
        plan_steps.append(step)
    for step in plan_steps:
        for tensor in step.input_map.values():
            if tensor not in producer:
                raise InvalidInput(
                    f"{where}: {step.label} reads ensemble tensor '{tensor}', "
                    "which no ensemble input or step produces"
                )
    for tensor in outputs:
        if tensor not in producer or producer[tensor] == "an ensemble input":
            raise InvalidInput(f"{where}: ensemble output '{tensor}' is produced by no step")
    _check_acyclic(where, plan_steps, set(inputs))
    return EnsemblePlan(
        name, tuple(inputs), tuple(outputs), tuple(plan_steps), max_inflight,
        tuple(StepStats() for _ in plan_steps),
    )  # fmt: skip


def _check_acyclic(where: str, steps: list[Step], inputs: set[str]) -> None:
    """Kahn's order: steps that can never start lie on (or behind) a cycle."""
    available, pending = set(inputs), list(steps)
    while pending:
        ready = [s for s in pending if set(s.input_map.values()) <= available]
        if not ready:
            stuck = ", ".join(s.label for s in pending)
            raise InvalidInput(f"{where}: the steps form a cycle ({stuck})")
        for step in ready:
            available.update(step.output_map.values())
            pending.remove(step)


class EnsembleScheduler:
    """Runs one request through the plan; `max_inflight` bounds each step's concurrency."""

    def __init__(self, plan: EnsemblePlan, infer: MemberInfer) -> None:
        self.plan = plan
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
        stats = self.plan.stats[step.index]
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
