"""The training service honours --auth-policy-file like every server: anonymous callers
are refused, a job asks `push` on its base model, job listings need `read`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
import pytest
import yaml
from modelport.auth.api_keys import new_key
from modelport.proto.modelport.training.v1 import training_pb2 as pb
from modelport.proto.modelport.training.v1 import training_pb2_grpc as pb_grpc

from tests.training.conftest import ThreadedTraining, training_settings

POLICY = {
    "tenants": {
        "reader": {"grants": [{"actions": ["read"], "models": ["*"]}]},
        "team-a": {"grants": [{"actions": ["read", "push"], "models": ["team-a-*"]}]},
    }
}


def test_training_rpcs_are_authenticated_and_authorized(tmp_path: Path) -> None:
    keys = {tenant: new_key(tenant) for tenant in POLICY["tenants"]}
    (tmp_path / "keys.yaml").write_text(
        yaml.safe_dump({"keys": [entry.to_yaml_item() for _, entry in keys.values()]})
    )
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(POLICY))
    settings = dataclasses.replace(
        training_settings(tmp_path, "127.0.0.1:1"),  # no registry is reached here
        auth_policy_file=tmp_path / "policy.yaml",
        api_keys_file=tmp_path / "keys.yaml",
    )
    server = ThreadedTraining(settings)
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = pb_grpc.TrainingStub(channel)

            def as_(tenant: str) -> list[tuple[str, str]]:
                return [("authorization", f"Bearer {keys[tenant][0]}")]

            with pytest.raises(grpc.RpcError) as anonymous:
                stub.ListJobs(pb.ListJobsRequest(), timeout=10)
            assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert stub.ListJobs(pb.ListJobsRequest(), metadata=as_("reader"), timeout=10)
            job = pb.CreateJobRequest(model="mlp@production", dataset="pairs")
            with pytest.raises(grpc.RpcError) as denied:
                stub.CreateJob(job, metadata=as_("team-a"), timeout=10)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "push" in denied.value.details() and "mlp" in denied.value.details()
    finally:
        server.stop()
