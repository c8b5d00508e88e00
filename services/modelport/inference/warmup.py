"""Warm-up at load: run the model once per batch size so the first request is not slow.

It also fails the load early when the model cannot run on its declared inputs
or answers outside its declared outputs (the backend checks every output).
Numeric inputs are zeros; BYTES inputs are "0", text most string models accept.
A string model that still rejects that text is loaded with a warning instead:
what is valid text is the model's business.
"""

from __future__ import annotations

import logging

import numpy as np

from modelport.artifacts.config import ModelSpec
from modelport.errors import InvalidInput, ModelportError
from modelport.inference.backends import Backend, NamedBackend

log = logging.getLogger(__name__)


def warm_up(spec: ModelSpec, backend: Backend) -> None:
    """Run zero-filled batches (1 and the largest) through the model."""
    sizes = [1] if spec.max_batch_size == 0 else sorted({1, spec.max_batch_size})
    if spec.sequence is not None:
        sizes = [1]  # sequence models see batches of one row per sequence slot
    has_strings = any(t.datatype.name == "BYTES" for t in spec.inputs)
    for rows in sizes:
        try:
            outputs = _run(spec, backend, _inputs(spec, rows))
        except ModelportError as exc:
            if has_strings and isinstance(exc, InvalidInput):
                log.warning("model '%s' warm-up skipped: %s", spec.name, exc)
                return
            raise
        except Exception as exc:
            if has_strings:
                log.warning("model '%s' warm-up with text '0' failed (%s); loading anyway",
                            spec.name, exc)  # fmt: skip
                return
            raise InvalidInput(
                f"model '{spec.name}' failed its warm-up run (zero inputs, batch {rows}): {exc}"
            ) from None
        if spec.max_batch_size > 0 and not spec.decoupled:
            for name, output in outputs.items():
                if output.ndim == 0 or output.shape[0] != rows:
                    raise InvalidInput(
                        f"model '{spec.name}': output '{name}' has shape "
                        f"{list(output.shape)} for a batch of {rows}; max_batch_size > 0 "
                        "needs the batch as dim 0"
                    )


def _run(
    spec: ModelSpec, backend: Backend, inputs: dict[str, np.ndarray | None]
) -> dict[str, np.ndarray]:
    if isinstance(backend, NamedBackend):
        return backend.run_named(inputs)
    outputs = backend.run([inputs[t.name] for t in spec.inputs])
    return {t.name: o for t, o in zip(spec.outputs, outputs, strict=True)}


def _inputs(spec: ModelSpec, rows: int) -> dict[str, np.ndarray | None]:
    batch = [rows] if spec.max_batch_size > 0 else []
    arrays: dict[str, np.ndarray | None] = {}
    for tensor in spec.inputs:
        shape = batch + [d if d > 0 else 1 for d in tensor.dims]
        if tensor.datatype.name == "BYTES":
            arrays[tensor.name] = np.full(shape, b"0", dtype=np.object_)
        else:
            dtype = tensor.datatype.numpy if tensor.datatype.numpy is not None else np.uint16
            arrays[tensor.name] = np.zeros(shape, dtype=dtype)
    if spec.sequence is not None:
        for control in spec.sequence.controls:
            if control.kind == "CORRID":
                value: object = b"1" if control.dtype == np.object_ else 1
            else:
                value = control.value(control.kind in ("START", "READY"))
            arrays[control.name] = np.full([*batch, 1], value, control.dtype)
        for state in spec.sequence.states:
            arrays[state.input] = state.initial[np.newaxis] if batch else state.initial
    return arrays
