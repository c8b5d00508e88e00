"""Every RPC of every service, for every kind of caller, with the exact status.

Callers: no credentials, a wrong API key, an expired JWT, a valid tenant the policy
grants nothing, and an authorized tenant. The services are real: a registry, an
inference service and a router in front of it, each with the same policy, key file
and JWKS. Which RPCs exist is read from the services' descriptors, so a new RPC
without a line here fails the test.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml
from modelport.artifacts.archive import pack_directory
from modelport.artifacts.hashing import sha256_of
from modelport.auth.api_keys import new_key
from modelport.client.registry import RegistryClient
from modelport.proto.inference import grpc_service_pb2 as ipb
from modelport.proto.inference import grpc_service_pb2_grpc as ipb_grpc
from modelport.proto.modelport.registry.v1 import datasets_pb2 as dspb
from modelport.proto.modelport.registry.v1 import datasets_pb2_grpc as dspb_grpc
from modelport.proto.modelport.registry.v1 import derive_pb2 as dpb
from modelport.proto.modelport.registry.v1 import registry_pb2 as rpb
from modelport.proto.modelport.registry.v1 import registry_pb2_grpc as rpb_grpc
from modelport.proto.modelport.router.v1 import router_pb2 as apb
from modelport.proto.modelport.router.v1 import router_pb2_grpc as apb_grpc
from modelport.router.app import build as build_router
from modelport.router.settings import RouterSettings

from tests.inference.requests import raw_request
from tests.registry.registry_servers import ThreadedRegistry, registry_settings
from tests.support.identity_provider import AUDIENCE, ISSUER, IdentityProvider

S = grpc.StatusCode
CALLERS = ("none", "wrong key", "expired token", "unauthorized", "authorized")
POLICY = {
    "tenants": {
        "alpha": {"grants": [{"actions": ["*"], "models": ["*"]}]},
        "beta": {"grants": [{"actions": ["infer", "read"], "models": ["nothing-*"]}]},
    }
}
A = np.ones((1, 16), np.int32)


def infer_request(model: str = "simple") -> ipb.ModelInferRequest:
    return raw_request(model, {"INPUT0": ("INT32", A), "INPUT1": ("INT32", A)})


# RPC -> (request, status for the authorized tenant). Model-scoped requests name a
# model that exists, so a refusal cannot be told from a missing model.
INFERENCE: dict[str, tuple[Any, S]] = {
    "ServerLive": (ipb.ServerLiveRequest(), S.OK),
    "ServerReady": (ipb.ServerReadyRequest(), S.OK),
    "ServerMetadata": (ipb.ServerMetadataRequest(), S.OK),
    "ModelReady": (ipb.ModelReadyRequest(name="simple"), S.OK),
    "ModelMetadata": (ipb.ModelMetadataRequest(name="simple"), S.OK),
    "ModelInfer": (infer_request(), S.OK),
    "ModelStreamInfer": (infer_request(), S.OK),
    "ModelConfig": (ipb.ModelConfigRequest(name="simple"), S.OK),
    "ModelStatistics": (ipb.ModelStatisticsRequest(name="simple"), S.OK),
    "RepositoryIndex": (ipb.RepositoryIndexRequest(), S.OK),
    # Model control: the inference service runs with --model-control-mode none.
    "RepositoryModelLoad": (
        ipb.RepositoryModelLoadRequest(model_name="simple"),
        S.FAILED_PRECONDITION,
    ),
    "RepositoryModelUnload": (
        ipb.RepositoryModelUnloadRequest(model_name="simple"),
        S.FAILED_PRECONDITION,
    ),
    # Shared memory: off (--allow-shared-memory), and no CUDA device on this machine.
    "SystemSharedMemoryStatus": (ipb.SystemSharedMemoryStatusRequest(), S.OK),
    "SystemSharedMemoryRegister": (
        ipb.SystemSharedMemoryRegisterRequest(name="r"),
        S.FAILED_PRECONDITION,
    ),
    "SystemSharedMemoryUnregister": (ipb.SystemSharedMemoryUnregisterRequest(name="r"), S.OK),
    "CudaSharedMemoryStatus": (ipb.CudaSharedMemoryStatusRequest(), S.OK),
    "CudaSharedMemoryRegister": (ipb.CudaSharedMemoryRegisterRequest(name="r"), S.UNAVAILABLE),
    "CudaSharedMemoryUnregister": (ipb.CudaSharedMemoryUnregisterRequest(name="r"), S.OK),
    "TraceSetting": (ipb.TraceSettingRequest(), S.UNIMPLEMENTED),
    "LogSettings": (ipb.LogSettingsRequest(), S.UNIMPLEMENTED),
}
# What the router answers where it differs: model control belongs to each replica.
AT_ROUTER = {
    "RepositoryModelLoad": S.PERMISSION_DENIED,
    "RepositoryModelUnload": S.PERMISSION_DENIED,
}
ADMIN: dict[str, tuple[Any, S]] = {"ListRoutes": (apb.ListRoutesRequest(), S.OK)}


def registry_rpcs(archive: Path) -> dict[str, tuple[Any, S]]:
    def upload() -> Iterator[rpb.UploadVersionRequest]:
        header = rpb.UploadHeader(model="reg", sha256=sha256_of(archive))
        yield rpb.UploadVersionRequest(header=header)
        yield rpb.UploadVersionRequest(chunk=archive.read_bytes())

    policy = rpb.TrafficPolicy(split=[rpb.AliasWeight(alias="production", weight=100)])
    return {
        "CreateModel": (rpb.CreateModelRequest(name="reg"), S.ALREADY_EXISTS),
        "GetModel": (rpb.GetModelRequest(name="reg"), S.OK),
        "ListModels": (rpb.ListModelsRequest(), S.OK),
        "DeleteModel": (rpb.DeleteModelRequest(name="reg"), S.FAILED_PRECONDITION),  # aliased
        "UploadVersion": (upload, S.OK),
        "DownloadVersion": (rpb.DownloadVersionRequest(ref="reg:1"), S.OK),
        "GetVersion": (rpb.GetVersionRequest(ref="reg:1"), S.OK),
        "ListVersions": (rpb.ListVersionsRequest(model="reg"), S.OK),
        "DeleteVersion": (rpb.DeleteVersionRequest(model="reg", version=1), S.FAILED_PRECONDITION),
        "SetAlias": (rpb.SetAliasRequest(model="reg", alias="production", version=1), S.OK),
        "DeleteAlias": (rpb.DeleteAliasRequest(model="reg", alias="nope"), S.NOT_FOUND),
        "RollbackAlias": (
            rpb.RollbackAliasRequest(model="reg", alias="production"),
            S.FAILED_PRECONDITION,
        ),
        "ListAliasHistory": (rpb.ListAliasHistoryRequest(model="reg"), S.OK),
        "Resolve": (rpb.ResolveRequest(ref="reg@production"), S.OK),
        "SetTrafficPolicy": (rpb.SetTrafficPolicyRequest(model="reg", policy=policy), S.OK),
        "GetTrafficPolicy": (rpb.GetTrafficPolicyRequest(model="reg"), S.OK),
        "Watch": (rpb.WatchRequest(), S.OK),
        "ListAuditEvents": (rpb.ListAuditEventsRequest(), S.OK),
        "SetPoolPlacement": (
            rpb.SetPoolPlacementRequest(placement=rpb.PoolPlacement(model="reg", pooled=False)),
            S.OK,
        ),
        "GetPoolPlacement": (rpb.GetPoolPlacementRequest(model="reg"), S.OK),
        "ListPoolPlacements": (rpb.ListPoolPlacementsRequest(), S.OK),
        # An impossible spec: refused after the policy, before any job starts.
        "DeriveVersion": (
            dpb.DeriveRequest(source="reg:1", spec=dpb.DeriveSpec(prune=2.0)),
            S.INVALID_ARGUMENT,
        ),
        "GetDeriveJob": (dpb.GetDeriveJobRequest(id="nope"), S.NOT_FOUND),
        "ListDeriveJobs": (dpb.ListDeriveJobsRequest(model="reg"), S.OK),
        "GetDeriveWork": (dpb.DeriveWorkRequest(id="nope", token="t"), S.NOT_FOUND),
        "ReportDeriveProgress": (dpb.DeriveProgress(id="nope", token="t"), S.NOT_FOUND),
    }


def dataset_rpcs() -> dict[str, tuple[Any, S]]:
    def upload() -> Iterator[dspb.UploadDatasetRequest]:
        header = dspb.DatasetUploadHeader(name="data", sha256="0" * 64, file_name="d.jsonl")
        yield dspb.UploadDatasetRequest(header=header)
        yield dspb.UploadDatasetRequest(chunk=b'{"prompt": "a", "completion": "b"}\n')

    return {
        "UploadDataset": (upload, S.INVALID_ARGUMENT),  # the sha256 does not match
        "GetDataset": (dspb.GetDatasetRequest(ref="data"), S.NOT_FOUND),
        "ListDatasets": (dspb.ListDatasetsRequest(), S.OK),
        "DownloadDataset": (dspb.DownloadDatasetRequest(ref="data"), S.NOT_FOUND),
    }


# Listing RPCs (no model named): a tenant granted nothing gets an empty answer, not a refusal.
LISTINGS = {"RepositoryIndex", "ListModels", "Watch", "ListAuditEvents", "ListRoutes",
            "ListDatasets", "ListPoolPlacements"}  # fmt: skip
# Any authenticated caller may ask whether the server is up.
ANYONE = {"ServerLive", "ServerReady", "ServerMetadata"}


def expected(rpc: str, caller: str, authorized: S) -> S:
    if caller in ("none", "wrong key", "expired token"):
        return S.UNAUTHENTICATED
    if caller == "unauthorized":
        return S.OK if rpc in LISTINGS | ANYONE else S.PERMISSION_DENIED
    return authorized


async def call(
    channel: grpc.aio.Channel, stub_class: Any, rpc: str, request: Any, metadata: Any
) -> tuple[S, Any]:
    method = getattr(stub_class(channel), rpc)
    try:
        if rpc == "ModelStreamInfer":

            async def one() -> AsyncIterator[Any]:
                yield request

            answers = [a async for a in method(one(), metadata=metadata, timeout=30)]
            return S.OK, answers
        if callable(request):  # client streaming: UploadVersion
            return S.OK, await method(request(), metadata=metadata, timeout=60)
        if rpc in ("DownloadVersion", "Watch", "DownloadDataset"):
            stream = method(request, metadata=metadata, timeout=30)
            first = await stream.read()  # Watch never ends: its first event is the answer
            stream.cancel()
            return S.OK, first
        return S.OK, await method(request, metadata=metadata, timeout=30)
    except grpc.aio.AioRpcError as error:
        return error.code(), error.details()


@pytest.fixture
def credentials(tmp_path: Path) -> dict[str, Any]:
    idp = IdentityProvider()
    alpha_key, alpha = new_key("alpha")
    beta_key, beta = new_key("beta")
    (tmp_path / "keys.yaml").write_text(
        yaml.safe_dump({"keys": [alpha.to_yaml_item(), beta.to_yaml_item()]})
    )
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(POLICY))
    auth = {
        "auth_policy_file": tmp_path / "policy.yaml",
        "api_keys_file": tmp_path / "keys.yaml",
        "jwks_file": idp.write_jwks(tmp_path / "jwks.json"),
        "jwt_issuer": ISSUER,
        "jwt_audience": AUDIENCE,
    }

    def bearer(token: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {token}")]

    callers = {
        "none": [],
        "wrong key": bearer(
            alpha_key[:-4] + ("AAAA" if not alpha_key.endswith("AAAA") else "BBBB")
        ),
        "expired token": bearer(idp.token("alpha", lifetime=-3600)),
        "unauthorized": bearer(beta_key),
        "authorized": bearer(alpha_key),
    }
    return {"settings": auth, "callers": callers, "alpha_key": alpha_key}


async def test_every_rpc_of_every_service_answers_each_caller_exactly(
    tmp_path: Path,
    sample_repo: Path,
    make_model: Callable[..., Path],
    inference_server: Any,
    credentials: dict[str, Any],
) -> None:
    auth, callers = credentials["settings"], credentials["callers"]
    registry = ThreadedRegistry(dataclasses.replace(registry_settings(tmp_path), **auth))
    archive = tmp_path / "reg.tar"
    pack_directory(make_model("reg", 2.0), archive)
    with RegistryClient(registry.address, api_key=credentials["alpha_key"]) as client:
        client.push_archive(archive, name="reg", aliases=["production"])
    inference = await inference_server(sample_repo, **auth)
    # The router's replica trusts the router by its certificate in a deployment
    # (--allowed-peer); on plaintext loopback here it is open.
    replica = await inference_server(sample_repo)
    router = build_router(
        RouterSettings(
            host="127.0.0.1",
            grpc_port=0,
            metrics_port=-1,
            http_port=-1,  # no OpenAI API here (8000 may be taken on a shared machine)
            endpoints=(f"simple={replica.address}",),
            **auth,
        )
    )
    await router.start()
    mismatches = []
    try:
        targets = [
            ("inference", inference.address, ipb_grpc.GRPCInferenceServiceStub, INFERENCE, {}),
            (
                "router",
                f"127.0.0.1:{router.port}",
                ipb_grpc.GRPCInferenceServiceStub,
                INFERENCE,
                AT_ROUTER,
            ),
            ("router admin", f"127.0.0.1:{router.port}", apb_grpc.RouterAdminStub, ADMIN, {}),
            ("registry", registry.address, rpb_grpc.ModelRegistryStub, registry_rpcs(archive), {}),
            ("datasets", registry.address, dspb_grpc.DatasetRegistryStub, dataset_rpcs(), {}),
        ]
        await asyncio.sleep(1.0)  # the router reads its replica's index
        for service, address, stub_class, rpcs, overrides in targets:
            described = {m.name for m in _descriptor(stub_class).methods}
            assert described == set(rpcs), f"{service}: RPCs without a matrix row"
            async with grpc.aio.insecure_channel(address) as channel:
                for rpc, (request, authorized) in rpcs.items():
                    for caller in CALLERS:
                        want = expected(rpc, caller, overrides.get(rpc, authorized))
                        got, answer = await call(channel, stub_class, rpc, request, callers[caller])
                        if got != want:
                            mismatches.append(
                                f"{service} {rpc} [{caller}]: {got.name} != {want.name} ({answer})"
                            )
                        elif caller == "unauthorized" and rpc in LISTINGS and rpc != "Watch":
                            listed = [
                                item
                                for field in ("models", "events", "datasets")
                                for item in getattr(answer, field, ())
                            ]
                            if listed:
                                mismatches.append(f"{service} {rpc} [unauthorized] lists {listed}")
    finally:
        await router.stop(0.5)
        registry.stop()
    assert mismatches == [], "\n".join(mismatches)


def _descriptor(stub_class: Any) -> Any:
    for module in (ipb, rpb, apb, dspb):
        for service in module.DESCRIPTOR.services_by_name.values():
            if stub_class.__name__ == f"{service.name}Stub":
                return service
    raise KeyError(stub_class)
