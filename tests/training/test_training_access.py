"""The training service honours --auth-policy-file like every server: anonymous callers
are refused, a job asks `push` on its base model, job listings need `read`; a job
registers its version on behalf of the caller who created it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
import pytest
import yaml
from modelport.auth.api_keys import new_key
from modelport.client.datasets import DatasetClient
from modelport.client.registry import RegistryClient
from modelport.client.training import TrainingClient, status_name
from modelport.proto.modelport.training.v1 import training_pb2 as pb
from modelport.proto.modelport.training.v1 import training_pb2_grpc as pb_grpc

from tests.registry.registry_servers import ThreadedRegistry
from tests.training.conftest import (
    ThreadedTraining,
    regression_npz,
    tensor_model_dir,
    training_settings,
)

POLICY = {
    "tenants": {
        "reader": {"grants": [{"actions": ["read"], "models": ["*"]}]},
        # Following a job (GetJob, WatchEvents) names no model: read on every model.
        "team-b": {
            "grants": [
                {"actions": ["read"], "models": ["*"]},
                {"actions": ["push"], "models": ["team-b-*"]},
            ]
        },
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


def test_the_registered_version_and_the_registry_audit_name_the_jobs_creator(
    tmp_path: Path, registry: ThreadedRegistry
) -> None:
    """The caller authenticates at the training service (its API key); the training
    service registers for them: the job, the version's lineage and label, and the
    registry's audit event of the upload all name that caller."""
    keys = {tenant: new_key(tenant) for tenant in POLICY["tenants"]}
    (tmp_path / "keys.yaml").write_text(
        yaml.safe_dump({"keys": [entry.to_yaml_item() for _, entry in keys.values()]})
    )
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(POLICY))
    with RegistryClient(registry.address) as client:
        client.push(tensor_model_dir(tmp_path / "base"), name="team-b-reg", aliases=["production"])
    with DatasetClient(registry.address) as datasets:
        datasets.push(regression_npz(tmp_path / "data.npz", rows=24), name="team-b-pairs")
    settings = dataclasses.replace(
        training_settings(tmp_path, registry.address),
        auth_policy_file=tmp_path / "policy.yaml",
        api_keys_file=tmp_path / "keys.yaml",
    )
    server = ThreadedTraining(settings)
    try:
        key, entry = keys["team-b"]
        with TrainingClient(server.address, api_key=key) as client:
            params = {"max_steps": 2, "batch_size": 8, "eval_every": 2, "checkpoint_every": 2}
            job = client.wait(client.create("team-b-reg@production", "team-b-pairs",
                                            hyperparameters=params).id)  # fmt: skip
    finally:
        server.stop()
    assert status_name(job.status) == "succeeded", job.error
    assert (job.requested_by.tenant, job.requested_by.method) == ("team-b", "api-key")
    creator = f"team-b/{job.requested_by.subject}"
    assert job.requested_by.subject == f"key:{entry.id}"
    with RegistryClient(registry.address) as client:
        version = client.get_version(job.result_version)
        uploads = client.audit_events(model="team-b-reg", action="push")
    assert version.lineage.parameters["requested_by"] == creator
    assert version.lineage.parameters["requested_by_method"] == "api-key"
    assert version.labels["modelport.io/requested-by-tenant"] == "team-b"
    (upload,) = [e for e in uploads if e.details.get("on_behalf_of")]
    assert upload.operation == "UploadVersion" and upload.outcome == "ok"
    assert upload.details["on_behalf_of"] == creator
