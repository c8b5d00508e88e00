"""The Kubernetes executor's create/poll/delete through the official client, against an
in-test stand-in of the API server's batch/v1 Job and Kubeflow TrainJob paths (no real
API server runs on this machine; the rendered objects are schema-checked in
tests/helm/test_training_chart.py)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from modelport.training.jobs import JobRecord
from modelport.training.kubernetes import KubernetesExecutor, KubernetesSettings
from modelport.training.worker import WorkerSpec

JOBS = "/apis/batch/v1/namespaces/serving/jobs"
TRAINJOBS = "/apis/trainer.kubeflow.org/v1alpha1/namespaces/serving/trainjobs"


class FakeApi:
    """Objects by path; `trainjobs` says whether the TrainJob CRD answers."""

    def __init__(self, trainjobs: bool) -> None:
        self.trainjobs = trainjobs
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _missing(self) -> None:
                self._send(404, {"kind": "Status", "status": "Failure", "code": 404})

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                api.requests.append(("GET", path))
                if path == TRAINJOBS:
                    if not api.trainjobs:
                        return self._missing()
                    return self._send(200, {"apiVersion": "v1", "kind": "List", "items": []})
                path = path.removesuffix("/status")
                if path in api.objects:
                    return self._send(200, api.objects[path])
                self._missing()

            def do_POST(self) -> None:
                path = self.path.split("?")[0]
                api.requests.append(("POST", path))
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.objects[f"{path}/{body['metadata']['name']}"] = body
                self._send(201, body)

            def do_DELETE(self) -> None:
                path = self.path.split("?")[0]
                api.requests.append(("DELETE", path))
                if api.objects.pop(path, None) is None:
                    return self._missing()
                self._send(200, {"kind": "Status", "status": "Success"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def kubeconfig(self, path: Path) -> Path:
        server = f"http://127.0.0.1:{self.server.server_address[1]}"
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "c", "cluster": {"server": server}}],
                    "users": [{"name": "u", "user": {"token": "t"}}],
                    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "x",
                }
            )
        )
        return path


def test_start_poll_stop_through_the_kubernetes_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = FakeApi(trainjobs=False)
    monkeypatch.setenv("KUBECONFIG", str(api.kubeconfig(tmp_path / "kubeconfig")))
    try:
        for trainjobs in (False, True):  # without, then with the TrainJob CRD
            api.trainjobs = trainjobs
            _round_trip(api, trainjobs, tmp_path)
    finally:
        api.server.shutdown()


def _round_trip(api: FakeApi, trainjobs: bool, tmp_path: Path) -> None:
    executor = KubernetesExecutor(
        KubernetesSettings(
            namespace="serving",
            image="modelport:0.1.0",
            service_address="training:8004",
            node_selector={"nvidia.com/gpu.present": "true"},
        )
    )
    job = JobRecord.new(model="mlp@production", dataset="pairs", workers=2, gpus_per_worker=1)
    spec = WorkerSpec(job_id=job.id, kind="tensor", method="full", hyperparameters={},
                      seed=1, validation_fraction=0.1, work_dir=str(tmp_path),
                      registry="registry:8003")  # fmt: skip
    spec.write(tmp_path / "spec.json")
    handle = executor.start(job, tmp_path / "spec.json", tmp_path)
    kind, name = ("trainjob", TRAINJOBS) if trainjobs else ("job", JOBS)
    assert handle == f"{kind}/{job.id.lower()}"
    (created,) = api.objects.values()
    assert created["kind"] == ("TrainJob" if trainjobs else "Job")
    env = json.dumps(created)
    assert "training:8004" in env and "/work" in env  # the pod's spec reports back here
    # Running, then finished: the status the controller writes becomes the outcome.
    assert executor.poll(job, handle) is None
    created["status"] = {"conditions": [{"type": "Complete" if not trainjobs else
                                         "Succeeded", "status": "True"}]}  # fmt: skip
    outcome = executor.poll(job, handle)
    assert outcome is not None and outcome.exit_code == 0
    executor.stop(job, handle)
    assert api.objects == {}
    assert ("DELETE", f"{name}/{job.id.lower()}") in api.requests
    executor.stop(job, handle)  # idempotent: a 404 is fine
    gone = executor.poll(job, handle)
    assert gone is not None and gone.exit_code == 1 and "gone" in gone.detail
    api.requests.clear()
