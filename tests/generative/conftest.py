"""Fixtures for generative models: tiny decoders built from configs, engines over them.

- `tiny_dir`: a randomly initialised 2-layer Llama (d=64) in HF layout, once per session.
- `reference_model`: that model loaded by transformers as is (sdpa), for `generate`.
- `engine_factory`: builds a started engine (each engine implementation and
  configuration the conformance suite covers) and closes it after the test.
- `sample_dir`: the trained sample decoder, trained once per session.
- `served`: the OpenAI HTTP app (aiohttp, 127.0.0.1 port 0) over an engine on the
  tiny model (2 running, 1 waiting at most); yields (base URL, engine).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from aiohttp import web
from modelport.inference.generative.engine import ContinuousBatchingEngine, EngineConfig
from modelport.inference.generative.hf_loader import LoadedModel, load_hf_model
from modelport.inference.generative.sample_decoder import build_sample_decoder, write_random_decoder
from modelport.router.openai.http import build_app
from modelport.router.openai.service import OpenAIService

from tests.generative.engine_backend import EngineBackend

TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
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


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_decoder(tmp_path_factory.mktemp("tiny") / "models", "tiny", **TINY)


@pytest.fixture(scope="session")
def reference_model(tiny_dir: Path) -> LoadedModel:
    return load_hf_model(tiny_dir)


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sample_decoder(tmp_path_factory.mktemp("sample") / "models")


EngineFactory = Callable[..., Any]


@pytest.fixture(autouse=True)
def one_torch_thread() -> Any:
    """Tiny models gain nothing from a second thread, and lose a lot when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=sorted(ENGINES))
async def engine_factory(
    request: pytest.FixtureRequest, tiny_dir: Path
) -> AsyncIterator[EngineFactory]:
    """`await make(**config_overrides)` → a started engine over the tiny model."""
    engines: list[ContinuousBatchingEngine] = []

    async def make(model_dir: Path | None = None, **overrides: Any) -> ContinuousBatchingEngine:
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


@pytest.fixture
async def served(tiny_dir: Path) -> AsyncIterator[tuple[str, ContinuousBatchingEngine]]:
    loaded = load_hf_model(tiny_dir)
    config = EngineConfig(max_num_seqs=2, max_waiting=1, kv_cache_bytes=2 << 20)
    engine = ContinuousBatchingEngine(
        loaded.model, loaded.tokenizer, config, eos_token_ids=loaded.eos_token_ids
    )
    await engine.start()
    runner = web.AppRunner(
        build_app(OpenAIService(EngineBackend({"tiny": (engine, loaded.chat_template)})))
    )
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", engine
    await runner.cleanup()
    await engine.close()
