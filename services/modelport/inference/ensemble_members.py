"""An ensemble's wiring checked against its members' configs, once they are loaded."""

from __future__ import annotations

from collections.abc import Callable

from modelport.artifacts.config import ModelSpec
from modelport.errors import InvalidInput


def check_members(spec: ModelSpec, member: Callable[[str, str], ModelSpec]) -> None:
    """Every mapped name exists on its member, and each ensemble tensor has one type.

    `member(name, version)` returns a loaded member's spec (version "" = default).
    """
    plan = spec.ensemble
    assert plan is not None
    where = f"ensemble '{spec.name}'"
    members = [member(s.model, str(s.version) if s.version > 0 else "") for s in plan.steps]
    produced = {t.name: t.datatype.name for t in spec.inputs}
    for step, m in zip(plan.steps, members, strict=True):
        label = f"{where} {step.label}"
        if m.decoupled or m.sequence is not None:
            kind = "decoupled" if m.decoupled else "a sequence model"
            raise InvalidInput(f"{label}: the member is {kind}, which ensembles do not run")
        outputs = {t.name: t for t in m.outputs}
        for name, tensor in step.output_map.items():
            if name not in outputs:
                raise InvalidInput(f"{label}: the member has no output '{name}'")
            produced[tensor] = outputs[name].datatype.name
    for step, m in zip(plan.steps, members, strict=True):
        label = f"{where} {step.label}"
        inputs = {t.name: t for t in m.inputs}
        for name, tensor in step.input_map.items():
            if name not in inputs:
                raise InvalidInput(f"{label}: the member has no input '{name}'")
            _same_type(label, tensor, produced[tensor], inputs[name].datatype.name)
        unmapped = [t.name for t in m.inputs if t.name not in step.input_map and not t.optional]
        if unmapped:
            raise InvalidInput(f"{label}: member input(s) {unmapped} are not in input_map")
    for output in spec.outputs:
        _same_type(f"{where} output", output.name, produced[output.name], output.datatype.name)


def _same_type(where: str, tensor: str, produced: str, wanted: str) -> None:
    if produced != wanted:
        raise InvalidInput(
            f"{where}: ensemble tensor '{tensor}' is {produced}, where {wanted} is expected"
        )
