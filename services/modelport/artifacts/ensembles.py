"""Ensemble configs (`platform: "ensemble"`) read into a checked plan.

Each step runs a member model with `input_map` (member input → ensemble
tensor) and `output_map` (member output → ensemble tensor). The plan is checked
at load: every tensor has one producer (an ensemble input or one step's
output), every step input and every ensemble output is produced, and the steps
form no cycle. The inference service runs plans (`inference.ensemble`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from modelport.errors import InvalidInput
from modelport.proto.inference import model_config_pb2 as mc


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


@dataclass(frozen=True)
class EnsemblePlan:
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    steps: tuple[Step, ...]
    max_inflight: int = 0

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
    return EnsemblePlan(name, tuple(inputs), tuple(outputs), tuple(plan_steps), max_inflight)


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


def plan_from_config(name: str, config: mc.ModelConfig) -> EnsemblePlan:
    scheduling = config.ensemble_scheduling
    steps: list[tuple[str, int, Mapping[str, str], Mapping[str, str]]] = [
        (s.model_name, s.model_version, dict(s.input_map), dict(s.output_map))
        for s in scheduling.step
    ]
    return plan_ensemble(
        name,
        [t.name for t in config.input],
        [t.name for t in config.output],
        steps,
        scheduling.max_inflight_requests,
    )
