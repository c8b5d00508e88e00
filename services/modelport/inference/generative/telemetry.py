"""Generation metrics per model and version, exported with the service's other metrics.

Histograms (seconds; `*_duration` gets the service's latency buckets): time to
first token, inter-token latency (one sample per token gap), end-to-end.
Counters: prompt tokens, generated tokens, finished sequences by reason.
Gauges, read when scraped: running and waiting sequences, KV blocks in use
as a fraction of the pool, preemptions so far.
"""

from __future__ import annotations

from opentelemetry.metrics import CallbackOptions, Observation

from modelport.common import metrics
from modelport.inference.generative.engine import ContinuousBatchingEngine
from modelport.inference.generative.types import GenerationOutput
from modelport.inference.generative.vllm_engine import VllmEngine


class _Instruments:
    def __init__(self) -> None:
        meter = metrics.meter("modelport.generation")
        self.ttft = meter.create_histogram(
            "modelport_generation_time_to_first_token_duration",
            unit="s",
            description="Submitted to first generated token",
        )
        self.itl = meter.create_histogram(
            "modelport_generation_inter_token_duration",
            unit="s",
            description="Gap between consecutive generated tokens of a sequence",
        )
        self.e2e = meter.create_histogram(
            "modelport_generation_e2e_duration",
            unit="s",
            description="Submitted to finished",
        )
        self.prompt_tokens = meter.create_counter(
            "modelport_generation_prompt_tokens", description="Prompt tokens of finished sequences"
        )
        self.generated_tokens = meter.create_counter(
            "modelport_generation_generated_tokens", description="Tokens generated"
        )
        self.finished = meter.create_counter(
            "modelport_generation_sequences", description="Finished sequences by finish_reason"
        )
        self.live: set[GenerationTelemetry] = set()
        for name, read, what in (
            (
                "modelport_generation_running",
                lambda t: t.engine.load().running,
                "Sequences in the running batch",
            ),
            (
                "modelport_generation_waiting",
                lambda t: t.engine.load().waiting,
                "Sequences waiting for a slot",
            ),
            (
                "modelport_generation_kv_usage",
                lambda t: t.engine.load().kv_usage,
                "KV cache blocks in use (fraction)",
            ),
            (
                "modelport_generation_preemptions",
                lambda t: t.engine.load().extra.get("preemptions", 0.0),
                "Sequences preempted for KV space so far",
            ),
        ):
            meter.create_observable_gauge(name, callbacks=[self._observer(read)], description=what)

    def _observer(self, read):  # type: ignore[no-untyped-def]
        def observe(_options: CallbackOptions) -> list[Observation]:
            return [Observation(read(t), t.attributes) for t in list(self.live)]

        return observe


_instruments: _Instruments | None = None


def _shared() -> _Instruments:
    global _instruments
    if _instruments is None:
        _instruments = _Instruments()
    return _instruments


class GenerationTelemetry:
    """An engine's observer: attach with `engine.observer = GenerationTelemetry(...)`."""

    def __init__(
        self, engine: ContinuousBatchingEngine | VllmEngine, model: str, version: str
    ) -> None:
        self.engine = engine
        self.attributes = {"model": model, "version": version}
        self._i = _shared()
        self._i.live.add(self)
        engine.observer = self

    def close(self) -> None:
        self._i.live.discard(self)

    def on_token_gap(self, seconds: float) -> None:
        self._i.itl.record(seconds, self.attributes)

    def on_first_token(self, seconds: float) -> None:
        self._i.ttft.record(seconds, self.attributes)

    def on_finish(self, output: GenerationOutput) -> None:
        i, attrs = self._i, self.attributes
        reason = output.finish_reason.value if output.finish_reason else "cancelled"
        i.finished.add(1, {**attrs, "finish_reason": reason})
        i.prompt_tokens.add(output.num_prompt_tokens, attrs)
        i.generated_tokens.add(output.num_output_tokens, attrs)
        if output.timings is not None:
            i.e2e.record(output.timings.e2e_s, attrs)
