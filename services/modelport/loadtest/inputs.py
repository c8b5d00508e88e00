"""The requests a load test sends, built once and serialized once.

Three sources: random tensors shaped and typed from the model's metadata,
`.npy` files, or a JSON file of requests in perf_analyzer's `--input-data`
layout (`{"data": [{"INPUT0": [..], "INPUT1": {"content": [..], "shape": [..]}}]}`),
so existing perf_analyzer data files work unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelport.artifacts.datatypes import NUMPY_OF
from modelport.client.codec import build_request
from modelport.proto.inference import grpc_service_pb2 as pb

# Distinct random requests to cycle through: enough to defeat any response cache,
# few enough to build in well under a second.
RANDOM_VARIANTS = 16


class InputError(ValueError):
    """The inputs asked for do not fit the model (name, shape or datatype)."""


def parse_shapes(values: Sequence[str]) -> dict[str, list[int]]:
    """`INPUT0:1,256` -> {"INPUT0": [1, 256]}."""
    shapes: dict[str, list[int]] = {}
    for value in values:
        name, sep, dims = value.partition(":")
        try:
            shapes[name] = [int(d) for d in dims.split(",") if d.strip()]
        except ValueError:
            raise InputError(f"--shape {value!r}: expected NAME:D1,D2,...") from None
        if not sep or not shapes[name]:
            raise InputError(f"--shape {value!r}: expected NAME:D1,D2,...")
    return shapes


def concrete_shape(tensor: Any, overrides: Mapping[str, list[int]]) -> list[int]:
    """The metadata shape with every variable (-1) dimension set to 1, unless overridden."""
    if tensor.name in overrides:
        shape = list(overrides[tensor.name])
        declared = list(tensor.shape)
        if len(shape) != len(declared) or any(
            d != -1 and d != s for d, s in zip(declared, shape, strict=True)
        ):
            raise InputError(f"--shape {tensor.name}: {shape} does not fit the model's {declared}")
        return shape
    return [1 if d < 0 else int(d) for d in tensor.shape]


def random_array(datatype: str, shape: list[int], rng: np.random.Generator) -> np.ndarray:
    """Values a real caller might send: unit-normal floats, small non-negative ints
    (ids, token indices, pixels), short ASCII strings; never raw random bits (NaNs,
    denormals and huge integers take slow paths a real workload would not)."""
    if datatype in ("FP16", "FP32", "FP64", "BF16"):
        return rng.standard_normal(shape).astype(
            np.float32 if datatype == "BF16" else NUMPY_OF[datatype]
        )
    if datatype == "BOOL":
        return rng.random(shape) < 0.5
    if datatype == "BYTES":
        words = rng.integers(0, 10_000, size=shape)
        out = np.empty(shape, dtype=object)
        out.reshape(-1)[:] = [f"sample-{w}".encode() for w in words.reshape(-1)]
        return out
    dtype = NUMPY_OF.get(datatype)
    if dtype is None:
        raise InputError(f"datatype {datatype} cannot be generated")
    high = 256 if dtype.itemsize == 1 and dtype.kind == "u" else 100
    return rng.integers(0, high, size=shape).astype(dtype)


def random_requests(
    metadata: pb.ModelMetadataResponse,
    *,
    version: str = "",
    shapes: Mapping[str, list[int]] | None = None,
    variants: int = RANDOM_VARIANTS,
    seed: int = 0,
) -> list[pb.ModelInferRequest]:
    rng = np.random.default_rng(seed)
    unknown = set(shapes or {}) - {t.name for t in metadata.inputs}
    if unknown:
        raise InputError(f"--shape names unknown inputs {sorted(unknown)} of '{metadata.name}'")
    requests = []
    for _ in range(variants):
        arrays = {
            t.name: random_array(t.datatype, concrete_shape(t, shapes or {}), rng)
            for t in metadata.inputs
        }
        datatypes = {t.name: t.datatype for t in metadata.inputs}
        requests.append(build_request(metadata.name, arrays, version=version, datatypes=datatypes))
    return requests


def _datatypes(metadata: pb.ModelMetadataResponse | None) -> dict[str, str]:
    return {t.name: t.datatype for t in metadata.inputs} if metadata is not None else {}


def npy_requests(
    model: str,
    files: Mapping[str, Path],
    *,
    version: str = "",
    metadata: pb.ModelMetadataResponse | None = None,
) -> list[pb.ModelInferRequest]:
    """One request whose inputs are loaded from .npy files (never pickles)."""
    arrays = {name: np.load(path, allow_pickle=False) for name, path in files.items()}
    return [build_request(model, arrays, version=version, datatypes=_datatypes(metadata))]


def _json_tensor(name: str, value: Any, datatype: str, declared: list[int]) -> np.ndarray:
    if isinstance(value, dict):
        content, shape = value.get("content", value.get("b64")), value.get("shape")
    else:
        content, shape = value, None
    if datatype == "BYTES":
        flat = np.asarray(content, dtype=object).reshape(-1)
        array = np.array([str(v).encode() for v in flat], dtype=object)
    else:
        dtype = np.float32 if datatype == "BF16" else NUMPY_OF.get(datatype)
        array = np.asarray(content, dtype=dtype)
    if shape is None:  # perf_analyzer: flat data takes the model's shape (-1 → 1)
        shape = [1 if d < 0 else d for d in declared] if declared else list(array.shape)
    try:
        return array.reshape(shape)
    except ValueError:
        raise InputError(f"input {name}: {array.size} values do not fill shape {shape}") from None


def json_requests(
    path: Path,
    model: str,
    *,
    version: str = "",
    metadata: pb.ModelMetadataResponse | None = None,
) -> list[pb.ModelInferRequest]:
    document = json.loads(Path(path).read_text())
    entries = document.get("data") if isinstance(document, dict) else document
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{path}: expected {{'data': [{{input: values}}, ...]}}")
    declared = {t.name: (t.datatype, list(t.shape)) for t in metadata.inputs} if metadata else {}
    requests = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InputError(f"{path}: data[{index}] is not an object of inputs")
        arrays, datatypes = {}, {}
        for name, value in entry.items():
            datatype, shape = declared.get(name, ("FP32", []))
            if isinstance(value, dict) and "datatype" in value:
                datatype = value["datatype"]
            arrays[name] = _json_tensor(name, value, datatype, shape)
            datatypes[name] = datatype
        requests.append(build_request(model, arrays, version=version, datatypes=datatypes))
    return requests


def serialize(requests: Sequence[pb.ModelInferRequest]) -> list[bytes]:
    return [request.SerializeToString() for request in requests]
