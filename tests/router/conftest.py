"""Fixtures: real gRPC replicas and a real router on loopback, port 0."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from modelport.proto.inference import grpc_service_pb2_grpc as pb_grpc
from modelport.router.app import RouterApp
from modelport.router.discovery import StaticDiscovery
from modelport.router.policies import StaticPolicySource

from tests.support.toy_oip_server import ToyServer


class EndpointsFile:
    """The static discovery file, rewritten by tests to add or drop replicas."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.write_text("")

    def write(self, pairs: list[tuple[str, str]]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(f"{model}={address}\n" for model, address in pairs))
        tmp.replace(self.path)


@pytest.fixture
async def replicas() -> AsyncIterator[Callable[[dict[str, list[str]]], Awaitable[ToyServer]]]:
    started: list[ToyServer] = []

    async def start(models: dict[str, list[str]]) -> ToyServer:
        replica = ToyServer(models)
        await replica.start()
        started.append(replica)
        return replica

    yield start
    for replica in started:
        await replica.stop()


@pytest.fixture
def endpoints_file(tmp_path: Path) -> EndpointsFile:
    return EndpointsFile(tmp_path / "endpoints")


@pytest.fixture(params=[False, True], ids=["unary", "multiplex"])
def multiplex(request: pytest.FixtureRequest) -> bool:
    """Every router test runs with unary forwarding and with one stream per replica."""
    return bool(request.param)


@pytest.fixture
def policies() -> StaticPolicySource:
    return StaticPolicySource()


@pytest.fixture
async def router(
    endpoints_file: EndpointsFile, policies: StaticPolicySource, multiplex: bool
) -> AsyncIterator[RouterApp]:
    app = RouterApp(
        StaticDiscovery(file=endpoints_file.path, poll_seconds=0.05),
        policies,
        index_interval=0.5,
        multiplex=multiplex,
    )
    await app.start()
    yield app
    await app.stop(0)


@pytest.fixture
async def stub(router: RouterApp) -> AsyncIterator[pb_grpc.GRPCInferenceServiceStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)
