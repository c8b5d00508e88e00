"""A small OIP v2 replica for router tests that run before (or without) torch.

It speaks the same gRPC service as modelport's inference service, serves
chosen versions of two models and counts what it answered, so tests can see
which replica and version each request reached:
  simple* INT32 INPUT0, INPUT1 [-1,16] -> OUTPUT0 = sum, OUTPUT1 = difference
  mlp     FP32 INPUT [-1,4] -> OUTPUT [-1,4] = INPUT * version (so members differ)
Version "" means the highest version served.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import grpc
import numpy as np
from modelport.common.server import GrpcServer, ServerOptions
from modelport.common.tls import TlsFiles
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc


class ToyReplica(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(
        self, models: dict[str, list[str]], *, streaming: bool = True, tls: TlsFiles | None = None
    ) -> None:
        self.tls = tls  # serve TLS (mutual with a CA) instead of plaintext
        # Common names of the client certificates requests came with (mTLS).
        self.peers: Counter[str] = Counter()
        self.models = models
        self.streaming = streaming  # False: ModelStreamInfer is UNIMPLEMENTED, as on some servers
        self.streamed = 0  # requests that arrived on a stream
        self.served: Counter[tuple[str, str]] = Counter()
        self.server: GrpcServer | None = None
        self.address = ""
        self.delay = 0.0  # seconds to wait before answering ModelInfer
        self.last_metadata: dict[str, str] = {}

    def _version(self, name: str, version: str, context: Any) -> str:
        versions = self.models.get(name)
        if versions is None:
            raise KeyError(f"model '{name}' is not served here")
        if version == "":
            return max(versions, key=int)
        if version not in versions:
            raise KeyError(f"model '{name}' version '{version}' is not served here")
        return version

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        try:
            version = self._version(request.model_name, request.model_version, context)
        except KeyError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        self.last_metadata = dict(context.invocation_metadata() or ())
        auth_context = getattr(context, "auth_context", None)  # absent on a stream's InBand
        for name in (auth_context() if auth_context else {}).get("x509_common_name", ()):
            self.peers[name.decode()] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        self.served[(request.model_name, version)] += 1
        answer = pb.ModelInferResponse(
            model_name=request.model_name, model_version=version, id=request.id
        )
        arrays = {}
        for index, tensor in enumerate(request.inputs):
            dtype = np.int32 if tensor.datatype == "INT32" else np.float32
            raw = np.frombuffer(request.raw_input_contents[index], dtype=dtype)
            arrays[tensor.name] = raw.reshape(tuple(tensor.shape))
        if request.model_name.startswith("simple"):
            if set(arrays) != {"INPUT0", "INPUT1"}:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"model '{request.model_name}': needs INPUT0/1",
                )
            outputs = {
                "OUTPUT0": arrays["INPUT0"] + arrays["INPUT1"],
                "OUTPUT1": arrays["INPUT0"] - arrays["INPUT1"],
            }
            datatype = "INT32"
        else:
            outputs = {"OUTPUT": (arrays["INPUT"] * float(version)).astype(np.float32)}
            datatype = "FP32"
        for name, array in outputs.items():
            out = answer.outputs.add(name=name, datatype=datatype)
            out.shape.extend(array.shape)
            answer.raw_output_contents.append(array.tobytes())
        return answer

    async def ModelStreamInfer(self, requests: Any, context: Any) -> Any:
        """Concurrent, answers in completion order with the request id, errors in-band."""
        if not self.streaming:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no streaming here")
        answers: asyncio.Queue[Any] = asyncio.Queue()

        class InBand:
            async def abort(self, code: Any, message: str) -> None:
                raise RuntimeError(message)

            def invocation_metadata(self) -> tuple[()]:
                return ()

        async def answer(request: Any) -> None:
            self.streamed += 1
            try:
                response = await self.ModelInfer(request, InBand())
                await answers.put(pb.ModelStreamInferResponse(infer_response=response))
            except RuntimeError as exc:
                echo = pb.ModelInferResponse(id=request.id)
                await answers.put(
                    pb.ModelStreamInferResponse(error_message=str(exc), infer_response=echo)
                )

        async def read() -> None:
            tasks = []
            async for request in requests:  # answer each as it arrives
                tasks.append(asyncio.ensure_future(answer(request)))
            await asyncio.gather(*tasks)
            await answers.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (item := await answers.get()) is not None:
                yield item
        finally:
            reader.cancel()

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        answer = pb.RepositoryIndexResponse()
        for name, versions in sorted(self.models.items()):
            for version in versions:
                answer.models.add(name=name, version=version, state="READY")
        return answer

    async def ModelReady(self, request: Any, context: Any) -> Any:
        try:
            self._version(request.name, request.version, context)
        except KeyError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        if request.name not in self.models:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"model '{request.name}' unknown")
        return pb.ModelMetadataResponse(
            name=request.name, versions=self.models[request.name], platform=self.address
        )

    async def start(self) -> str:
        self.server = GrpcServer(ServerOptions(host="127.0.0.1", port=0, tls=self.tls))
        self.server.add_service(
            "inference.GRPCInferenceService",
            lambda s: pb_grpc.add_GRPCInferenceServiceServicer_to_server(self, s),
        )
        port = await self.server.start()
        self.address = f"127.0.0.1:{port}"
        return self.address

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.server.stop(0)


def main() -> None:
    """Run one toy replica in its own process: `python router_toy_replica.py simple:1,2 …`.

    Prints its address on stdout once serving, then serves until killed.
    """
    import sys

    models = {}
    for spec in sys.argv[1:]:
        name, _, versions = spec.partition(":")
        models[name] = versions.split(",")

    async def serve() -> None:
        replica = ToyReplica(models)
        print(await replica.start(), flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
