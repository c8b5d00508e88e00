"""Scale to zero through the front door: a real router process holds requests for a model
with no replica, KEDA's StreamIsActive (consumed here by a tiny autoscaler) starts a real
inference process, the held requests are answered, and the idle model goes back to zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc
from modelport.proto.keda import externalscaler_pb2 as kpb
from modelport.proto.keda import externalscaler_pb2_grpc as kpb_grpc
from modelport.router.app import RouterApp, ScalingSettings
from modelport.router.discovery import StaticDiscovery

from tests.inference.requests import output, simple_request

SERVICES = Path(__file__).resolve().parents[2] / "services"
REF = kpb.ScaledObjectRef(name="simple", namespace="test", scalerMetadata={"model": "simple"})
SCHEDULING_SECONDS = 1.0  # what a cluster spends placing the pod and pulling the image
_draining: set[asyncio.Future[bytes]] = set()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def simple(rows: int = 1) -> pb.ModelInferRequest:
    a = np.arange(16 * rows, dtype=np.int32).reshape(rows, 16)
    return simple_request(a, a, id="held")


async def spawn(*args: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(SERVICES)}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "modelport.cli", *args, env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


async def listening(process: asyncio.subprocess.Process) -> str:
    assert process.stderr is not None
    while True:
        line = (await process.stderr.readline()).decode()
        assert line, "the process exited before listening"
        found = re.search(r"gRPC listening on (127\.0\.0\.1:\d+)", line)
        if found:
            # Keep draining stderr so the process never blocks on a full pipe.
            drain = asyncio.ensure_future(process.stderr.read())
            _draining.add(drain)
            drain.add_done_callback(_draining.discard)
            return found.group(1)


@dataclass
class TinyAutoscaler:
    """KEDA's part: follow StreamIsActive, run one inference process while active."""

    router: str
    repository: Path
    endpoints: Path
    seen: list[bool] = field(default_factory=list)
    starts: int = 0
    process: asyncio.subprocess.Process | None = None

    async def run(self) -> None:
        async with grpc.aio.insecure_channel(self.router) as channel:
            stream = kpb_grpc.ExternalScalerStub(channel).StreamIsActive(REF)
            async for answer in stream:
                self.seen.append(answer.result)
                if answer.result and self.process is None:
                    await self.scale_up()
                elif not answer.result and self.process is not None:
                    await self.scale_down()

    async def scale_up(self) -> None:
        await asyncio.sleep(SCHEDULING_SECONDS)
        port = free_port()
        self.process = await spawn(
            "serve", "inference", "--model-repository", str(self.repository),
            "--model-control-mode", "explicit", "--load-model", "simple",
            "--host", "127.0.0.1", "--grpc-port", str(port), "--metrics-port", "-1",
            "--torch-threads", "1",
        )  # fmt: skip
        self.starts += 1
        # The pod exists (not ready): discovery lists it, as an EndpointSlice would.
        self.endpoints.write_text(f"simple=127.0.0.1:{port}\n")
        await listening(self.process)

    async def scale_down(self) -> None:
        assert self.process is not None
        self.process.terminate()
        await self.process.wait()
        self.process = None
        # Discovery learns of it a while later: requests meanwhile find a dead replica.
        await asyncio.sleep(1.5)
        self.endpoints.write_text("")

    async def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()


@pytest.fixture
async def router_process(tmp_path: Path) -> AsyncIterator[tuple[str, Path, int]]:
    endpoints = tmp_path / "endpoints"
    endpoints.write_text("")
    metrics = free_port()
    process = await spawn(
        "serve", "router", "--discovery", "static", "--endpoints-file", str(endpoints),
        "--hold-model", "simple", "--hold-queue-size", "8", "--idle-seconds", "2",
        "--index-interval", "5", "--host", "127.0.0.1", "--grpc-port", "0",
        "--metrics-port", str(metrics), "--http-port", "-1",
    )  # fmt: skip
    try:
        yield await listening(process), endpoints, metrics
    finally:
        process.terminate()
        await process.wait()


