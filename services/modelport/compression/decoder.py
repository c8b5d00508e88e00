"""Weight-only int8/int4 of a generative model: a Hugging Face causal LM in the Triton layout.

    <model>/config.pbtxt           backend: "generative"
    <model>/1/config.json, model.safetensors, tokenizer.json, ...

The child is the same layout: transformers' own torchao integration quantizes
the decoder's Linear layers (the tied `lm_head` stays as it is) and writes
safetensors with a `quantization_config` in config.json, so the engine's
`from_pretrained(use_safetensors=True)` loads it unchanged. Perplexity of the
references given the prompts is the accuracy metric.
"""

from __future__ import annotations

import math
import shutil
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelport.compression.evaldata import TextData
from modelport.compression.measure import (
    Measurement,
    PeakMemory,
    folder_size,
    timed,
    timing_seconds,
)
from modelport.compression.spec import DeriveSpec
from modelport.errors import InvalidInput
from modelport.proto.inference import model_config_pb2 as mc

BACKEND = "generative"
METHODS = ("int8-weight-only", "int4-weight-only")
WEIGHT_SUFFIXES = (".safetensors",)
THROUGHPUT_BATCH = 8


def is_decoder(config: mc.ModelConfig) -> bool:
    return config.backend == BACKEND


def _version_dir(model_dir: Path) -> Path:
    from modelport.compression.derive import version_dir_of

    return version_dir_of(model_dir)


def _load(version_dir: Path, quantization_config: Any = None) -> Any:
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        return AutoModelForCausalLM.from_pretrained(
            version_dir,
            local_files_only=True,
            use_safetensors=True,
            trust_remote_code=False,
            quantization_config=quantization_config,
        ).eval()
    except (OSError, ValueError, KeyError) as exc:
        raise InvalidInput(f"derive: transformers could not load '{version_dir}': {exc}") from None


def derive_decoder(
    parent_dir: Path,
    config: mc.ModelConfig,
    spec: DeriveSpec,
    out_dir: Path,
    progress: Callable[[str, float], None],
) -> Any:
    import torch
    import torchao
    from transformers import TorchAoConfig

    from modelport.compression.derive import CHILD_VERSION, Derived
    from modelport.compression.transforms import quantize_config

    name = config.name or parent_dir.name
    if spec.prune or spec.dtype or spec.compile or spec.quantize not in METHODS:
        raise InvalidInput(
            f"derive: model '{name}' is a generative decoder; it takes --quantize "
            f"{' or '.join(METHODS)} (weight-only), nothing else"
        )
    source = _version_dir(parent_dir)
    progress(f"quantizing decoder ({spec.quantize})", 0.2)
    torch_config, config_name = quantize_config(spec.quantize, "cpu")
    model = _load(
        source, TorchAoConfig(quant_type=torch_config, modules_to_not_convert=["lm_head"])
    )
    target = out_dir / str(CHILD_VERSION)
    out_dir.mkdir(parents=True)
    try:
        model.save_pretrained(target, safe_serialization=True)
        for path in source.iterdir():  # tokenizer, generation config, chat template, ...
            if (
                path.is_file()
                and path.suffix not in WEIGHT_SUFFIXES
                and not (target / path.name).exists()
            ):
                shutil.copy2(path, target / path.name)
        shutil.copy2(parent_dir / "config.pbtxt", out_dir / "config.pbtxt")
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    layers = sum(1 for m in model.modules() if isinstance(m, torch.nn.Linear))
    parameters = {
        "device": "cpu",
        "torch": torch.__version__.split("+")[0],
        "torchao": torchao.__version__,
        "torchao_config": config_name,
        "linear_layers": str(layers),
        "not_converted": "lm_head",
    }
    return Derived(out_dir, parameters)


def measure_decoder(model_dir: Path, data: TextData) -> tuple[Measurement, float]:
    """(measurement, perplexity of the references given the prompts)."""
    import torch
    from transformers import AutoTokenizer

    version_dir = _version_dir(model_dir)
    with PeakMemory() as memory:
        model = _load(version_dir)
        tokenizer = AutoTokenizer.from_pretrained(version_dir, local_files_only=True)
        nll, count = 0.0, 0
        with torch.inference_mode():
            for prompt, reference in zip(data.prompts, data.references, strict=True):
                prompt_ids = tokenizer(prompt)["input_ids"]
                ids = tokenizer(prompt + reference)["input_ids"]
                labels = torch.tensor([ids])
                labels[0, : len(prompt_ids)] = -100  # score the reference only
                scored = int((labels[0, 1:] != -100).sum())
                if scored == 0:
                    continue
                loss = model(input_ids=torch.tensor([ids]), labels=labels).loss
                nll += float(loss) * scored
                count += scored
            if not count:
                raise InvalidInput("evaluation references tokenize to nothing")
            first = torch.tensor([tokenizer(data.prompts[0] + data.references[0])["input_ids"]])
            latency = timed(lambda: model(input_ids=first), 20, timing_seconds() / 2)
            batch = first.repeat(THROUGHPUT_BATCH, 1)
            batch_times = timed(lambda: model(input_ids=batch), 1 << 20, timing_seconds() / 2)
    measurement = Measurement(
        outputs=[],
        size_bytes=folder_size(version_dir),
        peak_memory_mb=memory.peak_mb,
        latency_p50_ms=statistics.median(latency) * 1000,
        throughput_per_s=THROUGHPUT_BATCH * first.shape[1] * len(batch_times) / sum(batch_times),
        max_batch=THROUGHPUT_BATCH,
    )
    return measurement, math.exp(nll / count)
