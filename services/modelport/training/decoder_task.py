"""Fine-tuning a Hugging Face causal LM on prompt/completion or chat examples.

Only the completion (chat: the last assistant turn) and the end-of-sequence
token are learned: prompt positions carry label -100. Full fine-tuning
trains every weight; LoRA (PEFT) trains low-rank adapters on every linear
projection and merges them into the weights on export, so the served
version is a plain model in the same Hugging Face layout as its base, with
the base's tokenizer, generation config and config.pbtxt.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from modelport.artifacts import datasets as ds
from modelport.errors import InvalidInput
from modelport.training import task as t
from modelport.training.jobs import Hyperparameters, Method

IGNORE = -100
_WEIGHT_FILES = ("*.safetensors", "*.safetensors.index.json", "config.json")


def load_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def encode(tokenizer: Any, example: ds.TextExample) -> tuple[list[int], list[int]]:
    """(input ids, labels): the prompt as the server tokenizes it, then the completion + EOS."""
    if example.messages and getattr(tokenizer, "chat_template", None):
        prompt = tokenizer.apply_chat_template(
            list(example.messages[:-1]), add_generation_prompt=True, tokenize=False
        )
    else:
        prompt = example.prompt
    prompt_ids = list(tokenizer(prompt)["input_ids"]) if prompt else []
    completion_ids = list(tokenizer(example.completion, add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        completion_ids.append(int(tokenizer.eos_token_id))
    return prompt_ids + completion_ids, [IGNORE] * len(prompt_ids) + completion_ids


def encode_dataset(
    tokenizer: Any, examples: list[ds.TextExample], max_seq_len: int
) -> list[tuple[list[int], list[int]]]:
    encoded = []
    for number, example in enumerate(examples, start=1):
        ids, labels = encode(tokenizer, example)
        if len(ids) > max_seq_len:
            raise InvalidInput(
                f"dataset example {number} is {len(ids)} tokens long, "
                f"over max_seq_len={max_seq_len}"
            )
        encoded.append((ids, labels))
    return encoded


class DecoderTask:
    def __init__(
        self,
        base_model_dir: Path,
        dataset: Path,
        validation_fraction: float,
        method: Method,
        params: Hyperparameters,
    ) -> None:
        from transformers import AutoModelForCausalLM

        self.base_model_dir = base_model_dir
        self.folder = t.version_dir(base_model_dir)
        self.method = method
        self.tokenizer = load_tokenizer(self.folder)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id or 0
        model: Any = AutoModelForCausalLM.from_pretrained(
            self.folder,
            local_files_only=True,
            use_safetensors=True,
            trust_remote_code=False,
            dtype=torch.float32,
        )
        if method is Method.LORA:
            from peft import LoraConfig, get_peft_model

            assert params.lora_rank and params.lora_alpha
            model = get_peft_model(
                model,
                LoraConfig(
                    r=params.lora_rank,
                    lora_alpha=params.lora_alpha,  # type: ignore[arg-type]  # a float works
                    lora_dropout=0.0,
                    target_modules="all-linear",
                    task_type="CAUSAL_LM",
                ),
            )
        self.model = model.train()
        assert params.max_seq_len
        examples = ds.read_text_examples(dataset)
        encoded = encode_dataset(self.tokenizer, examples, params.max_seq_len)
        train, validation = ds.split(dataset, validation_fraction)
        self.splits = {
            "train": [encoded[i] for i in train],
            "validation": [encoded[i] for i in validation],
        }

    def size(self, split: str) -> int:
        return len(self.splits[split])

    def count(self, split: str, indices: list[int]) -> int:
        # Next-token prediction: position p predicts label p+1.
        return sum(sum(1 for x in self.splits[split][i][1][1:] if x != IGNORE) for i in indices)

    def loss_sum(self, model: torch.nn.Module, split: str, indices: list[int]) -> torch.Tensor:
        rows = [self.splits[split][i] for i in indices]
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, (tokens, targets) in enumerate(rows):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            labels[row, : len(targets)] = torch.tensor(targets)
            mask[row, : len(tokens)] = 1
        device = next(self.model.parameters()).device
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        shifted = logits[:, :-1, :].reshape(-1, logits.shape[-1])
        return torch.nn.functional.cross_entropy(
            shifted.float(),
            labels[:, 1:].reshape(-1).to(device),
            ignore_index=IGNORE,
            reduction="sum",
        )

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return t.trainable_state(self.model)

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        t.load_trainable_state(self.model, state)

    def export(self, output_dir: Path) -> None:
        folder = t.start_output(self.base_model_dir, output_dir)
        for item in self.folder.iterdir():
            if item.is_file() and not any(item.match(p) for p in _WEIGHT_FILES):
                shutil.copy2(item, folder / item.name)
        model: Any = self.model
        if self.method is Method.LORA:
            model = model.merge_and_unload()
        model = model.to("cpu").eval()
        model.save_pretrained(folder, safe_serialization=True)
        # Stamps of the base's build (e.g. a recipe fingerprint) no longer describe these weights.
        for stamp in folder.glob("modelport_*.txt"):
            stamp.unlink()
