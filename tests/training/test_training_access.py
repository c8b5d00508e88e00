"""The training service honours --auth-policy-file like every server: anonymous callers
are refused, a job asks `push` on its base model, and a job is its creator's: the
tenant that created it follows it with `read` on its own models only, other tenants
get NOT_FOUND for it (as for a job that does not exist, whatever models they may
read) and do not see it listed; an admin of the base model does. A job registers
its version, and asks its derive, on behalf of the caller who created it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from modelport.auth.api_keys import new_key
from modelport.client.channel import ModelportClientError
from modelport.client.datasets import DatasetClient
from modelport.client.registry import RegistryClient
from modelport.client.training import TrainingClient, status_name
from modelport.proto.modelport.registry.v1 import derive_pb2 as dpb
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
        # Reads every model, but a job is its creator's: team-a's are not found for it.
        "team-b": {
            "grants": [
                {"actions": ["read"], "models": ["*"]},
                {"actions": ["push"], "models": ["team-b-*"]},
            ]
        },
        "team-a": {"grants": [{"actions": ["read", "push"], "models": ["team-a-*"]}]},
        "ops": {"grants": [{"actions": ["admin"], "models": ["team-a-*"]}]},
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


def _not_found(call: Callable[[str], Any], job_id: str) -> str:
    with pytest.raises(ModelportClientError) as refused:
        result = call(job_id)
        if not isinstance(result, pb.Job):
            list(result)  # a stream: its first read raises
    assert refused.value.code == grpc.StatusCode.NOT_FOUND, refused.value
    return refused.value.message


def test_a_job_is_its_creators_and_registers_and_derives_on_their_behalf(
    tmp_path: Path, registry: ThreadedRegistry
) -> None:
    """team-a (read and push on team-a-* only) creates a job and follows it; team-b,
    which reads every model, gets NOT_FOUND for it on every RPC that names it, the
    same answer as for a job that does not exist, and lists only its own job. The
    training service registers for team-a: the job, the version's lineage and label,
    and the registry's audit event of the upload name that caller. Its --then-derive
    (int4 weight-only, which this 8→16→4 MLP cannot take: its layers are narrower than
    a quantization group) fails in the registry's derive worker: the fine-tuned version
    stays registered, and the job's final status says why."""
    keys = {tenant: new_key(tenant) for tenant in POLICY["tenants"]}
    (tmp_path / "keys.yaml").write_text(
        yaml.safe_dump({"keys": [entry.to_yaml_item() for _, entry in keys.values()]})
    )
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(POLICY))
    with RegistryClient(registry.address) as client:
        client.push(tensor_model_dir(tmp_path / "base"), name="team-a-reg", aliases=["production"])
    with DatasetClient(registry.address) as datasets:
        datasets.push(regression_npz(tmp_path / "data.npz", rows=24), name="team-a-pairs")
    settings = dataclasses.replace(
        training_settings(tmp_path, registry.address),
        auth_policy_file=tmp_path / "policy.yaml",
        api_keys_file=tmp_path / "keys.yaml",
    )
    server = ThreadedTraining(settings)
    clients = {t: TrainingClient(server.address, api_key=k) for t, (k, _) in keys.items()}
    try:
        a, b = clients["team-a"], clients["team-b"]
        params = {"max_steps": 2, "batch_size": 8, "eval_every": 2, "checkpoint_every": 2}
        created = a.create("team-a-reg@production", "team-a-pairs", hyperparameters=params,
                           then_derive="int4-weight-only")  # fmt: skip
        # team-b's own job (its base does not exist: it fails validation, no compute).
        other = b.wait(b.create("team-b-reg@production", "team-b-pairs").id)
        assert status_name(other.status) == "failed" and other.error.code == "NOT_FOUND"
        unknown = _not_found(b.get, "0" * 32)
        for call in (b.get, b.cancel, b.checkpoints, lambda i: b.events(i, follow=True)):
            assert _not_found(call, created.id) == unknown.replace("0" * 32, created.id)
        assert [j.id for j in b.list()] == [other.id]
        assert [j.id for j in clients["reader"].list()] == []  # reads all, owns nothing
        assert [j.id for j in clients["ops"].list()] == [created.id]  # admin of team-a-*
        assert clients["ops"].get(created.id).id == created.id
        events = list(a.events(created.id, follow=True))  # the creator follows it to its end
        job = a.get(created.id)
        assert [j.id for j in a.list()] == [created.id]
        checkpoints = a.checkpoints(created.id)
    finally:
        for client in clients.values():
            client.close()
        server.stop()
    assert status_name(job.status) == "succeeded", job.error
    assert (job.requested_by.tenant, job.requested_by.method) == ("team-a", "api-key")
    creator = f"team-a/{job.requested_by.subject}"
    assert job.requested_by.subject == f"key:{keys['team-a'][1].id}"
    # The derive failed after registration: the version stays, the status says why.
    final = events[-1]
    assert final.kind == pb.JobEvent.STATUS and status_name(final.status) == "succeeded"
    assert final.message.startswith(f"registered {job.result_version}; derive job "), final
    assert job.derive_job and not job.derived_version and checkpoints == list(job.checkpoints)
    with RegistryClient(registry.address) as client:
        version = client.get_version(job.result_version)
        uploads = client.audit_events(model="team-a-reg", action="push")
        derive = client.get_derive_job(job.derive_job)
        assert [v.version for v in client.list_versions("team-a-reg")] == [1, 2]
    assert derive.state == dpb.DeriveJob.FAILED and derive.parent == job.result_version
    assert final.message.endswith(f"derive job {job.derive_job} failed: {derive.message}")
    assert "int4" in derive.message or "block_size" in derive.message, derive.message
    assert version.lineage.parameters["requested_by"] == creator
    assert version.lineage.parameters["requested_by_method"] == "api-key"
    assert version.labels["modelport.io/requested-by-tenant"] == "team-a"
    # The upload and the derive request, both on behalf of the job's creator.
    on_behalf = {e.operation: e for e in uploads if e.details.get("on_behalf_of")}
    assert sorted(on_behalf) == ["DeriveVersion", "UploadVersion"]
    for event in on_behalf.values():
        assert event.outcome == "ok" and event.details["on_behalf_of"] == creator
