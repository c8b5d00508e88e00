"""The replica -> router push channel (`modelport.pool.v1.PoolReplica/Watch`) with a real
inference service: the router learns served versions from the push, not from index polls
(its poll interval is far beyond the test), load phases are reported, and a drain ends
the stream with a last "not ready" state."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc
from modelport.proto.modelport.pool.v1 import pool_pb2, pool_pb2_grpc
from modelport.router.app import RouterApp
from modelport.router.discovery import StaticDiscovery
from modelport.router.replicas import Endpoint

from tests.inference.requests import output, simple_request


async def until(what: str, condition: Any, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def test_served_versions_and_load_phases_are_pushed(
    sample_repo: Path, inference_server: Any
) -> None:
    app = await inference_server(sample_repo, model_control_mode="explicit", torch_threads=1)
    phases: list[str] = []
    app.manager.phases.listeners.append(
        lambda: phases.extend(load.phase for load, _, _ in app.manager.phases.now())
    )
    router = RouterApp(StaticDiscovery([Endpoint("simple", app.address)]), index_interval=600)
    await router.start()
    try:
        replica = next(iter(router.table.replicas.values()))
        await until("no first push", lambda: replica.versions == {})
        async with grpc.aio.insecure_channel(app.address) as direct:
            watch = pool_pb2_grpc.PoolReplicaStub(direct).Watch(pool_pb2.WatchPoolRequest())
            first = await watch.read()
            assert first.ready and not first.served and not first.HasField("pool")
            stub = pb_grpc.GRPCInferenceServiceStub(direct)
            await stub.RepositoryModelLoad(pb.RepositoryModelLoadRequest(model_name="simple"))
            # Within moments, not at the next index poll ten minutes away.
            await until("versions not pushed", lambda: replica.versions == {"simple": {"1"}}, 5)
            assert phases[:2] == ["LOADING", "WARMING_UP"]
            async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as channel:
                a = np.arange(16, dtype=np.int32).reshape(1, 16)
                answer = await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                    simple_request(a, a), timeout=10
                )
            assert output(answer, "OUTPUT0", np.int32).tolist() == (2 * a).tolist()
            states = []
            # While it loads the model is listed with no version yet (state LOADING).
            while not states or not any(m.versions for m in states[-1].served):
                states.append(await watch.read())
            served = [(m.name, list(m.versions), m.state) for m in states[-1].served]
            assert served == [("simple", ["1"], "READY")]
            # A drain: the last state says "not ready", then the stream ends.
            app.manager.begin_drain()
            last = await watch.read()
            while last.ready:
                last = await watch.read()
            assert await watch.read() is grpc.aio.EOF
        await until("router still routes to a draining replica", lambda: replica.versions == {})
    finally:
        await router.stop(0)
