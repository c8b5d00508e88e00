"""Discovery sources feeding a real router in front of real replicas on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from kubernetes import client as kube
from modelport.errors import InvalidInput
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc
from modelport.router.app import RouterApp
from modelport.router.discovery import (
    DnsDiscovery,
    DnsTarget,
    StaticDiscovery,
    parse_dns_target,
    parse_endpoint,
    parse_endpoints_file,
    resolve_with_getaddrinfo,
)
from modelport.router.discovery_kubernetes import KubernetesDiscovery, endpoints_of_slice
from modelport.router.replicas import Endpoint

from tests.router.fake_kube_api import FakeEndpointSliceApi, endpoint_slice
from tests.router.router_helpers import simple_request, wait_until


def test_static_parsing() -> None:
    assert parse_endpoint("mlp=10.0.0.1:8001") == Endpoint("mlp", "10.0.0.1:8001")
    text = "# models\nsimple=a:1\n\nmlp=[::1]:8001  # v6\n"
    assert parse_endpoints_file(text) == [Endpoint("simple", "a:1"), Endpoint("mlp", "[::1]:8001")]
    for bad in ("mlp", "mlp=host", "=h:1", "mlp=h:port"):
        with pytest.raises(InvalidInput, match="MODEL=HOST:PORT"):
            parse_endpoint(bad)
    assert parse_dns_target("mlp=mlp.models.svc:8001") == DnsTarget("mlp", "mlp.models.svc", 8001)


async def test_static_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "endpoints"
    path.write_text("simple=a:1\n")
    seen: list[list[Endpoint]] = []
    task = asyncio.create_task(
        StaticDiscovery([Endpoint("mlp", "m:1")], path, poll_seconds=0.02).run(seen.append)
    )
    await wait_until(lambda: len(seen) == 1)
    path.write_text("simple=a:1\nsimple=b:1\n")
    await wait_until(lambda: len(seen) == 2)
    path.write_text("this is not an endpoint\n")  # a bad edit keeps the last good list
    await asyncio.sleep(0.1)
    task.cancel()
    assert seen[-1] == [
        Endpoint("mlp", "m:1"),
        Endpoint("simple", "a:1"),
        Endpoint("simple", "b:1"),
    ]
    assert len(seen) == 2


async def test_getaddrinfo_resolves_localhost() -> None:
    assert "127.0.0.1:8001" in await resolve_with_getaddrinfo("localhost", 8001)


async def test_dns_discovery_follows_the_name(replicas) -> None:  # type: ignore[no-untyped-def]
    """Real replicas behind a name whose addresses change between resolutions.

    The first replica is reached through a real lookup of `localhost`; the
    stand-in resolver then adds the second, as a headless Service gains a pod.
    """
    a = await replicas({"simple": ["1"]})
    b = await replicas({"simple": ["1"]})
    port_a = int(a.address.rsplit(":", 1)[1])
    answers = {"simple-headless": [a.address]}
    lookups: list[str] = []

    async def resolve(name: str, port: int) -> list[str]:
        lookups.append(name)
        if name == "localhost":
            return await resolve_with_getaddrinfo(name, port)
        if name not in answers:
            raise OSError("NXDOMAIN")
        return answers[name]

    discovery = DnsDiscovery(
        [DnsTarget("simple", "localhost", port_a), DnsTarget("simple", "simple-headless", 0)],
        interval=0.05,
        resolve=resolve,
    )
    app = RouterApp(discovery, index_interval=0.5)
    await app.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            await wait_until(lambda: len(app.table.candidates("simple", "1")) >= 1)
            await stub.ModelInfer(simple_request(), timeout=5)
            answers["simple-headless"] = [a.address, b.address]
            await wait_until(lambda: len(app.table.candidates("simple", "1")) == 2)
            # A failed lookup keeps the last known addresses.
            del answers["simple-headless"]
            await asyncio.sleep(0.2)
            assert len(app.table.candidates("simple", "1")) == 2
            await asyncio.gather(*(stub.ModelInfer(simple_request(), timeout=5) for _ in range(40)))
        assert sum(b.served.values()) > 5
        assert lookups.count("simple-headless") > 3
    finally:
        await app.stop(0)


def test_endpoint_slice_conditions() -> None:
    ready = endpoint_slice("s1", "mlp", "10.0.0.1", 8001)
    assert endpoints_of_slice(ready) == [Endpoint("mlp", "10.0.0.1:8001")]
    leaving = endpoint_slice("s1", "mlp", "10.0.0.1", 8001, ready=False, terminating=True)
    assert endpoints_of_slice(leaving) == [
        Endpoint("mlp", "10.0.0.1:8001", ready=False, terminating=True)
    ]
    del ready["endpoints"][0]["conditions"]["ready"]  # unknown means ready
    assert endpoints_of_slice(ready)[0].ready
    unlabelled = endpoint_slice("s2", "", "10.0.0.2", 8001)
    assert endpoints_of_slice(unlabelled) == []


async def test_kubernetes_discovery_against_a_fake_api_server(replicas) -> None:  # type: ignore[no-untyped-def]
    started = [await replicas({"simple": ["1"]}) for _ in range(3)]
    hosts = [(r.address.split(":")[0], int(r.address.split(":")[1])) for r in started]
    api = FakeEndpointSliceApi()
    api.start()
    api.put(endpoint_slice("simple-a", "simple", *hosts[0]))
    api.put(endpoint_slice("simple-b", "simple", *hosts[1]))
    unrelated = endpoint_slice("other", "x", "10.9.9.9", 1)
    unrelated["metadata"]["labels"] = {"app": "other"}
    api.put(unrelated)
    config = kube.Configuration(host=api.url)
    discovery = KubernetesDiscovery(
        namespace="models", api_client=kube.ApiClient(config), watch_seconds=2, retry_seconds=0.1
    )
    app = RouterApp(discovery, index_interval=0.5)
    await app.start()
    a, b, c = started
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            await wait_until(lambda: len(app.table.candidates("simple", "1")) == 2)
            assert set(app.table.replicas) == {a.address, b.address}
            # b turns terminating: no new requests go there.
            api.put(endpoint_slice("simple-b", "simple", *hosts[1], ready=False, terminating=True))
            await wait_until(lambda: app.table.replicas[b.address].terminating)
            served_b = sum(b.served.values())
            await asyncio.gather(*(stub.ModelInfer(simple_request(), timeout=5) for _ in range(20)))
            assert sum(b.served.values()) == served_b
            # A change the watch misses (410 Gone) is found by listing again.
            lists = api.lists
            api.put_behind_compaction(endpoint_slice("simple-c", "simple", *hosts[2]))
            await wait_until(lambda: c.address in app.table.replicas)
            assert api.lists > lists
            await wait_until(lambda: len(app.table.candidates("simple", "1")) == 2)
            # A deleted slice takes its replica out.
            api.delete("simple-a")
            await wait_until(lambda: a.address not in app.table.replicas)
            await asyncio.gather(*(stub.ModelInfer(simple_request(), timeout=5) for _ in range(10)))
            assert sum(c.served.values()) == 10
    finally:
        await app.stop(0)
        api.stop()
