"""Answers from numpy arrays to OIP messages: raw contents, classification, shared memory.

A requested output may ask for its top-k classes (`classification`, int64),
or name a shared memory region to be written into; it cannot ask for both.
Every answered output has a `raw_output_contents` entry, empty when the data
went to shared memory, so clients find each output's bytes by position.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from modelport.artifacts.config import ModelSpec
from modelport.errors import InvalidInput
from modelport.inference import classification
from modelport.inference.codec import encode_bytes, shared_memory_reference
from modelport.inference.decoupled import FINAL_PARAMETER
from modelport.inference.shared_memory import SystemSharedMemory
from modelport.proto.inference import grpc_service_pb2 as pb


@dataclass(frozen=True, slots=True)
class Wanted:
    """One output to answer: its index in the config, and how."""

    index: int
    class_count: int = 0
    region: tuple[str, int, int] | None = None  # (name, offset, byte size)


def requested_outputs(
    request: pb.ModelInferRequest, spec: ModelSpec, shm: SystemSharedMemory | None = None
) -> list[Wanted] | None:
    """The outputs asked for (None: all of them, as raw contents), checked."""
    if not request.outputs:
        return None
    wanted = []
    for output in request.outputs:
        index = spec.output_index.get(output.name)
        if index is None:
            known = ", ".join(spec.output_index)
            raise InvalidInput(
                f"model '{spec.name}': unknown output '{output.name}' (outputs: {known})"
            )
        region = shared_memory_reference(output, "output")
        count = 0
        if classification.PARAMETER in output.parameters:
            param = output.parameters[classification.PARAMETER]
            choice = param.WhichOneof("parameter_choice")
            value = getattr(param, choice) if choice else None
            count = classification.check_count(output.name, value if choice == "int64_param"
                                               else str(value))  # fmt: skip
            if region is not None:
                raise InvalidInput(
                    "output can't set both 'shared_memory_region' and 'classification'"
                )
        if region is not None:
            if shm is None:
                raise InvalidInput(f"model '{spec.name}': shared memory is not offered here")
            shm.check(*region)
        wanted.append(Wanted(index, count, region))
    return wanted


def build_response(
    request: pb.ModelInferRequest,
    spec: ModelSpec,
    version: int,
    outputs: Sequence[np.ndarray],
    wanted: list[Wanted] | None,
    shm: SystemSharedMemory | None = None,
    *,
    final: bool | None = None,
) -> pb.ModelInferResponse:
    """The response message; `final` set adds Triton's `triton_final_response` flag."""
    response = pb.ModelInferResponse(
        model_name=spec.name, model_version=str(version), id=request.id
    )
    if request.parameters:  # saves an iterator on the hot path
        for key, value in request.parameters.items():
            response.parameters[key].CopyFrom(value)
    if final is not None:
        response.parameters[FINAL_PARAMETER].bool_param = final
    raw = response.raw_output_contents
    batched = spec.max_batch_size > 0
    for item in wanted if wanted is not None else [Wanted(i) for i in range(len(spec.outputs))]:
        out_spec = spec.outputs[item.index]
        array = outputs[item.index]
        datatype = out_spec.datatype.name
        if item.class_count:
            array = classification.classify(
                array, item.class_count, batched=batched,
                labels=spec.labels.get(out_spec.name, ()), datatype=datatype,
            )  # fmt: skip
            datatype = "BYTES"
        response.outputs.add(name=out_spec.name, datatype=datatype, shape=array.shape)
        data = encode_bytes(array) if array.dtype == np.object_ else array
        if item.region is not None:
            assert shm is not None  # requested_outputs checked it
            size = len(data) if isinstance(data, bytes) else data.nbytes
            if size > item.region[2]:
                raise InvalidInput(
                    f"shared memory size specified with the request for output "
                    f"'{out_spec.name}' ({item.region[2]} bytes) should be at least {size} "
                    "bytes to hold the results"
                )
            shm.write(*item.region, data if isinstance(data, bytes) else np.ascontiguousarray(data))
            raw.append(b"")
        else:
            raw.append(data if isinstance(data, bytes) else data.tobytes())
    return response


def final_only(request: pb.ModelInferRequest) -> pb.ModelInferResponse:
    """The empty response that carries only a decoupled request's final flag."""
    response = pb.ModelInferResponse(
        model_name=request.model_name, model_version=request.model_version, id=request.id
    )
    response.parameters[FINAL_PARAMETER].bool_param = True
    return response
