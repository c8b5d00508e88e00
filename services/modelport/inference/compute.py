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
(a thread hop per batch cost ~20% of the loop's CPU), and which takes a
second batch per process while one runs (DEPTH), so the model does not wait
for the loop between batches; `close()` stops its processes when the version
is retired. A compute process that dies fails the
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
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelport import errors
from modelport.artifacts.config import ModelSpec
from modelport.artifacts.torch_backend import Backend, BackendLoader, load_backend
from modelport.inference import compute_child
from modelport.inference import compute_wire as wire
from modelport.inference.batcher import Computed
from modelport.proto.inference import model_config_pb2 as mc

log = logging.getLogger(__name__)

MIN_SEGMENT = 1 << 20
# Batches handed to one compute process at once: one running, one staged.
DEPTH = 2
# OpenMP teams that spin-wait without end starve the transport when cores are
# shared, and a team that sleeps at once (a spin count of 0) wakes too late for
# every op's barrier: a 2-thread encoder ran ~25% below its floor. A short spin
# (~0.1 ms) then sleep keeps the team on its cores between ops but gives them
# up between batches (benchmarks/README.md). Read by libgomp when torch loads,
# so set before the forkserver starts.
OPENMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "100000"}
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


@dataclass(eq=False)
class _Slot:
    """One batch's room in a compute process: its own segment, so the next batch
    can be written while the child still reads the previous one."""

    index: int
    segment: wire.Segment | None = None
    unsent: bool = False  # mapped here, not yet by the child

    def close(self) -> None:
        if self.segment is not None:
            self.segment.close()
        self.segment, self.unsent = None, False


