"""A generative version as the model manager serves it: an engine behind the OIP mapping.

It plugs in beside the torch versions: the data plane hands it whole requests
(ModelStreamInfer: one response per delta, or one whole completion when the
request does not ask to stream; ModelInfer: the whole completion), it keeps the
version's request statistics and in-flight count (a hot swap waits on them),
and it reports its load (running and waiting sequences, KV usage) for the
router's stream balancing.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from modelport.artifacts.config import ModelSpec
from modelport.common.generative_load import GenerativeLoad
from modelport.errors import InvalidInput, ModelportError
from modelport.inference.generative.protocol import GenerationEngine
from modelport.inference.generative.serving import GenerativeModel
from modelport.inference.served import _Tracked
from modelport.proto.inference import grpc_service_pb2 as pb


class ServedGenerative(_Tracked):
    backend = None
    batcher = None
    sequencer = None

    def __init__(
        self,
        spec: ModelSpec,
        version: int,
        engine: GenerationEngine,
        sampling_defaults: dict[str, Any] | None = None,
        on_close: Any = None,
    ) -> None:
        super().__init__(spec, version)
        self.engine = engine
        self.model = GenerativeModel(engine, spec.name, str(version), sampling_defaults)
        self._on_close = on_close

    async def start(self) -> None:
        await self.engine.start()

    def load(self) -> GenerativeLoad:
        load = self.engine.load()
        return GenerativeLoad(
            self.spec.name, str(self.version), load.running, load.waiting, load.kv_usage
        )

    def _check(self, request: pb.ModelInferRequest) -> None:
        for tensor in request.inputs:
            if "shared_memory_region" in tensor.parameters:
                raise InvalidInput(
                    f"model '{self.spec.name}': input '{tensor.name}': a generative model "
                    "takes its inputs in the request, not in shared memory"
                )
        if request.outputs:
            raise InvalidInput(
                f"model '{self.spec.name}': a generative model answers every output; "
                "leave `outputs` empty"
            )

    async def infer(
        self, request: pb.ModelInferRequest, deadline: float | None
    ) -> pb.ModelInferResponse:
        """ModelInfer: the whole completion in one response."""
        self._check(request)
        return await self._tracked(self.model.infer(request, deadline=deadline))

    async def answers(
        self, request: pb.ModelInferRequest, deadline: float | None
    ) -> AsyncIterator[pb.ModelInferResponse]:
        """ModelStreamInfer: each delta when the request streams, else the whole completion."""
        self._check(request)
        stats = self.stats
        stats.in_flight += 1
        start = time.perf_counter_ns()
        code = "OK"
        try:
            async for response in self.model.stream(request, deadline=deadline):
                yield response
        except ModelportError as exc:
            code = exc.code
            raise
        except BaseException:
            code = "CANCELLED"
            raise
        finally:
            stats.in_flight -= 1
            elapsed = time.perf_counter_ns() - start
            if code == "OK":
                stats.request_done(elapsed)
            else:
                stats.request_failed(elapsed, code)
            if self._retiring and stats.in_flight == 0:
                self._idle.set()

    async def retire(self) -> None:
        await self._wait_idle()
        await self.engine.close()
        if self._on_close is not None:
            self._on_close()
        self.stats.close()
