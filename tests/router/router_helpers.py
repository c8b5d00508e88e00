"""Request builders and answer readers shared by the router tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from modelport.proto.inference import grpc_service_pb2 as pb


def simple_request(version: str = "", model: str = "simple", rows: int = 1) -> pb.ModelInferRequest:
    a = np.arange(16 * rows, dtype=np.int32).reshape(rows, 16)
    b = np.ones((rows, 16), dtype=np.int32)
    request = pb.ModelInferRequest(model_name=model, model_version=version, id="req-1")
    for name, array in (("INPUT0", a), ("INPUT1", b)):
        tensor = request.inputs.add(name=name, datatype="INT32")
        tensor.shape.extend(array.shape)
        request.raw_input_contents.append(array.tobytes())
    return request


def float_request(array: np.ndarray, model: str = "mlp", version: str = "") -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=model, model_version=version, id="f-1")
    tensor = request.inputs.add(name="INPUT", datatype="FP32")
    tensor.shape.extend(array.shape)
    request.raw_input_contents.append(array.astype(np.float32).tobytes())
    return request


def output(answer: pb.ModelInferResponse, name: str) -> np.ndarray:
    for index, out in enumerate(answer.outputs):
        if out.name == name:
            dtype = np.int32 if out.datatype == "INT32" else np.float32
            raw = np.frombuffer(answer.raw_output_contents[index], dtype=dtype)
            return raw.reshape(tuple(out.shape))
    raise KeyError(name)


async def wait_until(condition: Callable[[], object], seconds: float = 5.0) -> float:
    """Poll until `condition()` holds; returns how long it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def serving(router: Any, model: str, count: int) -> Callable[[], bool]:
    """True once `count` replicas take traffic for `model`."""
    return lambda: len(router.table.candidates(model, "")) >= count
