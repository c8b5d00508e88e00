"""The one error boundary: every RPC of every service is behind it, streams included.

Tier 2: real servers on loopback. The first tests pin the boundary's
behaviour; the last ones enumerate every method of every service each real
server registers, prove each is guarded, and call each one with an empty
message: whatever the method does with it, the caller gets a status it can
act on, never UNKNOWN (an exception that escaped) and never a stack trace.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from modelport import errors
from modelport.common.grpc_errors import is_guarded
from modelport.common.server import GrpcServer, ServerOptions
from modelport.inference.app import InferenceApp, InferenceSettings
from modelport.registry.server import RegistryServer, RegistrySettings
from modelport.router.app import RouterApp
from modelport.router.discovery import StaticDiscovery
from modelport.training.server import TrainingServer, TrainingSettings


async def fails(request: bytes, context: Any) -> bytes:
    raise errors.NotFound("model 'm' is not here")


async def crashes(request: bytes, context: Any) -> bytes:
    raise ValueError("a bug with a secret in it")


async def streams_then_fails(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield b"first"
    raise errors.QueueFull("model 'm': queue is full")


async def reads_then_crashes(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
    async for _ in requests:
        yield b"echo"
        raise KeyError("oops")


HANDLERS = {
    "Fails": grpc.unary_unary_rpc_method_handler(fails),
    "Crashes": grpc.unary_unary_rpc_method_handler(crashes),
    "StreamsThenFails": grpc.unary_stream_rpc_method_handler(streams_then_fails),
    "ReadsThenCrashes": grpc.stream_stream_rpc_method_handler(reads_then_crashes),
}


@pytest.fixture
async def boundary_server() -> AsyncIterator[str]:
    server = GrpcServer(ServerOptions(host="127.0.0.1", port=0))
    server.add_service("test.Boundary", lambda s: s.add_method_handlers("test.Boundary", HANDLERS))
    port = await server.start()
    yield f"127.0.0.1:{port}"
    await server.drain(0)


async def test_domain_errors_keep_their_code_and_bugs_become_internal(
    boundary_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with grpc.aio.insecure_channel(boundary_server) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await channel.unary_unary("/test.Boundary/Fails")(b"")
        assert (error.value.code(), error.value.details()) == (
            grpc.StatusCode.NOT_FOUND,
            "model 'm' is not here",
        )
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await channel.unary_unary("/test.Boundary/Crashes")(b"")
        assert error.value.code() == grpc.StatusCode.INTERNAL
        assert "secret" not in (error.value.details() or "")
        assert "ValueError" in (error.value.details() or "")
    assert "a bug with a secret in it" in caplog.text  # the trace is in the log, not the answer


async def test_streams_end_with_the_mapped_status_after_what_they_sent(
    boundary_server: str,
) -> None:
    async with grpc.aio.insecure_channel(boundary_server) as channel:
        call = channel.unary_stream("/test.Boundary/StreamsThenFails")(b"")
        assert await call.read() == b"first"
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call.read()
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        bidi = channel.stream_stream("/test.Boundary/ReadsThenCrashes")()
        await bidi.write(b"hello")
        assert await bidi.read() == b"echo"
        assert await bidi.code() == grpc.StatusCode.INTERNAL


async def test_a_handler_that_cannot_be_guarded_is_refused() -> None:
    server = GrpcServer(ServerOptions(host="127.0.0.1", port=0))
    opaque = grpc.method_handlers_generic_handler("test.Opaque", HANDLERS)
    with pytest.raises(TypeError, match=r"cannot be guarded: test\.Opaque"):
        server.add_service("test.Opaque", lambda s: s.add_generic_rpc_handlers((opaque,)))


# -- every method of every real server ---------------------------------------------

Started = tuple[GrpcServer, str, Callable[[], Awaitable[None]]]


async def start_inference(tmp_path: Path) -> Started:
    app = InferenceApp(InferenceSettings(host="127.0.0.1", grpc_port=0, metrics_port=-1))
    port = await app.start()
    return app.server, f"127.0.0.1:{port}", lambda: app.stop(0)


async def start_router(tmp_path: Path) -> Started:
    app = RouterApp(StaticDiscovery([]))
    port = await app.start()
    return app.server, f"127.0.0.1:{port}", lambda: app.stop(0)


async def start_registry(tmp_path: Path) -> Started:
    server = RegistryServer(
        RegistrySettings(
            database=f"sqlite:///{tmp_path / 'r.db'}", blob_dir=tmp_path / "blobs",
            host="127.0.0.1", grpc_port=0,
        )
    )  # fmt: skip
    port = await server.start()
    assert server.grpc is not None
    return server.grpc, f"127.0.0.1:{port}", lambda: server.stop(0)


async def start_training(tmp_path: Path) -> Started:
    # Its registry need not exist: no call below gets as far as a job's preparation.
    server = TrainingServer(
        TrainingSettings(data_dir=tmp_path / "t", registry="127.0.0.1:1", host="127.0.0.1",
                         grpc_port=0)
    )  # fmt: skip
    port = await server.start()
    assert server.grpc is not None
    return server.grpc, f"127.0.0.1:{port}", lambda: server.stop(0)


SERVERS = {
    "inference": start_inference,
    "router": start_router,
    "registry": start_registry,
    "training": start_training,
}
STANDARD = ["grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"]
SERVICES = {
    "inference": ["inference.GRPCInferenceService", "modelport.pool.v1.PoolReplica", *STANDARD],
    "router": ["inference.GRPCInferenceService", "modelport.router.v1.RouterAdmin", *STANDARD],
    "registry": [
        "modelport.registry.v1.ModelRegistry",
        "modelport.registry.v1.DatasetRegistry",
        *STANDARD,
    ],
    "training": ["modelport.training.v1.Training", *STANDARD],
}


async def listed_by_reflection(channel: grpc.aio.Channel) -> list[str]:
    """What the server itself says it serves (independent of our bookkeeping)."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for answer in stub.ServerReflectionInfo(iter([request])):
        return [s.name for s in answer.list_services_response.service]
    return []


