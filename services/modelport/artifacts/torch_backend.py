"""The torch backend: a model loaded with the safe loaders, run on a batch of numpy inputs.

Only graph formats are accepted (`modelport.artifacts.loaders`): torch.export
programs (`.pt2`) and TorchScript archives (`.pt`); a pickled `nn.Module` saved
with `torch.save` is refused.

Inputs are bound to the model's forward arguments by name when the names match
(the config's, plus the control and state inputs a sequence model gets), by
Triton's `INPUT__<i>` convention, or else by position in config order. BYTES
become (nested) lists of str for TorchScript. Every output is converted to the
declared type and checked against the declared shape before it is answered.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from modelport.artifacts import torch_values
from modelport.artifacts.config import (
    PLATFORM_AOTI,
    PLATFORM_EXPORT,
    PLATFORM_TORCHSCRIPT,
    ModelSpec,
)
from modelport.artifacts.loaders import (
    Source,
    load_aoti_package,
    load_exported_module,
    load_torchscript,
)
from modelport.artifacts.sealed_archives import SealedArchive
from modelport.errors import FailedPrecondition, Internal, InvalidInput, Unavailable
from modelport.proto.inference import model_config_pb2 as mc

log = logging.getLogger(__name__)

# Inputs arrive as read-only views of the request bytes (zero copy). Models run
# under inference_mode and do not write to their inputs.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
_ORDINAL = re.compile(r"^(INPUT|OUTPUT)__(\d+)$")


class Backend(Protocol):
    """A loaded model: numpy inputs in config order → numpy outputs in config order.

    The model manager takes any backend: `ModelManager(load=...)` with a
    `BackendLoader`; `load_backend` (the torch backend) is the default.
    """

    def run(self, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]: ...


@runtime_checkable
class NamedBackend(Backend, Protocol):
    """A backend that also runs on inputs by name and answers every output by name,
    control and state tensors included: what a sequence model needs."""

    def run_named(self, inputs: Mapping[str, np.ndarray | None]) -> dict[str, np.ndarray]: ...


BackendLoader = Callable[[ModelSpec, Path], Backend]


def close_backend(backend: object) -> None:
    """Release what a backend holds beyond memory (a compute backend's processes)."""
    close = getattr(backend, "close", None)
    if close is not None:
        close()


def pick_device(kind: int, index: int | None = None) -> torch.device:
    """KIND_CPU: the CPU; KIND_GPU: a GPU (index from instance_group.gpus) or fail;
    KIND_AUTO: a GPU when there is one."""
    if kind == mc.ModelInstanceGroup.KIND_CPU:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if kind == mc.ModelInstanceGroup.KIND_GPU:
            raise Unavailable("instance_group asks for KIND_GPU but no CUDA device is available")
        return torch.device("cpu")
    if index is None:
        return torch.device("cuda")
    if index >= torch.cuda.device_count():
        raise Unavailable(
            f"instance_group asks for GPU {index}; this host has {torch.cuda.device_count()}"
        )
    return torch.device("cuda", index)


def load_backend(spec: ModelSpec, version_dir: Path) -> TorchBackend:
    path = version_dir / spec.model_filename
    if not path.is_file():
        raise InvalidInput(f"model '{spec.name}': no model file {path.name} in {version_dir}")
    return load_backend_from(spec, path)


def load_backend_from(
    spec: ModelSpec, source: Source, *, unpack_into: Path | None = None
) -> TorchBackend:
    """The backend for a model file on disk, or read from a file object (an
    encrypted archive decrypting as torch reads it). An AOTInductor package is
    a file, which torch unpacks under `unpack_into` when given."""
    device = pick_device(spec.device_kind, spec.device_index)
    if spec.platform == PLATFORM_EXPORT:
        module = load_exported_module(source, spec.name)
    elif spec.platform == PLATFORM_TORCHSCRIPT:
        module = load_torchscript(source, spec.name)
    elif spec.platform == PLATFORM_AOTI:
        if not isinstance(source, Path):
            # A compiled shared library is loaded (dlopen) from a file, never a stream.
            raise FailedPrecondition(
                f"model '{spec.name}': an AOTInductor package is loaded from a file "
                "(its shared library), not from a stream (see sealed_backend)"
            )
        # Compiled for one device: it runs where it was built, never moved.
        return TorchBackend(spec, load_aoti_package(source, spec.name, unpack_into), device)
    else:  # build_spec has already refused other platforms
        raise InvalidInput(f"model '{spec.name}': platform '{spec.platform}' is not served")
    if device.type != "cpu":
        module = module.to(device)
    return TorchBackend(spec, module, device)


@contextlib.contextmanager
def sealed_backend(spec: ModelSpec, archive: SealedArchive) -> Iterator[TorchBackend]:
    """The backend for a version kept in an encrypted archive, no plaintext on disk;
    warm it up inside the block.

    Graph formats are read through the decrypting reader. An AOTInductor package's
    shared library must be a file to be loaded: the version is decrypted into a
    private folder on a memory filesystem, torch unpacks the library there too, and
    the folder goes when the block ends (the library's mapping outlives the file;
    a CUDA package's kernel binaries are read at their first run, the warm-up's).
    """
    if spec.platform == PLATFORM_AOTI:
        with archive.version_in_memory() as folder:
            yield load_backend_from(spec, folder / spec.model_filename, unpack_into=folder)
        return
    with archive.open(spec.model_filename) as model_file:
        backend = load_backend_from(spec, model_file)
    yield backend


def forward_arguments(module: Any) -> list[tuple[str, str]]:
    """(name, type) of the forward arguments, self excluded; types known for TorchScript.

    None known (bound by position) for a callable without a forward, such as an
    AOTInductor package."""
    forward = getattr(module, "forward", None)
    if forward is None:
        return []
    schema = getattr(forward, "schema", None)
    if schema is not None:
        return [(a.name, str(a.type)) for a in schema.arguments[1:]]
    try:
        parameters = inspect.signature(forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [(p.name, "") for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD]


def bind(model: str, names: list[str], arguments: list[tuple[str, str]]) -> list[int]:
    """For each forward argument, the index in `names` of the tensor it takes."""
    params = [name for name, _ in arguments]
    if params and sorted(params) == sorted(names):
        return [names.index(p) for p in params]
    ordinals = [_ORDINAL.match(n) for n in names]
    if all(ordinals) and sorted(int(m.group(2)) for m in ordinals if m) == list(range(len(names))):
        by_position = {int(m.group(2)): i for i, m in enumerate(ordinals) if m}
        return [by_position[p] for p in range(len(names))]
    if params and len(params) != len(names):
        raise InvalidInput(
            f"model '{model}': its forward takes {len(params)} inputs {params}, the config "
            f"gives {len(names)} {names} (name them as the forward arguments, or INPUT__<i>)"
        )
    return list(range(len(names)))


class TorchBackend:
    def __init__(self, spec: ModelSpec, module: torch.nn.Module, device: torch.device) -> None:
        self.spec = spec
        self.module = module
        self.device = device
        self._input_names = spec.model_inputs
        self._output_names = spec.model_outputs
        arguments = forward_arguments(module)
        self._order = bind(spec.name, self._input_names, arguments)
        types = dict(arguments)
        self._byte_tensors = {n for n in self._input_names
                              if torch_values.takes_byte_tensors(types.get(n, ""))}  # fmt: skip
        self._string_depth = {
            name: max(torch_values.string_depth(types.get(name, "")), 1)
            for name in self._input_names
        }
        declared = {t.name: t for t in (*spec.inputs, *spec.outputs)}
        self._bf16 = {n for n, t in declared.items() if t.datatype.name == "BF16"}
        self._in_reshape = {t.name: t.reshape for t in spec.inputs if t.reshape is not None}
        self._outputs_by_name = {t.name: t for t in spec.outputs}

    # -- calls --------------------------------------------------------------------

    def run(self, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        """Inputs in config order (None: an optional input left out) → outputs in config order."""
        named = dict(zip(self._input_names, inputs, strict=False))
        outputs = self.run_named(named)
        return [outputs[t.name] for t in self.spec.outputs]

    def run_named(self, inputs: Mapping[str, np.ndarray | None]) -> dict[str, np.ndarray]:
        rows = self._rows(inputs)
        values = [inputs.get(name) for name in self._input_names]
        args = [self._argument(self._input_names[i], values[i], rows) for i in self._order]
        with torch.inference_mode():
            result = self.module(*args)
        return self._outputs(result, rows)

    def _rows(self, inputs: Mapping[str, np.ndarray | None]) -> int | None:
        if self.spec.max_batch_size == 0:
            return None
        first = next((a for a in inputs.values() if a is not None), None)
        return int(first.shape[0]) if first is not None and first.ndim else None

    def _argument(self, name: str, array: np.ndarray | None, rows: int | None) -> Any:
        if array is None:
            return None
        if array.dtype == np.object_:  # BYTES: (nested) List[str], or List[Tensor] of uint8
            if name in self._byte_tensors:
                tensors = torch_values.byte_tensors_in(array)
                if self.device.type != "cpu":
                    tensors = [t.to(self.device, non_blocking=True) for t in tensors]
                return tensors
            return torch_values.strings_in(array, self._string_depth[name], self.spec.name, name)
        reshape = self._in_reshape.get(name)
        if reshape is not None:
            array = array.reshape(((rows,) if rows is not None else ()) + reshape)
        tensor = torch.from_numpy(array)
        if name in self._bf16:
            tensor = tensor.view(torch.bfloat16)
        return tensor.to(self.device, non_blocking=True) if self.device.type != "cpu" else tensor

    # -- results ------------------------------------------------------------------

    def _outputs(self, result: Any, rows: int | None) -> dict[str, np.ndarray]:
        names = self._output_names
        if isinstance(result, dict):
            missing = [n for n in names if n not in result]
            if missing:
                raise Internal(f"model '{self.spec.name}' returned no output {missing}")
            values = [result[n] for n in names]
        elif isinstance(result, tuple):
            values = list(result)
        elif isinstance(result, list):
            # A list is the outputs, unless it is the one BYTES output itself
            # (List[str], or List[Tensor] of uint8).
            first = self._outputs_by_name.get(names[0])
            one_bytes = len(names) == 1 and first is not None and first.datatype.name == "BYTES"
            values = [result] if one_bytes or torch_values.is_strings(result) else list(result)
        else:  # one tensor
            values = [result]
        if len(values) < len(names):
            raise Internal(
                f"model '{self.spec.name}' returned {len(values)} outputs, "
                f"it needs {len(names)} ({', '.join(names)})"
            )
        return {n: self._output(n, v, rows) for n, v in zip(names, values, strict=False)}

    def _output(self, name: str, value: Any, rows: int | None) -> np.ndarray:
        declared = self._outputs_by_name.get(name)
        if declared is None:  # an implicit state output the config does not list
            return _tensor_to_numpy(value, self.spec.name, name)
        prefix = ([-1] if self.spec.decoupled else []) + ([rows] if rows is not None else [])
        if declared.datatype.name == "BYTES":
            value = torch_values.byte_tensors_out(value) or value
            if not torch_values.is_strings(value):
                raise Internal(f"model '{self.spec.name}' output '{name}' is BYTES; the model "
                               f"returned a {type(value).__name__}, not a list of str")  # fmt: skip
            array = torch_values.strings_out(value, prefix + list(declared.dims),
                                             self.spec.name, name)  # fmt: skip
        else:
            array = _tensor_to_numpy(value, self.spec.name, name)
            if declared.reshape is not None:
                lead = array.shape[: len(prefix)]
                torch_values.check_shape(array, prefix + list(declared.reshape),
                                         self.spec.name, name)  # fmt: skip
                array = array.reshape(lead + declared.dims)
            array = _as_declared(array, declared.datatype.numpy, declared.datatype.name)
        torch_values.check_shape(array, prefix + list(declared.dims), self.spec.name, name)
        return array


def _as_declared(array: np.ndarray, wanted: np.dtype | None, name: str) -> np.ndarray:
    """Answer in the datatype the config declares (a model may compute in another)."""
    if name == "BF16":
        wanted = np.dtype(np.uint16)  # raw bf16 bits, see _tensor_to_numpy
    if wanted is None or array.dtype == wanted:
        return array
    return array.astype(wanted)


def _tensor_to_numpy(value: Any, model: str, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.view(torch.uint16)  # raw BF16 bits travel as bytes
        return tensor.contiguous().numpy()
    raise Internal(f"model '{model}' output '{name}': returned a {type(value).__name__}, "
                   "not a tensor")  # fmt: skip
