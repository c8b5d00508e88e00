"""Inference requests from message to answer: the core behind ModelInfer and ModelStreamInfer.

Transport-free: requests and answers are OIP messages (decoded in `codec`,
encoded in `responses`), the deadline is seconds left (None: no deadline);
failures are domain errors. The servicer hands it requests and sends what it
returns.

- A plain or ensemble model answers each request once.
- A stateful model (`sequence_batching`) takes `sequence_id` (uint64 or
  string), `sequence_start` and `sequence_end` from the request's parameters.
- A decoupled model answers only over the stream, with zero or more responses
  per request; ModelInfer refuses it as Triton does.
- A generative model streams one response per delta (or one whole completion
  when the request does not set `stream`); ModelInfer answers it with the
  whole completion.

Over a stream every request runs concurrently with the others and its answers
are sent as they are ready, each with `triton_final_response`; an error is sent
in-band (`error_message`) and the stream goes on.

On a pool replica (`--pool`) the model is loaded on demand and pinned while a
request (or a decoupled request's whole stream) runs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from modelport.artifacts.sequences import CorrelationId
from modelport.common.stream_window import StreamWindow, answer_as_ready
from modelport.common.wire import readable_id
from modelport.errors import (
    InvalidInput,
    MalformedRequest,
    ModelportError,
    Unimplemented,
    code_of,
    public_message,
)
from modelport.inference import codec, responses
from modelport.inference.decoupled import (
    EMPTY_FINAL_PARAMETER,
    ResponseStream,
    with_final_flags,
)
from modelport.inference.generative.served import ServedGenerative
from modelport.inference.model_manager import ModelManager
from modelport.inference.served import Served, ServedVersion
from modelport.inference.shared_memory import SystemSharedMemory
from modelport.proto.inference import grpc_service_pb2 as pb

log = logging.getLogger(__name__)

ERROR_CODE_PARAMETER = "error_code"  # on the response that carries an in-band error


# A request answered by the sibling worker that owns its sequence.
SendToOwner = Callable[[pb.ModelInferRequest], Awaitable[pb.ModelInferResponse]]
# The sender for a sequence key (None: this worker owns it).
OwnerOf = Callable[[str], SendToOwner | None]


class OnDemand(Protocol):
    """Models loaded when asked for (`pool.ModelPool`): `use` loads and pins one."""

    def use(
        self, name: str, version: str, deadline: float | None
    ) -> AbstractAsyncContextManager[None]: ...


class DataPlane:
    def __init__(
        self,
        manager: ModelManager,
        shm: SystemSharedMemory,
        owner_of: OwnerOf | None = None,
        pool: OnDemand | None = None,
    ) -> None:
        self.manager = manager
        self.shm = shm
        self.owner_of = owner_of
        self.pool = pool

    async def infer(
        self,
        request: pb.ModelInferRequest,
        remaining: float | None,
        *,
        streamed: bool = False,
        local: bool = False,
    ) -> pb.ModelInferResponse:
        """One answer; `streamed` adds the final-response flag a stream carries.

        A request of a sequence another worker owns is answered by that worker,
        unless `local` (it was sent here by a sibling).
        """
        if self.pool is None:
            return await self._infer(request, remaining, streamed=streamed, local=local)
        deadline = None if remaining is None else time.monotonic() + remaining
        async with self.pool.use(request.model_name, request.model_version, deadline):
            left = None if deadline is None else deadline - time.monotonic()
            return await self._infer(request, left, streamed=streamed, local=local)

    async def _infer(
        self, request: pb.ModelInferRequest, remaining: float | None, *, streamed: bool,
        local: bool,
    ) -> pb.ModelInferResponse:  # fmt: skip
        served = self.manager.get(request.model_name, request.model_version)
        if not local and served.spec.sequence is not None and self.owner_of is not None:
            owner = self.owner_of(str(_sequence_parameters(request)[0] or ""))
            if owner is not None:
                answer = await owner(request)
                if streamed:
                    answer.parameters["triton_final_response"].bool_param = True
                return answer
        deadline = None if remaining is None else time.monotonic() + remaining
        if isinstance(served, ServedGenerative):
            return await served.infer(request, deadline)
        if served.spec.decoupled:
            raise Unimplemented(
                "ModelInfer RPC doesn't support models with decoupled transaction policy "
                f"(model '{served.spec.name}': use ModelStreamInfer)"
            )
        arrays, rows, signature, wanted = self._decode(served, request)
        sequence = _sequence_parameters(request) if served.spec.sequence is not None else None
        if sequence is not None:
            assert isinstance(served, ServedVersion)
            outputs = await served.infer_sequence(*sequence, arrays, deadline)
        else:
            outputs = await served.infer(arrays, rows, signature, deadline)
        return responses.build_response(
            request, served.spec, served.version, outputs, wanted, self.shm,
            final=True if streamed else None,
        )  # fmt: skip

    def _decode(self, served: Served, request: pb.ModelInferRequest) -> tuple[Any, ...]:
        try:
            arrays, rows, signature = codec.decode_inputs(request, served.spec, self.shm)
            wanted = responses.requested_outputs(request, served.spec, self.shm)
        except InvalidInput as exc:
            served.stats.request_failed(0, exc.code)
            raise
        return arrays, rows, signature, wanted

    async def answers(
        self, request: pb.ModelInferRequest, deadline: float | None = None
    ) -> AsyncIterator[pb.ModelInferResponse]:
        """Every answer to one streamed request (several for a decoupled model)."""
        if self.pool is None:
            async for answer in self._answers(request, deadline):
                yield answer
            return
        async with self.pool.use(request.model_name, request.model_version, None):
            async for answer in self._answers(request, deadline):
                yield answer

    async def _answers(
        self, request: pb.ModelInferRequest, deadline: float | None
    ) -> AsyncIterator[pb.ModelInferResponse]:
        served = self.manager.get(request.model_name, request.model_version)
        if isinstance(served, ServedGenerative):
            async for response in served.answers(request, deadline):
                yield response
            return
        if not served.spec.decoupled:
            yield await self._infer(request, None, streamed=True, local=False)
            return
        if not isinstance(served, ResponseStream):
            raise Unimplemented(f"model '{served.spec.name}' is decoupled but cannot stream")
        arrays, rows, signature, wanted = self._decode(served, request)
        empty_final = request.parameters[EMPTY_FINAL_PARAMETER].bool_param if (
            EMPTY_FINAL_PARAMETER in request.parameters
        ) else False  # fmt: skip
        stream = served.stream(arrays, rows, signature, None)
        async for flagged in with_final_flags(stream, empty_final=empty_final):
            if flagged.response is None:
                yield responses.final_only(request)
                continue
            yield responses.build_response(
                request, served.spec, served.version, flagged.response.outputs, wanted,
                self.shm, final=flagged.final,
            )  # fmt: skip

    async def stream(
        self,
        requests: AsyncIterator[pb.ModelInferRequest],
        remaining: float | None = None,
        window: StreamWindow | None = None,
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests run concurrently; each answer (or its error, in-band) is sent when
        ready, a message that does not parse included, and reads stop while the
        stream's window is full (see `common.stream_window.answer_as_ready`).

        `remaining`: the call's deadline, which every request on it shares.
        """
        deadline = None if remaining is None else time.monotonic() + remaining

        async def respond(
            request: pb.ModelInferRequest,
        ) -> AsyncIterator[pb.ModelStreamInferResponse]:
            try:
                async for response in self.answers(request, deadline):
                    yield pb.ModelStreamInferResponse(infer_response=response)
            except Exception as exc:
                if not isinstance(exc, ModelportError):
                    log.exception("stream request failed")
                yield _stream_error(exc, responses.final_only(request))

        def malformed(exc: MalformedRequest) -> pb.ModelStreamInferResponse:
            echo = pb.ModelInferResponse(id=readable_id(exc.data))
            echo.parameters["triton_final_response"].bool_param = True
            return _stream_error(exc, echo)

        answers = answer_as_ready(requests, respond, size=_size, malformed=malformed, window=window)
        async for answer in answers:
            yield answer


