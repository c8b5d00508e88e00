"""Split a server's CPU per request into what it was spent on, from py-spy samples.

Each thread's CPU over the window comes from /proc (exact, whatever else the
machine runs); py-spy's samples of that thread (non-idle only) say how that CPU
divides between categories. A sample falls in the category of the frame
nearest its leaf that matches one (so numpy called by the codec counts as
decode, OpenTelemetry called by the batcher as metrics). Python frames are all
py-spy sees: time inside gRPC's Cython/C core, upb, uvloop and the kernel's
socket calls lands on the Python frame that called them, which for the
transport is the event loop itself ("gRPC core, protobuf, uvloop").
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field

TICKS = os.sysconf("SC_CLK_TCK")

# (category, substrings of a frame) checked from the leaf up; first match wins.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    (
        "metrics (OpenTelemetry)",
        (
            "opentelemetry/sdk/metrics",
            "metrics/_internal",
            "inference/stats.py",
            "router/telemetry.py",
            "common/metrics.py",
        ),
    ),
    ("tracing", ("common/tracing.py", "opentelemetry/context", "opentelemetry/trace")),
    ("model: torch op calls", ("torch/_ops.py",)),
    ("model: FX/nn Python", ("torch/fx/", "torch/nn/", "torch/export/", "torch/utils/_pytree")),
    ("model: tensors <-> numpy", ("inference/backends.py",)),
    ("compute process IPC", ("inference/compute",)),
    ("decode inputs", ("decode_inputs", "_decode_one", "_check_shape", "requested_outputs")),
    ("encode response", ("build_response", "encode_bytes")),
    ("batching", ("inference/batcher.py", "model_manager.py")),
    ("router logic", ("modelport/router/",)),
    ("servicer + error boundary", ("inference/servicer.py", "grpc_errors.py")),
    # Not asyncio/runners.py: it is the root of every event-loop stack.
    (
        "asyncio",
        (
            "asyncio/base_events",
            "asyncio/events",
            "asyncio/futures",
            "asyncio/tasks",
            "asyncio/locks",
            "asyncio/queues",
        ),
    ),
    ("thread pool", ("concurrent/futures",)),
    ("prototype handler (parse, batch, encode)", ("compute_process.py",)),
]
TRANSPORT = "gRPC core, protobuf, uvloop"
THREAD = re.compile(r"^thread \((\d+)\)")


@dataclass
class ThreadProfile:
    tid: int
    name: str
    cpu_s: float = 0.0
    samples: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def total(self) -> int:
        return sum(self.samples.values())


def thread_cpu(pid: int) -> dict[int, tuple[str, int]]:
    """tid -> (name, utime+stime ticks) for every thread of pid."""
    out = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as stat:
                text = stat.read()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text.rsplit(")", 1)[1].split()
        out[int(task)] = (name, int(fields[11]) + int(fields[12]))
    return out


def categorize(frames: list[str]) -> str:
    for frame in reversed(frames):
        for category, needles in CATEGORIES:
            if any(n in frame for n in needles):
                return category
    return TRANSPORT


def parse_raw(text: str) -> dict[int, dict[str, int]]:
    """py-spy `--format raw --threads`: 'thread (TID);frame;...;frame COUNT' lines."""
    per_thread: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        found = THREAD.match(frames[0])
        if not found:
            continue
        # frames[1:] root first; the thread's Python name is not a frame.
        body = [f for f in frames[1:] if " (" in f]
        per_thread[int(found.group(1))][categorize(body)] += int(count)
    return per_thread


def combine(
    before: dict[int, tuple[str, int]],
    after: dict[int, tuple[str, int]],
    samples: dict[int, dict[str, int]],
) -> list[ThreadProfile]:
    threads = []
    for tid, (name, ticks) in after.items():
        spent = (ticks - before.get(tid, (name, 0))[1]) / TICKS
        profile = ThreadProfile(tid, name, spent)
        for category, count in samples.get(tid, {}).items():
            profile.samples[category] = count
        threads.append(profile)
    return sorted(threads, key=lambda t: -t.cpu_s)


def per_request(threads: list[ThreadProfile], requests: int) -> dict[str, float]:
    """µs of CPU per request by category; threads py-spy never saw are native."""
    out: dict[str, float] = defaultdict(float)
    for thread in threads:
        if thread.cpu_s <= 0:
            continue
        if not thread.total:
            out["native threads (OpenMP, gRPC pollers)"] += thread.cpu_s / requests * 1e6
            continue
        for category, count in thread.samples.items():
            out[category] += thread.cpu_s * count / thread.total / requests * 1e6
    return dict(out)
