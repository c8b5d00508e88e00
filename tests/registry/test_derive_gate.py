"""Derive jobs in the registry core (SQLite and PostgreSQL): the worker's token, progress
events, the gate deciding a child's status in its upload, aliases held back from a
rejected child unless forced, and lineage."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from modelport.artifacts.archive import pack_directory
from modelport.errors import FailedPrecondition, PermissionDenied
from modelport.registry.derive_jobs import DeriveJobRequest, JobState, accuracy_verdict
from modelport.registry.records import EventKind, Lineage, NewVersion
from modelport.registry.store import RegistryStore

from tests.registry.test_store import push

SPEC = {"quantize": "int8-dynamic"}


def start(store: RegistryStore, **request: object) -> tuple[str, str]:
    job_request = DeriveJobRequest(source="scale@production", spec=SPEC, **request)  # type: ignore[arg-type]
    job, token = store.jobs.create(job_request, store.resolve("scale@production"), "local")
    return job.id, token


def upload_child(
    store: RegistryStore, model_dir: Path, job_id: str, token: str, drop: float
) -> int:
    archive = model_dir.parent / "child.tar"
    pack_directory(model_dir, archive)
    new = NewVersion(
        "scale",
        metrics={"accuracy_drop": drop, "accuracy": 1.0 - drop, "parent.accuracy": 1.0},
        lineage=Lineage(method="int8-dynamic", parameters={"torchao_config": "Int8"}),
        derive_job=job_id,
        derive_token=token,
    )
    sink = store.begin_upload(new)
    sink.write(archive.read_bytes())
    return store.finish_upload(sink, new, "").version


def test_gate_decides_status_and_aliases(
    store: RegistryStore, make_model: Callable[..., Path]
) -> None:
    push(store, make_model("scale", 2.0), "scale", "production")
    child = make_model("scale", 2.001)
    data = {"eval_data": b"x", "eval_format": "npz", "max_accuracy_drop": 0.01}

    passing, token = start(store, aliases=("canary",), **data)
    store.jobs.work(passing, token)
    store.jobs.report(passing, token, "measuring", 0.5, "", False)
    version = upload_child(store, child, passing, token, drop=0.005)
    info = store.get_version(f"scale:{version}")
    assert (info.status, info.aliases, info.parent) == ("accepted", ("canary",), "scale:1")
    assert info.lineage == Lineage("int8-dynamic", {"torchao_config": "Int8"}, passing)
    job = store.jobs.get(passing)
    assert (job.state, job.child_version, job.verdict) == (JobState.SUCCEEDED, version, "accepted")
    kinds = [(e.kind, e.detail.get("stage")) for e in store.events_after(0) if e.job == passing]
    assert kinds == [
        (EventKind.DERIVE_PROGRESS, "queued"),
        (EventKind.DERIVE_PROGRESS, "started"),
        (EventKind.DERIVE_PROGRESS, "measuring"),
        (EventKind.DERIVE_FINISHED, "done"),
    ]
    with pytest.raises(FailedPrecondition, match="has ended"):  # the token is spent
        store.jobs.report(passing, token, "again", 0.9, "", False)

    failing, token = start(store, aliases=("canary",), **data)
    store.jobs.work(failing, token)
    rejected = upload_child(store, child, failing, token, drop=0.02)
    info = store.get_version(f"scale:{rejected}")
    assert (info.status, info.aliases) == ("rejected", ())
    assert store.resolve("scale@canary").version == version  # the canary did not move
    assert "aliases canary not moved" in store.jobs.get(failing).message
    with pytest.raises(FailedPrecondition, match="rejected by its derive job's accuracy gate"):
        store.set_alias("scale", "canary", rejected)
    assert store.set_alias("scale", "canary", rejected, force=True).version == rejected

    forced, token = start(store, aliases=("shadow",), force=True, **data)
    store.jobs.work(forced, token)
    moved = upload_child(store, child, forced, token, drop=0.5)
    assert store.get_version("scale@shadow").version == moved


def test_only_the_worker_may_report_and_upload(
    store: RegistryStore, make_model: Callable[..., Path]
) -> None:
    push(store, make_model("scale", 2.0), "scale", "production")
    job_id, _token = start(store)
    with pytest.raises(PermissionDenied, match="wrong worker token"):
        store.jobs.work(job_id, "guess")
    with pytest.raises(PermissionDenied):
        upload_child(store, make_model("scale", 2.5), job_id, "guess", drop=0.0)
    assert [v.version for v in store.list_versions("scale")] == [1]
    store.jobs.fail(job_id, "worker exited with status 1: boom")
    job = store.jobs.get(job_id)
    assert (job.state, job.message) == (JobState.FAILED, "worker exited with status 1: boom")
    finished = [e for e in store.events_after(0) if e.kind == EventKind.DERIVE_FINISHED]
    assert finished[-1].detail["message"].endswith("boom")


def test_relative_gate_and_missing_measurements() -> None:
    gate = {"max_accuracy_drop": 0.01, "relative_drop": True}
    assert accuracy_verdict(gate, {"accuracy_drop": 0.004, "parent.accuracy": 0.5})[0] == "accepted"
    assert accuracy_verdict(gate, {"accuracy_drop": 0.006, "parent.accuracy": 0.5})[0] == "rejected"
    assert accuracy_verdict({"max_accuracy_drop": 0.1}, {})[0] == "rejected"
    assert accuracy_verdict({}, {"accuracy_drop": 9.0})[0] == ""
