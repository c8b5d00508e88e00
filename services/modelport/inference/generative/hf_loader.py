"""Load a Hugging Face causal LM directory with transformers: safetensors only, no remote code."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from modelport.artifacts.generative import GenerativeLimits, check_hf_dir
from modelport.errors import InvalidInput

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: Any  # a transformers fast tokenizer
    eos_token_ids: tuple[int, ...]
    chat_template: str | None
    sampling_defaults: dict[str, Any] = field(default_factory=dict)


def load_hf_model(
    version_dir: Path,
    limits: GenerativeLimits | None = None,
    *,
    model_name: str = "model",
    device: str | torch.device = "cpu",
) -> LoadedModel:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a server's log is no terminal

    limits = limits or GenerativeLimits()
    check_hf_dir(version_dir, model_name)
    dtype: Any = _DTYPES.get(limits.dtype, "auto")
    try:
        tokenizer = AutoTokenizer.from_pretrained(version_dir, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            version_dir,
            local_files_only=True,
            use_safetensors=True,
            trust_remote_code=False,
            dtype=dtype,
        )
    except (OSError, ValueError, KeyError) as error:
        raise InvalidInput(
            f"model '{model_name}': transformers could not load it ({error})"
        ) from None
    model = model.to(device).eval()  # type: ignore[arg-type]
    eos = _eos_ids(version_dir, tokenizer)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        eos_token_ids=eos,
        chat_template=getattr(tokenizer, "chat_template", None),
        sampling_defaults=_sampling_defaults(version_dir),
    )


@dataclass
class LoadedTokenizer:
    """A model directory's tokenizer side alone: what an engine in another process needs here."""

    tokenizer: Any
    eos_token_ids: tuple[int, ...]
    chat_template: str | None
    sampling_defaults: dict[str, Any] = field(default_factory=dict)


def load_hf_tokenizer(version_dir: Path, *, model_name: str = "model") -> LoadedTokenizer:
    from transformers import AutoTokenizer

    check_hf_dir(version_dir, model_name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(version_dir, local_files_only=True)
    except (OSError, ValueError, KeyError) as error:
        raise InvalidInput(
            f"model '{model_name}': transformers could not load its tokenizer ({error})"
        ) from None
    return LoadedTokenizer(
        tokenizer=tokenizer,
        eos_token_ids=_eos_ids(version_dir, tokenizer),
        chat_template=getattr(tokenizer, "chat_template", None),
        sampling_defaults=_sampling_defaults(version_dir),
    )


def _generation_config(version_dir: Path) -> dict[str, Any]:
    path = version_dir / "generation_config.json"
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except ValueError as error:
        raise InvalidInput(f"{path}: not JSON ({error})") from None


def _eos_ids(version_dir: Path, tokenizer: Any) -> tuple[int, ...]:
    eos = _generation_config(version_dir).get("eos_token_id")
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return ()
    return tuple(eos) if isinstance(eos, list) else (int(eos),)


def _sampling_defaults(version_dir: Path) -> dict[str, Any]:
    """generation_config.json's sampling keys under their request names (vLLM does the same)."""
    config = _generation_config(version_dir)
    names = {
        "temperature": "temperature",
        "top_k": "top_k",
        "top_p": "top_p",
        "repetition_penalty": "repetition_penalty",
        "max_new_tokens": "max_tokens",
    }
    defaults = {ours: config[theirs] for theirs, ours in names.items() if theirs in config}
    if config.get("do_sample") is False:
        defaults["temperature"] = 0.0
    return defaults
