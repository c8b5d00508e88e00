"""Loading a generative version: the HF directory, the engine its limits choose, its KV pool.

The limits come from the version's config.pbtxt (`parameters`), and the
service's flags override them (`EngineOverrides`, what the chart sets per
deployment: engine, KV memory fraction, tensor-parallel size). Blocking: the
model manager runs it in a worker thread.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelport.artifacts.config import ModelSpec
from modelport.artifacts.generative import SERVED_KEYS, GenerativeLimits
from modelport.errors import FailedPrecondition, InvalidInput
from modelport.inference.generative.served import ServedGenerative
from modelport.proto.inference import model_config_pb2 as mc

if TYPE_CHECKING:
    from modelport.inference.generative.engine import ContinuousBatchingEngine
    from modelport.inference.generative.vllm_engine import VllmEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineOverrides:
    """The service's flags; an unset one (empty, 0 or negative) keeps the config's value."""

    engine: str = ""
    kv_cache_mb: int = 0
    kv_memory_fraction: float = -1.0
    tensor_parallel_size: int = 0
    max_num_seqs: int = 0
    torch_threads: int = 0

    def apply(self, limits: GenerativeLimits, model: str) -> GenerativeLimits:
        changes: dict[str, object] = {}
        if self.engine:
            changes["engine"] = self.engine
        if self.kv_cache_mb > 0:
            changes["kv_cache_mb"] = self.kv_cache_mb
        if self.kv_memory_fraction >= 0:
            changes["kv_memory_fraction"] = self.kv_memory_fraction
        if self.tensor_parallel_size > 0:
            changes["tensor_parallel_size"] = self.tensor_parallel_size
        if self.max_num_seqs > 0:
            changes["max_num_seqs"] = self.max_num_seqs
            changes["max_num_batched_tokens"] = max(limits.max_num_batched_tokens,
                                                    self.max_num_seqs)  # fmt: skip
        out = dataclasses.replace(limits, **changes)  # type: ignore[arg-type]
        out.validate(model)
        return out


def _device(spec: ModelSpec) -> str:
    import torch

    gpu = spec.device_kind == mc.ModelInstanceGroup.KIND_GPU
    if gpu and not torch.cuda.is_available():
        raise FailedPrecondition(
            f"model '{spec.name}': instance_group asks for KIND_GPU and this host has no GPU"
        )
    if spec.device_kind == mc.ModelInstanceGroup.KIND_CPU or not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{spec.device_index or 0}"


def kv_cache_bytes(limits: GenerativeLimits, device: str) -> int:
    """The KV pool: `kv_memory_fraction` of the memory free now (the device's, or the
    host's available RAM on CPU) when set, else `kv_cache_mb`."""
    if limits.kv_memory_fraction <= 0:
        return limits.kv_cache_mb << 20
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
    else:
        free = _available_ram()
    return max(1 << 20, int(free * limits.kv_memory_fraction))


def _available_ram() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise FailedPrecondition("kv_memory_fraction on CPU needs /proc/meminfo (Linux)")


def load_generative(
    spec: ModelSpec, version: int, version_dir: Path, overrides: EngineOverrides
) -> ServedGenerative:
    assert spec.generative is not None
    limits = overrides.apply(spec.generative, spec.name)
    if limits.engine == "vllm":
        return _load_vllm(spec, version, version_dir, limits)
    if limits.tensor_parallel_size > 1:
        raise InvalidInput(
            f"model '{spec.name}': tensor_parallel_size {limits.tensor_parallel_size} needs "
            "engine 'vllm' (the continuous engine runs a model on one device)"
        )
    from modelport.inference.generative.engine import ContinuousBatchingEngine, EngineConfig
    from modelport.inference.generative.hf_loader import load_hf_model

    device = _device(spec)
    loaded = load_hf_model(version_dir, limits, model_name=spec.name, device=device)
    config = dataclasses.replace(
        EngineConfig.from_limits(limits, overrides.torch_threads),
        kv_cache_bytes=kv_cache_bytes(limits, device),
    )
    engine = ContinuousBatchingEngine(
        loaded.model, loaded.tokenizer, config, eos_token_ids=loaded.eos_token_ids, name=spec.name
    )
    load = engine.load()
    log.info(
        "model '%s' version %d: %s engine on %s, %d KV blocks of %d tokens, context %d",
        spec.name, version, limits.engine, device, load.kv_total_blocks, limits.block_size,
        engine.max_model_len,
    )  # fmt: skip
    return _served(spec, version, limits, engine, loaded.chat_template, loaded.sampling_defaults)


def _load_vllm(
    spec: ModelSpec, version: int, version_dir: Path, limits: GenerativeLimits
) -> ServedGenerative:
    """vLLM in its own process (.venv-vllm); here only the tokenizer and the admission queue."""
    from modelport.inference.generative.hf_loader import load_hf_tokenizer
    from modelport.inference.generative.vllm_engine import VllmEngine
    from modelport.inference.generative.vllm_process import VllmConfig, vllm_python

    try:
        vllm_python()
    except FailedPrecondition as error:
        raise FailedPrecondition(f"model '{spec.name}': {error}") from None
    loaded = load_hf_tokenizer(version_dir, model_name=spec.name)
    fraction = limits.kv_memory_fraction
    config = VllmConfig(
        max_num_seqs=limits.max_num_seqs,
        max_waiting=limits.max_waiting,
        max_model_len=limits.max_model_len or None,
        max_num_batched_tokens=limits.max_num_batched_tokens,
        dtype=limits.dtype,
        # A fraction when one is set (GPU nodes), else the pool's size, as the continuous
        # engine reads them; vLLM on CPU takes the fraction of host RAM.
        kv_cache_bytes=0 if fraction > 0 else limits.kv_cache_mb << 20,
        memory_fraction=fraction or VllmConfig.memory_fraction,
        tensor_parallel_size=limits.tensor_parallel_size,
    )
    engine = VllmEngine(
        version_dir, loaded.tokenizer, config, eos_token_ids=loaded.eos_token_ids, name=spec.name
    )
    log.info(
        "model '%s' version %d: vllm engine (its own process), context %d",
        spec.name, version, engine.max_model_len,
    )  # fmt: skip
    return _served(spec, version, limits, engine, loaded.chat_template, loaded.sampling_defaults)


def _served(
    spec: ModelSpec,
    version: int,
    limits: GenerativeLimits,
    engine: ContinuousBatchingEngine | VllmEngine,
    chat_template: str | None,
    sampling_defaults: dict[str, Any],
) -> ServedGenerative:
    from modelport.inference.generative.telemetry import GenerationTelemetry

    telemetry = GenerationTelemetry(engine, spec.name, str(version))
    chat = {
        "chat_template": chat_template or "",
        "bos_token": getattr(engine.tokenizer, "bos_token", None) or "",
        "eos_token": getattr(engine.tokenizer, "eos_token", None) or "",
    }
    limits = dataclasses.replace(limits, max_model_len=engine.max_model_len)
    return ServedGenerative(
        _served_spec(spec, limits, chat),
        version,
        engine,
        sampling_defaults,
        on_close=telemetry.close,
    )


def _served_spec(spec: ModelSpec, limits: GenerativeLimits, chat: dict[str, str]) -> ModelSpec:
    """The spec this version answers ModelConfig with: the limits in force and its chat
    template, so the router's OpenAI layer needs nothing but the config."""
    config = mc.ModelConfig()
    config.CopyFrom(spec.config)
    for key, value in vars(limits).items():
        config.parameters[key].string_value = str(value)
    for key in SERVED_KEYS:
        config.parameters[key].string_value = chat.get(key, "")
    return dataclasses.replace(spec, config=config, generative=limits)
