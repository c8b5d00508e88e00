"""ModelInfer messages ↔ `Tensor`s, for the only policies that look at tensors.

The datatype table is the shared, torch-free one in `modelport.artifacts`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modelport.artifacts.datatypes import CONTENTS_FIELD, NUMPY_OF
from modelport.errors import InvalidInput
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.router.forwarding import DecodedRequest
from modelport.router.policies import Target
from modelport.router.tensors import Tensor


def _array(
    model: str,
    name: str,
    datatype: str,
    shape: Sequence[int],
    raw: bytes | None,
    contents: pb.InferTensorContents,
) -> np.ndarray:
    dtype = NUMPY_OF.get(datatype)
    if dtype is None:
        raise InvalidInput(
            f"model '{model}': tensor '{name}' is {datatype}; ensemble and scatter "
            "handle fixed-size numeric types only"
        )
    if raw is not None:
        flat = np.frombuffer(raw, dtype=dtype)
    else:
        field = CONTENTS_FIELD.get(datatype)
        values = getattr(contents, field) if field else []
        flat = np.asarray(values, dtype=dtype)
    count = int(np.prod(shape)) if len(shape) else 1
    if flat.size != count:
        raise InvalidInput(
            f"model '{model}': tensor '{name}' has {flat.size} elements for shape {list(shape)}"
        )
    return flat.reshape(tuple(shape))


class ProtobufCodec:
    def decode_request(self, request: bytes) -> DecodedRequest:
        message = pb.ModelInferRequest.FromString(request)
        raw = list(message.raw_input_contents)
        inputs = []
        for index, tensor in enumerate(message.inputs):
            inputs.append(
                Tensor(
                    tensor.name,
                    tensor.datatype,
                    _array(
                        message.model_name,
                        tensor.name,
                        tensor.datatype,
                        tensor.shape,
                        raw[index] if raw else None,
                        tensor.contents,
                    ),
                )
            )
        return DecodedRequest(
            message.model_name, message.model_version, message.id, inputs, message
        )

    def encode_request(
        self, original: DecodedRequest, target: Target, inputs: Sequence[Tensor]
    ) -> bytes:
        message = pb.ModelInferRequest()
        message.CopyFrom(original.message)
        message.model_name = target.model
        message.model_version = target.version
        del message.inputs[:]
        del message.raw_input_contents[:]
        for source, tensor in zip(original.message.inputs, inputs, strict=True):
            entry = message.inputs.add(name=tensor.name, datatype=tensor.datatype)
            entry.shape.extend(tensor.array.shape)
            for key, value in source.parameters.items():
                entry.parameters[key].CopyFrom(value)
            message.raw_input_contents.append(np.ascontiguousarray(tensor.array).tobytes())
        return message.SerializeToString()

    def decode_response(self, response: bytes) -> list[Tensor]:
        message = pb.ModelInferResponse.FromString(response)
        raw = list(message.raw_output_contents)
        return [
            Tensor(
                out.name,
                out.datatype,
                _array(
                    message.model_name,
                    out.name,
                    out.datatype,
                    out.shape,
                    raw[index] if raw else None,
                    out.contents,
                ),
            )
            for index, out in enumerate(message.outputs)
        ]

    def encode_response(
        self, model: str, version: str, request_id: str, outputs: Sequence[Tensor]
    ) -> bytes:
        message = pb.ModelInferResponse(model_name=model, model_version=version, id=request_id)
        for tensor in outputs:
            entry = message.outputs.add(name=tensor.name, datatype=tensor.datatype)
            entry.shape.extend(tensor.array.shape)
            message.raw_output_contents.append(np.ascontiguousarray(tensor.array).tobytes())
        return message.SerializeToString()
