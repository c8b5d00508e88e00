"""The torch backend: a model loaded with the safe loaders, run on a batch of numpy inputs.

Only graph formats are accepted (`modelport.artifacts.loaders`): torch.export
programs (`.pt2`) and TorchScript archives (`.pt`); a pickled `nn.Module` saved
with `torch.save` is refused.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from modelport.artifacts.config import (
    PLATFORM_AOTI,
    PLATFORM_EXPORT,
    PLATFORM_TORCHSCRIPT,
    ModelSpec,
    TensorSpec,
)
from modelport.artifacts.loaders import (
    load_aoti_package,
    load_exported_module,
    load_torchscript,
)
from modelport.errors import Internal, InvalidInput, Unavailable
from modelport.proto.inference import model_config_pb2 as mc

log = logging.getLogger(__name__)

# Inputs arrive as read-only views of the request bytes (zero copy). Models run
# under inference_mode and do not write to their inputs.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")


class Backend(Protocol):
    """A loaded model: numpy inputs in config order → numpy outputs in config order.

    The model manager takes any backend: `ModelManager(load=...)` with a
    `BackendLoader`; `load_backend` (the torch backend) is the default.
    """

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]: ...


BackendLoader = Callable[[ModelSpec, Path], Backend]


def pick_device(kind: int) -> torch.device:
    if kind == mc.ModelInstanceGroup.KIND_GPU:
        if not torch.cuda.is_available():
            raise Unavailable("instance_group asks for KIND_GPU but no CUDA device is available")
        return torch.device("cuda")
    if kind == mc.ModelInstanceGroup.KIND_AUTO and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def load_backend(spec: ModelSpec, version_dir: Path) -> TorchBackend:
    path = version_dir / spec.model_filename
    if not path.is_file():
        raise InvalidInput(f"model '{spec.name}': no model file {path.name} in {version_dir}")
    device = pick_device(spec.device_kind)
    if spec.platform == PLATFORM_EXPORT:
        module = load_exported_module(path, spec.name)
    elif spec.platform == PLATFORM_TORCHSCRIPT:
        module = load_torchscript(path, spec.name)
    elif spec.platform == PLATFORM_AOTI:
        # Compiled for one device: it runs where it was built, never moved.
        return TorchBackend(spec, load_aoti_package(path, spec.name), device)
    else:  # build_spec has already refused other platforms
        raise InvalidInput(f"model '{spec.name}': platform '{spec.platform}' is not served")
    if device.type != "cpu":
        module = module.to(device)
    return TorchBackend(spec, module, device)


class TorchBackend:
    def __init__(self, spec: ModelSpec, module: torch.nn.Module, device: torch.device) -> None:
        self.spec = spec
        self.module = module
        self.device = device
        self._bf16_inputs = [t.datatype.name == "BF16" for t in spec.inputs]
        self._output_names = [t.name for t in spec.outputs]

    def _to_tensor(self, array: np.ndarray, bf16: bool) -> Any:
        if array.dtype == np.object_:  # BYTES: TorchScript takes List[str]
            return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in array.flat]
        tensor = torch.from_numpy(array)
        if bf16:
            tensor = tensor.view(torch.bfloat16)
        return tensor.to(self.device, non_blocking=True) if self.device.type != "cpu" else tensor

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        args = [self._to_tensor(a, bf16) for a, bf16 in zip(inputs, self._bf16_inputs, strict=True)]
        with torch.inference_mode():
            result = self.module(*args)
        return self._outputs(result)

    def _outputs(self, result: Any) -> list[np.ndarray]:
        if isinstance(result, dict):
            try:
                values = [result[name] for name in self._output_names]
            except KeyError as exc:
                raise Internal(f"model '{self.spec.name}' returned no output {exc}") from None
        elif isinstance(result, (list, tuple)):
            values = list(result)
        else:
            values = [result]
        if len(values) < len(self._output_names):
            raise Internal(
                f"model '{self.spec.name}' returned {len(values)} outputs, "
                f"config declares {len(self._output_names)}"
            )
        arrays = [_to_numpy(v, self.spec.name) for v in values[: len(self._output_names)]]
        return [_as_declared(a, t) for a, t in zip(arrays, self.spec.outputs, strict=True)]


def _as_declared(array: np.ndarray, tensor: TensorSpec) -> np.ndarray:
    """Answer in the datatype the config declares (a model may compute in another)."""
    wanted = tensor.datatype.numpy
    if tensor.datatype.name == "BF16":
        wanted = np.dtype(np.uint16)  # raw bf16 bits, see _to_numpy
    if wanted is None or array.dtype == wanted or array.dtype == np.object_:
        return array
    return array.astype(wanted)


def _to_numpy(value: Any, model: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.view(torch.uint16)  # raw BF16 bits travel as bytes
        return tensor.contiguous().numpy()
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, bytes)) for v in value):
        return np.array([v.encode() if isinstance(v, str) else v for v in value], dtype=np.object_)
    raise Internal(f"model '{model}' returned a {type(value).__name__}, not a tensor")
