"""A causal LM as a version in the Triton repository layout (no torch here).

```
models/tiny-llama/config.pbtxt        backend: "generative", decoupled, the engine's limits
models/tiny-llama/1/config.json       Hugging Face layout, loaded by transformers
models/tiny-llama/1/model.safetensors (or sharded *.safetensors + index)
models/tiny-llama/1/tokenizer.json    (+ tokenizer_config.json, optional chat template)
models/tiny-llama/1/generation_config.json   optional: eos ids and sampling defaults
```
Weights load only from safetensors (`use_safetensors=True`) and no remote
code runs: a directory with only pickled weights (`pytorch_model.bin`, `.pt`)
is refused with a message that says how to convert it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from modelport.errors import InvalidInput
from modelport.proto.inference import model_config_pb2 as mc

BACKEND = "generative"
ENGINES = ("continuous", "vllm")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
REQUIRED = ("config.json", "tokenizer.json")
# What a served version's config adds for the router's OpenAI layer (ModelConfig):
# informative, never limits; ignored when such a config is read back.
SERVED_KEYS = ("chat_template", "bos_token", "eos_token")

# Triton's vLLM-backend tensor names, plus token ids for callers that tokenize; the
# logprob outputs come only when a request asks `logprobs` (inference/generative/oip.py).
_IO = """\
input [
  { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] optional: true },
  { name: "input_ids" data_type: TYPE_INT32 dims: [ -1 ] optional: true },
  { name: "stream" data_type: TYPE_BOOL dims: [ 1 ] optional: true },
  { name: "sampling_parameters" data_type: TYPE_STRING dims: [ 1 ] optional: true },
  { name: "exclude_input_in_output" data_type: TYPE_BOOL dims: [ 1 ] optional: true }
]
output [
  { name: "text_output" data_type: TYPE_STRING dims: [ -1 ] },
  { name: "output_ids" data_type: TYPE_INT32 dims: [ -1 ] },
  { name: "finish_reason" data_type: TYPE_STRING dims: [ -1 ] },
  { name: "num_input_tokens" data_type: TYPE_UINT32 dims: [ 1 ] },
  { name: "num_output_tokens" data_type: TYPE_UINT32 dims: [ 1 ] },
  { name: "token_logprobs" data_type: TYPE_FP32 dims: [ -1 ] },
  { name: "token_texts" data_type: TYPE_STRING dims: [ -1 ] },
  { name: "top_logprob_ids" data_type: TYPE_INT32 dims: [ -1, -1 ] },
  { name: "top_logprobs" data_type: TYPE_FP32 dims: [ -1, -1 ] },
  { name: "top_logprob_texts" data_type: TYPE_STRING dims: [ -1, -1 ] }
]
"""


@dataclass(frozen=True)
class GenerativeLimits:
    """The generative part of config.pbtxt (its `parameters`)."""

    engine: str = "continuous"
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 256
    max_waiting: int = 256
    block_size: int = 16
    kv_cache_mb: int = 256  # CPU: the KV pool's size
    kv_memory_fraction: float = (
        0.0  # GPU: share of free device memory (vLLM's gpu_memory_utilization)
    )
    max_model_len: int = 0  # 0: the model's own
    tensor_parallel_size: int = 1
    dtype: str = "auto"

    def validate(self, model: str) -> None:
        def bad(key: str, why: str) -> InvalidInput:
            return InvalidInput(f"model '{model}': config.pbtxt parameter '{key}' {why}")

        if self.engine not in ENGINES:
            raise bad("engine", f"must be one of {list(ENGINES)}")
        for key in (
            "max_num_seqs",
            "max_num_batched_tokens",
            "max_waiting",
            "block_size",
            "kv_cache_mb",
        ):
            if getattr(self, key) < 1:
                raise bad(key, "must be at least 1")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise bad("max_num_batched_tokens", "must be at least max_num_seqs")
        if not 0.0 <= self.kv_memory_fraction <= 1.0:
            raise bad("kv_memory_fraction", "must be between 0 and 1")
        if self.tensor_parallel_size < 1:
            raise bad("tensor_parallel_size", "must be at least 1")
        if self.dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise bad("dtype", "must be auto, float32, float16 or bfloat16")


def config_pbtxt(name: str, limits: GenerativeLimits | None = None) -> str:
    limits = limits or GenerativeLimits()
    params = "".join(
        f'parameters {{ key: "{key}" value {{ string_value: "{value}" }} }}\n'
        for key, value in vars(limits).items()
    )
    return (
        f'name: "{name}"\nbackend: "{BACKEND}"\nmax_batch_size: 0\n'
        "model_transaction_policy { decoupled: true }\n" + _IO + params
    )


def is_generative(config: mc.ModelConfig) -> bool:
    return config.backend == BACKEND


def limits_from_config(config: mc.ModelConfig) -> GenerativeLimits:
    defaults = GenerativeLimits()
    values: dict[str, Any] = {}
    for key, param in config.parameters.items():
        if key in SERVED_KEYS:
            continue
        if not hasattr(defaults, key):
            raise InvalidInput(f"model '{config.name}': unknown generative parameter '{key}'")
        kind = type(getattr(defaults, key))
        try:
            values[key] = kind(param.string_value)
        except ValueError:
            raise InvalidInput(
                f"model '{config.name}': parameter '{key}' must be {kind.__name__}, "
                f"got {param.string_value!r}"
            ) from None
    limits = replace(defaults, **values)
    limits.validate(config.name)
    return limits


def read_config(path: Path) -> mc.ModelConfig:
    config = mc.ModelConfig()
    try:
        text_format.Parse(path.read_text(), config)
    except text_format.ParseError as error:
        raise InvalidInput(f"{path}: {error}") from None
    return config


def check_hf_dir(version_dir: Path, model: str = "model") -> list[Path]:
    """The safetensors files of a Hugging Face directory; InvalidInput if it is not one."""
    if not version_dir.is_dir():
        raise InvalidInput(f"model '{model}': {version_dir} is not a directory")
    for required in REQUIRED:
        if not (version_dir / required).is_file():
            raise InvalidInput(f"model '{model}': {version_dir.name}/ has no {required}")
    weights = sorted(version_dir.glob("*.safetensors"))
    if not weights:
        pickles = [p.name for p in version_dir.iterdir() if p.suffix in PICKLE_SUFFIXES]
        hint = (
            f" (found {pickles}: pickled weights are never loaded; convert them with "
            "`model.save_pretrained(dir, safe_serialization=True)`)"
            if pickles
            else ""
        )
        raise InvalidInput(f"model '{model}': {version_dir.name}/ has no *.safetensors{hint}")
    try:
        json.loads((version_dir / "config.json").read_text())
    except ValueError as error:
        raise InvalidInput(f"model '{model}': config.json is not JSON ({error})") from None
    return weights


def verify_hf_version(version_dir: Path, where: str) -> str:
    """What the registry checks before storing a generative version; returns its weights file.

    The layout (`check_hf_dir`), that config.json and tokenizer.json are JSON, and that
    every safetensors file has a readable header whose tensors fit in the file: no
    weights are loaded and nothing is unpickled.
    """
    weights = check_hf_dir(version_dir, where)
    try:
        json.loads((version_dir / "tokenizer.json").read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidInput(f"{where}: tokenizer.json is not JSON ({error})") from None
    for path in weights:
        _check_safetensors_header(path, where)
    return weights[0].name


def _check_safetensors_header(path: Path, where: str) -> None:
    """safetensors' layout: 8-byte little-endian header size, JSON header, tensor data."""
    size = path.stat().st_size
    with path.open("rb") as stream:
        head = stream.read(8)
        length = int.from_bytes(head, "little") if len(head) == 8 else -1
        if length <= 0 or 8 + length > size:
            raise InvalidInput(f"{where}: {path.name} is not a safetensors file")
        try:
            header = json.loads(stream.read(length))
        except (ValueError, UnicodeDecodeError):
            raise InvalidInput(f"{where}: {path.name} has an unreadable header") from None
    data = size - 8 - length
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise InvalidInput(
                f"{where}: {path.name}: tensor '{name}' has no data offsets"
            ) from None
        if not 0 <= start <= end <= data:
            raise InvalidInput(f"{where}: {path.name}: tensor '{name}' lies outside the file")
