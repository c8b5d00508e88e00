"""mTLS peer identity: SANs as a real gRPC server sees them, mapped to tenants."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from modelport.auth.peers import PeerIdentities, sans_from_auth_context, sans_of_certificate
from modelport.errors import InvalidInput

from tests.support.certificates import CertificateAuthority, localhost_server

ROUTER_ID = "spiffe://modelport.local/ns/modelport/sa/router"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority()


def test_sans_are_read_from_a_certificate(ca: CertificateAuthority) -> None:
    issued = ca.issue(
        "router", dns=["router.modelport.svc"], ips=["10.0.0.7"], uris=[ROUTER_ID], client=True
    )
    assert sans_of_certificate(issued.cert_pem) == ("router.modelport.svc", "10.0.0.7", ROUTER_ID)
    der = issued.certificate.public_bytes(serialization.Encoding.DER)
    assert sans_of_certificate(der) == sans_of_certificate(issued.cert_pem)
    assert sans_of_certificate(ca.cert_pem) == ()


def test_rules_match_whole_names_in_file_order() -> None:
    peers = PeerIdentities.from_config(
        {
            ROUTER_ID: {"tenant": "router", "roles": ["fleet"]},
            "*.batch.svc.cluster.local": {"tenant": "batch"},
            "*": {"tenant": "anyone-with-a-cert"},
        }
    )
    router = peers.identify(["router.modelport.svc", ROUTER_ID])
    assert router is not None and (router.tenant, router.roles) == ("router", {"fleet"})
    assert router.subject == f"mtls:{ROUTER_ID}" and router.method == "mtls"
    batch = peers.identify(["jobs.batch.svc.cluster.local"])
    assert batch is not None and batch.tenant == "batch"
    fallback = peers.identify(["batch.svc.cluster.local.evil"])
    assert fallback is not None and fallback.tenant == "anyone-with-a-cert"
    assert PeerIdentities.from_config({ROUTER_ID: {"tenant": "router"}}).identify(["x"]) is None
    assert peers.tenants == {"router", "batch", "anyone-with-a-cert"}


@pytest.mark.parametrize(
    "section", [["a"], {"x": {"roles": []}}, {"x": {"tenant": "t", "roles": "r"}}]
)
def test_malformed_peer_sections_are_rejected(section: Any) -> None:
    with pytest.raises(InvalidInput):
        PeerIdentities.from_config(section)


async def test_a_real_mtls_server_sees_the_client_sans(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    server_pair = localhost_server(ca)
    client_pair = ca.issue("router", uris=[ROUTER_ID], client=True, server=False)
    peers = PeerIdentities.from_config({ROUTER_ID: {"tenant": "router"}})
    seen: list[str] = []

    async def who(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        principal = peers.identify(sans_from_auth_context(context.auth_context()))
        seen.append(principal.tenant if principal else "")
        return seen[-1].encode()

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.Peer", {"Who": grpc.unary_unary_rpc_method_handler(who)}
            )
        ]
    )
    credentials = grpc.ssl_server_credentials(
        [(server_pair.key_pem, server_pair.cert_pem)],
        root_certificates=ca.cert_pem,
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    try:
        mtls = grpc.ssl_channel_credentials(ca.cert_pem, client_pair.key_pem, client_pair.cert_pem)
        async with grpc.aio.secure_channel(f"localhost:{port}", mtls) as channel:
            assert await channel.unary_unary("/test.Peer/Who")(b"", timeout=5) == b"router"
        # No client certificate: the handshake itself fails, the handler never runs.
        plain_tls = grpc.ssl_channel_credentials(ca.cert_pem)
        async with grpc.aio.secure_channel(f"localhost:{port}", plain_tls) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await channel.unary_unary("/test.Peer/Who")(b"", timeout=5)
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        # A certificate from another CA is refused the same way.
        other = CertificateAuthority("another CA").issue("router", uris=[ROUTER_ID], client=True)
        foreign = grpc.ssl_channel_credentials(ca.cert_pem, other.key_pem, other.cert_pem)
        async with grpc.aio.secure_channel(f"localhost:{port}", foreign) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await channel.unary_unary("/test.Peer/Who")(b"", timeout=5)
    finally:
        await server.stop(0)
    assert seen == ["router"]
