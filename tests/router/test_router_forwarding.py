"""The router in front of real gRPC replicas on loopback (static discovery)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import grpc
import numpy as np
import pytest
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc
from modelport.proto.modelport.router.v1 import router_pb2, router_pb2_grpc
from modelport.router.policies import MemberRef, RoutingState, TrafficPolicy

from tests.router.router_helpers import float_request, output, serving, simple_request, wait_until


async def test_forwards_and_answers_like_a_replica(replicas, endpoints_file, router, stub) -> None:
    a = await replicas({"simple": ["1"]})
    endpoints_file.write([("simple", a.address)])
    await wait_until(serving(router, "simple", 1))
    answer = await stub.ModelInfer(simple_request(), timeout=5)
    assert answer.model_name == "simple" and answer.id == "req-1"
    np.testing.assert_array_equal(output(answer, "OUTPUT0")[0], np.arange(16) + 1)
    assert a.served == {("simple", "1"): 1}


async def test_errors_name_the_model(replicas, endpoints_file, router, stub) -> None:
    a = await replicas({"simple": ["1"]})
    endpoints_file.write([("simple", a.address), ("mlp", "127.0.0.1:1")])
    await wait_until(serving(router, "simple", 1))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(simple_request(model="nope"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "'nope'" in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(simple_request(version="9"), timeout=5)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "version '9'" in info.value.details()
    # `mlp` is discovered but its only replica cannot be reached.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(float_request(np.zeros((1, 4))), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "'mlp'" in info.value.details()
    for call in (stub.RepositoryModelLoad, stub.RepositoryModelUnload):
        request_type = (
            pb.RepositoryModelLoadRequest
            if call is stub.RepositoryModelLoad
            else pb.RepositoryModelUnloadRequest
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(request_type(model_name="simple"), timeout=5)
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_metadata_ready_and_merged_index(replicas, endpoints_file, router, stub) -> None:
    a = await replicas({"simple": ["1"]})
    b = await replicas({"simple": ["2"], "mlp": ["1"]})
    endpoints_file.write([("simple", a.address), ("simple", b.address), ("mlp", b.address)])
    await wait_until(serving(router, "simple", 2))
    index = await stub.RepositoryIndex(pb.RepositoryIndexRequest(), timeout=5)
    assert [(m.name, m.version, m.state) for m in index.models] == [
        ("mlp", "1", "READY"),
        ("simple", "1", "READY"),
        ("simple", "2", "READY"),
    ]
    meta = await stub.ModelMetadata(pb.ModelMetadataRequest(name="simple", version="2"), timeout=5)
    assert meta.platform == b.address  # answered by the replica serving version 2
    ready = await stub.ModelReady(pb.ModelReadyRequest(name="simple", version="1"), timeout=5)
    assert ready.ready
    ready = await stub.ModelReady(pb.ModelReadyRequest(name="ghost"), timeout=5)
    assert not ready.ready
    assert (await stub.ServerReady(pb.ServerReadyRequest(), timeout=5)).ready


async def test_stream_infer_answers_as_ready_matched_by_id(
    replicas, endpoints_file, router, stub
) -> None:
    """The inference service's rule: no answer waits behind a slower one."""
    a = await replicas({"simple": ["1"]})
    endpoints_file.write([("simple", a.address)])
    await wait_until(serving(router, "simple", 1))

    async def requests():  # type: ignore[no-untyped-def]
        for index in range(5):
            request = simple_request()
            request.id = f"s{index}"
            if index == 0:
                request.parameters["sleep_ms"].int64_param = 400
            if index == 2:
                request.model_name = "nope"
            yield request

    answers = [r async for r in stub.ModelStreamInfer(requests(), timeout=10)]
    assert sorted(r.infer_response.id for r in answers) == ["s0", "s1", "s2", "s3", "s4"]
    assert answers[-1].infer_response.id == "s0"  # the slow one did not hold the others
    errors = {r.infer_response.id: r.error_message for r in answers if r.error_message}
    assert list(errors) == ["s2"] and "'nope'" in errors["s2"]


