"""A tiny Hugging Face causal LM for the training tests, built from a config (no downloads).

A byte-level BPE tokenizer trained on the shipped support text and a 2-layer
LlamaForCausalLM, written in Hugging Face layout (safetensors) inside a
Triton model folder whose config.pbtxt names the generative backend: the
layout of the project's generative versions.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

DATA = Path(__file__).with_name("data")

CONFIG_PBTXT = """\
name: "{name}"
backend: "generative"
max_batch_size: 0
model_transaction_policy {{ decoupled: true }}
input [ {{ name: "text_input" data_type: TYPE_STRING dims: [ 1 ] }} ]
output [ {{ name: "text_output" data_type: TYPE_STRING dims: [ -1 ] }} ]
"""


def corpus() -> list[str]:
    lines = []
    for raw in (DATA / "support.jsonl").read_text().splitlines():
        record = json.loads(raw)
        lines.append(record["prompt"] + record["completion"])
    return lines


def build_tiny_decoder(model_dir: Path, name: str = "tiny-lm", seed: int = 0) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
    )

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(corpus(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    version = model_dir / "1"
    version.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(version, safe_serialization=True)
    tokenizer.save_pretrained(version)
    GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ).save_pretrained(version)
    (model_dir / "config.pbtxt").write_text(CONFIG_PBTXT.format(name=name))
    return model_dir


def greedy(model_dir: Path, prompt: str, max_new_tokens: int = 16) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    version = next(p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    tokenizer = AutoTokenizer.from_pretrained(version, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        version, local_files_only=True, use_safetensors=True
    )
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
    return str(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
