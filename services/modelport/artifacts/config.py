"""Model configuration: read config.pbtxt, fill gaps, and validate into a ModelSpec.

The config is Triton's text format parsed against Triton's whole
`model_config.proto`, so a Triton repository parses unchanged; a field set that
modelport does not act on is refused by name (`config_fields`). A `.pt2` model
may come without a config; its inputs and outputs are then taken from the
exported program's signature. Besides torch models, a config may describe an
ensemble (a DAG of other models), a stateful model (`sequence_batching`), a
decoupled one (zero or more responses per request) or a generative one
(`backend: "generative"`: a Hugging Face causal LM run by a generation engine,
its limits in `parameters`; see `artifacts.generative`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from math import prod
from pathlib import Path
from typing import NamedTuple

import numpy as np
from google.protobuf import text_format

from modelport.artifacts import datatypes, generative
from modelport.artifacts.config_fields import refuse_unused_fields
from modelport.artifacts.datatypes import DataType
from modelport.artifacts.ensembles import EnsemblePlan, plan_from_config
from modelport.artifacts.sequences import SequenceSpec, read_sequence_spec
from modelport.errors import InvalidInput
from modelport.proto.inference import model_config_pb2 as mc

CONFIG_FILE = "config.pbtxt"
PLATFORM_EXPORT = "torch_export"
PLATFORM_TORCHSCRIPT = "pytorch_libtorch"
PLATFORM_ENSEMBLE = "ensemble"
# An AOTInductor package (torch._inductor.aoti_compile_and_package): compiled
# native code, so only the registry's own derive jobs store one (see archive).
PLATFORM_AOTI = "torch_aoti"
MODEL_FILES = {
    PLATFORM_EXPORT: "model.pt2",
    PLATFORM_TORCHSCRIPT: "model.pt",
    PLATFORM_AOTI: "model.pt2",
}
PLATFORM_GENERATIVE = generative.BACKEND
PLATFORMS = (*MODEL_FILES, PLATFORM_ENSEMBLE, PLATFORM_GENERATIVE)
# What a batch waits for by default when dynamic_batching {} sets no delay.
DEFAULT_QUEUE_SIZE = 1024
AUTO_MAX_BATCH = 32


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: DataType
    dims: tuple[int, ...]  # without the batch dimension; -1 = any size
    optional: bool = False
    # The shape the model itself takes or gives (config `reshape`), batch excluded.
    reshape: tuple[int, ...] | None = None


class FixedInput(NamedTuple):
    name: str
    datatype: str  # OIP name
    dims: tuple[int, ...]
    numpy: np.dtype
    row_bytes: int  # raw bytes per batch row (per request when max_batch_size is 0)


@dataclass(frozen=True)
class BatchingSpec:
    enabled: bool
    preferred_sizes: tuple[int, ...] = ()
    max_delay_s: float = 0.0
    max_queue_size: int = DEFAULT_QUEUE_SIZE
    default_timeout_s: float | None = None


@dataclass
class ModelSpec:
    """Everything the server needs to know about one model, validated."""

    name: str
    platform: str
    max_batch_size: int
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    batching: BatchingSpec
    instance_count: int
    device_kind: int  # ModelInstanceGroup.Kind
    config: mc.ModelConfig
    decoupled: bool = False
    sequence: SequenceSpec | None = None
    ensemble: EnsemblePlan | None = None
    labels: dict[str, list[str]] = field(default_factory=dict)  # by output name
    device_index: int | None = None  # instance_group.gpus
    # Torch intra-op threads for this model (0: the server's --torch-threads), from
    # parameters { key: "INTRA_OP_THREAD_COUNT" }, as in Triton's PyTorch backend.
    intra_op_threads: int = 0
    generative: generative.GenerativeLimits | None = None  # the engine's limits
    input_index: dict[str, int] = field(default_factory=dict)
    output_index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.input_index = {t.name: i for i, t in enumerate(self.inputs)}
        self.output_index = {t.name: i for i, t in enumerate(self.outputs)}

    @cached_property
    def fixed_inputs(self) -> tuple[FixedInput, ...] | None:
        """Every input, when each is numeric with no variable dims: what a raw
        request's tensors must match exactly (the codec's fast path); else None."""
        fixed = []
        for tensor in self.inputs:
            dtype = tensor.datatype.numpy
            if tensor.datatype.name == "BF16":
                dtype = np.dtype(np.uint16)  # raw bf16 bits
            if dtype is None or any(d < 0 for d in tensor.dims) or tensor.optional:
                return None
            row_bytes = tensor.datatype.itemsize * prod(tensor.dims)
            fixed.append(
                FixedInput(tensor.name, tensor.datatype.name, tensor.dims, dtype, row_bytes)
            )
        return tuple(fixed)

    @property
    def model_filename(self) -> str:
        return self.config.default_model_filename or MODEL_FILES.get(self.platform, "")

    @property
    def model_outputs(self) -> list[str]:
        """What the model returns: the config's outputs, then implicit state outputs."""
        names = [t.name for t in self.outputs]
        if self.sequence is not None:
            names += [s.output for s in self.sequence.states if s.output not in names]
        return names

    @property
    def model_inputs(self) -> list[str]:
        """What the model takes: the config's inputs, then controls and states."""
        filled = list(self.sequence.filled_inputs) if self.sequence is not None else []
        return [t.name for t in self.inputs] + filled


