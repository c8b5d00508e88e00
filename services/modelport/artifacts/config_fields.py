"""Which fields of a Triton config modelport acts on; every other one is refused.

The config parses against Triton's whole schema, so a Triton repository never
meets a parser error. But a field that parses and then does nothing would be a
silent lie (a rate limiter that limits nothing, a response cache that caches
nothing), so the first field set to a non-default value that modelport does not
act on fails the load, naming the field and what to do instead.
"""

from __future__ import annotations

from collections.abc import Iterator

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from modelport.errors import InvalidInput
from modelport.proto.inference import model_config_pb2 as mc

# Dotted paths (repeated fields and maps without an index) modelport acts on.
# A path stands for itself and everything below it.
ACTED_ON = frozenset(
    {
        "name",
        "platform",
        "backend",
        "version_policy",
        "max_batch_size",
        "input.name",
        "input.data_type",
        "input.format",  # describes the layout for clients (image clients read it)
        "input.dims",
        "input.reshape",
        "input.optional",
        "output.name",
        "output.data_type",
        "output.dims",
        "output.reshape",
        "output.label_filename",
        "dynamic_batching.preferred_batch_size",
        "dynamic_batching.max_queue_delay_microseconds",
        "dynamic_batching.default_queue_policy.max_queue_size",
        "dynamic_batching.default_queue_policy.default_timeout_microseconds",
        "sequence_batching",  # checked field by field in sequences.py
        "ensemble_scheduling.step.model_name",
        "ensemble_scheduling.step.model_version",
        "ensemble_scheduling.step.input_map",
        "ensemble_scheduling.step.output_map",
        "ensemble_scheduling.max_inflight_requests",
        "instance_group.name",
        "instance_group.kind",
        "instance_group.count",
        "instance_group.gpus",
        "default_model_filename",
        "model_transaction_policy.decoupled",
        "parameters",  # by key: MODEL_PARAMETERS
    }
)
# Model parameters the torch backend reads, by the names Triton's PyTorch backend uses.
MODEL_PARAMETERS = frozenset({"INTRA_OP_THREAD_COUNT"})

# What to do instead, by the top field (or a deeper one) a config sets.
INSTEAD = {
    "runtime": "modelport runs torch models itself; remove it",
    "input.is_shape_tensor": "shape tensors are a TensorRT feature; remove it",
    "output.is_shape_tensor": "shape tensors are a TensorRT feature; remove it",
    "input.is_non_linear_format_io": "a TensorRT feature; remove it",
    "output.is_non_linear_format_io": "a TensorRT feature; remove it",
    "input.allow_ragged_batch": "ragged batching is not offered; pad requests to one shape",
    "batch_input": "ragged batching is not offered; pad requests to one shape",
    "batch_output": "ragged batching is not offered; pad requests to one shape",
    "optimization": "torch models run as exported; remove it (use --torch-threads for CPU threads)",
    "dynamic_batching.preserve_ordering": "each request is answered when its batch is done; "
    "remove it",
    "dynamic_batching.priority_levels": "one queue per model; remove priorities",
    "dynamic_batching.default_priority_level": "one queue per model; remove priorities",
    "dynamic_batching.priority_queue_policy": "one queue per model; remove priorities",
    "dynamic_batching.default_queue_policy.timeout_action": "a request past its timeout is "
    "rejected (REJECT); remove DELAY",
    "dynamic_batching.default_queue_policy.allow_timeout_override": "set a gRPC deadline on "
    "the request instead",
    "ensemble_scheduling.step.model_namespace": "one namespace per server; remove it",
    "instance_group.rate_limiter": "no rate limiter; bound the queue with "
    "default_queue_policy.max_queue_size",
    "instance_group.secondary_devices": "no secondary devices; remove it",
    "instance_group.profile": "a TensorRT feature; remove it",
    "instance_group.passive": "every instance serves; remove it",
    "instance_group.host_policy": "remove it (use --torch-threads)",
    "cc_model_filenames": "one model file per version (default_model_filename)",
    "metric_tags": "metrics carry model and version labels; remove it",
    "parameters": "the torch backend takes no model parameters but INTRA_OP_THREAD_COUNT "
    "(use --torch-threads)",
    "model_warmup": "every model is warmed up at load with zero inputs at batch 1 and "
    "max_batch_size; remove it",
    "model_operations": "custom operation libraries are not loaded (nothing but the model "
    "archive is run); remove it",
    "model_repository_agents": "repository agents are not run; remove it",
    "response_cache": "responses are not cached; remove it",
    "model_metrics": "metrics are fixed (see /metrics); remove it",
}


def refuse_unused_fields(name: str, config: mc.ModelConfig, *, parameters: bool = False) -> None:
    """Raise InvalidInput for the first field set that modelport does not act on.

    `parameters`: the config's `parameters` are acted on (a generative model's limits);
    otherwise only the keys in MODEL_PARAMETERS are.
    """
    if not parameters:
        for key in sorted(config.parameters):
            if key not in MODEL_PARAMETERS:
                raise InvalidInput(
                    f"model '{name}' config: parameters['{key}'] is not supported by "
                    f"modelport ({INSTEAD['parameters']})"
                )
    for path in _set_paths(config, ""):
        if _acted_on(path) or (parameters and path.startswith("parameters")):
            continue
        reason = _instead(path)
        raise InvalidInput(
            f"model '{name}' config: {path} is not supported by modelport ({reason})"
        )


def _acted_on(path: str) -> bool:
    parts = path.split(".")
    return any(".".join(parts[:i]) in ACTED_ON for i in range(1, len(parts) + 1))


def _instead(path: str) -> str:
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        reason = INSTEAD.get(".".join(parts[:i]))
        if reason is not None:
            return reason
    return "remove it"


def _set_paths(message: Message, prefix: str) -> Iterator[str]:
    """Dotted paths of every leaf field holding a non-default value."""
    for descriptor, value in message.ListFields():
        path = f"{prefix}{descriptor.name}"
        if descriptor.message_type is None:
            yield path
            continue
        if descriptor.message_type.GetOptions().map_entry:
            entry_type = descriptor.message_type.fields_by_name["value"].message_type
            if entry_type is None:
                yield path
            else:
                for item in value.values():
                    yield from _message_paths(item, path)
            continue
        items = value if _repeated(descriptor) else [value]
        for item in items:
            yield from _message_paths(item, path)


def _repeated(descriptor: FieldDescriptor) -> bool:
    # protobuf 7 has only `is_repeated`; 5.x has only `label`.
    if hasattr(descriptor, "is_repeated"):
        return bool(descriptor.is_repeated)
    return bool(getattr(descriptor, "label", None) == descriptor.LABEL_REPEATED)


def _message_paths(message: Message, path: str) -> Iterator[str]:
    inner = list(_set_paths(message, f"{path}."))
    # A message present with nothing set in it does nothing (`response_cache {}`)
    # unless its presence is the setting itself (`dynamic_batching {}`).
    yield from inner
    if not inner and _acted_on(path):
        yield path
