"""The router dials its replicas over mutual TLS; when its client certificate files
are rotated it moves to new channels while the old ones finish their calls: under
continuous load, no request fails and the replica sees the new certificate."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import numpy as np
from modelport.common.tls import ClientTlsFiles, TlsFiles
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc
from modelport.router.app import RouterApp
from modelport.router.discovery import StaticDiscovery
from modelport.router.replicas import Endpoint

from tests.inference.requests import raw_request
from tests.support.certificates import CertificateAuthority, localhost_server
from tests.support.toy_oip_server import ToyServer

A = np.ones((1, 16), np.int32)


async def test_client_certificate_rotation_under_load_fails_no_request(tmp_path: Path) -> None:
    ca = CertificateAuthority()
    ca_file = ca.write(tmp_path)
    server_cert, server_key = localhost_server(ca).write(tmp_path, "replica")
    replica = ToyServer({"simple": ["1"]})
    await replica.start(tls=TlsFiles(server_cert, server_key, ca_file))
    port = replica.address.rsplit(":", 1)[1]
    cert, key = ca.issue("router-a", client=True, server=False).write(tmp_path, "router")
    router = RouterApp(
        StaticDiscovery([Endpoint("simple", f"localhost:{port}")]),
        index_interval=0.2,
        upstream_tls=ClientTlsFiles(ca_file, cert, key),
        rotation_check_seconds=0.2,
    )
    router.transport.redial_grace = 1.0
    await router.start()
    failures: list[str] = []
    answered = [0]
    stop = asyncio.Event()

    async def caller(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
        request = raw_request("simple", {"INPUT0": ("INT32", A), "INPUT1": ("INT32", A)})
        while not stop.is_set():
            try:
                await stub.ModelInfer(request, timeout=10)
                answered[0] += 1
            except grpc.aio.AioRpcError as error:
                failures.append(f"{error.code().name}: {error.details()}")

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            deadline = time.monotonic() + 10
            while replica.peers["router-a"] == 0:  # the router reads the index and serves
                assert time.monotonic() < deadline
                try:
                    await stub.ModelInfer(
                        raw_request("simple", {"INPUT0": ("INT32", A), "INPUT1": ("INT32", A)})
                    )
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.1)
            load = [asyncio.create_task(caller(stub)) for _ in range(4)]
            await asyncio.sleep(0.5)
            ca.issue("router-b", client=True, server=False).write(
                tmp_path, "router"
            )  # cert-manager renews
            deadline = time.monotonic() + 10
            while replica.peers["router-b"] == 0:
                assert time.monotonic() < deadline, "the router never used its new certificate"
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.5)  # past the old channels' grace: they are closed now
            before = replica.peers["router-a"]
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*load)
    finally:
        await router.stop(0.5)
        await replica.stop()
    assert failures == [] and answered[0] > 20
    assert replica.peers["router-a"] == before, "requests still came over the old certificate"
