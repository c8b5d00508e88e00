"""Models run in compute processes: the transport's GIL is never the model's.

An exported program runs op by op from Python and needs the GIL between ops;
in the server's process it competes with the event loop for it, and torch's
OpenMP team spins on the cores the event loop needs (benchmarks/README.md,
"Where the time goes"). So each instance of a model version (instance_group
count) gets a process of its own, forked from a server-wide forkserver that
has torch imported already (a fork takes milliseconds, a fresh interpreter
seconds), and the batcher's executor thread hands it batches through shared
memory (compute_wire): one copy of the inputs into the segment, one copy of
the outputs out of it, an 8 KB-scale header each way.

`ProcessBackend` is a Backend like the in-process one, so statistics,
tracing, hot swap and drain are unchanged; it also offers `run_async`, which
the batcher awaits on the event loop instead of handing the batch to a thread
(a thread hop per batch cost ~20% of the loop's CPU); `close()` stops its
processes when the version is retired. A compute process that dies fails the
batch it was running with INTERNAL and is started again for the next one.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import queue
import socket
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from modelport import errors
from modelport.artifacts.config import ModelSpec
from modelport.inference import compute_child
from modelport.inference import compute_wire as wire
from modelport.inference.backends import Backend, BackendLoader, load_backend
from modelport.proto.inference import model_config_pb2 as mc

log = logging.getLogger(__name__)

MIN_SEGMENT = 1 << 20
# OpenMP teams that spin-wait starve the event loop when cores are shared; a
# passive team sleeps between parallel regions (4-8x faster on a busy 2-core
# machine). Read by libgomp when torch loads, so set before the forkserver starts.
OPENMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
_CODES = {cls.code: cls for cls in vars(errors).values()
          if isinstance(cls, type) and issubclass(cls, errors.ModelportError)}  # fmt: skip
_CODES["INTERNAL"] = errors.Internal
_context_lock = threading.Lock()
_context: Any = None


def context() -> Any:
    """The forkserver every compute process is forked from, torch preloaded."""
    global _context
    with _context_lock:
        if _context is None:
            for key, value in OPENMP_ENV.items():
                os.environ.setdefault(key, value)
            _context = multiprocessing.get_context("forkserver")
            _context.set_forkserver_preload(["modelport.inference.compute_preload"])
        return _context


def _raise(header: dict[str, Any], label: str) -> None:
    kind = _CODES.get(header.get("code", "INTERNAL"), errors.Internal)
    raise kind(f"{label}: {header['error']}" if kind is errors.Internal else header["error"])


def _arrays(inputs: Sequence[np.ndarray | None], label: str) -> list[np.ndarray]:
    """The wire carries arrays; models with optional inputs stay in process."""
    if any(array is None for array in inputs):
        raise errors.Internal(f"{label}: an input left out cannot go to a compute process")
    return [array for array in inputs if array is not None]


class ComputeProcess:
    """One child running one model version; `run` is blocking and not reentrant."""

    def __init__(self, spec: ModelSpec, version_dir: Path, threads: int, label: str) -> None:
        self._spec, self._dir, self._threads, self.label = spec, version_dir, threads, label
        self._segment: wire.Segment | None = None
        self._unsent: wire.Segment | None = None  # mapped here, not yet by the child
        self._channel: socket.socket | None = None
        self._process: Any = None
        self._start()

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        self._process = context().Process(
            target=compute_child.main,
            args=(self._spec, str(self._dir), self._threads, theirs),
            name=f"compute {self.label}",
            daemon=True,
        )
        self._process.start()
        theirs.close()
        try:
            header, _ = wire.recv_frame(ours)
        except (wire.PeerGone, OSError):
            ours.close()
            self._process.join(5)
            raise errors.Internal(
                f"{self.label}: the compute process exited while loading "
                f"(exit code {self._process.exitcode})"
            ) from None
        if "error" in header:
            ours.close()
            self._process.join(5)
            _raise(header, self.label)
        self._channel = ours

    @property
    def pid(self) -> int:
        return int(self._process.pid)

    def run(self, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        """Blocking (warm-up, and the thread executor's path)."""
        if self._channel is None:
            self._start()  # the previous child died: a new one for this batch
        assert self._channel is not None
        try:
            self._send(self._channel, inputs)
            return self._receive(self._channel)
        except (wire.PeerGone, OSError, ValueError):
            raise self._died() from None

    async def run_async(self, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        """From the event loop: send, then wait for the answer without a thread.

        The channel is watched only while a batch is out; the answer is read in
        the reader callback (the child writes a frame at once, so nothing blocks).
        """
        loop = asyncio.get_running_loop()
        if self._channel is None:
            await asyncio.to_thread(self._start)
        channel = self._channel
        assert channel is not None
        answer: asyncio.Future[list[np.ndarray]] = loop.create_future()

        def readable() -> None:
            loop.remove_reader(channel.fileno())
            try:
                answer.set_result(self._receive(channel))
            except (wire.PeerGone, OSError, ValueError):
                answer.set_exception(self._died())
            except BaseException as exc:  # the model's own error, as a domain error
                answer.set_exception(exc)

        try:
            self._send(channel, inputs)
        except (wire.PeerGone, OSError, ValueError):
            raise self._died() from None
        loop.add_reader(channel.fileno(), readable)
        try:
            return await answer
        finally:
            if not answer.done():  # cancelled: the child's answer can no longer be read
                loop.remove_reader(channel.fileno())
                self._reap()

    def _died(self) -> errors.Internal:
        code = self._reap()
        return errors.Internal(
            f"{self.label}: the compute process died during the batch (exit code {code})"
        )

    def _send(self, channel: socket.socket, given: Sequence[np.ndarray | None]) -> None:
        inputs = _arrays(given, self.label)
        size = wire.needed(inputs)
        if self._segment is None or self._segment.size < size:
            self._grow(2 * size)  # room for outputs of about the inputs' size
        segment = self._segment
        assert segment is not None
        placement = wire.place(inputs, 0, segment.size)
        placement.write(segment.buffer)
        header = {"inputs": placement.described, "end": placement.end, "segment": segment.size}
        wire.send_frame(channel, header, placement.inline, segment=self._unsent)
        self._unsent = None

    def _receive(self, channel: socket.socket) -> list[np.ndarray]:
        answer, _ = wire.recv_frame(channel)
        if "error" in answer:
            _raise(answer, self.label)
        described = answer["outputs"]
        inline = [wire.recv_inline(channel, d[4]) for d in described if d[3] < 0]
        segment = self._segment
        assert segment is not None
        outputs = wire.read(segment.buffer, described, inline, copy=True)
        if answer.get("needed", 0) > segment.size:
            self._grow(answer["needed"])  # sent along with the next batch
        return outputs

    def _grow(self, size: int) -> None:
        """A bigger segment, sent to the child with the next batch."""
        if self._segment is not None:
            self._segment.close()
        self._segment = self._unsent = wire.Segment(max(MIN_SEGMENT, wire.aligned(size)))

    def _reap(self) -> int | None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        if self._segment is not None:
            self._segment.close()
            self._segment = self._unsent = None
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        code: int | None = self._process.exitcode
        return code

    def close(self) -> None:
        """Close the channel (the child exits at EOF) and wait for it."""
        self._reap()


class ProcessBackend:
    """A Backend whose model runs in `instances` compute processes."""

    def __init__(self, spec: ModelSpec, version_dir: Path, *, instances: int, threads: int) -> None:
        label = f"model '{spec.name}' version {version_dir.name}"
        self.processes: list[ComputeProcess] = []
        try:
            for _ in range(max(1, instances)):
                self.processes.append(ComputeProcess(spec, version_dir, threads, label))
        except BaseException:
            self.close()
            raise
        self._idle: queue.SimpleQueue[ComputeProcess] = queue.SimpleQueue()
        for process in self.processes:
            self._idle.put(process)

    def run(self, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        process = self._idle.get()  # the batcher runs at most `instances` at once
        try:
            return process.run(inputs)
        finally:
            self._idle.put(process)

    async def run_async(self, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        process = self._idle.get_nowait()  # the batcher's slots: one is always idle here
        try:
            return await process.run_async(inputs)
        finally:
            self._idle.put(process)

    def close(self) -> None:
        for process in self.processes:
            process.close()


def stays_in_process(spec: ModelSpec) -> str | None:
    """Why a model runs in the server's own process instead, or None.

    Sequence models keep per-sequence state through named calls, optional
    inputs arrive as None (the wire carries arrays only), and a GPU model's
    time is on the device, not on the GIL."""
    if spec.sequence is not None:
        return "sequence batching"
    if any(t.optional for t in spec.inputs):
        return "optional inputs"
    if spec.device_kind == mc.ModelInstanceGroup.KIND_GPU or spec.device_index is not None:
        return "a GPU instance group"
    return None


def process_loader(threads: int) -> BackendLoader:
    """A BackendLoader: each version in `instance_count` processes of `threads` torch
    threads (or the model's INTRA_OP_THREAD_COUNT); models `stays_in_process`
    names load in this process as before."""

    def load(spec: ModelSpec, version_dir: Path) -> Backend:
        reason = stays_in_process(spec)
        if reason is not None:
            log.info("model '%s' runs in the server process (%s)", spec.name, reason)
            return load_backend(spec, version_dir)
        count = spec.intra_op_threads or threads
        return ProcessBackend(spec, version_dir, instances=spec.instance_count, threads=count)

    return load