async def test_a_request_at_zero_replicas_is_held_through_a_cold_start_and_answered(
    router_process: tuple[str, Path, int], sample_repo: Path
) -> None:
    address, endpoints, metrics_port = router_process
    scaler = TinyAutoscaler(address, sample_repo, endpoints)
    autoscaling = asyncio.ensure_future(scaler.run())
    try:
        await wait_for(lambda: scaler.seen == [False], 20, "the scaler's first answer")
        async with grpc.aio.insecure_channel(address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            started = time.monotonic()
            calls = [stub.ModelInfer(simple(), timeout=90) for _ in range(4)]
            answers = await asyncio.gather(*calls)
            waited = time.monotonic() - started
            for answer in answers:
                np.testing.assert_array_equal(
                    output(answer, "OUTPUT0", np.int32), 2 * np.arange(16).reshape(1, 16)
                )
            trailers = [dict(await call.trailing_metadata() or ()) for call in calls]
            reports = [
                t["x-modelport-cold-start"] for t in trailers if "x-modelport-cold-start" in t
            ]
            assert len(reports) == 1, f"only the first released request reports: {trailers}"
            phases = dict(part.split("=") for part in reports[0].split(","))
            # The replica's own phases come from its pushes (no download: a local repository).
            assert {"replica", "start", "total"} <= set(phases), reports[0]
            assert set(phases) <= {"replica", "start", "load", "warmup", "total"}, reports[0]
            assert float(phases["replica"]) >= SCHEDULING_SECONDS * 0.9
            assert sum(float(phases.get(p, 0)) for p in ("start", "load", "warmup")) > 0
            print(f"\ncold start: {reports[0]}")
            assert float(phases["total"]) <= waited + 0.5
            assert scaler.starts == 1 and scaler.seen == [False, True], "pushed, not polled"
            scrape = await asyncio.to_thread(read_metrics, metrics_port)
            assert (
                'modelport_router_cold_start_seconds_count{model="simple",phase="total"} 1'
                in scrape
            )

            # Idle for --idle-seconds: StreamIsActive says so and the replica goes away.
            await wait_for(lambda: scaler.process is None, 20, "the idle model to scale to zero")
            assert scaler.seen[-1] is False
            # At zero again (the router still lists the dead replica for a moment),
            # the next request is held again and brings it back.
            again = await stub.ModelInfer(simple(2), timeout=90)
            assert output(again, "OUTPUT0", np.int32).shape == (2, 16)
            assert scaler.starts == 2
    finally:
        autoscaling.cancel()
        await scaler.stop()


def read_metrics(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return str(answer.read().decode())


async def wait_for(condition: object, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def holding_router(tmp_path: Path) -> AsyncIterator[RouterApp]:
    (tmp_path / "endpoints").write_text("")
    app = RouterApp(
        StaticDiscovery(file=tmp_path / "endpoints", poll_seconds=0.05),
        scaling=ScalingSettings(("m",), queue_size=2, max_hold_seconds=30, idle_seconds=60),
    )
    await app.start()
    yield app
    await app.stop(0)


async def test_overflow_deadline_and_the_scaler_contract(holding_router: RouterApp) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{holding_router.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        scaler = kpb_grpc.ExternalScalerStub(channel)
        ref = kpb.ScaledObjectRef(
            name="m", namespace="ns", scalerMetadata={"model": "m", "targetPendingRequests": "4"}
        )
        assert not (await scaler.IsActive(ref)).result
        spec = (await scaler.GetMetricSpec(ref)).metricSpecs[0]
        assert (spec.metricName, spec.targetSize, spec.targetSizeFloat) == (
            "modelport-pending-m",
            4,
            4.0,
        )

        request = pb.ModelInferRequest(model_name="m", id="x")
        held = [stub.ModelInfer(request, timeout=30) for _ in range(2)]
        await wait_for(lambda: holding_router.scaling.queue.held("m") == 2, 5, "two held")  # type: ignore[union-attr]
        assert (await scaler.IsActive(ref)).result
        metrics = await scaler.GetMetrics(kpb.GetMetricsRequest(scaledObjectRef=ref))
        assert metrics.metricValues[0].metricValue == 2

        with pytest.raises(grpc.aio.AioRpcError) as full:
            await stub.ModelInfer(request, timeout=30)
        assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "2 requests are already waiting" in (full.value.details() or "")

        # A request for a model not held at zero fails at once, as before.
        with pytest.raises(grpc.aio.AioRpcError) as unknown:
            await stub.ModelInfer(pb.ModelInferRequest(model_name="other"), timeout=5)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

        for call in held:
            call.cancel()
        await wait_for(
            lambda: holding_router.scaling.queue.held("m") == 0, 5, "cancelled ones gone"
        )  # type: ignore[union-attr]
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as late:
            await stub.ModelInfer(request, timeout=0.5)
        assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 2.0

        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await scaler.IsActive(kpb.ScaledObjectRef(name="x", namespace="ns"))
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as unheld:
            await scaler.IsActive(kpb.ScaledObjectRef(name="x", scalerMetadata={"model": "other"}))
        assert unheld.value.code() == grpc.StatusCode.NOT_FOUND
