"""`sequence_batching` read into what the sequence batcher acts on, validated.

Control inputs and implicit-state tensors are not listed in the config's
`input`/`output` (Triton's convention): the server fills them. Every failure
names the model and the field at fault.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import prod
from pathlib import Path

import numpy as np

from modelport.artifacts import datatypes
from modelport.errors import InvalidInput
from modelport.proto.inference import model_config_pb2 as mc

# Triton's defaults: a sequence with no request for a second is reclaimed, and
# `oldest` keeps up to max_batch_size candidate sequences.
DEFAULT_IDLE_S = 1.0
START, END, READY, CORRID = "START", "END", "READY", "CORRID"
_KINDS = {
    mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START: START,
    mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_END: END,
    mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_READY: READY,
    mc.ModelSequenceBatching.Control.CONTROL_SEQUENCE_CORRID: CORRID,
}
_CORRID_TYPES = ("UINT64", "INT64", "UINT32", "INT32", "BYTES")
CorrelationId = int | str


@dataclass(frozen=True)
class Control:
    """A control input: the tensor `name` carries `kind` for each batch row."""

    name: str
    kind: str
    dtype: np.dtype  # object for a string CORRID
    false_true: tuple[object, object] = (0, 1)

    def value(self, flag: bool) -> object:
        return self.false_true[1] if flag else self.false_true[0]


@dataclass(frozen=True)
class State:
    """Implicit state: output `output` of one request is input `input` of the next."""

    input: str
    output: str
    dtype: np.dtype
    dims: tuple[int, ...]
    initial: np.ndarray  # the state of a sequence's first request, without batch dim


@dataclass(frozen=True)
class SequenceSpec:
    strategy: str  # "direct" or "oldest"
    max_idle_s: float
    controls: tuple[Control, ...]
    states: tuple[State, ...]
    max_queue_delay_s: float = 0.0
    preferred_sizes: tuple[int, ...] = ()
    max_candidates: int = 0  # oldest: sequences per instance
    minimum_slot_utilization: float = 0.0  # direct

    @property
    def filled_inputs(self) -> tuple[str, ...]:
        """Model inputs the server fills: controls, then states."""
        return tuple(c.name for c in self.controls) + tuple(s.input for s in self.states)


def read_sequence_spec(
    name: str, config: mc.ModelConfig, model_dir: Path | None = None
) -> SequenceSpec:
    """Validate `config.sequence_batching`; `model_dir` holds initial_state/ files."""
    where = f"model '{name}' config: sequence_batching"
    sb = config.sequence_batching
    if sb.iterative_sequence:
        raise InvalidInput(
            f"{where}.iterative_sequence is not supported (it serves Triton's "
            "backend-driven iterative decoding; use a decoupled model instead)"
        )
    controls: list[Control] = []
    seen: set[str] = set()
    for ci in sb.control_input:
        if not ci.name:
            raise InvalidInput(f"{where}.control_input has an entry without a name")
        if len(ci.control) != 1:
            raise InvalidInput(
                f"{where}.control_input '{ci.name}' must have exactly one control "
                f"(has {len(ci.control)})"
            )
        control = _control(where, ci.name, ci.control[0])
        if control.kind in seen:
            raise InvalidInput(f"{where}: more than one {control.kind} control input")
        seen.add(control.kind)
        controls.append(control)
    declared = {t.name for t in config.input}
    states = tuple(_state(where, s, model_dir) for s in sb.state)
    for filled in [c.name for c in controls] + [s.input for s in states]:
        if filled in declared:
            raise InvalidInput(
                f"{where}: '{filled}' is filled by the server; remove it from the config's input"
            )
    strategy = sb.WhichOneof("strategy_choice") or "direct"
    spec = SequenceSpec(
        strategy=strategy,
        max_idle_s=(sb.max_sequence_idle_microseconds / 1e6) or DEFAULT_IDLE_S,
        controls=tuple(controls),
        states=states,
    )
    if strategy == "direct":
        direct = sb.direct
        if not 0.0 <= direct.minimum_slot_utilization <= 1.0:
            raise InvalidInput(f"{where}.direct.minimum_slot_utilization must lie in 0..1")
        return replace(
            spec,
            max_queue_delay_s=direct.max_queue_delay_microseconds / 1e6,
            minimum_slot_utilization=direct.minimum_slot_utilization,
        )
    oldest = sb.oldest
    if oldest.preserve_ordering:
        raise InvalidInput(
            f"{where}.oldest.preserve_ordering is not supported: responses of different "
            "sequences are sent as each completes (each sequence stays in order)"
        )
    max_batch = max(config.max_batch_size, 1)
    preferred = tuple(sorted(set(oldest.preferred_batch_size)))
    if any(p < 1 or p > max_batch for p in preferred):
        raise InvalidInput(
            f"{where}.oldest.preferred_batch_size {list(preferred)} must lie in 1..{max_batch}"
        )
    if oldest.max_candidate_sequences < 0:
        raise InvalidInput(f"{where}.oldest.max_candidate_sequences must be >= 0")
    return replace(
        spec,
        max_queue_delay_s=oldest.max_queue_delay_microseconds / 1e6,
        preferred_sizes=preferred,
        max_candidates=oldest.max_candidate_sequences or max_batch,
    )


def _control(where: str, name: str, control: mc.ModelSequenceBatching.Control) -> Control:
    kind = _KINDS[control.kind]
    if kind == CORRID:
        type_name = _oip_name(control.data_type)
        if type_name not in _CORRID_TYPES:
            raise InvalidInput(
                f"{where}.control_input '{name}': CORRID data_type must be one of "
                "TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32, TYPE_STRING"
            )
        return Control(name, kind, _numpy(type_name))
    pairs: list[tuple[list[object], np.dtype]] = [
        (list(control.int32_false_true), np.dtype(np.int32)),
        (list(control.fp32_false_true), np.dtype(np.float32)),
        (list(control.bool_false_true), np.dtype(np.bool_)),
    ]
    given = [(values, dtype) for values, dtype in pairs if values]
    if len(given) != 1 or len(given[0][0]) != 2:
        raise InvalidInput(
            f"{where}.control_input '{name}': {kind} needs exactly one of "
            "int32_false_true, fp32_false_true, bool_false_true with two values"
        )
    values, dtype = given[0]
    return Control(name, kind, dtype, (dtype.type(values[0]), dtype.type(values[1])))


def _state(where: str, state: mc.ModelSequenceBatching.State, model_dir: Path | None) -> State:
    if not state.input_name or not state.output_name:
        raise InvalidInput(f"{where}.state needs input_name and output_name")
    label = f"{where}.state '{state.input_name}'"
    for unsupported in ("use_same_buffer_for_input_output", "use_growable_memory"):
        if getattr(state, unsupported):
            raise InvalidInput(
                f"{label}: {unsupported} is a GPU memory optimisation modelport does not "
                "provide; remove it (state is carried between requests as a tensor)"
            )
    type_name = _oip_name(state.data_type)
    if type_name in ("", "BYTES"):
        raise InvalidInput(f"{label}: data_type must be a numeric type")
    dtype = _numpy(type_name)
    dims = tuple(int(d) for d in state.dims)
    if any(d == 0 or d < -1 for d in dims):
        raise InvalidInput(f"{label}: dims {list(dims)} must be > 0 or -1")
    if len(state.initial_state) > 1:
        raise InvalidInput(f"{label}: at most one initial_state")
    if not state.initial_state:
        # Triton leaves the first state uninitialized, with 1 for every
        # variable dimension; zeros are a deterministic choice of that.
        return State(state.input_name, state.output_name, dtype, dims,
                     np.zeros([d if d > 0 else 1 for d in dims], dtype))  # fmt: skip
    initial = _initial(label, state.initial_state[0], type_name, dims, model_dir)
    return State(state.input_name, state.output_name, dtype, dims, initial)


def _initial(
    label: str,
    initial: mc.ModelSequenceBatching.InitialState,
    type_name: str,
    dims: tuple[int, ...],
    model_dir: Path | None,
) -> np.ndarray:
    dtype = _numpy(type_name)
    shape = tuple(int(d) for d in initial.dims)
    if _oip_name(initial.data_type) != type_name:
        raise InvalidInput(f"{label}: initial_state data_type differs from the state's")
    if len(shape) != len(dims) or any(d != -1 and d != s for d, s in zip(dims, shape, strict=True)):
        raise InvalidInput(
            f"{label}: initial_state dims {list(shape)} do not fit the state dims {list(dims)}"
        )
    if any(s < 1 for s in shape):
        raise InvalidInput(f"{label}: initial_state dims {list(shape)} must be fixed sizes")
    choice = initial.WhichOneof("state_data")
    if choice == "zero_data":
        return np.zeros(shape, dtype)
    if choice != "data_file":
        raise InvalidInput(f"{label}: initial_state needs zero_data or data_file")
    if model_dir is None:
        raise InvalidInput(f"{label}: initial_state data_file needs the model's folder")
    folder = (model_dir / "initial_state").resolve()
    path = (folder / initial.data_file).resolve()
    if folder not in path.parents or not path.is_file():
        raise InvalidInput(
            f"{label}: initial_state data_file '{initial.data_file}' is not a file in "
            f"{model_dir.name}/initial_state/"
        )
    data = path.read_bytes()
    expected = prod(shape) * dtype.itemsize
    if len(data) != expected:
        raise InvalidInput(
            f"{label}: initial_state data_file has {len(data)} bytes, "
            f"dims {list(shape)} need {expected}"
        )
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(shape)


def _oip_name(data_type: int) -> str:
    dt = datatypes.BY_CONFIG.get(mc.DataType.Name(data_type))  # type: ignore[arg-type]
    return dt.name if dt is not None else ""


def _numpy(type_name: str) -> np.dtype:
    if type_name == "BYTES":
        return np.dtype(np.object_)
    dt = datatypes.BY_NAME[type_name]
    if dt.numpy is None:  # BF16
        raise InvalidInput(f"sequence_batching: {type_name} state is not supported")
    return dt.numpy
