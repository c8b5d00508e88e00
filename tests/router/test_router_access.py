"""The router as the front door with access control: tenants see and call only their
models, quotas answer RESOURCE_EXHAUSTED with retry-after trailers (streams too), and
requests and refusals are counted per tenant on /metrics with bounded labels."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml
from modelport.auth.api_keys import KeyEntry, new_key
from modelport.common.metrics import serve_metrics
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc
from modelport.router.app import build
from modelport.router.settings import RouterSettings

from tests.inference.requests import raw_request
from tests.support.toy_oip_server import ToyServer

POLICY = {
    "roles": {
        "caller": [
            {
                "actions": ["infer", "metadata", "stream", "statistics"],
                "models": ["simple-{tenant}*"],
            }
        ]
    },
    "tenants": {
        "team-a": {"roles": ["caller"], "quota": {"requests_per_second": 5, "burst": 5}},
        "team-b": {
            "roles": ["caller"],
            "quota": {
                "concurrency": 1,
                "models": {"simple-team-b-slow": {"requests_per_second": 1}},
            },
        },
    },
}
A = np.ones((1, 16), np.int32)


def request(model: str) -> pb.ModelInferRequest:
    return raw_request(model, {"INPUT0": ("INT32", A), "INPUT1": ("INT32", A)})


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[str, KeyEntry]]:
    return {tenant: new_key(tenant) for tenant in ("team-a", "team-b", "team-unlisted")}


@pytest.fixture
async def secured_router(
    tmp_path: Path, keys: dict[str, tuple[str, KeyEntry]]
) -> AsyncIterator[tuple[str, Callable[[str], list[tuple[str, str]]], ToyServer]]:
    replica = ToyServer(
        {
            "simple-team-a": ["1"],
            "simple-team-b": ["1"],
            "simple-team-b-slow": ["1"],
            "simple-other": ["1"],
        }
    )
    await replica.start()
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(POLICY))
    (tmp_path / "keys.yaml").write_text(
        yaml.safe_dump({"keys": [e.to_yaml_item() for _, e in keys.values()]})
    )
    endpoints = tuple(f"{m}={replica.address}" for m in replica.models)
    router = build(
        RouterSettings(
            host="127.0.0.1",
            grpc_port=0,
            metrics_port=-1,
            endpoints=endpoints,
            index_interval=0.2,
            auth_policy_file=tmp_path / "policy.yaml",
            api_keys_file=tmp_path / "keys.yaml",
        )
    )
    await router.start()
    await asyncio.sleep(0.6)  # the router has read the replica's index

    def metadata(tenant: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {keys[tenant][0]}")]

    try:
        yield f"127.0.0.1:{router.port}", metadata, replica
    finally:
        await router.stop(0.5)
        await replica.stop()


async def test_tenants_see_and_call_only_their_models(secured_router: Any) -> None:
    address, metadata, _ = secured_router
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        index = await stub.RepositoryIndex(pb.RepositoryIndexRequest(), metadata=metadata("team-b"))
        assert sorted({m.name for m in index.models}) == ["simple-team-b", "simple-team-b-slow"]
        await stub.ModelInfer(request("simple-team-a"), metadata=metadata("team-a"))
        for model in ("simple-team-b", "simple-no-such-model"):  # the same refusal, existing or not
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ModelInfer(request(model), metadata=metadata("team-a"))
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert refused.value.details() == f"tenant 'team-a' may not 'infer' model '{model}'"
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await stub.ModelMetadata(pb.ModelMetadataRequest(name="simple-team-a"))
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # A stream stops at its first forbidden request, after answering those before it.
        async def messages() -> AsyncIterator[pb.ModelInferRequest]:
            yield request("simple-team-a")
            yield request("simple-other")
            yield request("simple-team-a")

        call = stub.ModelStreamInfer(messages(), metadata=metadata("team-a"))
        answers = []
        with pytest.raises(grpc.aio.AioRpcError) as stream_refused:
            async for answer in call:
                answers.append(answer)
        assert len(answers) == 1 and not answers[0].error_message
        assert stream_refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_quotas_answer_resource_exhausted_with_retry_after(secured_router: Any) -> None:
    address, metadata, replica = secured_router
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        codes = []
        trailers: list[dict[str, str]] = []
        for _ in range(12):  # burst 5, then refused until tokens come back
            try:
                await stub.ModelInfer(request("simple-team-a"), metadata=metadata("team-a"))
                codes.append("ok")
            except grpc.aio.AioRpcError as error:
                codes.append(error.code().name)
                trailers.append(dict(error.trailing_metadata() or ()))
        assert codes[:5] == ["ok"] * 5 and "RESOURCE_EXHAUSTED" in codes[5:]
        assert all(
            t["retry-after"] == "1" and 0 < int(t["grpc-retry-pushback-ms"]) <= 200
            for t in trailers
        )
        # team-b: one request at a time, and its slow model once a second.
        replica.delay = 0.5
        first = asyncio.ensure_future(
            stub.ModelInfer(request("simple-team-b"), metadata=metadata("team-b"))
        )
        await asyncio.sleep(0.1)
        with pytest.raises(grpc.aio.AioRpcError) as busy:
            await stub.ModelInfer(request("simple-team-b"), metadata=metadata("team-b"))
        assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "concurrency limit" in busy.value.details()
        await first
        replica.delay = 0.0
        await stub.ModelInfer(request("simple-team-b-slow"), metadata=metadata("team-b"))
        with pytest.raises(grpc.aio.AioRpcError) as slow:
            await stub.ModelInfer(request("simple-team-b-slow"), metadata=metadata("team-b"))
        assert "on model 'simple-team-b-slow'" in slow.value.details()
        await stub.ModelInfer(
            request("simple-team-b"), metadata=metadata("team-b")
        )  # other models free


async def test_requests_and_refusals_are_counted_per_tenant(secured_router: Any) -> None:
    address, metadata, _ = secured_router
    port = serve_metrics("127.0.0.1", 0)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await stub.ModelInfer(request("simple-team-a"), metadata=metadata("team-a"))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.ModelInfer(
                request("simple-team-a"), metadata=metadata("team-unlisted")
            )  # no grant
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.ModelInfer(request("simple-team-a"))
    text = await asyncio.to_thread(
        lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    )
    lines = [
        line
        for line in text.splitlines()
        if line.startswith("modelport_auth_requests_total{") and 'service="router"' in line
    ]
    assert any('tenant="team-a"' in line and 'outcome="ok"' in line for line in lines), lines
    # team-unlisted is not named in the policy: its series is "other", never a per-caller label.
    assert any('tenant="other"' in line and 'outcome="denied"' in line for line in lines), lines
    assert any('tenant="anonymous"' in line for line in lines)
    assert not any("team-unlisted" in line for line in lines)