async def test_sticky_session_and_explicit_alias(
    replicas, endpoints_file, router, stub, policies
) -> None:
    a = await replicas({"simple": ["1", "2"]})
    endpoints_file.write([("simple", a.address)])
    policies.set(
        RoutingState(
            policies={"simple": TrafficPolicy(split=(("production", 50), ("canary", 50)))},
            aliases={"simple": {"production": "1", "canary": "2"}},
        )
    )
    await wait_until(serving(router, "simple", 1))
    for session in ("alice", "bob", "carol", "dave"):
        versions = {
            (
                await stub.ModelInfer(
                    simple_request(), metadata=(("x-modelport-session", session),), timeout=5
                )
            ).model_version
            for _ in range(8)
        }
        assert len(versions) == 1
    answer = await stub.ModelInfer(simple_request(version="canary"), timeout=5)
    assert answer.model_version == "2"


async def test_shadow_gets_a_copy_and_its_errors_are_only_counted(
    replicas, endpoints_file, router, stub, policies
) -> None:
    a = await replicas({"simple": ["1", "2"]})
    endpoints_file.write([("simple", a.address)])
    aliases = {"simple": {"production": "1", "canary": "2", "broken": "7"}}
    policies.set(
        RoutingState(policies={"simple": TrafficPolicy(shadow_alias="canary")}, aliases=aliases)
    )
    await wait_until(serving(router, "simple", 1))
    for _ in range(20):
        answer = await stub.ModelInfer(simple_request(), timeout=5)
        assert answer.model_version == "1"
    await wait_until(lambda: a.served[("simple", "2")] == 20)
    assert a.served[("simple", "1")] == 20
    # A shadow that fails (version 7 is served nowhere) never reaches the caller.
    policies.set(
        RoutingState(policies={"simple": TrafficPolicy(shadow_alias="broken")}, aliases=aliases)
    )
    for _ in range(5):
        assert (await stub.ModelInfer(simple_request(), timeout=5)).model_version == "1"
    await wait_until(lambda: router.router.stats.shadow_errors["simple"] == 5)


async def test_ensemble_is_the_mean_of_its_members(
    replicas, endpoints_file, router, stub, policies
) -> None:
    a = await replicas({"mlp": ["1", "2", "6"]})
    endpoints_file.write([("mlp", a.address)])
    members = (MemberRef("mlp", "1"), MemberRef("mlp", "2"), MemberRef("mlp", "six"))
    policies.set(
        RoutingState(
            policies={"mlp": TrafficPolicy(ensemble=members)}, aliases={"mlp": {"six": "6"}}
        )
    )
    await wait_until(serving(router, "mlp", 1))
    x = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    answer = await stub.ModelInfer(float_request(x), timeout=5)
    singles = [
        output(await stub.ModelInfer(float_request(x, version=v), timeout=5), "OUTPUT")
        for v in ("1", "2", "6")
    ]
    np.testing.assert_allclose(output(answer, "OUTPUT"), np.mean(singles, axis=0), rtol=1e-6)
    assert answer.id == "f-1" and answer.model_name == "mlp"


async def test_scatter_splits_the_batch_and_gathers_in_order(
    replicas, endpoints_file, router, stub, policies
) -> None:
    started = [await replicas({"simple": ["1"]}) for _ in range(3)]
    endpoints_file.write([("simple", r.address) for r in started])
    policies.set(RoutingState(policies={"simple": TrafficPolicy(scatter=True)}))
    await wait_until(serving(router, "simple", 3))
    answer = await stub.ModelInfer(simple_request(rows=7), timeout=5)
    expected = np.arange(16 * 7, dtype=np.int32).reshape(7, 16)
    np.testing.assert_array_equal(output(answer, "OUTPUT0"), expected + 1)
    np.testing.assert_array_equal(output(answer, "OUTPUT1"), expected - 1)
    assert [sum(r.served.values()) for r in started] == [1, 1, 1]