def _size(request: pb.ModelInferRequest) -> int:
    return request.ByteSize()


def _stream_error(exc: Exception, echo: pb.ModelInferResponse) -> pb.ModelStreamInferResponse:
    # The code too, so a caller that relays the stream (the router's OpenAI layer)
    # can answer with it, not only with the message.
    echo.parameters[ERROR_CODE_PARAMETER].string_param = code_of(exc)
    return pb.ModelStreamInferResponse(error_message=public_message(exc), infer_response=echo)


def _sequence_parameters(request: pb.ModelInferRequest) -> tuple[CorrelationId, bool, bool]:
    """(correlation id, start, end) from Triton's request parameters."""
    params = request.parameters
    corrid: CorrelationId = 0
    if "sequence_id" in params:
        param = params["sequence_id"]
        choice = param.WhichOneof("parameter_choice")
        if choice == "string_param":
            corrid = param.string_param
        elif choice in ("int64_param", "uint64_param"):
            corrid = int(getattr(param, choice))
            if corrid < 0:
                corrid += 1 << 64  # a uint64 sent through int64_param, as clients do
        else:
            raise InvalidInput("'sequence_id' must be a uint64 or string parameter")
    return corrid, _flag(params, "sequence_start"), _flag(params, "sequence_end")


def _flag(params: Any, key: str) -> bool:
    if key not in params:
        return False
    param = params[key]
    if param.WhichOneof("parameter_choice") != "bool_param":
        raise InvalidInput(f"'{key}' must be a bool parameter")
    return bool(param.bool_param)
