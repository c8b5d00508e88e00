"""A bare grpc.aio OIP server that answers ModelInfer without any work: the transport ceiling.

    python benchmarks/bare_server.py REPO [--generic]      # prints its port, then serves

Written the usual way (a generated servicer: each request is parsed, a prebuilt
answer is serialized), it answers ModelInfer with zeros shaped like the
model's output for the request's batch, and ModelMetadata / ModelConfig from
REPO/<model>/config.pbtxt so that perf_analyzer can drive it. Whatever modelport
serves is compared with what this process answers under the same load.

--generic registers raw-bytes handlers instead (nothing parsed, prebuilt bytes
returned): the least a Python gRPC server can do per request, for reference.
"""

from __future__ import annotations

import argparse
import asyncio
from math import prod
from pathlib import Path

import grpc
from google.protobuf import text_format
from modelport.proto.inference import grpc_service_pb2 as pb
from modelport.proto.inference import grpc_service_pb2_grpc as pbg
from modelport.proto.inference import model_config_pb2 as mc

SERVICE = "inference.GRPCInferenceService"


def read_configs(repo: Path) -> dict[str, mc.ModelConfig]:
    configs = {}
    for path in sorted(repo.glob("*/config.pbtxt")):
        config = text_format.Parse(path.read_text(), mc.ModelConfig())
        config.name = config.name or path.parent.name
        configs[config.name] = config
    return configs


def type_name(data_type: int) -> str:
    name = mc.DataType.Name(data_type).removeprefix("TYPE_")
    return {"STRING": "BYTES"}.get(name, name)


class Answers:
    """Prebuilt ModelInferResponses per (model, batch rows): zeros of the output shapes."""

    def __init__(self, configs: dict[str, mc.ModelConfig]) -> None:
        self._configs = configs
        self._cache: dict[tuple[str, int], pb.ModelInferResponse] = {}

    def get(self, model: str, rows: int) -> pb.ModelInferResponse:
        answer = self._cache.get((model, rows))
        if answer is None:
            answer = pb.ModelInferResponse(model_name=model, model_version="1")
            config = self._configs[model]
            for output in config.output:
                shape = [rows, *output.dims] if config.max_batch_size else list(output.dims)
                answer.outputs.add(
                    name=output.name, datatype=type_name(output.data_type), shape=shape
                )
                answer.raw_output_contents.append(bytes(4 * prod(max(d, 1) for d in shape)))
            self._cache[(model, rows)] = answer
        return answer


class Bare(pbg.GRPCInferenceServiceServicer):
    def __init__(self, configs: dict[str, mc.ModelConfig]) -> None:
        self.configs = configs
        self.answers = Answers(configs)

    async def ModelInfer(self, request, context):  # type: ignore[no-untyped-def]
        rows = request.inputs[0].shape[0] if request.inputs and request.inputs[0].shape else 1
        return self.answers.get(request.model_name, rows)

    async def ServerLive(self, request, context):  # type: ignore[no-untyped-def]
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):  # type: ignore[no-untyped-def]
        return pb.ServerReadyResponse(ready=True)

    async def ServerMetadata(self, request, context):  # type: ignore[no-untyped-def]
        return pb.ServerMetadataResponse(name="bare", version="0", extensions=[])

    async def ModelReady(self, request, context):  # type: ignore[no-untyped-def]
        return pb.ModelReadyResponse(ready=request.name in self.configs)

    async def RepositoryIndex(self, request, context):  # type: ignore[no-untyped-def]
        index = pb.RepositoryIndexResponse()
        for name in self.configs:
            index.models.add(name=name, version="1", state="READY")
        return index

    async def ModelConfig(self, request, context):  # type: ignore[no-untyped-def]
        return pb.ModelConfigResponse(config=self.configs[request.name])

    async def ModelMetadata(self, request, context):  # type: ignore[no-untyped-def]
        config = self.configs[request.name]
        batch = [-1] if config.max_batch_size else []
        meta = pb.ModelMetadataResponse(name=config.name, versions=["1"], platform=config.platform)
        for tensors, into in ((config.input, meta.inputs), (config.output, meta.outputs)):
            for tensor in tensors:
                shape = [*batch, *tensor.dims]
                into.add(name=tensor.name, datatype=type_name(tensor.data_type), shape=shape)
        return meta


def generic_handlers(configs: dict[str, mc.ModelConfig]) -> grpc.GenericRpcHandler:
    """Raw bytes in, prebuilt bytes out (batch-1 answer of the first model)."""
    model = next(iter(configs))
    answer = Answers(configs).get(model, 1).SerializeToString()
    ready = pb.ServerReadyResponse(ready=True).SerializeToString()

    async def infer(request: bytes, context: object) -> bytes:
        return answer

    async def server_ready(request: bytes, context: object) -> bytes:
        return ready

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(infer),
            "ServerReady": grpc.unary_unary_rpc_method_handler(server_ready),
            "ModelReady": grpc.unary_unary_rpc_method_handler(server_ready),
        },
    )


async def serve(repo: Path, generic: bool) -> None:
    configs = read_configs(repo)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    if generic:
        server.add_generic_rpc_handlers((generic_handlers(configs),))
    else:
        pbg.add_GRPCInferenceServiceServicer_to_server(Bare(configs), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("repo", type=Path)
    parser.add_argument("--generic", action="store_true")
    args = parser.parse_args()
    import uvloop  # as modelport runs: a fair comparison

    uvloop.install()
    asyncio.run(serve(args.repo, args.generic))


if __name__ == "__main__":
    main()
