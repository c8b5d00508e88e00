"""Model configuration: read config.pbtxt, fill gaps, and validate into a ModelSpec.

The config is Triton's text format parsed against our `model_config.proto`, so a
Triton repository loads unchanged. A `.pt2` model may come without a config;
its inputs and outputs are then taken from the exported program's signature.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from google.protobuf import text_format

from modelport.artifacts import datatypes
from modelport.artifacts.datatypes import DataType
from modelport.errors import InvalidInput
from modelport.proto.inference import model_config_pb2 as mc

CONFIG_FILE = "config.pbtxt"
PLATFORM_EXPORT = "torch_export"
PLATFORM_TORCHSCRIPT = "pytorch_libtorch"
# An AOTInductor package (torch._inductor.aoti_compile_and_package): compiled
# native code, so only the registry's own derive jobs store one (see archive).
PLATFORM_AOTI = "torch_aoti"
MODEL_FILES = {
    PLATFORM_EXPORT: "model.pt2",
    PLATFORM_TORCHSCRIPT: "model.pt",
    PLATFORM_AOTI: "model.pt2",
}
# What a batch waits for by default when dynamic_batching {} sets no delay.
DEFAULT_QUEUE_SIZE = 1024
AUTO_MAX_BATCH = 32


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: DataType
    dims: tuple[int, ...]  # without the batch dimension; -1 = any size
    optional: bool = False


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
    input_index: dict[str, int] = field(default_factory=dict)
    output_index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.input_index = {t.name: i for i, t in enumerate(self.inputs)}
        self.output_index = {t.name: i for i, t in enumerate(self.outputs)}

    @property
    def model_filename(self) -> str:
        return self.config.default_model_filename or MODEL_FILES[self.platform]


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
    platform = config.platform or {"pytorch": PLATFORM_TORCHSCRIPT}.get(config.backend, "")
    if platform:
        return platform
    if version_dir is not None:
        for candidate, filename in MODEL_FILES.items():
            if (version_dir / filename).is_file():
                return candidate
    return ""


def build_spec(name: str, config: mc.ModelConfig) -> ModelSpec:
    """Validate a (completed) config; raises InvalidInput naming the field at fault."""
    where = f"model '{name}' config"
    if config.name and config.name != name:
        raise InvalidInput(f"{where}: name '{config.name}' does not match its folder '{name}'")
    config.name = name
    if config.platform not in MODEL_FILES:
        known = ", ".join(MODEL_FILES)
        raise InvalidInput(f"{where}: platform '{config.platform}' is not served (use {known})")
    if config.max_batch_size < 0:
        raise InvalidInput(f"{where}: max_batch_size must be >= 0")
    if config.WhichOneof("scheduling_choice") in ("sequence_batching", "ensemble_scheduling"):
        raise InvalidInput(
            f"{where}: {config.WhichOneof('scheduling_choice')} is not supported; "
            "use dynamic_batching (ensembles are router traffic policies)"
        )
    if not config.input:
        raise InvalidInput(f"{where}: no inputs declared")
    if not config.output:
        raise InvalidInput(f"{where}: no outputs declared")
    inputs = [
        _tensor(where, "input", t.name, t.data_type, t.dims, t.optional) for t in config.input
    ]
    outputs = [_tensor(where, "output", t.name, t.data_type, t.dims, False) for t in config.output]
    for role, tensors in (("input", inputs), ("output", outputs)):
        names = [t.name for t in tensors]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidInput(f"{where}: duplicate {role} name(s) {duplicates}")

    batching = _batching(where, config)
    count: int = 1
    kind = int(mc.ModelInstanceGroup.KIND_AUTO)
    if config.instance_group:
        count = sum(max(group.count, 1) for group in config.instance_group)
        kind = config.instance_group[0].kind
    return ModelSpec(
        name=name,
        platform=config.platform,
        max_batch_size=config.max_batch_size,
        inputs=inputs,
        outputs=outputs,
        batching=batching,
        instance_count=count,
        device_kind=kind,
        config=config,
    )


def _tensor(
    where: str,
    kind: str,
    name: str,
    data_type: mc.DataType.ValueType,
    dims: object,
    optional: bool,
) -> TensorSpec:
    if not name:
        raise InvalidInput(f"{where}: an {kind} has no name")
    type_name = mc.DataType.Name(data_type)
    if type_name not in datatypes.BY_CONFIG:
        raise InvalidInput(f"{where}: {kind} '{name}' has no data_type")
    shape = tuple(int(d) for d in dims)  # type: ignore[attr-defined]
    if any(d < -1 or d == 0 for d in shape):
        raise InvalidInput(f"{where}: {kind} '{name}' dims {list(shape)} must be > 0 or -1")
    return TensorSpec(name, datatypes.BY_CONFIG[type_name], shape, optional)


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
