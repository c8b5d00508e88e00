"""Generation metrics reach `/metrics` per model and version (Prometheus' own parser reads them)."""

from __future__ import annotations

from modelport.common import metrics
from modelport.common.scrape import scrape
from modelport.inference.generative.telemetry import GenerationTelemetry
from modelport.inference.generative.types import SamplingParams


async def test_tokens_latencies_and_load_are_exported(engine_factory):
    port = metrics.serve_metrics("127.0.0.1", 0)
    engine = await engine_factory()
    telemetry = GenerationTelemetry(engine, "tiny", "3")
    try:
        before = scrape(f"127.0.0.1:{port}")
        async for _ in engine.generate([5, 6, 7, 8], SamplingParams(max_tokens=5, ignore_eos=True)):
            pass
        page = scrape(f"127.0.0.1:{port}")
    finally:
        telemetry.close()
    labels = {"model": "tiny", "version": "3"}

    def grew(name: str, **extra: str) -> float:
        return page.total(name, **labels, **extra) - before.total(name, **labels, **extra)

    assert grew("modelport_generation_generated_tokens_total") == 5
    assert grew("modelport_generation_prompt_tokens_total") == 4
    assert grew("modelport_generation_sequences_total", finish_reason="length") == 1
    assert grew("modelport_generation_time_to_first_token_duration_seconds_count") == 1
    assert grew("modelport_generation_inter_token_duration_seconds_count") == 4
    assert grew("modelport_generation_e2e_duration_seconds_count") == 1
    assert page.total("modelport_generation_running", **labels) == 0
    assert page.total("modelport_generation_kv_usage", **labels) == 0
