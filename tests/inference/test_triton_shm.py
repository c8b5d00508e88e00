"""System shared memory RPCs and inference through /dev/shm regions (tier 2)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from modelport.inference.shared_memory import SHM_ROOT
from modelport.proto.inference import grpc_service_pb2 as pb

from tests.inference.requests import Tensor

A = np.arange(16, dtype=np.int32)
B = np.ones(16, dtype=np.int32)


@pytest.fixture
def region_files() -> Iterator[tuple[str, str]]:
    """Two shared memory objects as a client makes them: inputs, outputs (128 bytes each)."""
    names = [f"modelport-test-{uuid.uuid4().hex[:10]}" for _ in range(2)]
    (SHM_ROOT / names[0]).write_bytes(A.tobytes() + B.tobytes())
    (SHM_ROOT / names[1]).write_bytes(bytes(128))
    yield f"/{names[0]}", f"/{names[1]}"
    for name in names:
        (SHM_ROOT / name).unlink(missing_ok=True)


def in_region(tensor: Tensor | pb.ModelInferRequest.InferRequestedOutputTensor, region: str,
              offset: int, size: int) -> None:  # fmt: skip
    tensor.parameters["shared_memory_region"].string_param = region
    tensor.parameters["shared_memory_offset"].int64_param = offset
    tensor.parameters["shared_memory_byte_size"].int64_param = size


def shm_request(out_size: int = 64) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="simple")
    for index, name in enumerate(("INPUT0", "INPUT1")):
        tensor = Tensor(name=name, datatype="INT32", shape=[1, 16])
        in_region(tensor, "inputs", 64 * index, 64)
        request.inputs.append(tensor)
    for index, name in enumerate(("OUTPUT0", "OUTPUT1")):
        in_region(request.outputs.add(name=name), "outputs", 64 * index, out_size)
    return request


async def test_tensors_pass_through_registered_regions(
    triton_repo: Path, inference_server, stub_for, region_files: tuple[str, str]
) -> None:
    app = await inference_server(triton_repo, model_control_mode="explicit",
                                 load_models=["simple"], allow_shared_memory=True)  # fmt: skip
    stub = stub_for(app.address)
    inputs_key, outputs_key = region_files
    for name, key in (("inputs", inputs_key), ("outputs", outputs_key)):
        await stub.SystemSharedMemoryRegister(
            pb.SystemSharedMemoryRegisterRequest(name=name, key=key, offset=0, byte_size=128)
        )
    status = await stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest())
    assert {n: (r.key, r.byte_size) for n, r in status.regions.items()} == {
        "inputs": (inputs_key, 128),
        "outputs": (outputs_key, 128),
    }
    response = await stub.ModelInfer(shm_request())
    assert [(o.name, list(o.shape)) for o in response.outputs] == [
        ("OUTPUT0", [1, 16]),
        ("OUTPUT1", [1, 16]),
    ]
    assert list(response.raw_output_contents) == [b"", b""]  # the data went to the region
    written = np.frombuffer((SHM_ROOT / outputs_key[1:]).read_bytes(), np.int32)
    assert written[:16].tolist() == (A + B).tolist() and written[16:].tolist() == (A - B).tolist()

    errors = [
        (shm_request(out_size=32), "should be at least 64 bytes to hold the results"),
        (_with(shm_request(), 0, offset=96), "Invalid offset + byte size"),
        (_with(shm_request(), 1, region="nope"), "Unable to find shared memory region: 'nope'"),
    ]
    for request, text in errors:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.ModelInfer(request)
        assert text in err.value.details(), err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(
            name="big", key=inputs_key, offset=64, byte_size=128))  # fmt: skip
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await stub.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest())
    status = await stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest())
    assert not status.regions

    # CUDA shared memory: nothing registered, registering refused with the reason.
    await stub.CudaSharedMemoryUnregister(pb.CudaSharedMemoryUnregisterRequest())
    assert not (await stub.CudaSharedMemoryStatus(pb.CudaSharedMemoryStatusRequest())).regions
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CudaSharedMemoryRegister(pb.CudaSharedMemoryRegisterRequest(name="gpu"))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "system shared memory" in err.value.details()


def _with(request: pb.ModelInferRequest, index: int, *, offset: int = -1,
          region: str = "") -> pb.ModelInferRequest:  # fmt: skip
    tensor = request.inputs[index]
    if offset >= 0:
        tensor.parameters["shared_memory_offset"].int64_param = offset
    if region:
        tensor.parameters["shared_memory_region"].string_param = region
    return request


async def test_registration_is_off_unless_allowed(
    triton_repo: Path, inference_server, stub_for, region_files: tuple[str, str]
) -> None:
    app = await inference_server(triton_repo, model_control_mode="explicit", load_models=["simple"])
    stub = stub_for(app.address)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(
            name="r", key=region_files[0], byte_size=64))  # fmt: skip
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "--allow-shared-memory" in err.value.details()
