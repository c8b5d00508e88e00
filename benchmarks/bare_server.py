"""A bare grpc.aio OIP server that answers ModelInfer without any work.

The transport ceiling for the benchmarks: whatever modelport serves is
compared with what this process answers under the same load.
    python benchmarks/bare_server.py PORT
"""

from __future__ import annotations

import asyncio
import sys

import grpc


async def main(port: int) -> None:
    import uvloop  # noqa: F401
    from modelport.proto.inference import grpc_service_pb2 as pb
    from modelport.proto.inference import grpc_service_pb2_grpc as pbg

    answer = pb.ModelInferResponse(model_name="mlp", model_version="1")
    answer.outputs.add(name="OUTPUT", datatype="FP32", shape=[1, 16])
    answer.raw_output_contents.append(bytes(64))

    class Bare(pbg.GRPCInferenceServiceServicer):
        async def ModelInfer(self, request, context):  # type: ignore[no-untyped-def]
            return answer

        async def ServerReady(self, request, context):  # type: ignore[no-untyped-def]
            return pb.ServerReadyResponse(ready=True)

    server = grpc.aio.server()
    pbg.add_GRPCInferenceServiceServicer_to_server(Bare(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    import uvloop

    uvloop.install()
    asyncio.run(main(int(sys.argv[1])))
