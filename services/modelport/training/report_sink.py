"""Worker events to the training service over gRPC (`ReportEvents`), for workers in a cluster.

The gRPC side of `worker_events.EventSink`, kept apart so the training loop
and the local sinks import no gRPC.
"""

from __future__ import annotations

from typing import Any

import grpc

from modelport.proto.modelport.training.v1 import training_pb2_grpc
from modelport.training.convert import report_request


class ReportSink:
    """Events to the training service over gRPC (the Kubernetes executor's workers)."""

    def __init__(self, address: str, job_id: str, attempt: str) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self._channel = grpc.insecure_channel(address)
        self._stub = training_pb2_grpc.TrainingStub(self._channel)

    def emit(self, kind: str, **fields: Any) -> bool:
        request = report_request(self.job_id, self.attempt, kind, fields)
        return bool(self._stub.ReportEvents(request, timeout=30).keep_running)
