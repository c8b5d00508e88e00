"""Answering inference requests: decode, queue on the version's batcher, encode.

Transport-free: requests and answers are OIP messages, the deadline is seconds
left (None: no deadline). Failures are domain errors; on a stream they travel
in-band, each answer carrying its request's id, as Triton does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from modelport.common import wire
from modelport.common.stream_window import StreamWindow, answer_as_ready
from modelport.errors import InvalidInput, MalformedRequest, ModelportError, public_message
from modelport.inference import codec
from modelport.inference.model_manager import ModelManager
from modelport.proto.inference import grpc_service_pb2 as pb

log = logging.getLogger(__name__)


class OnDemand(Protocol):
    """Models loaded when asked for (`pool.ModelPool`): `use` loads and pins one."""

    def use(self, name: str, deadline: float | None) -> AbstractAsyncContextManager[None]: ...


async def infer(
    manager: ModelManager,
    request: pb.ModelInferRequest,
    remaining: float | None,
    pool: OnDemand | None = None,
) -> pb.ModelInferResponse:
    if pool is None:
        return await _infer_loaded(manager, request, remaining)
    # A pool replica loads the model on demand and pins it for this request.
    deadline = None if remaining is None else time.monotonic() + remaining
    async with pool.use(request.model_name, deadline):
        left = None if deadline is None else deadline - time.monotonic()
        return await _infer_loaded(manager, request, left)


async def _infer_loaded(
    manager: ModelManager, request: pb.ModelInferRequest, remaining: float | None
) -> pb.ModelInferResponse:
    served = manager.get(request.model_name, request.model_version)
    spec = served.spec
    try:
        arrays, rows, signature = codec.decode_inputs(request, spec)
        selected = codec.requested_outputs(request, spec)
    except InvalidInput as exc:
        served.stats.request_failed(0, exc.code)
        raise
    deadline = None if remaining is None else time.monotonic() + remaining
    outputs = await served.infer(arrays, rows, signature, deadline)
    return codec.build_response(request, spec, served.version, outputs, selected)


async def stream(
    manager: ModelManager,
    requests: AsyncIterator[pb.ModelInferRequest],
    pool: OnDemand | None = None,
    window: StreamWindow | None = None,
) -> AsyncIterator[pb.ModelStreamInferResponse]:
    """Answers as they are ready, each with its request's id; errors in-band, a message
    that does not parse included (see `common.stream_window.answer_as_ready`)."""

    async def respond(request: pb.ModelInferRequest) -> AsyncIterator[pb.ModelStreamInferResponse]:
        try:
            response = await infer(manager, request, None, pool)
        except Exception as exc:
            if not isinstance(exc, ModelportError):
                log.exception("stream request failed")
            yield _stream_error(exc, request.model_name, request.model_version, request.id)
            return
        yield pb.ModelStreamInferResponse(infer_response=response)

    def malformed(exc: MalformedRequest) -> pb.ModelStreamInferResponse:
        return _stream_error(exc, "", "", wire.readable_id(exc.data))

    answers = answer_as_ready(requests, respond, size=_size, malformed=malformed, window=window)
    async for answer in answers:
        yield answer


def _size(request: pb.ModelInferRequest) -> int:
    return request.ByteSize()


def _stream_error(
    exc: Exception, model: str, version: str, request_id: str
) -> pb.ModelStreamInferResponse:
    echo = pb.ModelInferResponse(model_name=model, model_version=version, id=request_id)
    return pb.ModelStreamInferResponse(error_message=public_message(exc), infer_response=echo)