def read_config(model_dir: Path) -> mc.ModelConfig | None:
    """Parse `<model_dir>/config.pbtxt`, or None when there is none."""
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        return None
    return parse_config_text(path.read_text(encoding="utf-8"), source=str(path))


def parse_config_text(text: str, *, source: str = CONFIG_FILE) -> mc.ModelConfig:
    config = mc.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise InvalidInput(f"{source}: {exc}") from None
    return config


def infer_platform(config: mc.ModelConfig, version_dir: Path | None) -> str:
    """The platform named in the config, else the one whose model file exists."""
    if config.backend == generative.BACKEND and not config.platform:
        return PLATFORM_GENERATIVE
    if config.backend and config.backend != "pytorch" and not config.platform:
        return ""  # another backend: build_spec refuses it by name
    platform = config.platform or {"pytorch": PLATFORM_TORCHSCRIPT}.get(config.backend, "")
    if platform:
        return platform
    if version_dir is not None:
        for candidate, filename in MODEL_FILES.items():
            if (version_dir / filename).is_file():
                return candidate
    return ""


def build_spec(name: str, config: mc.ModelConfig, model_dir: Path | None = None) -> ModelSpec:
    """Validate a (completed) config; raises InvalidInput naming the field at fault.

    `model_dir` holds the files a config names (labels, initial states).
    """
    where = f"model '{name}' config"
    if config.name and config.name != name:
        raise InvalidInput(f"{where}: name '{config.name}' does not match its folder '{name}'")
    config.name = name
    if config.platform not in PLATFORMS:
        served = config.platform or (f"backend '{config.backend}'" if config.backend else "")
        raise InvalidInput(
            f"{where}: platform '{served}' is not served; modelport serves "
            f"{', '.join(PLATFORMS)} (export the model with torch.export or TorchScript)"
        )
    limits = None
    if config.platform == PLATFORM_GENERATIVE:
        limits = _generative(where, config)
    refuse_unused_fields(name, config, parameters=limits is not None)
    if config.max_batch_size < 0:
        raise InvalidInput(f"{where}: max_batch_size must be >= 0")
    if not config.input:
        raise InvalidInput(f"{where}: no inputs declared")
    if not config.output:
        raise InvalidInput(f"{where}: no outputs declared")
    inputs = [_tensor(where, "input", t) for t in config.input]
    outputs = [_tensor(where, "output", t) for t in config.output]
    for role, tensors in (("input", inputs), ("output", outputs)):
        names = [t.name for t in tensors]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidInput(f"{where}: duplicate {role} name(s) {duplicates}")
    if config.platform == PLATFORM_EXPORT:
        for t in inputs + outputs:
            if t.datatype.name == "BYTES":
                raise InvalidInput(
                    f"{where}: '{t.name}' is BYTES, which a torch.export program cannot take "
                    "or give; serve string models as TorchScript (List[str])"
                )
    decoupled = config.model_transaction_policy.decoupled
    count, kind, device_index = _instances(where, config)
    return ModelSpec(
        name=name,
        platform=config.platform,
        max_batch_size=config.max_batch_size,
        inputs=inputs,
        outputs=outputs,
        batching=_batching(where, config),
        instance_count=count,
        device_kind=kind,
        config=config,
        decoupled=decoupled,
        sequence=_sequence(where, name, config, model_dir),
        ensemble=_ensemble(where, name, config),
        labels=_labels(where, config, model_dir),
        device_index=device_index,
        intra_op_threads=_thread_count(where, config, "INTRA_OP_THREAD_COUNT"),
        generative=limits,
    )


def _generative(where: str, config: mc.ModelConfig) -> generative.GenerativeLimits:
    """A generative model answers over a stream, one request a sequence; `parameters`
    are the engine's limits (validated here, so a bad one fails the load)."""
    if not config.model_transaction_policy.decoupled:
        raise InvalidInput(
            f"{where}: a generative model is decoupled (add model_transaction_policy "
            "{ decoupled: true })"
        )
    if config.max_batch_size != 0 or config.WhichOneof("scheduling_choice"):
        raise InvalidInput(
            f"{where}: a generative model batches inside its engine; set max_batch_size 0 "
            "and no dynamic or sequence batching"
        )
    return generative.limits_from_config(config)