def methods_of(service: str) -> list[Any]:
    return list(descriptor_pool.Default().FindServiceByName(service).methods)


async def call_with_an_empty_message(channel: grpc.aio.Channel, method: Any) -> grpc.StatusCode:
    path = f"/{method.containing_service.full_name}/{method.name}"
    timeout = 0.5  # streams that would run forever (Watch) end on their deadline
    try:
        if method.client_streaming:
            call = (channel.stream_stream if method.server_streaming else channel.stream_unary)(
                path
            )
            answer = call(iter([b""]), timeout=timeout)
        else:
            call = (channel.unary_stream if method.server_streaming else channel.unary_unary)(path)
            answer = call(b"", timeout=timeout)
        if method.server_streaming:
            async for _ in answer:
                pass
        else:
            await answer
    except grpc.aio.AioRpcError as exc:
        assert "Traceback" not in (exc.details() or ""), path
        return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("name", SERVERS)
async def test_every_rpc_of_every_service_is_guarded_and_answers_a_status(
    name: str, tmp_path: Path
) -> None:
    server, address, stop = await SERVERS[name](tmp_path)
    try:
        services = sorted(server.methods_by_service())
        assert services == sorted(SERVICES[name])
        async with grpc.aio.insecure_channel(address) as channel:
            assert sorted(await listed_by_reflection(channel)) == services
            for service in services:
                for method in methods_of(service):
                    path = f"/{service}/{method.name}"
                    assert path in server.methods, f"{path} is served outside the boundary"
                    assert is_guarded(server.methods[path]), path
                    code = await call_with_an_empty_message(channel, method)
                    assert code != grpc.StatusCode.UNKNOWN, f"{path}: an exception escaped"
    finally:
        await stop()


GARBAGE = b"\xff\xff\xff\xff"  # not a protobuf message of any type
IN_BAND = {"/inference.GRPCInferenceService/ModelStreamInfer"}  # a bad message, answered in-band


async def call_with_garbage(channel: grpc.aio.Channel, method: Any) -> tuple[grpc.StatusCode, str]:
    """(status, what the answers or the status said) for a call whose request does not parse."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    said: list[bytes] = []
    try:
        if method.client_streaming:
            kind = channel.stream_stream if method.server_streaming else channel.stream_unary
            answer = kind(path)(iter([GARBAGE]), timeout=5)
        else:
            kind = channel.unary_stream if method.server_streaming else channel.unary_unary
            answer = kind(path)(GARBAGE, timeout=5)
        if method.server_streaming:
            said.extend([m async for m in answer])
        else:
            said.append(await answer)
    except grpc.aio.AioRpcError as exc:
        return exc.code(), exc.details() or ""
    return grpc.StatusCode.OK, repr(said)


@pytest.mark.parametrize("name", SERVERS)
async def test_every_rpc_refuses_bytes_that_do_not_parse_with_invalid_argument(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Parsed inside the boundary: INVALID_ARGUMENT naming the message, no stack trace
    in the answer or the log (grpc's own deserializer path gave UNKNOWN and a trace)."""
    server, address, stop = await SERVERS[name](tmp_path)
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            for service in sorted(server.methods_by_service()):
                for method in methods_of(service):
                    path = f"/{service}/{method.name}"
                    code, said = await call_with_garbage(channel, method)
                    if path in IN_BAND or (name == "router" and method.name == "ModelStreamInfer"):
                        # The stream goes on: an in-band error, then the stream's own end.
                        assert code == grpc.StatusCode.OK, (path, code, said)
                        assert "not a valid" in said or "malformed" in said, (path, said)
                        continue
                    assert code == grpc.StatusCode.INVALID_ARGUMENT, (path, code, said)
                    assert "Traceback" not in said, path
    finally:
        await stop()
    assert "Traceback" not in caplog.text
