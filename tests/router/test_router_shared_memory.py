"""System shared memory through the router, over real inference replicas on this host:
a region registered at the router reaches every replica (and one that joins later), and
requests sent to the router read and write the caller's region."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from modelport.inference.shared_memory import SHM_ROOT
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.router.app import RouterApp
from modelport.router.discovery import StaticDiscovery

from tests.inference.test_triton_shm import A, B, region_files, shm_request
from tests.router.conftest import EndpointsFile

__all__ = ["region_files"]  # the fixture, shared with the inference tests


async def _until(check, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 15
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_regions_reach_every_replica_and_requests_use_them(  # type: ignore[no-untyped-def]
    triton_repo: Path, inference_server, stub_for, policies, tmp_path: Path,
    region_files: tuple[str, str],
) -> None:  # fmt: skip
    first, second = [
        await inference_server(triton_repo, model_control_mode="explicit",
                               load_models=["simple"], allow_shared_memory=True)
        for _ in range(2)
    ]  # fmt: skip
    endpoints = EndpointsFile(tmp_path / "endpoints")
    endpoints.write([("simple", first.address)])
    app = RouterApp(StaticDiscovery(file=endpoints.path, poll_seconds=0.05), policies,
                    index_interval=0.5)  # fmt: skip
    await app.start()
    try:
        stub = stub_for(f"127.0.0.1:{app.port}")

        async def replicas_ready(count: int) -> bool:
            return len(app.table.candidates("simple", "")) == count

        await _until(lambda: replicas_ready(1), "the first replica never became ready")
        inputs_key, outputs_key = region_files
        for name, key in (("inputs", inputs_key), ("outputs", outputs_key)):
            await stub.SystemSharedMemoryRegister(
                pb.SystemSharedMemoryRegisterRequest(name=name, key=key, byte_size=128)
            )
        # A region no replica can open: refused in the replica's words, kept nowhere.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(
                name="bad", key="/modelport-test-missing", byte_size=64))  # fmt: skip
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Unable to open shared memory region" in err.value.details()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SystemSharedMemoryRegister(pb.SystemSharedMemoryRegisterRequest(
                name="inputs", key=inputs_key, byte_size=128))  # fmt: skip
        assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS

        endpoints.write([("simple", first.address), ("simple", second.address)])
        await _until(lambda: replicas_ready(2), "the second replica never joined")
        direct = stub_for(second.address)

        async def replayed() -> bool:
            status = await direct.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest())
            return set(status.regions) == {"inputs", "outputs"}

        await _until(replayed, "the joining replica never got the regions")
        written = SHM_ROOT / outputs_key[1:]
        for target in (stub, direct, stub_for(first.address)):
            written.write_bytes(bytes(128))
            response = await target.ModelInfer(shm_request())
            assert list(response.raw_output_contents) == [b"", b""]
            out = np.frombuffer(written.read_bytes(), np.int32)
            assert out[:16].tolist() == (A + B).tolist() and out[16:].tolist() == (A - B).tolist()

        status = await stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest())
        assert {n: (r.key, r.byte_size) for n, r in status.regions.items()} == {
            "inputs": (inputs_key, 128),
            "outputs": (outputs_key, 128),
        }
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SystemSharedMemoryStatus(pb.SystemSharedMemoryStatusRequest(name="bad"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        await stub.SystemSharedMemoryUnregister(pb.SystemSharedMemoryUnregisterRequest())
        for replica in (first, second):
            status = await stub_for(replica.address).SystemSharedMemoryStatus(
                pb.SystemSharedMemoryStatusRequest()
            )
            assert not status.regions

        # CUDA regions: clearing them is a no-op, registering one is refused with the reason.
        await stub.CudaSharedMemoryUnregister(pb.CudaSharedMemoryUnregisterRequest())
        assert not (await stub.CudaSharedMemoryStatus(pb.CudaSharedMemoryStatusRequest())).regions
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CudaSharedMemoryRegister(pb.CudaSharedMemoryRegisterRequest(name="gpu"))
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "system shared memory" in err.value.details()
    finally:
        await app.stop(0)
