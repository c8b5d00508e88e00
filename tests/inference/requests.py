"""Helpers that build OIP requests for tests, so tests read as data."""

from __future__ import annotations

import numpy as np
from modelport.proto.inference import grpc_service_pb2 as pb

Tensor = pb.ModelInferRequest.InferInputTensor


def raw_request(
    model: str, inputs: dict[str, tuple[str, np.ndarray]], **fields: object
) -> pb.ModelInferRequest:
    """inputs: name -> (datatype, array); raw_input_contents in the same order."""
    request = pb.ModelInferRequest(model_name=model, **fields)  # type: ignore[arg-type]
    for name, (datatype, array) in inputs.items():
        request.inputs.append(Tensor(name=name, datatype=datatype, shape=array.shape))
        request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
    return request


def simple_request(a: np.ndarray, b: np.ndarray, **fields: object) -> pb.ModelInferRequest:
    return raw_request("simple", {"INPUT0": ("INT32", a), "INPUT1": ("INT32", b)}, **fields)


def mlp_request(x: np.ndarray, **fields: object) -> pb.ModelInferRequest:
    return raw_request("mlp", {"INPUT": ("FP32", x)}, **fields)


def output(response: pb.ModelInferResponse, name: str, dtype: object) -> np.ndarray:
    for index, tensor in enumerate(response.outputs):
        if tensor.name == name:
            data = np.frombuffer(response.raw_output_contents[index], dtype=dtype)  # type: ignore[call-overload]
            return data.reshape(tuple(tensor.shape))
    raise KeyError(name)
