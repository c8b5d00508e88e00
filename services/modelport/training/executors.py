"""Where a job's workers run: the `Executor` seam and the local executor.

An executor starts a job's worker group from its spec, says whether it is
still running and how it ended, and stops it. The local executor runs
torchrun (`python -m torch.distributed.run --standalone`) in its own process
group: torchrun starts `--workers` processes with the torch.distributed
environment and, with `--max-restarts`, restarts the group when a worker
dies, which then resumes from the newest checkpoint.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from modelport.training.jobs import JobRecord


@dataclass
class Outcome:
    """How a worker group ended: exit code 0 with `output/` (or `failed.json`) in the job folder."""

    exit_code: int
    detail: str = ""


class Executor(Protocol):
    name: str
    # True when workers send events over ReportEvents rather than into the job folder.
    reports_over_grpc: bool

    def start(self, job: JobRecord, spec_path: Path, job_dir: Path) -> str:
        """Start the worker group; returns a handle to find it again (pid, object name)."""
        ...

    def poll(self, job: JobRecord, handle: str) -> Outcome | None:
        """None while it runs."""
        ...

    def stop(self, job: JobRecord, handle: str) -> None:
        """Stop every worker (idempotent; also for a handle left by a previous service run)."""
        ...


class LocalExecutor:
    name = "local"
    reports_over_grpc = False

    def __init__(self, max_restarts: int = 2, stop_grace_seconds: float = 5.0) -> None:
        self.max_restarts = max_restarts
        self.stop_grace_seconds = stop_grace_seconds
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def command(self, job: JobRecord, spec_path: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={max(1, job.workers)}",
            f"--max-restarts={self.max_restarts}",
            "--monitor-interval=0.5",
            "-m",
            "modelport.training.worker",
            str(spec_path),
        ]

    def start(self, job: JobRecord, spec_path: Path, job_dir: Path) -> str:
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", "1")
        env["PYTHONUNBUFFERED"] = "1"
        with (job_dir / "worker.log").open("ab") as log:
            proc = subprocess.Popen(
                self.command(job, spec_path),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=job_dir,
                env=env,
                start_new_session=True,  # its own process group: stop() reaches every worker
            )
        self._procs[str(proc.pid)] = proc
        return str(proc.pid)

    def poll(self, job: JobRecord, handle: str) -> Outcome | None:
        proc = self._procs.get(handle)
        if proc is None:
            # Started by an earlier service process: not ours to wait for.
            return Outcome(-1, "the service restarted while the workers ran")
        code = proc.poll()
        if code is None:
            return None
        self._procs.pop(handle, None)
        return Outcome(code)

    def stop(self, job: JobRecord, handle: str) -> None:
        if not handle:
            return
        pid = int(handle)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace_seconds
        proc = self._procs.pop(handle, None)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                break
            if proc is None and not _group_alive(pid):
                break
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def log_tail(path: Path, lines: int = 3) -> str:
    """The last lines of a worker log, for a failed job's message."""
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "(none)"
    return " | ".join(line.strip()[:200] for line in text[-lines:]) or "(empty)"
