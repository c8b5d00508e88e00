"""A small, real grpc.aio OIP v2 server for client, load-test and tracing tests.

Not modelport's inference service: a stand-in that speaks the same protocol with
three hand-written models, so the SDK and the load generator can be tested
without torch. Models:
  simple  INT32 INPUT0, INPUT1 [-1,16] -> OUTPUT0 = sum, OUTPUT1 = difference
  echo    any inputs -> the same tensors back, named OUT_<input>, as raw bytes
  typed   like echo, but answers in the typed `contents` fields (no raw bytes)
  slow    like simple, after a 5 ms sleep
  stall   like simple, but 0.3 s after its first request the whole server freezes
          for 150 ms once (a blocking call on the event loop: a GC pause, a stuck lock)
Unknown models fail NOT_FOUND; `simple` with a wrong input fails INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import grpc
import numpy as np
from modelport.client import codec
from modelport.common import tracing
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc
from modelport.proto.inference import model_config_pb2 as mc

MODELS = ("simple", "echo", "typed", "slow", "stall")
STALL_AFTER_S, STALL_S = 0.3, 0.15


class ToyError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _inputs(request: pb.ModelInferRequest) -> dict[str, tuple[str, np.ndarray]]:
    out = {}
    for index, tensor in enumerate(request.inputs):
        array = codec.decode_raw(request.raw_input_contents[index], tensor.datatype, tensor.shape)
        out[tensor.name] = (tensor.datatype, array)
    return out


def _add_raw(response: pb.ModelInferResponse, name: str, datatype: str, array: Any) -> None:
    tensor = response.outputs.add(name=name, datatype=datatype)
    tensor.shape.extend(array.shape)
    if datatype == "BF16":  # decode widened it to float32; send the bits back
        response.raw_output_contents.append(codec.encode_array(array, "BF16"))
    else:
        response.raw_output_contents.append(codec.encode_array(array, datatype))


def _add_typed(response: pb.ModelInferResponse, name: str, datatype: str, array: Any) -> None:
    tensor = response.outputs.add(name=name, datatype=datatype)
    tensor.shape.extend(array.shape)
    field = getattr(tensor.contents, codec.CONTENTS_FIELD[datatype])
    field.extend(codec._as_bytes(v) if datatype == "BYTES" else v for v in array.reshape(-1))


async def infer(request: pb.ModelInferRequest) -> pb.ModelInferResponse:
    model = request.model_name
    if model not in MODELS:
        raise ToyError(grpc.StatusCode.NOT_FOUND, f"model '{model}' is not served here")
    response = pb.ModelInferResponse(model_name=model, model_version="1", id=request.id)
    inputs = _inputs(request)
    if model in ("simple", "slow", "stall"):
        if set(inputs) != {"INPUT0", "INPUT1"}:
            raise ToyError(grpc.StatusCode.INVALID_ARGUMENT, f"model '{model}': needs INPUT0/1")
        if model == "slow":
            await asyncio.sleep(0.005)
        a, b = inputs["INPUT0"][1], inputs["INPUT1"][1]
        _add_raw(response, "OUTPUT0", "INT32", a + b)
        _add_raw(response, "OUTPUT1", "INT32", a - b)
        return response
    add = _add_typed if model == "typed" else _add_raw
    for name, (datatype, array) in inputs.items():
        add(response, f"OUT_{name}", datatype, array)
    return response


class ToyServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self) -> None:
        self.loaded = set(MODELS)
        self.infer_count = 0
        self._stall_first: float | None = None
        self._stalled = False
        # Tests hang span creation or metadata checks here: called with (method, context).
        self.on_call: Callable[[str, Any], Any] | None = None

    async def _hook(self, method: str, context: Any) -> None:
        if self.on_call is not None:
            result = self.on_call(method, context)
            if asyncio.iscoroutine(result):
                await result

    def _maybe_stall(self) -> None:
        now = time.monotonic()
        self._stall_first = self._stall_first or now
        if not self._stalled and now - self._stall_first >= STALL_AFTER_S:
            self._stalled = True
            time.sleep(STALL_S)  # blocks the event loop on purpose: nothing is served meanwhile

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=request.name in self.loaded)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return pb.ServerMetadataResponse(name="toy", version="0", extensions=["model_repository"])

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        if request.name not in ("simple", "slow", "stall"):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no metadata for '{request.name}'")
        response = pb.ModelMetadataResponse(name=request.name, versions=["1"], platform="toy")
        for name in ("INPUT0", "INPUT1"):
            response.inputs.add(name=name, datatype="INT32", shape=[-1, 16])
        for name in ("OUTPUT0", "OUTPUT1"):
            response.outputs.add(name=name, datatype="INT32", shape=[-1, 16])
        return response

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        config = mc.ModelConfig(name=request.name, platform="toy", max_batch_size=8)
        return pb.ModelConfigResponse(config=config)

    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        stats = pb.ModelStatistics(name="simple", version="1", inference_count=self.infer_count)
        return pb.ModelStatisticsResponse(model_stats=[stats])

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        models = [pb.RepositoryIndexResponse.ModelIndex(name=m, state="READY") for m in MODELS]
        return pb.RepositoryIndexResponse(models=[m for m in models if m.name in self.loaded])

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        if request.model_name not in MODELS:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"'{request.model_name}' unknown")
        self.loaded.add(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        self.loaded.discard(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        await self._hook("ModelInfer", context)
        self.infer_count += 1
        if request.model_name == "stall":
            self._maybe_stall()
        # The spans modelport's inference service opens, so tracing tests have a backend.
        with tracing.server_span("ModelInfer", context, model=request.model_name):
            with tracing.span(tracing.INFERENCE_QUEUE, model=request.model_name):
                await asyncio.sleep(0)
            try:
                with tracing.span(tracing.INFERENCE_EXECUTE, batch_size=1):
                    return await infer(request)
            except ToyError as error:
                await context.abort(error.code, str(error))

    async def ModelStreamInfer(
        self, requests: Any, context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        async for request in requests:
            self.infer_count += 1
            try:
                yield pb.ModelStreamInferResponse(infer_response=await infer(request))
            except ToyError as error:
                yield pb.ModelStreamInferResponse(
                    error_message=str(error),
                    infer_response=pb.ModelInferResponse(id=request.id),
                )


@contextlib.asynccontextmanager
async def serve_toy(
    interceptors: tuple[grpc.aio.ServerInterceptor, ...] = (),
    tls: tuple[bytes, bytes] | None = None,
) -> AsyncIterator[tuple[str, ToyServicer]]:
    """Serve on 127.0.0.1:0 (TLS with `tls` = (key PEM, cert PEM)); yields (address, servicer)."""
    server = grpc.aio.server(interceptors=list(interceptors))
    servicer = ToyServicer()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    if tls is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        credentials = grpc.ssl_server_credentials([tls])
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        await server.stop(0)


@contextlib.contextmanager
def toy_server_in_thread(
    interceptors: tuple[grpc.aio.ServerInterceptor, ...] = (),
    tls: tuple[bytes, bytes] | None = None,
) -> Iterator[tuple[str, ToyServicer]]:
    """The toy server on its own event loop in a thread, for synchronous tests."""
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[tuple[str, ToyServicer]] = concurrent.futures.Future()
    stop = asyncio.Event()

    async def main() -> None:
        async with serve_toy(interceptors, tls) as served:
            started.set_result(served)
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        yield started.result(timeout=10)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
        loop.close()
