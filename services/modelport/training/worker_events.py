"""How a worker tells the service what it is doing: JSON events, one per line.

Locally the worker appends to a file in the job folder that the service
tails; in a cluster it sends the same events to the training service's
`ReportEvents` (`report_sink.ReportSink`, the one part that speaks gRPC; the
sink answers whether to keep running: a cancelled job's workers stop).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Protocol


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
