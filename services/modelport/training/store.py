"""Jobs on disk: `<data-dir>/jobs/<id>/` holds job.json, events.jsonl and the run's files.

job.json is replaced atomically (written aside, fsynced, renamed), so a crash
leaves the previous state or the new one; events.jsonl is append-only with
per-job sequence numbers. A restarted service reads every job back.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from modelport.errors import NotFound
from modelport.training.jobs import JobRecord


class JobStore:
    def __init__(self, root: Path) -> None:
        self.root = root / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._seq: dict[str, int] = {}

    def job_dir(self, job_id: str) -> Path:
        if "/" in job_id or job_id.startswith("."):
            raise NotFound(f"job '{job_id}' not found")
        return self.root / job_id

    def save(self, job: JobRecord) -> None:
        folder = self.job_dir(job.id)
        folder.mkdir(exist_ok=True)
        partial = folder / "job.json.partial"
        with partial.open("w") as f:
            json.dump(job.to_json(), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, folder / "job.json")

    def load(self, job_id: str) -> JobRecord:
        path = self.job_dir(job_id) / "job.json"
        try:
            return JobRecord.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            raise NotFound(f"job '{job_id}' not found") from None

    def load_all(self) -> list[JobRecord]:
        jobs = []
        for folder in self.root.iterdir():
            if (folder / "job.json").is_file():
                jobs.append(self.load(folder.name))
        return sorted(jobs, key=lambda j: j.created_at, reverse=True)

    def append_event(self, job_id: str, event: dict[str, Any]) -> dict[str, Any]:
        """Give the event the job's next sequence number and append it; returns it."""
        path = self.job_dir(job_id) / "events.jsonl"
        with self._lock:
            seq = self._seq.get(job_id)
            if seq is None:
                seq = len(self._read(path))
            seq += 1
            self._seq[job_id] = seq
            event = {**event, "seq": seq}
            with path.open("a") as f:
                f.write(json.dumps(event) + "\n")
        return event

    def events_after(self, job_id: str, after: int) -> list[dict[str, Any]]:
        return [e for e in self._read(self.job_dir(job_id) / "events.jsonl") if e["seq"] > after]

    @staticmethod
    def _read(path: Path) -> list[dict[str, Any]]:
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return []
        events = []
        for line in lines:
            try:
                events.append(json.loads(line))
            except ValueError:  # a line cut short by a crash
                continue
        return events
