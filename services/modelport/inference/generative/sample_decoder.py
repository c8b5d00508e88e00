"""The sample decoder: a tiny Llama the project trains on text it ships.

`build_sample_decoder(repo)` trains a byte-level BPE tokenizer and a 2-layer
Llama on `data/corpus.txt` (a few hundred steps, seeded; well under a minute
on two cores), then writes it in Hugging Face layout as version 1 of
`tiny-llama` in a Triton repository. Its output reads as words from the
corpus. `write_random_decoder` writes a randomly initialised model with the
same tokenizer for tests that only need the machinery. No downloads.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from modelport.artifacts.generative import GenerativeLimits, config_pbtxt

SAMPLE_NAME = "tiny-llama"
STAMP = "modelport_recipe.txt"  # the recipe's fingerprint, written after a build
BOS, EOS, PAD = "<s>", "</s>", "<pad>"
# A plain role-tagged template; `add_generation_prompt` opens the assistant turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


@dataclass(frozen=True)
class Recipe:
    vocab_size: int = 512
    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 512
    steps: int = 150
    batch: int = 16
    window: int = 64
    lr: float = 4e-3
    seed: int = 0

    def fingerprint(self, corpus: str) -> str:
        blob = json.dumps(vars(self), sort_keys=True) + corpus
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def corpus_text() -> str:
    return (resources.files("modelport.inference.generative") / "data" / "corpus.txt").read_text()


def train_tokenizer(text: str, vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(text.splitlines(), trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=BOS, eos_token=EOS, pad_token=PAD
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def llama_config(recipe: Recipe, tokenizer: Any, **overrides: Any) -> Any:
    from transformers import LlamaConfig

    values: dict[str, Any] = dict(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_hidden_layers,
        num_attention_heads=recipe.num_attention_heads,
        num_key_value_heads=recipe.num_key_value_heads,
        max_position_embeddings=recipe.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    values.update(overrides)
    return LlamaConfig(**values)


def train(recipe: Recipe, text: str) -> tuple[Any, Any, list[float]]:
    """Train tokenizer and model; returns (model, tokenizer, losses).

    On one thread: the model is too small to gain from two, and on a machine
    whose cores are busy OpenMP's threads wait on each other (13x slower here).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(recipe, text)
    finally:
        torch.set_num_threads(threads)


def _train(recipe: Recipe, text: str) -> tuple[Any, Any, list[float]]:
    from transformers import LlamaForCausalLM

    torch.manual_seed(recipe.seed)
    tokenizer = train_tokenizer(text, recipe.vocab_size)
    ids: list[int] = []
    for line in text.splitlines():
        ids.extend([*tokenizer.encode(line + "\n"), tokenizer.eos_token_id])
    data = torch.tensor(ids)
    model = LlamaForCausalLM(llama_config(recipe, tokenizer))
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / 20) * 0.5 * (1 + math.cos(math.pi * s / recipe.steps)),
    )
    generator = torch.Generator().manual_seed(recipe.seed)
    losses = []
    model.train()
    for _ in range(recipe.steps):
        starts = torch.randint(
            0, len(data) - recipe.window - 1, (recipe.batch,), generator=generator
        )
        batch = torch.stack([data[s : s + recipe.window] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return model.eval(), tokenizer, losses


def save_hf(model: Any, tokenizer: Any, version_dir: Path) -> None:
    """Write the HF layout atomically: a crash leaves no half-written version."""
    from transformers import GenerationConfig

    partial = version_dir.with_name(version_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ).save_pretrained(partial)
    shutil.rmtree(version_dir, ignore_errors=True)
    partial.rename(version_dir)


def _write_model_dir(repo: Path, name: str, limits: GenerativeLimits | None) -> Path:
    model_dir = repo / name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(config_pbtxt(name, limits))
    return model_dir / "1"


def is_built(repo: Path, name: str = SAMPLE_NAME, recipe: Recipe | None = None) -> bool:
    """Whether `repo/name/1` holds this recipe's build (no training needed)."""
    stamp = repo / name / "1" / STAMP
    return stamp.is_file() and stamp.read_text() == (recipe or Recipe()).fingerprint(corpus_text())


def build_sample_decoder(
    repo: Path,
    *,
    name: str = SAMPLE_NAME,
    recipe: Recipe | None = None,
    limits: GenerativeLimits | None = None,
) -> Path:
    """Train (unless an identical build is there) and write `repo/name/1`; returns that dir."""
    recipe = recipe or Recipe()
    text = corpus_text()
    version_dir = _write_model_dir(repo, name, limits)
    stamp = version_dir / STAMP
    fingerprint = recipe.fingerprint(text)
    if stamp.is_file() and stamp.read_text() == fingerprint:
        return version_dir
    model, tokenizer, _ = train(recipe, text)
    save_hf(model, tokenizer, version_dir)
    stamp.write_text(fingerprint)
    return version_dir


def write_random_decoder(
    repo: Path,
    name: str = "random-llama",
    *,
    seed: int = 0,
    limits: GenerativeLimits | None = None,
    **config: Any,
) -> Path:
    """A randomly initialised Llama (overrides in `config`) with the sample tokenizer."""
    from transformers import LlamaForCausalLM

    recipe = Recipe()
    tokenizer = train_tokenizer(corpus_text(), recipe.vocab_size)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(recipe, tokenizer, **config)).eval()
    version_dir = _write_model_dir(repo, name, limits)
    save_hf(model, tokenizer, version_dir)
    return version_dir