class ComputeProcess:
    """One child running one model version, one batch at a time.

    Up to DEPTH batches are handed to it at once: the child runs them in order,
    and the next one already waits in its socket and segment when one ends, so
    the model never idles while the server splits answers and forms the next
    batch (that gap cost the encoder ~20% of its floor). `run` is the blocking
    form (warm-up), for a process with nothing in flight.
    """

    def __init__(self, spec: ModelSpec, version_dir: Path, threads: int, label: str) -> None:
        self._spec, self._dir, self._threads, self.label = spec, version_dir, threads, label
        self._slots = [_Slot(index) for index in range(DEPTH)]
        # Answers come back in the order batches were sent.
        self._waiting: deque[tuple[_Slot, asyncio.Future[Computed]]] = deque()
        self._watching: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Lock | None = None
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

    @property
    def outstanding(self) -> int:
        """Batches sent and not yet answered."""
        return len(self._waiting)

    def run(self, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        """Blocking (warm-up, and the thread executor's path)."""
        if self._waiting:
            raise errors.Internal(f"{self.label}: a blocking run while batches are in flight")
        if self._channel is None:
            self._start()  # the previous child died: a new one for this batch
        assert self._channel is not None
        slot = self._slots[0]
        try:
            self._send(self._channel, slot, inputs)
            return self._receive(self._channel, slot).outputs
        except (wire.PeerGone, OSError, ValueError):
            raise self._died() from None

    async def run_async(self, inputs: Sequence[np.ndarray | None]) -> Computed:
        """From the event loop: send, then wait for the answer without a thread.

        The channel is watched while any batch is out; answers are read in the
        reader callback (the child writes a frame's parts at once, so a blocking
        read of the rest waits only for bytes already on their way).
        A caller that stops waiting leaves its answer to be read and dropped,
        so the batches behind it keep theirs.
        """
        loop = asyncio.get_running_loop()
        if self._channel is None:
            if self._starting is None:
                self._starting = asyncio.Lock()
            async with self._starting:  # two batches after a death start one child
                if self._channel is None:
                    await asyncio.to_thread(self._start)
        channel = self._channel
        assert channel is not None
        busy = [slot for slot, _ in self._waiting]
        free = [slot for slot in self._slots if slot not in busy]
        if not free:
            raise errors.Internal(f"{self.label}: more than {DEPTH} batches sent at once")
        slot = free[0]
        try:
            self._send(channel, slot, inputs)
        except (wire.PeerGone, OSError, ValueError):
            raise self._died() from None
        answer: asyncio.Future[Computed] = loop.create_future()
        if not self._waiting:
            loop.add_reader(channel.fileno(), self._readable)
            # libuv makes a watched descriptor non-blocking; the wire reads and
            # writes whole frames, so give the channel back its blocking mode.
            channel.setblocking(True)
            self._watching = loop
        self._waiting.append((slot, answer))
        return await answer

    def _readable(self) -> None:
        channel = self._channel
        assert channel is not None and self._waiting
        slot, answer = self._waiting[0]
        outcome: Computed | BaseException
        try:
            outcome = self._receive(channel, slot)
        except (wire.PeerGone, OSError, ValueError):
            log.error("%s: the compute channel failed", self.label, exc_info=True)
            self._died()  # fails every batch in flight
            return
        except BaseException as exc:  # the model's own error, as a domain error
            outcome = exc
        self._waiting.popleft()
        if not self._waiting:
            self._unwatch()
        if answer.done():  # its caller went away
            return
        if isinstance(outcome, BaseException):
            answer.set_exception(outcome)
        else:
            answer.set_result(outcome)

    def _unwatch(self) -> None:
        if self._watching is not None and self._channel is not None:
            self._watching.remove_reader(self._channel.fileno())
        self._watching = None

    def _died(self) -> errors.Internal:
        self._process.join(1)
        error = errors.Internal(
            f"{self.label}: the compute process died during the batch "
            f"(exit code {self._process.exitcode})"
        )
        self._reap(error)
        return error

    def _send(
        self, channel: socket.socket, slot: _Slot, given: Sequence[np.ndarray | None]
    ) -> None:
        inputs = _arrays(given, self.label)
        size = wire.needed(inputs)
        if slot.segment is None or slot.segment.size < size:
            self._grow(slot, 2 * size)  # room for outputs of about the inputs' size
        segment = slot.segment
        assert segment is not None
        placement = wire.place(inputs, 0, segment.size)
        placement.write(segment.buffer)
        header = {
            "slot": slot.index,
            "inputs": placement.described,
            "end": placement.end,
            "segment": segment.size,
        }
        wire.send_frame(channel, header, placement.inline, segment=segment if slot.unsent else None)
        slot.unsent = False

    def _receive(self, channel: socket.socket, slot: _Slot) -> Computed:
        answer, _ = wire.recv_frame(channel)
        if "error" in answer:
            _raise(answer, self.label)
        described = answer["outputs"]
        inline = [wire.recv_inline(channel, d[4]) for d in described if d[3] < 0]
        segment = slot.segment
        assert segment is not None
        outputs = wire.read(segment.buffer, described, inline, copy=True)
        if answer.get("needed", 0) > segment.size:
            self._grow(slot, answer["needed"])  # sent along with its next batch
        return Computed(outputs, int(answer.get("run_ns", 0)))

    def _grow(self, slot: _Slot, size: int) -> None:
        """A bigger segment for the slot, sent to the child with its next batch."""
        slot.close()
        slot.segment = wire.Segment(max(MIN_SEGMENT, wire.aligned(size)))
        slot.unsent = True

    def _reap(self, error: BaseException | None = None) -> int | None:
        """Stop the child; batches still in flight fail with `error`."""
        self._unwatch()
        waiting, self._waiting = self._waiting, deque()
        for _, answer in waiting:
            if not answer.done():
                answer.set_exception(error or errors.Unavailable(f"{self.label} is unloading"))
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        for slot in self._slots:
            slot.close()
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

    in_flight = DEPTH  # batches the batcher may hand each instance at once

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

    async def run_async(self, inputs: Sequence[np.ndarray | None]) -> Computed:
        # The batcher holds instances * DEPTH slots: the least busy one has room.
        process = min(self.processes, key=lambda p: p.outstanding)
        return await process.run_async(inputs)

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
