"""Policies and aliases from the registry's Watch stream, applied at the router."""

from __future__ import annotations

import asyncio

import grpc
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc
from modelport.proto.modelport.registry.v1 import registry_pb2 as rpb
from modelport.router.app import RouterApp
from modelport.router.discovery import StaticDiscovery
from modelport.router.policies import MemberRef
from modelport.router.registry_policies import RegistryPolicySource, policy_from_message
from modelport.router.replicas import Endpoint

from tests.router.registry_stand_in import RegistryStandIn
from tests.router.router_helpers import simple_request, wait_until


def test_policy_messages_become_policies() -> None:
    message = rpb.TrafficPolicy(
        split=[rpb.AliasWeight(alias="production", weight=90)], shadow_alias="canary", revision=4
    )
    policy = policy_from_message(message)
    assert policy.split == (("production", 90),) and policy.shadow_alias == "canary"
    assert policy.revision == 4 and not policy.scatter
    message = rpb.TrafficPolicy(ensemble=rpb.Ensemble(members=["a", "b@canary", "c:3"]))
    assert policy_from_message(message).ensemble == (
        MemberRef("a"),
        MemberRef("b", "canary"),
        MemberRef("c", "3"),
    )
    assert policy_from_message(rpb.TrafficPolicy(scatter=rpb.Scatter())).scatter


async def test_registry_policies_apply_quickly_and_outlive_the_registry(replicas) -> None:  # type: ignore[no-untyped-def]
    a = await replicas({"simple": ["1", "2"]})
    registry = RegistryStandIn()
    await registry.set_alias("simple", "production", 1)
    await registry.set_alias("simple", "canary", 2)
    address = await registry.start()
    source = RegistryPolicySource(address, retry_seconds=0.05)
    app = RouterApp(StaticDiscovery([Endpoint("simple", a.address)]), source, index_interval=0.5)
    await app.start()
    planner = app.router.planner
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            await wait_until(lambda: planner.state.aliases.get("simple", {}).get("canary") == "2")
            await wait_until(lambda: bool(app.table.candidates("simple", "1")))
            # "" follows the production alias; an alias name resolves through the registry.
            assert (await stub.ModelInfer(simple_request(), timeout=5)).model_version == "1"
            answer = await stub.ModelInfer(simple_request(version="canary"), timeout=5)
            assert answer.model_version == "2"
            # A policy set in the registry is in force within a second.
            await registry.set_policy(
                "simple", rpb.TrafficPolicy(split=[rpb.AliasWeight(alias="canary", weight=1)])
            )
            took = await wait_until(lambda: planner.policy("simple").split == (("canary", 1),))
            assert took < 1.0
            assert (await stub.ModelInfer(simple_request(), timeout=5)).model_version == "2"
            # Moving an alias moves the traffic.
            await registry.set_alias("simple", "canary", 1)
            await wait_until(lambda: planner.state.aliases["simple"]["canary"] == "1")
            assert (await stub.ModelInfer(simple_request(), timeout=5)).model_version == "1"
            await registry.set_alias("simple", "canary", 2)
            await wait_until(lambda: planner.state.aliases["simple"]["canary"] == "2")
            # The registry goes away: the last known policy stays in force.
            await registry.stop()
            await asyncio.sleep(0.3)
            for _ in range(5):
                assert (await stub.ModelInfer(simple_request(), timeout=5)).model_version == "2"
            # It comes back on the same port with a change made meanwhile: the
            # watch resumes from the last revision and picks it up.
            await registry.set_policy("simple", rpb.TrafficPolicy())
            await registry.start(registry.port)
            await wait_until(lambda: planner.policy("simple").is_empty(), 10)
            assert (await stub.ModelInfer(simple_request(), timeout=5)).model_version == "1"
    finally:
        await app.stop(0)
        await registry.stop()


async def test_policies_from_a_real_registry(replicas, sample_repo, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The registry service itself (SQLite store, real Watch) drives the router."""
    from modelport.client.registry import RegistryClient, parse_policy

    from tests.registry.registry_servers import ThreadedRegistry, registry_settings

    a = await replicas({"simple": ["1", "2"]})
    registry = ThreadedRegistry(registry_settings(tmp_path))
    client = RegistryClient(registry.address, timeout=30)

    def publish() -> None:
        for alias in ("production", "canary"):  # versions 1 and 2 of `simple`
            client.push(sample_repo / "simple", name="simple", aliases=[alias])

    await asyncio.to_thread(publish)
    source = RegistryPolicySource(registry.address, retry_seconds=0.05)
    app = RouterApp(StaticDiscovery([Endpoint("simple", a.address)]), source, index_interval=0.5)
    await app.start()
    planner = app.router.planner
    stopped = False
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            await wait_until(lambda: planner.state.aliases.get("simple", {}).get("canary") == "2")
            await wait_until(lambda: bool(app.table.candidates("simple", "1")))
            assert (await stub.ModelInfer(simple_request(), timeout=5)).model_version == "1"
            policy = parse_policy(split={"canary": 1})
            await asyncio.to_thread(client.set_policy, "simple", policy)
            took = await wait_until(lambda: planner.policy("simple").split == (("canary", 1),))
            assert took < 1.0
            assert (await stub.ModelInfer(simple_request(), timeout=5)).model_version == "2"
            # The registry goes away: the last known policy stays in force.
            await asyncio.to_thread(registry.stop)
            stopped = True
            await asyncio.sleep(0.3)
            assert (await stub.ModelInfer(simple_request(), timeout=5)).model_version == "2"
    finally:
        client.close()
        await app.stop(0)
        if not stopped:
            await asyncio.to_thread(registry.stop)
