"""The one toy OIP v2 server of the tests: a real grpc.aio server with hand-written models.

Not modelport's inference service: a stand-in that speaks the same protocol
with no torch, so the SDK, the load generator, tracing and the router (which
needs several replicas serving chosen versions) are tested without loading
models. It is served by modelport's own `GrpcServer` (health, reflection, the
error boundary). Models, each in the versions it is given (default "1"):
  simple*  INT32 INPUT0, INPUT1 [-1,16] -> OUTPUT0 = sum, OUTPUT1 = difference
  slow     like simple, after a 5 ms sleep
  stall    like simple, but 0.3 s after its first request the whole server freezes
           for 150 ms once (a blocking call on the event loop: a GC pause, a stuck lock)
  mlp      FP32 INPUT [-1,4] -> OUTPUT = INPUT * version (so versions differ)
  echo     any inputs -> the same tensors back, named OUT_<input>, as raw bytes
  typed    like echo, but answers in the typed `contents` fields (no raw bytes)
A request parameter `sleep_ms` (int64) delays that request's answer. Version ""
means the highest version served; unknown models or versions fail
NOT_FOUND; `simple` with a wrong input fails INVALID_ARGUMENT. What it answered
is counted per (model, version) in `served`, stream requests in `streamed`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import numpy as np
from modelport.client import codec
from modelport.common import tracing
from modelport.common.server import GrpcServer, ServerOptions
from modelport.common.tls import TlsFiles
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc
from modelport.proto.inference import model_config_pb2 as mc

MODELS = ("simple", "echo", "typed", "slow", "stall", "mlp")
SUM_MODELS = ("simple", "slow", "stall")
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
    response.raw_output_contents.append(codec.encode_array(array, datatype))


def _add_typed(response: pb.ModelInferResponse, name: str, datatype: str, array: Any) -> None:
    tensor = response.outputs.add(name=name, datatype=datatype)
    tensor.shape.extend(array.shape)
    field = getattr(tensor.contents, codec.CONTENTS_FIELD[datatype])
    field.extend(codec._as_bytes(v) if datatype == "BYTES" else v for v in array.reshape(-1))


def _answer(request: pb.ModelInferRequest, version: str) -> pb.ModelInferResponse:
    model = request.model_name
    response = pb.ModelInferResponse(model_name=model, model_version=version, id=request.id)
    inputs = _inputs(request)
    if model.startswith(SUM_MODELS):
        if set(inputs) != {"INPUT0", "INPUT1"}:
            raise ToyError(grpc.StatusCode.INVALID_ARGUMENT, f"model '{model}': needs INPUT0/1")
        a, b = inputs["INPUT0"][1], inputs["INPUT1"][1]
        _add_raw(response, "OUTPUT0", "INT32", a + b)
        _add_raw(response, "OUTPUT1", "INT32", a - b)
    elif model == "mlp":
        array = inputs["INPUT"][1]
        _add_raw(response, "OUTPUT", "FP32", (array * float(version)).astype(np.float32))
    else:
        add = _add_typed if model == "typed" else _add_raw
        for name, (datatype, array) in inputs.items():
            add(response, f"OUT_{name}", datatype, array)
    return response


class ToyServer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self, models: dict[str, list[str]] | None = None, *, streaming: bool = True
    ) -> None:
        self.models = models if models is not None else {m: ["1"] for m in MODELS}
        self.streaming = streaming  # False: ModelStreamInfer is UNIMPLEMENTED, as on some servers
        self.loaded = set(self.models)
        self.served: Counter[tuple[str, str]] = Counter()
        self.streamed = 0  # requests that arrived on a stream
        self.infer_count = 0
        self.delay = 0.0  # seconds to wait before answering ModelInfer
        self.fail_with: grpc.StatusCode | None = None  # every inference ends with this status
        self.last_metadata: dict[str, str | bytes] = {}
        # Common names of the client certificates unary requests came with (mTLS).
        self.peers: Counter[str] = Counter()
        self.server: GrpcServer | None = None
        self.address = ""
        self._stall_first: float | None = None
        self._stalled = False

    def _version(self, name: str, version: str) -> str:
        versions = self.models.get(name) if name in self.loaded else None
        if versions is None:
            raise ToyError(grpc.StatusCode.NOT_FOUND, f"model '{name}' is not served here")
        if version == "":
            return max(versions, key=int)
        if version not in versions:
            raise ToyError(
                grpc.StatusCode.NOT_FOUND, f"model '{name}' version '{version}' is not served here"
            )
        return version

    def _maybe_stall(self) -> None:
        now = time.monotonic()
        self._stall_first = self._stall_first or now
        if not self._stalled and now - self._stall_first >= STALL_AFTER_S:
            self._stalled = True
            time.sleep(STALL_S)  # blocks the event loop on purpose: nothing is served meanwhile

    async def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        if self.fail_with is not None:
            raise ToyError(self.fail_with, f"toy replica ends the call: {self.fail_with.name}")
        version = self._version(request.model_name, request.model_version)
        self.infer_count += 1
        if request.model_name == "stall":
            self._maybe_stall()
        if request.model_name == "slow":
            await asyncio.sleep(0.005)
        if self.delay:
            await asyncio.sleep(self.delay)
        if "sleep_ms" in request.parameters:  # one request slower than the others
            await asyncio.sleep(request.parameters["sleep_ms"].int64_param / 1000)
        answer = _answer(request, version)
        self.served[(request.model_name, version)] += 1
        return answer

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        self.last_metadata = dict(context.invocation_metadata() or ())
        for name in (context.auth_context() or {}).get("x509_common_name", ()):
            self.peers[name.decode()] += 1
        # The spans modelport's inference service opens, so tracing tests have a backend.
        with tracing.server_span("ModelInfer", context, model=request.model_name):
            with tracing.span(tracing.INFERENCE_QUEUE, model=request.model_name):
                await asyncio.sleep(0)
            try:
                with tracing.span(tracing.INFERENCE_EXECUTE, batch_size=1):
                    return await self._infer(request)
            except ToyError as error:
                await context.abort(error.code, str(error))

    async def ModelStreamInfer(self, requests: Any, context: Any) -> Any:
        """Concurrent, answers in completion order with the request id, errors in-band."""
        if not self.streaming:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no streaming here")
        answers: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()

        async def answer(request: pb.ModelInferRequest) -> None:
            self.streamed += 1
            try:
                response = await self._infer(request)
                await answers.put(pb.ModelStreamInferResponse(infer_response=response))
            except ToyError as error:
                echo = pb.ModelInferResponse(id=request.id)
                await answers.put(
                    pb.ModelStreamInferResponse(error_message=str(error), infer_response=echo)
                )

        async def read() -> None:
            tasks = [asyncio.ensure_future(answer(r)) async for r in requests]
            await asyncio.gather(*tasks)
            await answers.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (item := await answers.get()) is not None:
                yield item
        finally:
            reader.cancel()

    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            self._version(request.name, request.version)
        except ToyError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return pb.ServerMetadataResponse(name="toy", version="0", extensions=["model_repository"])

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        """Answered with this server's address as the platform: tests see who answered."""
        try:
            self._version(request.name, request.version)
            if not request.name.startswith((*SUM_MODELS, "mlp")):
                raise ToyError(grpc.StatusCode.NOT_FOUND, f"no metadata for '{request.name}'")
        except ToyError as error:
            await context.abort(error.code, str(error))
        response = pb.ModelMetadataResponse(
            name=request.name, versions=self.models[request.name], platform=self.address
        )
        if request.name.startswith(SUM_MODELS):
            for name in ("INPUT0", "INPUT1"):
                response.inputs.add(name=name, datatype="INT32", shape=[-1, 16])
            for name in ("OUTPUT0", "OUTPUT1"):
                response.outputs.add(name=name, datatype="INT32", shape=[-1, 16])
        else:
            response.inputs.add(name="INPUT", datatype="FP32", shape=[-1, 4])
            response.outputs.add(name="OUTPUT", datatype="FP32", shape=[-1, 4])
        return response

    async def ModelConfig(self, request: Any, context: Any) -> Any:
        config = mc.ModelConfig(name=request.name, platform="toy", max_batch_size=8)
        return pb.ModelConfigResponse(config=config)

    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        stats = pb.ModelStatistics(name="simple", version="1", inference_count=self.infer_count)
        return pb.ModelStatisticsResponse(model_stats=[stats])

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        answer = pb.RepositoryIndexResponse()
        for name, versions in sorted(self.models.items()):
            if name in self.loaded:
                for version in versions:
                    answer.models.add(name=name, version=version, state="READY")
        return answer

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        if request.model_name not in self.models:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"'{request.model_name}' unknown")
        self.loaded.add(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        self.loaded.discard(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def start(self, tls: TlsFiles | None = None) -> str:
        """Serve on 127.0.0.1:0 (TLS with `tls`); returns the address."""
        self.server = GrpcServer(ServerOptions(host="127.0.0.1", port=0, tls=tls))
        self.server.add_service(
            "inference.GRPCInferenceService",
            lambda s: pb_grpc.add_GRPCInferenceServiceServicer_to_server(self, s),
        )
        port = await self.server.start()
        self.address = f"127.0.0.1:{port}"
        return self.address

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.drain(0)


@contextlib.asynccontextmanager
async def serve_toy(tls: TlsFiles | None = None) -> AsyncIterator[tuple[str, ToyServer]]:
    """A toy server with every model; yields (address, server)."""
    toy = ToyServer()
    address = await toy.start(tls)
    try:
        yield address, toy
    finally:
        await toy.stop()


@contextlib.contextmanager
def toy_server_in_thread(tls: TlsFiles | None = None) -> Iterator[tuple[str, ToyServer]]:
    """The toy server on its own event loop in a thread, for synchronous tests."""
    loop = asyncio.new_event_loop()
    started: concurrent.futures.Future[tuple[str, ToyServer]] = concurrent.futures.Future()
    stop = asyncio.Event()

    async def main() -> None:
        async with serve_toy(tls) as served:
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


def main() -> None:
    """One toy server in its own process: `python -m tests.support.toy_oip_server simple:1,2 …`.

    Prints its address on stdout once serving, then serves until killed.
    """
    import sys

    models = {}
    for spec in sys.argv[1:]:
        name, _, versions = spec.partition(":")
        models[name] = versions.split(",")

    async def serve() -> None:
        toy = ToyServer(models)
        print(await toy.start(), flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
