"""Certificate rotation without restart, under load, with real certificates.

The files are laid out as a mounted Kubernetes Secret is (`tls.crt` → `..data/
tls.crt`, updated by swapping the `..data` symlink), rotated several times
while clients keep calling over open channels and over fresh ones: no call
fails, and new handshakes present the new certificate."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

import grpc
import pytest
from modelport.common.tls import (
    ChannelMaker,
    ClientTlsFiles,
    TlsFiles,
    check_pair,
    reloading_server_credentials,
)
from modelport.errors import InvalidInput

from tests.support.certificates import CertificateAuthority, Issued, localhost_server


class SecretMount:
    """A folder that behaves like a mounted Secret: every update is one symlink swap."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self.updates = 0

    def update(self, files: dict[str, bytes]) -> None:
        self.updates += 1
        version = self.root / f"..{self.updates}"
        version.mkdir()
        for name, data in files.items():
            (version / name).write_bytes(data)
        temp = self.root / "..data_tmp"
        temp.symlink_to(version.name)
        os.replace(temp, self.root / "..data")
        for name in files:
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")

    def path(self, name: str) -> Path:
        return self.root / name


def server_files(ca_pem: bytes, server: Issued) -> dict[str, bytes]:
    return {"tls.crt": server.cert_pem, "tls.key": server.key_pem, "ca.crt": ca_pem}


async def serve(mount: SecretMount) -> tuple[grpc.aio.Server, int]:
    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return request

    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(echo)
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("t.Echo", {"Call": handler})]
    )
    files = TlsFiles(mount.path("tls.crt"), mount.path("tls.key"), mount.path("ca.crt"))
    port = server.add_secure_port(
        "127.0.0.1:0", reloading_server_credentials(files, check_seconds=0)
    )
    await server.start()
    return server, port


def client_maker(
    tmp_path: Path, name: str, ca: CertificateAuthority, client: Issued
) -> ChannelMaker:
    folder = tmp_path / name
    cert, key = client.write(folder, "client")
    return ChannelMaker(ClientTlsFiles(ca.write(folder), cert, key), [])


async def call(maker: ChannelMaker, port: int) -> bytes:
    channel, _ = maker.dial(f"localhost:{port}")
    async with channel:
        return await channel.unary_unary("/t.Echo/Call")(b"x", timeout=5)


async def test_rotation_under_load_fails_no_call(tmp_path: Path) -> None:
    client_ca = CertificateAuthority("clients")
    client = client_ca.issue("router", uris=["spiffe://t/router"], client=True, server=False)
    server_cas = [CertificateAuthority(f"servers {i}") for i in range(4)]
    mount = SecretMount(tmp_path / "secret")
    mount.update(server_files(client_ca.cert_pem, localhost_server(server_cas[0])))
    server, port = await serve(mount)
    # A client that trusts every server CA keeps calling throughout; one per CA
    # checks which certificate a new handshake presents.
    every_ca = tmp_path / "every-ca.crt"
    every_ca.write_bytes(b"".join(ca.cert_pem for ca in server_cas))
    cert, key = client.write(tmp_path / "client", "client")
    steady = ChannelMaker(ClientTlsFiles(every_ca, cert, key), [])
    only = [client_maker(tmp_path, f"only-{i}", ca, client) for i, ca in enumerate(server_cas)]
    ok, failed = [0], []
    stop = asyncio.Event()

    async def persistent() -> None:
        channel, _ = steady.dial(f"localhost:{port}")
        async with channel:
            while not stop.is_set():
                try:
                    await channel.unary_unary("/t.Echo/Call")(b"x", timeout=5)
                    ok[0] += 1
                except grpc.aio.AioRpcError as error:
                    failed.append(error.code())

    async def reconnecting() -> None:
        while not stop.is_set():
            try:
                await call(steady, port)  # a new handshake every time
                ok[0] += 1
            except grpc.aio.AioRpcError as error:
                failed.append(error.code())

    load = [asyncio.create_task(persistent()) for _ in range(3)]
    load += [asyncio.create_task(reconnecting()) for _ in range(3)]
    try:
        assert await call(only[0], port) == b"x"
        for i in range(1, len(server_cas)):
            await asyncio.sleep(0.3)
            mount.update(server_files(client_ca.cert_pem, localhost_server(server_cas[i])))
            deadline = time.monotonic() + 5
            while True:  # the next handshakes present the new certificate
                try:
                    assert await call(only[i], port) == b"x"
                    break
                except grpc.aio.AioRpcError:
                    assert time.monotonic() < deadline, f"rotation {i} not picked up"
                    await asyncio.sleep(0.05)
            with pytest.raises(grpc.aio.AioRpcError):
                await call(only[i - 1], port)  # the old certificate is no longer offered
        await asyncio.sleep(0.3)
    finally:
        stop.set()
        await asyncio.gather(*load)
        await server.stop(0)
    assert failed == [] and ok[0] > 50, (failed, ok)


async def test_a_broken_rotation_keeps_the_previous_certificate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client_ca = CertificateAuthority("clients")
    client = client_ca.issue("router", client=True, server=False)
    ca, other_ca = CertificateAuthority("servers"), CertificateAuthority("other")
    mount = SecretMount(tmp_path / "secret")
    good = localhost_server(ca)
    mount.update(server_files(client_ca.cert_pem, good))
    server, port = await serve(mount)
    try:
        trusted = client_maker(tmp_path, "trusted", ca, client)
        assert await call(trusted, port) == b"x"
        # A certificate written with another pair's key (a half-done rotation).
        mismatched = localhost_server(other_ca)
        with caplog.at_level(logging.ERROR):
            mount.update(
                {
                    "tls.crt": mismatched.cert_pem,
                    "tls.key": good.key_pem,
                    "ca.crt": client_ca.cert_pem,
                }
            )
            for _ in range(5):
                assert await call(trusted, port) == b"x"
        assert sum("cannot be used" in r.message for r in caplog.records) == 1
        # Client certificates from a CA the server does not trust are refused.
        stranger = client_maker(
            tmp_path, "stranger", ca, CertificateAuthority("x").issue("x", client=True)
        )
        with pytest.raises(grpc.aio.AioRpcError):
            await call(stranger, port)
    finally:
        await server.stop(0)


def test_client_files_say_when_to_dial_again(tmp_path: Path) -> None:
    ca = CertificateAuthority()
    first, second = ca.issue("a", client=True), ca.issue("b", client=True)
    cert, key = first.write(tmp_path, "client")
    maker = ChannelMaker(ClientTlsFiles(ca.write(tmp_path), cert, key, server_name="svc"), [])
    assert ("grpc.ssl_target_name_override", "svc") in maker.options
    signature = maker.signature()
    assert not maker.changed(signature)
    time.sleep(0.01)
    second.write(tmp_path, "client")
    assert maker.changed(signature)
    assert not ChannelMaker(None, []).changed(signature)
    with pytest.raises(InvalidInput, match="both"):
        ClientTlsFiles(ca_file=None, cert_file=cert)
    with pytest.raises(InvalidInput, match="does not belong"):
        check_pair(first.cert_pem, second.key_pem)
    with pytest.raises(InvalidInput, match="not usable PEM"):
        check_pair(b"junk", first.key_pem)
