"""Fixtures shared by every test tier.

- `sample_repo`: the sample models, built once per session into a temp dir.
- `sample_dir`: the trained generative sample (`tiny-llama/1`), once per session.
- `inference_server`: a factory that starts a real InferenceApp (grpc.aio) on
  127.0.0.1 port 0 in the test's event loop and yields its address.
- `inference_stub`: a grpc.aio stub for an address.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from modelport.inference.app import InferenceApp, InferenceSettings
from modelport.inference.samples import build_samples
from modelport.proto.inference import grpc_service_pb2_grpc as pbg


@pytest.fixture(scope="session")
def sample_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_samples(tmp_path_factory.mktemp("samples") / "models")


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained sample decoder (`tiny-llama/1`), trained once per session."""
    from modelport.inference.generative.sample_decoder import build_sample_decoder

    return build_sample_decoder(tmp_path_factory.mktemp("sample") / "models")


@pytest.fixture(scope="session")
def triton_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Torch equivalents of Triton's example models, plus small string test models."""
    from modelport.inference.triton_samples import build_triton_examples, build_triton_extras

    from tests.support.string_models import build_string_models

    repo = tmp_path_factory.mktemp("triton") / "models"
    build_triton_extras(build_triton_examples(repo))
    return build_string_models(repo)


@pytest.fixture
def repo_copy(sample_repo: Path, tmp_path: Path) -> Path:
    """A private copy of the samples that a test may change."""
    target = tmp_path / "models"
    shutil.copytree(sample_repo, target)
    return target


ServerFactory = Callable[..., Any]


@pytest.fixture
async def inference_server() -> AsyncIterator[ServerFactory]:
    """`app = await inference_server(repo, **settings)`; `app.address` is host:port."""
    apps: list[InferenceApp] = []

    async def start(repo: Path | None, **settings: Any) -> InferenceApp:
        settings.setdefault("host", "127.0.0.1")
        settings.setdefault("grpc_port", 0)
        settings.setdefault("metrics_port", -1)
        settings.setdefault("grace_seconds", 2.0)
        app = InferenceApp(InferenceSettings(model_repository=repo, **settings))
        await app.start()
        app.address = f"127.0.0.1:{app.port}"  # type: ignore[attr-defined]
        apps.append(app)
        return app

    yield start
    for app in apps:
        with contextlib.suppress(Exception):
            await app.stop(grace=0.5)


@pytest.fixture
async def channel_factory() -> AsyncIterator[Callable[[str], grpc.aio.Channel]]:
    channels: list[grpc.aio.Channel] = []

    def make(address: str) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(address)
        channels.append(channel)
        return channel

    yield make
    for channel in channels:
        await channel.close()


@pytest.fixture
def stub_for(
    channel_factory: Callable[[str], grpc.aio.Channel],
) -> Callable[[str], pbg.GRPCInferenceServiceStub]:
    return lambda address: pbg.GRPCInferenceServiceStub(channel_factory(address))