def _instances(where: str, config: mc.ModelConfig) -> tuple[int, int, int | None]:
    """(executors, device kind, GPU index) from instance_group."""
    groups = list(config.instance_group)
    if not groups:
        return 1, int(mc.ModelInstanceGroup.KIND_AUTO), None
    kinds = {g.kind for g in groups}
    if len(kinds) > 1:
        raise InvalidInput(
            f"{where}: instance_group mixes device kinds; one model runs on one kind "
            "(serve a second copy of the model for the other)"
        )
    (kind,) = kinds
    if kind == mc.ModelInstanceGroup.KIND_MODEL:
        raise InvalidInput(f"{where}: instance_group kind KIND_MODEL is not offered (use KIND_CPU "
                           "or KIND_GPU)")  # fmt: skip
    gpus = sorted({gpu for g in groups for gpu in g.gpus})
    if gpus and kind == mc.ModelInstanceGroup.KIND_CPU:
        raise InvalidInput(f"{where}: instance_group.gpus with KIND_CPU; remove gpus or use "
                           "KIND_GPU")  # fmt: skip
    if len(gpus) > 1:
        raise InvalidInput(
            f"{where}: instance_group.gpus {gpus}: a model runs on one GPU here; run one "
            "inference service per GPU"
        )
    return sum(max(g.count, 1) for g in groups), kind, gpus[0] if gpus else None


def _sequence(
    where: str, name: str, config: mc.ModelConfig, model_dir: Path | None
) -> SequenceSpec | None:
    if config.WhichOneof("scheduling_choice") != "sequence_batching":
        return None
    if config.platform == PLATFORM_ENSEMBLE or config.model_transaction_policy.decoupled:
        raise InvalidInput(
            f"{where}: sequence_batching is for torch models that answer once per request "
            "(not ensembles or decoupled models)"
        )
    return read_sequence_spec(name, config, model_dir)


def _ensemble(where: str, name: str, config: mc.ModelConfig) -> EnsemblePlan | None:
    is_ensemble = config.platform == PLATFORM_ENSEMBLE
    scheduled = config.WhichOneof("scheduling_choice") == "ensemble_scheduling"
    if is_ensemble != scheduled:
        raise InvalidInput(
            f"{where}: platform 'ensemble' and ensemble_scheduling go together "
            "(an ensemble needs its steps; steps need platform 'ensemble')"
        )
    if not is_ensemble:
        if config.model_transaction_policy.decoupled and config.WhichOneof("scheduling_choice"):
            raise InvalidInput(
                f"{where}: a decoupled model runs one request at a time; remove "
                f"{config.WhichOneof('scheduling_choice')}"
            )
        return None
    if config.model_transaction_policy.decoupled:
        raise InvalidInput(f"{where}: decoupled ensembles are not offered")
    if config.instance_group or config.default_model_filename:
        raise InvalidInput(
            f"{where}: an ensemble has no model file or instances of its own "
            "(remove instance_group / default_model_filename; set them on the members)"
        )
    return plan_from_config(name, config)


def _labels(where: str, config: mc.ModelConfig, model_dir: Path | None) -> dict[str, list[str]]:
    """label_filename files, read from the model folder (one label a line)."""
    labels: dict[str, list[str]] = {}
    for output in config.output:
        if not output.label_filename:
            continue
        if model_dir is None:
            raise InvalidInput(f"{where}: output '{output.name}' label_filename needs the folder")
        folder = model_dir.resolve()
        path = (folder / output.label_filename).resolve()
        if folder not in path.parents or not path.is_file():
            raise InvalidInput(
                f"{where}: output '{output.name}' label_filename '{output.label_filename}' "
                f"is not a file in the model folder"
            )
        labels[output.name] = path.read_text(encoding="utf-8").splitlines()
    return labels


def _thread_count(where: str, config: mc.ModelConfig, key: str) -> int:
    if key not in config.parameters:
        return 0
    value = config.parameters[key].string_value.strip()
    if not value.isdigit() or int(value) < 1:
        raise InvalidInput(f"{where}: parameter {key} must be a positive integer, not '{value}'")
    return int(value)


def _tensor(where: str, kind: str, tensor: mc.ModelInput | mc.ModelOutput) -> TensorSpec:
    name = tensor.name
    if not name:
        raise InvalidInput(f"{where}: an {kind} has no name")
    type_name = mc.DataType.Name(tensor.data_type)
    if type_name not in datatypes.BY_CONFIG:
        raise InvalidInput(f"{where}: {kind} '{name}' has no data_type")
    shape = tuple(int(d) for d in tensor.dims)
    if any(d < -1 or d == 0 for d in shape):
        raise InvalidInput(f"{where}: {kind} '{name}' dims {list(shape)} must be > 0 or -1")
    reshape = _reshape(where, kind, name, shape, tensor) if tensor.HasField("reshape") else None
    if reshape is not None and type_name == "TYPE_STRING":
        raise InvalidInput(f"{where}: {kind} '{name}': reshape of BYTES is not offered")
    optional = bool(getattr(tensor, "optional", False))
    return TensorSpec(name, datatypes.BY_CONFIG[type_name], shape, optional, reshape)


