"""The SDK sends its API key (or bearer JWT) on every kind of call, sync and asyncio,
over plaintext and TLS channels alike."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from concurrent import futures

import grpc
import pytest
from modelport.client.channel import TlsOptions, aio_channel, sync_channel

from tests.support.certificates import CertificateAuthority, localhost_server

KEY = "mpk_abcdef12_s3cret"


def _who(context: grpc.ServicerContext) -> bytes:
    return dict(context.invocation_metadata()).get("authorization", "").encode()


def _handlers() -> grpc.GenericRpcHandler:
    def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
        return _who(context)

    def server_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        yield _who(context)

    def client_stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        list(requests)
        return _who(context)

    def both(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        list(requests)
        yield _who(context)

    return grpc.method_handlers_generic_handler(
        "t.Who",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
            "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
            "Both": grpc.stream_stream_rpc_method_handler(both),
        },
    )


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority()


@pytest.fixture(scope="module", params=["plaintext", "tls"])
def server(
    request: pytest.FixtureRequest, ca: CertificateAuthority
) -> Iterator[tuple[str, TlsOptions | None]]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers([_handlers()])
    if request.param == "tls":
        pair = localhost_server(ca)
        port = server.add_secure_port(
            "127.0.0.1:0", grpc.ssl_server_credentials([(pair.key_pem, pair.cert_pem)])
        )
        tls: TlsOptions | None = TlsOptions(root_certificates=ca.cert_pem)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
        tls = None
    server.start()
    yield f"localhost:{port}", tls
    server.stop(None)


def test_sync_calls_carry_the_key(server: tuple[str, TlsOptions | None]) -> None:
    target, tls = server
    expected = f"Bearer {KEY}".encode()
    with sync_channel(target, tls, KEY) as channel:
        assert channel.unary_unary("/t.Who/Unary")(b"", timeout=5) == expected
        assert list(channel.unary_stream("/t.Who/ServerStream")(b"", timeout=5)) == [expected]
        assert channel.stream_unary("/t.Who/ClientStream")(iter([b""]), timeout=5) == expected
        assert list(channel.stream_stream("/t.Who/Both")(iter([b""]), timeout=5)) == [expected]
        # Metadata a caller passes itself still arrives beside the key.
        assert (
            channel.unary_unary("/t.Who/Unary")(b"", timeout=5, metadata=[("x-a", "b")]) == expected
        )
    with sync_channel(target, tls) as anonymous:
        assert anonymous.unary_unary("/t.Who/Unary")(b"", timeout=5) == b""


async def test_asyncio_calls_carry_the_key(server: tuple[str, TlsOptions | None]) -> None:
    target, tls = server
    expected = f"Bearer {KEY}".encode()

    async def one() -> AsyncIterator[bytes]:
        yield b""

    async with aio_channel(target, tls, KEY) as channel:
        assert await channel.unary_unary("/t.Who/Unary")(b"", timeout=5) == expected
        assert [r async for r in channel.unary_stream("/t.Who/ServerStream")(b"", timeout=5)] == [
            expected
        ]
        assert await channel.stream_unary("/t.Who/ClientStream")(one(), timeout=5) == expected
        assert [r async for r in channel.stream_stream("/t.Who/Both")(one(), timeout=5)] == [
            expected
        ]
    async with aio_channel(target, tls) as anonymous:
        assert await anonymous.unary_unary("/t.Who/Unary")(b"", timeout=5) == b""