async def test_routes_admin_view(replicas, endpoints_file, router, policies) -> None:
    a = await replicas({"simple": ["1", "2"]})
    endpoints_file.write([("simple", a.address)])
    policies.set(
        RoutingState(
            policies={"simple": TrafficPolicy(split=(("production", 90), ("canary", 10)))},
            aliases={"simple": {"production": "1", "canary": "2"}},
        )
    )
    await wait_until(serving(router, "simple", 1))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as channel:
        admin = router_pb2_grpc.RouterAdminStub(channel)
        routes = await admin.ListRoutes(router_pb2.ListRoutesRequest(), timeout=5)
    (route,) = routes.models
    assert route.name == "simple"
    assert [(r.address, list(r.versions), r.ready) for r in route.replicas] == [
        (a.address, ["1", "2"], True)
    ]
    assert [(s.alias, s.weight) for s in route.policy.split] == [("production", 90), ("canary", 10)]


async def test_unreachable_replica_is_retried_elsewhere_and_ejected(
    replicas, endpoints_file, router, stub
) -> None:
    a = await replicas({"simple": ["1"]})
    b = await replicas({"simple": ["1"]})
    endpoints_file.write([("simple", a.address), ("simple", b.address)])
    await wait_until(serving(router, "simple", 2))
    await b.stop()
    for _ in range(40):
        await stub.ModelInfer(simple_request(), timeout=5)
    assert router.router.stats.retries["simple"] >= 1
    assert router.router.stats.ejections[("simple", b.address)] >= 1
    assert sum(a.served.values()) == 40


async def test_a_call_the_replica_cancels_is_retried_elsewhere(
    replicas, endpoints_file, router, stub
) -> None:
    """A replica's server ending a call with CANCELLED (a drain's grace running out as the
    request arrived) is not the caller's doing: the router sends it to another replica."""
    a = await replicas({"simple": ["1"]})
    b = await replicas({"simple": ["1"]})
    endpoints_file.write([("simple", a.address), ("simple", b.address)])
    await wait_until(serving(router, "simple", 2))
    b.fail_with = grpc.StatusCode.CANCELLED
    for _ in range(20):
        await stub.ModelInfer(simple_request(), timeout=5)
    assert router.router.stats.retries["simple"] >= 1
    assert sum(a.served.values()) == 20


async def test_new_replica_gets_a_fair_share_within_seconds(
    replicas, endpoints_file, router, stub
) -> None:
    first = [await replicas({"simple": ["1"]}) for _ in range(2)]
    endpoints_file.write([("simple", r.address) for r in first])
    await wait_until(serving(router, "simple", 2))
    request = simple_request()
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            await stub.ModelInfer(request, timeout=5)

    workers = [asyncio.create_task(load()) for _ in range(8)]
    await asyncio.sleep(0.3)
    late = await replicas({"simple": ["1"]})
    joined = time.monotonic()
    endpoints_file.write([("simple", r.address) for r in [*first, late]])
    await wait_until(lambda: sum(late.served.values()) > 0, 5)
    before = Counter({r.address: sum(r.served.values()) for r in [*first, late]})
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*workers)
    after = Counter({r.address: sum(r.served.values()) for r in [*first, late]})
    window = after - before
    assert time.monotonic() - joined < 5
    assert window[late.address] >= sum(window.values()) / 3 * 0.6


