"""How a worker tells the service what it is doing: JSON events, one per line.

Locally the worker appends to a file in the job folder that the service
tails; in a cluster it sends the same events to the training service's
`ReportEvents` (`report_sink.ReportSink`, the one part that speaks gRPC; the
sink answers whether to keep running: a cancelled job's workers stop).
The service applies each event to its job (`apply_event`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Protocol

from modelport.training.jobs import Checkpoint, JobRecord, utcnow


class EventSink(Protocol):
    def emit(self, kind: str, **fields: Any) -> bool:
        """Record one event; False when the job should stop."""
        ...


class NullSink:
    """Ranks other than 0 say nothing."""

    def emit(self, kind: str, **fields: Any) -> bool:
        return True


class FileSink:
    def __init__(self, path: Path) -> None:
        self.path = path

    def emit(self, kind: str, **fields: Any) -> bool:
        line = json.dumps({"kind": kind, "at": time.time(), **fields})
        with self.path.open("a") as f:
            f.write(line + "\n")
            f.flush()
        return True


def read_new(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Complete lines appended since `offset`; returns them and the new offset."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    events = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    return events, offset + end


def apply_event(job: JobRecord, event: dict[str, Any]) -> dict[str, Any]:
    """A worker's event applied to its job's state; returns the event as the job's
    event log keeps it (kinds the log does not know become log lines)."""
    kind = event.get("kind", "log")
    metrics = {k: float(v) for k, v in (event.get("metrics") or {}).items()}
    record: dict[str, Any] = {"kind": kind, "at": time.time(), "metrics": metrics}
    for key in ("step", "total_steps", "epoch", "eta_seconds"):
        if key in event:
            record[key] = event[key]
    if kind in ("progress", "eval"):
        job.step = int(event.get("step", job.step))
        job.total_steps = int(event.get("total_steps", job.total_steps))
        job.epoch = int(event.get("epoch", job.epoch))
        job.eta_seconds = float(event.get("eta_seconds", job.eta_seconds))
        job.trained_tokens = int(event.get("trained_tokens", job.trained_tokens))
        job.metrics.update(metrics)
    elif kind == "checkpoint":
        job.checkpoints.append(Checkpoint(int(event["step"]), metrics, utcnow().isoformat()))
        record["message"] = f"checkpoint at step {event['step']}"
    elif kind == "resumed":
        record.update(kind="log", message=str(event.get("message", "resumed")))
        if job.step > 0:
            job.restarts += 1
    elif kind == "failed":
        # Reported before the workers exit; the service's _finish makes it the job's failure.
        job.error_code = str(event.get("code", "INVALID_ARGUMENT"))
        job.error_message = str(event.get("message", ""))
        record.update(kind="log", message=job.error_message)
    elif kind == "done":
        job.metrics.update(metrics)
        job.result_version = str(event.get("result_version", job.result_version))
        record.update(kind="log", message="training finished")
    else:
        record.update(kind="log", message=str(event.get("message", "")))
    return record
