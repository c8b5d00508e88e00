"""Per-request records, kept compact while the load runs and merged across processes.

Every request leaves four numbers: when it was due to start (ns since the run's
start), how long it took from then (ns), how late the generator sent it (ns;
open loop only), and its outcome (a gRPC status code number; 0 is
OK, STREAM_ERROR a failure reported inside a stream response). `array.array`
appends cost ~50 ns each, so recording never competes with sending; the arrays
travel to the parent as bytes and become numpy arrays there. Keeping every
sample (not buckets) makes the percentiles exact: an HDR histogram with no
rounding.
"""

from __future__ import annotations

import array
from dataclasses import dataclass, field

import grpc
import numpy as np

STREAM_ERROR = -1
CLIENT_ERROR = -2  # the generator itself failed to send (a bug or a broken channel)
_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
_NAMES[STREAM_ERROR] = "STREAM_ERROR"
_NAMES[CLIENT_ERROR] = "CLIENT_ERROR"


def status_name(code: int) -> str:
    return _NAMES.get(code, f"CODE_{code}")


def status_number(code: grpc.StatusCode) -> int:
    return int(code.value[0])


@dataclass
class RequestLog:
    """What one worker saw."""

    starts: array.array = field(default_factory=lambda: array.array("q"))
    latencies: array.array = field(default_factory=lambda: array.array("q"))
    codes: array.array = field(default_factory=lambda: array.array("h"))
    lags: array.array = field(default_factory=lambda: array.array("q"))

    def record(self, start_ns: int, latency_ns: int, code: int, lag_ns: int = 0) -> None:
        self.starts.append(start_ns)
        self.latencies.append(latency_ns)
        self.codes.append(code)
        self.lags.append(lag_ns)


@dataclass
class Samples:
    """Merged numpy view of many RequestLogs, sorted by start time."""

    starts_ns: np.ndarray
    latencies_ns: np.ndarray
    codes: np.ndarray
    lags_ns: np.ndarray

    @classmethod
    def merge(cls, logs: list[RequestLog]) -> Samples:
        def cat(name: str, dtype: str) -> np.ndarray:
            parts = [np.frombuffer(getattr(log, name), dtype=dtype) for log in logs]
            return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

        starts = cat("starts", "i8")
        order = np.argsort(starts, kind="stable")
        return cls(
            starts_ns=starts[order],
            latencies_ns=cat("latencies", "i8")[order],
            codes=cat("codes", "i2")[order],
            lags_ns=cat("lags", "i8")[order],
        )

    def window(self, begin_ns: int, end_ns: int) -> Samples:
        """The requests due to start in [begin, end): warm-up and tail excluded."""
        keep = (self.starts_ns >= begin_ns) & (self.starts_ns < end_ns)
        return Samples(
            self.starts_ns[keep], self.latencies_ns[keep], self.codes[keep], self.lags_ns[keep]
        )

    def __len__(self) -> int:
        return int(self.starts_ns.size)