async def test_metrics_reach_the_prometheus_registry(replicas, endpoints_file, policies) -> None:
    from modelport.router.app import RouterApp
    from modelport.router.discovery import StaticDiscovery
    from prometheus_client import REGISTRY, generate_latest

    a = await replicas({"simple": ["1", "2"]})
    endpoints_file.write([("simple", a.address)])
    policies.set(
        RoutingState(
            policies={"simple": TrafficPolicy(split=(("production", 50), ("canary", 50)))},
            aliases={"simple": {"production": "1", "canary": "2"}},
        )
    )
    app = RouterApp(
        StaticDiscovery(file=endpoints_file.path, poll_seconds=0.05), policies, metrics=True
    )
    await app.start()
    try:
        await wait_until(serving(app, "simple", 1))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(10):
                await stub.ModelInfer(simple_request(), timeout=5)
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.ModelInfer(simple_request(model="nope"), timeout=5)
        text = generate_latest(REGISTRY).decode()
    finally:
        await app.stop(0)
    from prometheus_client.parser import text_string_to_metric_families

    samples = {
        (
            s.name,
            tuple(sorted((k, v) for k, v in s.labels.items() if not k.startswith("otel"))),
        ): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("modelport_router_requests_total", (("code", "OK"), ("model", "simple")))] == 10
    assert (
        samples[("modelport_router_requests_total", (("code", "NOT_FOUND"), ("model", "_unknown")))]
        == 1
    )
    assert (
        samples[("modelport_router_request_duration_seconds_count", (("model", "simple"),))] == 10
    )
    picks = ("modelport_router_picks_total", (("model", "simple"), ("replica", a.address)))
    assert samples[picks] == 10
    splits = sum(
        v for (name, _), v in samples.items() if name == "modelport_router_policy_splits_total"
    )
    assert splits == 10
    assert any(name == "modelport_router_replica_in_flight" for name, _ in samples)


async def test_retries_never_outlast_the_callers_deadline(
    replicas, endpoints_file, router, stub
) -> None:
    down = await replicas({"simple": ["1"]})
    slow = await replicas({"simple": ["1"]})
    slow.delay = 2.0
    endpoints_file.write([("simple", down.address), ("simple", slow.address)])
    await wait_until(serving(router, "simple", 2))
    await down.stop()
    for _ in range(3):
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ModelInfer(simple_request(), timeout=0.3)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 1.0  # generous: the test machine is shared


async def test_trace_context_reaches_the_replica(replicas, endpoints_file, router, stub) -> None:
    a = await replicas({"simple": ["1"]})
    endpoints_file.write([("simple", a.address)])
    await wait_until(serving(router, "simple", 1))
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    metadata = (("traceparent", traceparent), ("x-other", "kept-at-router"))
    await stub.ModelInfer(simple_request(), metadata=metadata, timeout=5)
    assert a.last_metadata.get("traceparent") == traceparent
    assert "x-other" not in a.last_metadata


@pytest.mark.parametrize("multiplex", [True])
async def test_requests_ride_one_stream_per_replica(replicas, endpoints_file, router, stub) -> None:
    a = await replicas({"simple": ["1"]})
    endpoints_file.write([("simple", a.address)])
    await wait_until(serving(router, "simple", 1))
    answers = await asyncio.gather(
        *(stub.ModelInfer(simple_request(), timeout=5) for _ in range(30))
    )
    # The caller's id comes back, not the router's stream id.
    assert {answer.id for answer in answers} == {"req-1"}
    assert a.streamed == 30
    # An in-band error is asked again unary, so the caller sees the real code.
    bad = simple_request()
    bad.inputs[0].name = "WRONG"
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ModelInfer(bad, timeout=5)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "needs INPUT0/1" in info.value.details()
    assert a.streamed == 31


@pytest.mark.parametrize("multiplex", [True])
async def test_replicas_without_streaming_are_called_unary(endpoints_file, router, stub) -> None:
    from tests.support.toy_oip_server import ToyServer

    a = ToyServer({"simple": ["1"]}, streaming=False)
    await a.start()
    try:
        endpoints_file.write([("simple", a.address)])
        await wait_until(serving(router, "simple", 1))
        for _ in range(5):
            assert (await stub.ModelInfer(simple_request(), timeout=5)).id == "req-1"
        assert router.table.replicas[a.address].handle.mux.unsupported
        assert sum(a.served.values()) == 5
    finally:
        await a.stop()
