"""The compute process: one model version, one batch at a time, for its server process.

Started by `compute.ComputeProcess` (forked from a server that preloaded torch).
It loads the model with the same safe loaders as the in-process backend,
answers "ready" (or why not), then runs each batch the server sends, in
order: inputs are views of the batch's slot of shared memory (the server
stages the next batch in another slot while one runs), outputs are written
after them in the same segment (inline when they do not fit), with the
model's own run time. It ignores SIGINT (a terminal's Ctrl-C
reaches the whole process group, and the server drains first, then closes
the channel) and exits when the channel closes, which also happens when the
server dies, however it dies. SIGTERM stops it (multiprocessing's exit).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from modelport.artifacts.config import ModelSpec
from modelport.errors import ModelportError
from modelport.inference import compute_wire as wire

log = logging.getLogger(__name__)


def _failure(exc: BaseException, doing: str) -> dict[str, Any]:
    if isinstance(exc, ModelportError):
        return {"error": str(exc), "code": exc.code}
    log.error("compute process: %s failed", doing, exc_info=exc)
    return {"error": f"{doing} failed: {type(exc).__name__}: {exc}", "code": "INTERNAL"}


def main(spec: ModelSpec, version_dir: str, threads: int, channel: socket.socket) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    from modelport.artifacts.torch_backend import load_backend

    torch.set_num_threads(max(1, threads))
    try:
        backend = load_backend(spec, Path(version_dir))
    except BaseException as exc:
        wire.send_frame(channel, _failure(exc, "loading"))
        return
    wire.send_frame(channel, {"ready": os.getpid()})
    segments: dict[int, wire.Segment] = {}  # by slot: the server stages a batch per slot
    while True:
        try:
            header, fd = wire.recv_frame(channel)
        except (wire.PeerGone, OSError):
            return
        slot = int(header["slot"])
        if fd is not None:
            if slot in segments:
                segments[slot].close()
            segments[slot] = wire.Segment(header["segment"], fd)
        inline = [wire.recv_inline(channel, d[4]) for d in header["inputs"] if d[3] < 0]
        segment = segments.get(slot)
        buffer = segment.buffer if segment is not None else None
        capacity = segment.size if segment is not None else 0
        try:
            inputs = wire.read(buffer, header["inputs"], inline, copy=False)
            started = time.perf_counter_ns()
            outputs = backend.run(inputs)
            run_ns = time.perf_counter_ns() - started
            placement = wire.place(outputs, header["end"], capacity)
            if buffer is not None:
                placement.write(buffer)
        except BaseException as exc:
            wire.send_frame(channel, _failure(exc, "execution"))
            continue
        answer = {"outputs": placement.described, "run_ns": run_ns}
        if placement.inline:  # tell the server how big the segment should be
            answer["needed"] = header["end"] + wire.needed(outputs)
        wire.send_frame(channel, answer, placement.inline)
        del inputs, outputs, placement  # no views of a segment outlive its batch
