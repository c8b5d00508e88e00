"""Rollouts through the real router: replicas follow a real registry, load runs throughout.

The router learns aliases from the registry at once, and what each replica serves
from the replica's own push (`PoolReplica/Watch`); an alias resolves to the
version served until a replica reports the new one ready. Each step must fail 0
requests: push v2 and move production, roll back, split 90/10 onto a canary.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from modelport.client.registry import parse_policy
from modelport.proto.inference import grpc_service_pb2_grpc as ipb_grpc
from modelport.router.app import RouterApp
from modelport.router.discovery import StaticDiscovery
from modelport.router.registry_policies import RegistryPolicySource
from modelport.router.replicas import Endpoint

from tests.registry.registry_servers import ThreadedRegistry, registry_settings
from tests.registry.test_follower import Load, registry_call
from tests.router.router_helpers import serving, wait_until


async def test_push_move_rollback_and_split_through_the_router_fail_nothing(
    tmp_path: Path, make_model: Callable[..., Path], inference_server: Any
) -> None:
    registry = ThreadedRegistry(registry_settings(tmp_path))
    router: RouterApp | None = None
    try:
        address = registry.address
        await registry_call(
            address, "push", make_model("scale", 2.0), name="scale", aliases=["production"]
        )
        follows = ["scale@production", "scale@canary"]
        replicas = [
            await inference_server(
                None, registry=address, models=follows, cache_dir=tmp_path / f"cache{i}"
            )
            for i in range(2)
        ]
        # A long index interval: only the replicas' push can move traffic in time.
        discovery = StaticDiscovery([Endpoint("scale", r.address) for r in replicas])
        router = RouterApp(discovery, RegistryPolicySource(address), index_interval=60.0)
        await router.start()
        await wait_until(serving(router, "scale", 2))  # both replicas pushed what they serve
        async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as channel:
            load = Load(ipb_grpc.GRPCInferenceServiceStub(channel))
            await load.until(2.0)

            pushed = await registry_call(address, "push", make_model("scale", 3.0), name="scale")
            await registry_call(address, "set_alias", "scale", pushed.version, "production")
            move_seconds = await load.until(3.0)
            await asyncio.sleep(1.0)  # the old version drains under load
            assert load.failures == [], f"move: {load.failures[:3]}"

            await registry_call(address, "rollback", "scale", "production")
            rollback_seconds = await load.until(2.0)
            await asyncio.sleep(1.0)
            assert load.failures == [], f"rollback: {load.failures[:3]}"

            canary = await registry_call(address, "push", make_model("scale", 5.0), name="scale")
            await registry_call(
                address, "set_policy", "scale", parse_policy({"production": 90, "canary": 10})
            )
            await registry_call(address, "set_alias", "scale", canary.version, "canary")
            split_seconds = await load.until(5.0)
            load.factors.clear()
            await asyncio.sleep(2.0)
            await load.stop()
    finally:
        if router is not None:
            await router.stop(0.5)
        registry.stop()
    total = sum(load.factors.values())
    print(
        f"\nrollouts through the router: {len(load.failures)} failed; v2 served "
        f"{move_seconds:.2f} s after the move, v1 {rollback_seconds:.2f} s after the "
        f"rollback, the canary {split_seconds:.2f} s after the split; split "
        f"{load.factors[2.0]}/{load.factors[5.0]} of {total}"
    )
    assert load.failures == []
    assert 0 < load.factors[5.0] < load.factors[2.0] and set(load.factors) == {2.0, 5.0}
