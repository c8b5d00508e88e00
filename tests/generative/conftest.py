"""Fixtures for generative models: tiny decoders built from configs, engines over them.

- `tiny_dir`: a randomly initialised 2-layer Llama (d=64) in HF layout, once per session.
- `reference_model`: that model loaded by transformers as is (sdpa), for `generate`.
- `engine_factory`: builds a started engine (each engine implementation and
  configuration the conformance suite covers) and closes it after the test.
- `vllm_worker`: one vLLM worker process over the tiny model for the whole
  session (a start costs about a minute); only where .venv-vllm exists.
- `tiny_repo`: a model repository holding the tiny model as `tiny`, with small
  engine limits (2 running, 1 waiting, 2 MiB of KV).
- `stack`: `await stack(replicas=N)` starts N real inference services on
  `tiny_repo` and a real router in front of them (gRPC and the OpenAI HTTP API,
  127.0.0.1 port 0); returns a `Stack`.
- `served`: one such stack with one replica; yields (OpenAI base URL, the engine).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from modelport.artifacts.generative import GenerativeLimits, config_pbtxt
from modelport.common.server import ServerOptions
from modelport.errors import FailedPrecondition
from modelport.inference.app import InferenceApp, InferenceSettings
from modelport.inference.generative.engine import ContinuousBatchingEngine, EngineConfig
from modelport.inference.generative.hf_loader import LoadedModel, load_hf_model, load_hf_tokenizer
from modelport.inference.generative.sample_decoder import write_random_decoder
from modelport.inference.generative.vllm_engine import VllmEngine
from modelport.inference.generative.vllm_process import (
    VllmConfig,
    VllmWorker,
    read_model_config,
    vllm_python,
)
from modelport.router.app import RouterApp
from modelport.router.discovery import StaticDiscovery
from modelport.router.replicas import Endpoint

from tests.router.router_helpers import serving, wait_until

# Heads of 32 dimensions: vLLM's CPU attention has no kernel for 16 ("Unsupported CPU
# attention configuration: head_dim=16"); still grouped-query (2 query heads per KV head).
TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    max_position_embeddings=256,
)

# Each entry is one engine the conformance suite must pass, by name.
#  - continuous: roomy KV, one prefill per step for typical prompts
#  - continuous-tight: a KV pool of 30 blocks of 4 tokens and 24 tokens per step,
#    so prompts are prefilled in chunks and sequences are preempted and recomputed
ENGINES: dict[str, dict[str, Any]] = {
    "continuous": dict(max_num_seqs=32, max_num_batched_tokens=128, kv_cache_bytes=4 << 20),
    "continuous-tight": dict(
        max_num_seqs=16, max_num_batched_tokens=24, block_size=4, kv_cache_bytes=30 * 2048
    ),
}


def _have_vllm() -> bool:
    try:
        vllm_python()
    except FailedPrecondition:
        return False
    return True


# - vllm: vLLM in its own process (`make vllm`). One worker serves the session; each test's
#   engine over it sets its own admission limits (max_num_seqs up to the worker's 32,
#   max_waiting). max_num_batched_tokens is the worker's own (vLLM's default).
#   Its tests carry the `vllm` mark: `make test-vllm` runs them (MODELPORT_REQUIRE_VLLM=1:
#   without vLLM that is an error here, not an empty run); `make test` leaves them out.
VLLM_WORKER = VllmConfig(max_num_seqs=32, kv_cache_bytes=4 << 20, dtype="float32")
if _have_vllm():
    ENGINES["vllm"] = dict(max_num_seqs=32, max_waiting=256)
elif os.environ.get("MODELPORT_REQUIRE_VLLM"):
    raise pytest.UsageError(
        "MODELPORT_REQUIRE_VLLM is set but there is no vLLM: run `make vllm` (or point "
        "MODELPORT_VLLM_PYTHON at a Python that has vllm)"
    )
else:  # not collected (rather than skipped) without `make vllm`
    collect_ignore = ["test_vllm_serving.py"]


def _engine_param(name: str) -> Any:
    if name != "vllm":
        return name
    # The first vLLM test also waits for the session's worker to start (about a minute alone).
    return pytest.param(name, marks=[pytest.mark.vllm, pytest.mark.timeout(600)])


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_decoder(tmp_path_factory.mktemp("tiny") / "models", "tiny", **TINY)


@pytest.fixture(scope="session")
def reference_model(tiny_dir: Path) -> LoadedModel:
    return load_hf_model(tiny_dir)


EngineFactory = Callable[..., Any]


@pytest.fixture(autouse=True)
def one_torch_thread() -> Any:
    """Tiny models gain nothing from a second thread, and lose a lot when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run_elsewhere(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine to the end from sync code, whether or not a loop runs here."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


@pytest.fixture(scope="session")
def vllm_worker(tiny_dir: Path) -> Iterator[VllmWorker]:
    worker = VllmWorker(VLLM_WORKER.engine_args(tiny_dir, read_model_config(tiny_dir)), name="tiny")
    _run_elsewhere(worker.start())
    yield worker
    _run_elsewhere(worker.close())


@pytest.fixture(params=[_engine_param(name) for name in sorted(ENGINES)])
async def engine_factory(
    request: pytest.FixtureRequest, tiny_dir: Path
) -> AsyncIterator[EngineFactory]:
    """`await make(**config_overrides)` → a started engine over the tiny model."""
    engines: list[Any] = []

    async def make(model_dir: Path | None = None, **overrides: Any) -> Any:
        if request.param == "vllm":
            assert model_dir is None, "the session's vLLM worker serves the tiny model only"
            worker = request.getfixturevalue("vllm_worker")
            limits = {**ENGINES["vllm"], **overrides}
            limits.pop("max_num_batched_tokens", None)
            tok = load_hf_tokenizer(tiny_dir)
            vllm = VllmEngine(
                tiny_dir, tok.tokenizer, VllmConfig(**limits), eos_token_ids=tok.eos_token_ids,
                name="tiny", worker=worker,
            )  # fmt: skip
            await vllm.start()
            engines.append(vllm)
            return vllm
        loaded = load_hf_model(model_dir or tiny_dir)
        config = EngineConfig(**{**ENGINES[request.param], **overrides})
        engine = ContinuousBatchingEngine(
            loaded.model, loaded.tokenizer, config, eos_token_ids=loaded.eos_token_ids, name="tiny"
        )
        await engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        await engine.close()


SMALL = GenerativeLimits(max_num_seqs=2, max_waiting=1, kv_cache_mb=2)


@pytest.fixture(scope="session")
def tiny_repo(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("tiny-repo")
    (repo / "tiny").mkdir()
    (repo / "tiny" / "1").symlink_to(tiny_dir)
    (repo / "tiny" / "config.pbtxt").write_text(config_pbtxt("tiny", SMALL))
    return repo


class Stack:
    """Inference replicas and the router in front of them, in this event loop."""

    def __init__(self, apps: list[InferenceApp], router: RouterApp) -> None:
        self.apps = apps
        self.router = router
        self.url = f"http://127.0.0.1:{router.http_port}"
        self.address = f"127.0.0.1:{router.port}"

    def engine(self, index: int = 0) -> Any:
        return self.apps[index].manager.get("tiny").engine  # type: ignore[union-attr]

    def running(self) -> list[int]:
        return [self.engine(i).load().running for i in range(len(self.apps))]


@pytest.fixture
async def stack(tiny_repo: Path) -> AsyncIterator[Callable[..., Any]]:
    started: list[Stack] = []

    async def start(replicas: int = 1, **settings: Any) -> Stack:
        apps = []
        for _ in range(replicas):
            app = InferenceApp(
                InferenceSettings(
                    model_repository=tiny_repo, host="127.0.0.1", grpc_port=0,
                    metrics_port=-1, grace_seconds=1.0, **settings,
                )
            )  # fmt: skip
            await app.start()
            apps.append(app)
        endpoints = [Endpoint("tiny", f"127.0.0.1:{app.port}") for app in apps]
        router = RouterApp(
            StaticDiscovery(endpoints),
            options=ServerOptions(host="127.0.0.1", port=0),
            index_interval=0.1,
            http_port=0,
        )
        await router.start()
        await wait_until(serving(router, "tiny", replicas))
        started.append(Stack(apps, router))
        return started[-1]

    yield start
    for one in started:
        await one.router.stop(0)
        for app in one.apps:
            await app.stop(0.5)


@pytest.fixture
async def served(stack: Callable[..., Any]) -> AsyncIterator[tuple[str, Any]]:
    """The OpenAI API at the router, one replica behind it: (base URL, its engine)."""
    one = await stack()
    yield one.url, one.engine()