def _reshape(
    where: str, kind: str, name: str, dims: tuple[int, ...], tensor: object
) -> tuple[int, ...]:
    """`reshape`: the model's own shape for the tensor, with the same elements."""
    shape = tuple(int(d) for d in tensor.reshape.shape)  # type: ignore[attr-defined]
    free_dims, free_shape = dims.count(-1), shape.count(-1)
    fixed = free_dims == 0 and free_shape == 0
    if (
        any(d < -1 or d == 0 for d in shape)
        or free_dims > 1
        or free_shape > 1
        or (fixed and _count(dims) != _count(shape))
        or (free_dims != free_shape)
    ):
        raise InvalidInput(
            f"{where}: {kind} '{name}' reshape {list(shape)} does not hold the elements "
            f"of dims {list(dims)} (at most one -1 on each side, both or neither)"
        )
    return shape


def _count(shape: tuple[int, ...]) -> int:
    total = 1
    for d in shape:
        total *= d
    return total


def _batching(where: str, config: mc.ModelConfig) -> BatchingSpec:
    if config.WhichOneof("scheduling_choice") != "dynamic_batching":
        return BatchingSpec(enabled=False)
    db = config.dynamic_batching
    if config.max_batch_size == 0:
        raise InvalidInput(f"{where}: dynamic_batching needs max_batch_size > 0")
    preferred = tuple(sorted(set(db.preferred_batch_size)))
    if any(size < 1 or size > config.max_batch_size for size in preferred):
        raise InvalidInput(
            f"{where}: preferred_batch_size {list(preferred)} "
            f"must lie in 1..{config.max_batch_size}"
        )
    policy = db.default_queue_policy
    timeout = (
        policy.default_timeout_microseconds / 1e6 if policy.default_timeout_microseconds else None
    )
    return BatchingSpec(
        enabled=True,
        preferred_sizes=preferred,
        max_delay_s=db.max_queue_delay_microseconds / 1e6,
        max_queue_size=policy.max_queue_size or DEFAULT_QUEUE_SIZE,
        default_timeout_s=timeout,
    )


def complete_from_program(config: mc.ModelConfig, program: object) -> None:
    """Fill missing inputs/outputs (and batching) from a torch.export program's signature.

    A leading dimension that is dynamic in every input is taken as the batch
    dimension: max_batch_size becomes AUTO_MAX_BATCH and dynamic batching is on.
    """
    graph = program.graph  # type: ignore[attr-defined]
    user_inputs = set(program.graph_signature.user_inputs)  # type: ignore[attr-defined]
    placeholders = [n for n in graph.nodes if n.op == "placeholder" and n.name in user_inputs]
    output_node = next(n for n in graph.nodes if n.op == "output")
    out_values = output_node.args[0]
    out_values = out_values if isinstance(out_values, (list, tuple)) else [out_values]
    user_output_count = len(program.graph_signature.user_outputs)  # type: ignore[attr-defined]
    out_values = list(out_values)[-user_output_count:] if user_output_count else []

    def shape_of(node: object) -> tuple[list[int], object]:
        val = node.meta["val"]  # type: ignore[attr-defined]
        dims = [d if isinstance(d, int) else -1 for d in val.shape]
        return dims, val.dtype

    in_shapes = [shape_of(n) for n in placeholders]
    out_shapes = [shape_of(n) for n in out_values]
    batched = config.max_batch_size > 0 or (
        bool(in_shapes) and all(dims and dims[0] == -1 for dims, _ in in_shapes)
    )
    if batched and config.max_batch_size == 0:
        config.max_batch_size = AUTO_MAX_BATCH
        if config.WhichOneof("scheduling_choice") is None:
            config.dynamic_batching.SetInParent()
    strip = 1 if batched else 0
    if not config.input:
        for node, (dims, dtype) in zip(placeholders, in_shapes, strict=True):
            config.input.add(name=node.name, dims=dims[strip:], data_type=_config_type(dtype))
    if not config.output:
        for index, (dims, dtype) in enumerate(out_shapes):
            config.output.add(
                name=f"output_{index}", dims=dims[strip:], data_type=_config_type(dtype)
            )
    if not config.platform:
        config.platform = PLATFORM_EXPORT


def _config_type(torch_dtype: object) -> int:
    return mc.DataType.Value(datatypes.by_torch_name(torch_dtype).config)
