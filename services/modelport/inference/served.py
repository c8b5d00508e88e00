"""What a loaded version is at run time: a torch model behind its scheduler, or an ensemble.

- a torch model behind the dynamic batcher (`infer`), or the sequence batcher
  when it is stateful (`infer_sequence`);
- a decoupled torch model (`stream`): one execution whose outputs carry a
  leading responses dimension, streamed as separate responses;
- an ensemble (`ServedEnsemble.infer`): its plan run over the members, each
  member called through its own scheduler.

Every path keeps the version's statistics and its in-flight count, which a
hot swap waits on before retiring the version.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

import numpy as np

from modelport.artifacts import torch_values
from modelport.artifacts.config import ModelSpec
from modelport.artifacts.sequences import CorrelationId
from modelport.artifacts.torch_backend import Backend, NamedBackend, close_backend
from modelport.errors import Internal, InvalidInput, ModelportError
from modelport.inference.batcher import DynamicBatcher
from modelport.inference.decoupled import Response, split_responses
from modelport.inference.ensemble import EnsembleScheduler, MemberInfer
from modelport.inference.sequence_batcher import SequenceBatcher
from modelport.inference.stats import VersionStats

T = TypeVar("T")
Signature = tuple[tuple[int, ...], ...]


class _Tracked:
    """In-flight counting and request statistics shared by every kind of version."""

    def __init__(self, spec: ModelSpec, version: int) -> None:
        self.spec = spec
        self.version = version
        self.label = f"model '{spec.name}' version {version}"
        self.stats = VersionStats(spec.name, version)
        self._idle = asyncio.Event()
        self._retiring = False

    async def _tracked(self, work: Awaitable[T]) -> T:
        stats = self.stats
        stats.in_flight += 1
        start = time.perf_counter_ns()
        try:
            result = await work
        except ModelportError as exc:
            stats.request_failed(time.perf_counter_ns() - start, exc.code)
            raise
        except asyncio.CancelledError:
            stats.request_failed(time.perf_counter_ns() - start, "CANCELLED")
            raise
        finally:
            stats.in_flight -= 1
            if self._retiring and stats.in_flight == 0:
                self._idle.set()
        stats.request_done(time.perf_counter_ns() - start)
        return result

    async def _wait_idle(self) -> None:
        self._retiring = True
        if self.stats.in_flight:
            await self._idle.wait()


class ServedVersion(_Tracked):
    """One loaded version of a torch model: its backend, scheduler and statistics."""

    def __init__(
        self,
        spec: ModelSpec,
        version: int,
        backend: Backend,
        thread_initializer: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(spec, version)
        self.backend = backend
        self.batcher: DynamicBatcher | None = None
        self.sequencer: SequenceBatcher | None = None
        if spec.sequence is not None:
            if not isinstance(backend, NamedBackend):
                raise InvalidInput(
                    f"model '{spec.name}': sequence batching needs a backend that runs on "
                    "named inputs (control and state tensors)"
                )
            self.sequencer = SequenceBatcher(
                spec.name, self.label, backend.run_named, spec.sequence,
                max_batch_size=spec.max_batch_size, instances=spec.instance_count,
                stats=self.stats, thread_initializer=thread_initializer,
            )  # fmt: skip
        else:
            self.batcher = DynamicBatcher(
                self.label, backend.run,
                max_batch_size=spec.max_batch_size, batching=spec.batching,
                instances=spec.instance_count, stats=self.stats,
                thread_initializer=thread_initializer,
                # a compute-process backend is awaited on the loop: no thread hop
                run_async=getattr(backend, "run_async", None),
                in_flight=getattr(backend, "in_flight", 1),
            )  # fmt: skip

    def start(self) -> None:
        (self.sequencer or self.batcher).start()  # type: ignore[union-attr]

    async def infer(
        self,
        inputs: Sequence[np.ndarray | None],
        rows: int,
        signature: Signature,
        deadline: float | None,
    ) -> list[np.ndarray]:
        if self.batcher is None:
            raise InvalidInput(
                f"inference request to model '{self.spec.name}' must specify a non-zero or "
                "non-empty correlation ID"
            )
        return await self._tracked(self.batcher.submit(inputs, rows, signature, deadline))

    async def infer_sequence(
        self,
        corrid: CorrelationId,
        start: bool,
        end: bool,
        inputs: Sequence[np.ndarray | None],
        deadline: float | None,
    ) -> list[np.ndarray]:
        assert self.sequencer is not None
        named = {t.name: a for t, a in zip(self.spec.inputs, inputs, strict=True) if a is not None}
        outputs = await self._tracked(self.sequencer.submit(corrid, start, end, named, deadline))
        return [outputs[t.name] for t in self.spec.outputs]

    async def stream(
        self,
        inputs: Sequence[np.ndarray | None],
        rows: int,
        signature: Signature,
        deadline: float | None,
    ) -> AsyncIterator[Response]:
        """A decoupled model's responses for one request (row i of the outputs: response i)."""
        outputs = await self.infer(inputs, rows, signature, deadline)
        for response in split_responses(outputs, self.spec.name):
            yield response

    async def retire(self) -> None:
        """Wait for requests already holding this version, then stop its scheduler."""
        await self._wait_idle()
        await (self.sequencer or self.batcher).close()  # type: ignore[union-attr]
        await asyncio.to_thread(close_backend, self.backend)
        self.stats.close()


class ServedEnsemble(_Tracked):
    """An ensemble version: its plan, run with members called through the manager."""

    backend = None
    batcher = None
    sequencer = None

    def __init__(self, spec: ModelSpec, version: int, members: MemberInfer) -> None:
        super().__init__(spec, version)
        assert spec.ensemble is not None
        self.scheduler = EnsembleScheduler(spec.ensemble, members)

    def start(self) -> None:
        return None

    async def infer(
        self,
        inputs: Sequence[np.ndarray | None],
        rows: int,
        signature: Signature,
        deadline: float | None,
    ) -> list[np.ndarray]:
        named = {t.name: a for t, a in zip(self.spec.inputs, inputs, strict=True) if a is not None}
        start = time.perf_counter_ns()
        outputs = await self._tracked(self.scheduler.run(named, deadline))
        self.stats.executed(1, rows, 0, time.perf_counter_ns() - start, 0)
        return [self._checked(t.name, outputs[t.name], rows) for t in self.spec.outputs]

    def _checked(self, name: str, array: np.ndarray, rows: int) -> np.ndarray:
        declared = self.spec.outputs[self.spec.output_index[name]]
        wanted = declared.datatype
        ok = (array.dtype == np.object_) if wanted.name == "BYTES" else (
            wanted.numpy is None or array.dtype == wanted.numpy
        )  # fmt: skip
        if not ok:
            raise Internal(
                f"ensemble '{self.spec.name}' output '{name}' is {array.dtype}; its config "
                f"declares {wanted.name}"
            )
        batch = [rows] if self.spec.max_batch_size > 0 else []
        torch_values.check_shape(array, batch + list(declared.dims), self.spec.name, name)
        return array

    async def retire(self) -> None:
        await self._wait_idle()
        self.stats.close()


Served = ServedVersion | ServedEnsemble
