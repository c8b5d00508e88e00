"""Inference services that follow the registry: alias moves under load, rollback, outages."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from modelport.client.registry import RegistryClient, ensure_pushed
from modelport.common import tracing
from modelport.proto.inference import grpc_service_pb2 as ipb
from modelport.proto.inference import grpc_service_pb2_grpc as ipb_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.inference.requests import output, raw_request
from tests.registry.registry_servers import ThreadedRegistry, registry_settings
from tests.registry.service_process import RegistryProcess, ServiceProcess

X = np.arange(8, dtype=np.float32).reshape(2, 4)


def factor_of(response: ipb.ModelInferResponse) -> float:
    return float(output(response, "OUTPUT0", np.float32)[0, 1] / X[0, 1])


async def registry_call(address: str, method: str, *args: Any, **kwargs: Any) -> Any:
    """A blocking registry call off the event loop the inference server runs on."""

    def call() -> Any:
        with RegistryClient(address) as client:
            return getattr(client, method)(*args, **kwargs)

    return await asyncio.to_thread(call)


class Load:
    """Clients sending requests back to back until stopped (bounded in time and count)."""

    def __init__(self, stub: ipb_grpc.GRPCInferenceServiceStub, clients: int = 4) -> None:
        self.stub = stub
        self.factors: Counter[float] = Counter()
        self.last_factor = 0.0
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._client()) for _ in range(clients)]

    async def _client(self) -> None:
        deadline = time.monotonic() + 60
        for _ in range(20_000):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            request = raw_request("scale", {"INPUT0": ("FP32", X)})
            try:
                response = await self.stub.ModelInfer(request, timeout=10)
            except grpc.aio.AioRpcError as exc:
                self.failures.append(f"{exc.code().name}: {exc.details()}")
                continue
            self.last_factor = factor_of(response)
            self.factors[self.last_factor] += 1

    async def until(self, factor: float, timeout: float = 30.0) -> float:
        """Seconds until a response computed with `factor` arrives."""
        start = time.monotonic()
        while self.last_factor != factor:
            assert time.monotonic() - start < timeout, f"never saw factor {factor}"
            await asyncio.sleep(0.01)
        return time.monotonic() - start

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def test_alias_move_under_load_then_rollback_without_failures(
    tmp_path: Path, make_model: Callable[..., Path], inference_server: Any, stub_for: Any
) -> None:
    registry = ThreadedRegistry(registry_settings(tmp_path))
    try:
        address = registry.address
        await registry_call(
            address, "push", make_model("scale", 2.0), name="scale", aliases=["production"]
        )
        app = await inference_server(
            None, registry=address, models=["scale@production"], cache_dir=tmp_path / "cache"
        )
        load = Load(stub_for(app.address))
        await load.until(2.0)

        pushed = await registry_call(address, "push", make_model("scale", 3.0), name="scale")
        await registry_call(address, "set_alias", "scale", pushed.version, "production")
        swap_seconds = await load.until(3.0)
        await asyncio.sleep(1.0)  # keep the load on across the old version's drain

        await registry_call(address, "rollback", "scale", "production")
        rollback_seconds = await load.until(2.0)
        await asyncio.sleep(1.0)
        await load.stop()
    finally:
        registry.stop()

    print(
        f"\nalias move: {sum(load.factors.values())} requests, {len(load.failures)} failed; "
        f"new version served {swap_seconds:.2f} s after the move, "
        f"{rollback_seconds:.2f} s after the rollback"
    )
    assert load.failures == []
    assert load.factors[2.0] > 0 and load.factors[3.0] > 0
    index = {(m.name, m.version) for m in app.manager.index(ready_only=True)}
    assert index == {("scale", "1")}, "after the rollback only version 1 is loaded"


async def test_registry_outage_leaves_serving_and_the_cache_serves_a_restart(
    tmp_path: Path, make_model: Callable[..., Path], inference_server: Any, stub_for: Any
) -> None:
    settings = registry_settings(tmp_path)
    registry = ThreadedRegistry(settings)
    address = registry.address
    cache = tmp_path / "cache"
    try:
        await registry_call(
            address, "push", make_model("scale", 2.0), name="scale", aliases=["production"]
        )
        first = await inference_server(
            None, registry=address, models=["scale@production"], cache_dir=cache
        )
    finally:
        registry.stop()  # the registry goes away while the service runs

    stub = stub_for(first.address)
    request = raw_request("scale", {"INPUT0": ("FP32", X)})
    for _ in range(20):
        assert factor_of(await stub.ModelInfer(request, timeout=5)) == 2.0
    await asyncio.sleep(0.5)  # the follower's reconnects fail meanwhile
    assert factor_of(await stub.ModelInfer(request, timeout=5)) == 2.0
    await first.stop(grace=0.5)

    # A restart while the registry is still down serves the cached artifact.
    second = await asyncio.wait_for(
        inference_server(None, registry=address, models=["scale@production"], cache_dir=cache),
        timeout=30,
    )
    assert factor_of(await stub_for(second.address).ModelInfer(request, timeout=5)) == 2.0
    assert not second.follower.connected.is_set()

    # The registry comes back (same address): the follower reconnects and follows moves.
    port = int(address.rsplit(":", 1)[1])
    registry = ThreadedRegistry(settings.__class__(**{**settings.__dict__, "grpc_port": port}))
    try:
        await asyncio.wait_for(second.follower.connected.wait(), timeout=30)
        pushed = await registry_call(address, "push", make_model("scale", 5.0), name="scale")
        await registry_call(address, "set_alias", "scale", pushed.version, "production")
        stub = stub_for(second.address)
        deadline = time.monotonic() + 30
        while factor_of(await stub.ModelInfer(request, timeout=5)) != 5.0:
            assert time.monotonic() < deadline, "the service never followed the move"
            await asyncio.sleep(0.05)
    finally:
        registry.stop()


@pytest.mark.slow
def test_serve_inference_process_follows_the_registry(
    tmp_path: Path, make_model: Callable[..., Path]
) -> None:
    """The real entry points: `modelport serve registry` and `serve inference --registry`."""
    registry = RegistryProcess(f"sqlite:///{tmp_path / 'registry.db'}", tmp_path / "blobs")
    inference = None
    try:
        with RegistryClient(registry.address) as client:
            client.push(make_model("scale", 2.0), name="scale", aliases=["production"])
        inference = ServiceProcess(
            "inference",
            "--registry", registry.address, "--model", "scale@production",
            env={"MODELPORT_CACHE_DIR": str(tmp_path / "cache")},
        )  # fmt: skip
        with grpc.insecure_channel(inference.address) as channel:
            stub = ipb_grpc.GRPCInferenceServiceStub(channel)
            request = raw_request("scale", {"INPUT0": ("FP32", X)})
            assert factor_of(stub.ModelInfer(request, timeout=10)) == 2.0
        assert list((tmp_path / "cache" / "archives").glob("*.tar"))
        assert inference.terminate() == 0
    finally:
        if inference is not None and inference.process.poll() is None:
            inference.kill()
        assert registry.terminate() == 0


async def test_artifact_download_is_traced_from_inference_into_the_registry(
    tmp_path: Path, make_model: Callable[..., Path], inference_server: Any
) -> None:
    exporter = InMemorySpanExporter()
    assert tracing.configure("test", exporter=exporter)
    registry = ThreadedRegistry(registry_settings(tmp_path))
    try:
        await registry_call(registry.address, "push", make_model("scale", 2.0), name="scale")
        await inference_server(
            None, registry=registry.address, models=["scale"], cache_dir=tmp_path / "cache"
        )
    finally:
        registry.stop()
        tracing.shutdown()
    named = {span.name: span for span in exporter.get_finished_spans()}
    client, server = named[tracing.REGISTRY_DOWNLOAD], named["DownloadVersion"]
    assert server.context.trace_id == client.context.trace_id
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    assert server.attributes["version"] == 1


async def test_samples_pushed_once_then_served_from_the_registry(
    tmp_path: Path, sample_repo: Path, inference_server: Any, stub_for: Any
) -> None:
    """What `modelport up` does: ensure_pushed the samples, then serve them by alias."""
    registry = ThreadedRegistry(registry_settings(tmp_path))
    try:
        for name in ("simple", "mlp"):
            for _ in range(2):  # the second call finds it pushed
                version = await asyncio.to_thread(
                    ensure_pushed, registry.address, sample_repo / name, name
                )
                assert version.version == 1
        app = await inference_server(
            None,
            registry=registry.address,
            models=["simple@production", "mlp@production"],
            cache_dir=tmp_path / "cache",
        )
        a = np.arange(16, dtype=np.int32).reshape(1, 16)
        request = raw_request("simple", {"INPUT0": ("INT32", a), "INPUT1": ("INT32", a)})
        response = await stub_for(app.address).ModelInfer(request, timeout=10)
        assert output(response, "OUTPUT0", np.int32).tolist() == (a * 2).tolist()
        assert response.model_version == "1"
    finally:
        registry.stop()
