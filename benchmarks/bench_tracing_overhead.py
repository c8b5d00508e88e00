"""What tracing costs the gRPC hot path: server interceptor versus manual propagation.

A trivial ModelInfer handler (a fixed answer: the worst case for relative
overhead) runs in a subprocess under each mode; `modelport.loadtest` drives it
closed-loop and reports throughput. Modes:
  plain              no tracing code at all
  manual-off         modelport.common.tracing helpers, tracing not configured
  manual-on          the same helpers, spans recorded (dropped by a null exporter)
  interceptor-off    opentelemetry-instrumentation-grpc aio server interceptor, no SDK
  interceptor-on     the interceptor with the SDK recording spans
Usage: python benchmarks/bench_tracing_overhead.py [--duration 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

MODES = ("plain", "manual-off", "manual-on", "interceptor-off", "interceptor-on")


def serve(mode: str) -> None:
    import grpc
    from modelport.common import tracing
    from modelport.common.runtime import use_fast_event_loop
    from modelport.proto.inference import grpc_service_pb2 as pb
    from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class NullExporter(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    answer = pb.ModelInferResponse(model_name="trivial", model_version="1")
    answer.outputs.add(name="OUT", datatype="FP32", shape=[1])
    answer.raw_output_contents.append(b"\0\0\0\0")
    manual = mode.startswith("manual")

    class Servicer(pb_grpc.GRPCInferenceServiceServicer):
        async def ModelInfer(self, request: object, context: object) -> object:
            if manual:
                with tracing.server_span("ModelInfer", context):
                    return answer
            return answer

    async def main() -> None:
        interceptors = []
        if mode.endswith("-on"):
            tracing.configure("bench", exporter=NullExporter())
        if mode.startswith("interceptor"):
            from opentelemetry.instrumentation.grpc import aio_server_interceptor

            interceptors.append(aio_server_interceptor())
        server = grpc.aio.server(interceptors=interceptors)
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(Servicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(port, flush=True)
        await server.wait_for_termination()

    use_fast_event_loop()
    asyncio.run(main())


def measure(mode: str, duration: float, concurrency: int) -> float:
    from modelport.loadtest.runner import LoadSpec, run_load
    from modelport.proto.inference import grpc_service_pb2 as pb

    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", mode], stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        request = pb.ModelInferRequest(model_name="trivial").SerializeToString()
        spec = LoadSpec(
            url=f"127.0.0.1:{port}",
            requests=[request],
            concurrency=concurrency,
            duration_s=duration,
            warmup_s=1.0,
            processes=1,
        )
        result = run_load(spec)
        ok = int((result.samples.codes == 0).sum())
        return ok / duration
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", choices=MODES)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    results: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):  # interleaved, so drifting machine load hits every mode
        for mode in MODES:
            results[mode].append(measure(mode, args.duration, args.concurrency))
            time.sleep(0.5)
    base = max(results["plain"])
    print(f"{'mode':<18}{'best req/s':>12}{'vs plain':>10}   all rounds")
    for mode, values in results.items():
        best = max(values)
        rounds = ", ".join(f"{v:,.0f}" for v in values)
        print(f"{mode:<18}{best:>12,.0f}{best / base - 1:>+10.1%}   {rounds}")


if __name__ == "__main__":
    main()
