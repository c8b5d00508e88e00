"""A tiny seeded MLP in Triton layout (torch.export, dynamic batch), and data to evaluate it on."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

NAME = "tiny"
CONFIG = """\
name: "tiny"
platform: "torch_export"
max_batch_size: 64
input [ { name: "INPUT" data_type: TYPE_FP32 dims: [ 32 ] } ]
output [ { name: "OUTPUT" data_type: TYPE_FP32 dims: [ 8 ] } ]
dynamic_batching { max_queue_delay_microseconds: 20000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
"""


def tiny_module() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8)
    ).eval()


def write_tiny(root: Path) -> Path:
    """`root/tiny/{config.pbtxt,1/model.pt2}`."""
    model_dir = root / NAME
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(CONFIG)
    batch = torch.export.Dim("batch", min=1, max=1024)
    with torch.no_grad():
        program = torch.export.export(
            tiny_module(), (torch.zeros(2, 32),), dynamic_shapes=({0: batch},)
        )
    torch.export.save(program, str(model_dir / "1" / "model.pt2"))
    return model_dir


def inputs(samples: int = 128) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((samples, 32)).astype(np.float32)


def expected(x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return tiny_module()(torch.from_numpy(x)).numpy()


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


# A causal LM for the decoder methods: a Llama built from a config, trained for a
# few steps on TEXT so that its perplexity says something (random Linear weights,
# which a broken quantized reload would give, score near the vocabulary size).
TEXT = (
    "the registry keeps every version of a model and the router sends each request "
    "to a replica that serves it; a canary takes a slice of the traffic until it is trusted. "
)


def write_decoder(root: Path, hidden: int = 64, layers: int = 2, steps: int = 40) -> Path:
    """`root/decoder/{config.pbtxt,1/{config.json,model.safetensors,tokenizer.json,...}}`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    specials = ["<pad>", "<s>", "</s>"]
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    core.train_from_iterator([TEXT], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    ids = torch.tensor([tokenizer(TEXT * 3)["input_ids"][:96]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two threads on a busy 2-core machine: 25x slower steps
    try:
        for _ in range(steps):
            optimizer.zero_grad()
            model(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    version = root / "decoder" / "1"
    model.eval().save_pretrained(version, safe_serialization=True)
    tokenizer.save_pretrained(version)
    from modelport.artifacts.generative import config_pbtxt

    (root / "decoder" / "config.pbtxt").write_text(config_pbtxt("decoder"))
    return root / "decoder"


def decoder_jsonl(samples: int = 6) -> bytes:
    """Prompts and references cut from TEXT (what the decoder was trained on)."""
    import json

    words = (TEXT * (samples // 2 + 2)).split()
    lines = [
        json.dumps(
            {
                "prompt": " ".join(words[i : i + 6]),
                "reference": " " + " ".join(words[i + 6 : i + 12]),
            }
        )
        for i in range(0, 12 * samples, 12)
    ]
    return "\n".join(lines).encode()
