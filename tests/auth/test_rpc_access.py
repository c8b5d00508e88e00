"""Every RPC of every modelport service has an access rule, and each rule reads the
model from the request message the RPC really takes."""

from __future__ import annotations

import importlib
import pkgutil

import modelport.proto
import pytest
from google.protobuf import message_factory
from modelport.auth.policy import ACTIONS
from modelport.auth.rpc_access import OPEN_SERVICES, SERVICES, access_of
from modelport.proto.inference import grpc_service_pb2
from modelport.proto.keda import externalscaler_pb2
from modelport.proto.modelport.pool.v1 import pool_pb2
from modelport.proto.modelport.registry.v1 import datasets_pb2, registry_pb2
from modelport.proto.modelport.router.v1 import router_pb2
from modelport.proto.modelport.training.v1 import training_pb2

pytestmark = pytest.mark.fast  # tier 1: no servers (`make test-fast`)

DESCRIPTORS = {
    "inference.GRPCInferenceService": grpc_service_pb2.DESCRIPTOR,
    "modelport.registry.v1.ModelRegistry": registry_pb2.DESCRIPTOR,
    "modelport.router.v1.RouterAdmin": router_pb2.DESCRIPTOR,
    "modelport.pool.v1.PoolReplica": pool_pb2.DESCRIPTOR,
    "externalscaler.ExternalScaler": externalscaler_pb2.DESCRIPTOR,
    "modelport.registry.v1.DatasetRegistry": datasets_pb2.DESCRIPTOR,
    "modelport.training.v1.Training": training_pb2.DESCRIPTOR,
}


def test_every_service_of_every_proto_has_a_table() -> None:
    """A service added in a new .proto is refused until it has rules here."""
    found = set()
    for info in pkgutil.walk_packages(modelport.proto.__path__, "modelport.proto."):
        if info.name.endswith("_pb2"):
            module = importlib.import_module(info.name)
            found |= {s.full_name for s in module.DESCRIPTOR.services_by_name.values()}
    assert found - set(SERVICES) - OPEN_SERVICES == set()
    assert set(DESCRIPTORS) == set(SERVICES)


def _methods(service: str) -> dict[str, object]:
    file = DESCRIPTORS[service]
    descriptor = file.services_by_name[service.rsplit(".", 1)[1]]
    return {m.name: m for m in descriptor.methods}


@pytest.mark.parametrize("service", list(DESCRIPTORS))
def test_every_rpc_has_exactly_one_rule(service: str) -> None:
    assert set(_methods(service)) == set(SERVICES[service])


@pytest.mark.parametrize(("service", "method"), [(s, m) for s in DESCRIPTORS for m in SERVICES[s]])
def test_each_rule_reads_its_request_type(service: str, method: str) -> None:
    rule = SERVICES[service][method]
    assert rule.action is None or rule.action in ACTIONS
    descriptor = _methods(service)[method]
    request = message_factory.GetMessageClass(descriptor.input_type)()  # type: ignore[attr-defined]
    if rule.model is not None:
        assert rule.model(request) == ""  # the field exists (an empty message names no model)
    assert rule.per_message == descriptor.client_streaming  # type: ignore[attr-defined]
    if rule.audited:
        assert rule.action is not None


def test_reads_are_not_audited_and_writes_are() -> None:
    registry = SERVICES["modelport.registry.v1.ModelRegistry"]
    assert {m for m, r in registry.items() if r.audited} == {
        "CreateModel",
        "DeleteModel",
        "UploadVersion",
        "DeleteVersion",
        "SetAlias",
        "DeleteAlias",
        "RollbackAlias",
        "SetTrafficPolicy",
        "SetPoolPlacement",
        "DeriveVersion",
    }
    datasets = SERVICES["modelport.registry.v1.DatasetRegistry"]
    assert {m for m, r in datasets.items() if r.audited} == {"UploadDataset"}
    inference = SERVICES["inference.GRPCInferenceService"]
    assert inference["RepositoryModelLoad"].audited and not inference["ModelInfer"].audited


def test_lookup_by_full_method_name() -> None:
    assert access_of("/inference.GRPCInferenceService/ModelInfer").action == "infer"  # type: ignore[union-attr]
    request = registry_pb2.DownloadVersionRequest(ref="fraud@production")
    assert (
        access_of("/modelport.registry.v1.ModelRegistry/DownloadVersion").model(request) == "fraud"
    )  # type: ignore[union-attr, misc]
    assert access_of("/grpc.health.v1.Health/Check") is None
    assert "grpc.health.v1.Health" in OPEN_SERVICES
    with pytest.raises(KeyError):
        access_of("/inference.GRPCInferenceService/SomethingNew")
    with pytest.raises(KeyError):
        access_of("/unknown.Service/Call")
