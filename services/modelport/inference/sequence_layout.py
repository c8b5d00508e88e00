"""One sequence batch laid out for the model, and its outputs split back per request.

Runs in the executor thread. Each scheduled request is a `Slot`: its batch row
(direct: its sequence's slot; oldest: its place in the batch), inputs, flags,
correlation id and the state it starts from. Rows of the batch no request
fills (direct only) are zeros with READY false; the model's outputs must keep
the batch as dim 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modelport.artifacts.sequences import (
    CORRID,
    END,
    READY,
    START,
    Control,
    CorrelationId,
    SequenceSpec,
)
from modelport.errors import Internal

Arrays = dict[str, np.ndarray]


@dataclass(slots=True)
class Slot:
    row: int
    inputs: Arrays
    start: bool
    end: bool
    corrid: CorrelationId
    state: Arrays  # the implicit state this request starts from


class BatchLayout:
    def __init__(self, spec: SequenceSpec, *, batched: bool) -> None:
        self._spec = spec
        self._batched = batched
        self._direct = spec.strategy == "direct"

    def rows(self, slots: list[Slot]) -> int:
        """direct: up to the highest slot that runs (lower idle slots are padding)."""
        return max(s.row for s in slots) + 1 if self._direct else len(slots)

    def assemble(self, slots: list[Slot]) -> Arrays:
        """Request inputs, control inputs and states for the batch, in rows."""
        if not self._batched:
            (only,) = slots
            arrays = {**only.inputs, **only.state}
            for control in self._spec.controls:
                arrays[control.name] = self._column(control, [only])
            return arrays
        count = self.rows(slots)
        by_row = {s.row: s for s in slots}
        first = slots[0]
        arrays = {}
        for name, template in [*first.inputs.items(), *first.state.items()]:
            pad = np.zeros_like(template)
            parts = []
            for row in range(count):
                slot = by_row.get(row)
                if slot is None:
                    parts.append(pad)
                else:
                    parts.append(slot.inputs[name] if name in first.inputs else slot.state[name])
            arrays[name] = parts[0] if count == 1 else np.concatenate(parts, axis=0)
        padded = [by_row.get(i) for i in range(count)]
        for control in self._spec.controls:
            arrays[control.name] = self._column(control, padded)
        return arrays

    def split(self, slots: list[Slot], outputs: Arrays, label: str) -> list[Arrays]:
        """Each request's outputs (its row, batch dim kept), checked."""
        missing = [s.output for s in self._spec.states if s.output not in outputs]
        if missing:
            raise Internal(f"{label}: the model returned no state output {missing}")
        if not self._batched:
            return [outputs]
        count = self.rows(slots)
        for name, output in outputs.items():
            if output.ndim == 0 or output.shape[0] != count:
                raise Internal(
                    f"{label}: output '{name}' has shape {list(output.shape)}; "
                    f"a batch of {count} rows needs dim 0 = {count}"
                )
        return [{k: v[s.row : s.row + 1] for k, v in outputs.items()} for s in slots]

    def _column(self, control: Control, slots: list[Slot | None]) -> np.ndarray:
        """The control tensor, [rows, 1] (or [1] without batching)."""
        text = control.dtype == np.object_
        values: list[object] = []
        for slot in slots:
            if control.kind == CORRID:
                corrid = slot.corrid if slot is not None else ("" if text else 0)
                values.append(str(corrid).encode() if text else corrid)
            else:
                flag = slot is not None and (
                    (control.kind == START and slot.start)
                    or (control.kind == END and slot.end)
                    or control.kind == READY
                )
                values.append(control.value(flag))
        column = np.array(values, dtype=control.dtype)
        return column.reshape(-1, 1) if self._batched else column.reshape(1)
