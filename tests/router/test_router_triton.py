"""Stateful and decoupled models through the router, over two real inference replicas."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc
from modelport.router.app import RouterApp
from modelport.router.discovery import StaticDiscovery
from modelport.router.replicas import Endpoint

from tests.inference.requests import output
from tests.inference.test_triton_stateful import VALUES, repeat_request, requests_of, value

MODELS = ["simple_dyna_sequence", "simple_string_dyna_sequence", "repeat_int32"]


@pytest.fixture
async def routed(triton_repo: Path, inference_server, policies):  # type: ignore[no-untyped-def]
    replicas = [
        await inference_server(triton_repo, model_control_mode="explicit", load_models=MODELS)
        for _ in range(2)
    ]
    endpoints = [Endpoint(m, r.address) for r in replicas for m in MODELS]
    app = RouterApp(StaticDiscovery(endpoints), policies, index_interval=0.5)
    await app.start()
    deadline = time.monotonic() + 30
    while any(len(app.table.candidates(m, "")) < 2 for m in MODELS):
        assert time.monotonic() < deadline, "replicas never became ready"
        await asyncio.sleep(0.05)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
        yield replicas, pb_grpc.GRPCInferenceServiceStub(channel), app
    await app.stop(0)


async def test_each_sequence_stays_on_one_replica(routed, stub_for) -> None:  # type: ignore[no-untyped-def]
    replicas, stub, _ = routed
    ids = list(range(2001, 2013))
    results = await asyncio.gather(*(
        _run_unary(stub, corrid) for corrid in ids
    ))  # fmt: skip
    for corrid, got in zip(ids, results, strict=True):
        assert got == [1, *VALUES[1:-1], VALUES[-1] + corrid]  # state intact: one replica
    counts = []
    for replica in replicas:
        stats = await stub_for(replica.address).ModelStatistics(
            pb.ModelStatisticsRequest(name="simple_dyna_sequence")
        )
        counts.append(stats.model_stats[0].inference_count)
    assert sum(counts) == len(ids) * len(VALUES) and min(counts) > 0  # both replicas used
    assert all(c % len(VALUES) == 0 for c in counts)  # whole sequences only


async def _run_unary(stub, corrid: int) -> list[int]:  # type: ignore[no-untyped-def]
    return [
        value(await stub.ModelInfer(r)) for r in requests_of("simple_dyna_sequence", corrid, VALUES)
    ]


async def test_streamed_sequences_and_decoupled_answers_through_the_router(routed) -> None:  # type: ignore[no-untyped-def]
    _, stub, app = routed
    # The first stream shows the router how each model answers (on a call per
    # request); in the second, the sequences' requests share one call per replica
    # (stream_relay) while the decoupled one, which answers several times, keeps
    # a call of its own. Both keep the same rules.
    await _streamed_sequences_and_decoupled(stub, "3001", "3002")
    await _streamed_sequences_and_decoupled(stub, "3003", "3004")
    relays = [replica.handle.relay for replica in app.table.replicas.values()]
    assert sum(relay.carried for relay in relays) >= 3  # sequence requests after the first
    learned = {model: flag for relay in relays for (model, _), flag in relay.flagged.items()}
    assert learned == {"simple_string_dyna_sequence": True, "repeat_int32": False}


async def _streamed_sequences_and_decoupled(stub, first: str, second: str) -> None:  # type: ignore[no-untyped-def]
    async def requests() -> AsyncIterator[pb.ModelInferRequest]:
        for r in requests_of("simple_string_dyna_sequence", first, [5, 5, 5]):
            yield r
        yield repeat_request([7, 8, 9, 10])
        for r in requests_of("simple_string_dyna_sequence", second, [1, 2]):
            yield r

    answers = [a async for a in stub.ModelStreamInfer(requests(), timeout=30)]
    assert not any(a.error_message for a in answers), [a.error_message for a in answers]
    ids = [a.infer_response.id for a in answers]
    # Answers as they are ready, matched by id (the inference service's rule): each
    # sequence's answers in its order, the decoupled request's four in theirs.
    assert sorted(ids) == sorted([f"{first}_0", f"{first}_1", f"{first}_2", "r4", "r4", "r4",
                                  "r4", f"{second}_0", f"{second}_1"])  # fmt: skip
    for sequence, sums in ((first, [5, 10, 15 + int(first)]), (second, [1, 3 + int(second)])):
        mine = [a.infer_response for a in answers if a.infer_response.id.startswith(sequence)]
        assert [r.id for r in mine] == sorted(r.id for r in mine)
        assert [value(r) for r in mine] == sums
    repeats = [a.infer_response for a in answers if a.infer_response.id == "r4"]
    assert [int(output(r, "OUT", np.int32)[0]) for r in repeats] == [7, 8, 9, 10]
    assert [r.parameters["triton_final_response"].bool_param for r in repeats][-1]
