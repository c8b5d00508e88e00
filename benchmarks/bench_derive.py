"""Derived versions against their parents: size, latency, throughput and accuracy delta.

    .venv/bin/python benchmarks/bench_derive.py [--models mlp,encoder,decoder] [--aoti]

For each sample model (the MLP, the transformer encoder, and a small Llama decoder in
Hugging Face layout built from a config) and each method, the child is derived with the
same code the registry's worker runs (`derive_folder`), then parent and child are
measured one after the other in this process on the same data (`evaluate`): the
table shows child/parent ratios taken in one run. Accuracy: max-abs-diff against the
parent's outputs for tensor models, perplexity of held-out text for the decoder.
`--aoti` adds AOTInductor packages (a minute or more of compiling each).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))

from modelport.compression.derive import derive_folder
from modelport.compression.evaluate import evaluate
from modelport.compression.spec import DeriveSpec

TENSOR_METHODS = {
    "int8-dynamic": DeriveSpec(quantize="int8-dynamic"),
    "int8-weight-only": DeriveSpec(quantize="int8-weight-only"),
    "int4-weight-only": DeriveSpec(quantize="int4-weight-only"),
    "fp16": DeriveSpec(dtype="fp16"),
    "bf16": DeriveSpec(dtype="bf16"),
    "prune-0.5": DeriveSpec(prune=0.5),
}
DECODER_METHODS = {
    "int8-weight-only": DeriveSpec(quantize="int8-weight-only"),
    "int4-weight-only": DeriveSpec(quantize="int4-weight-only"),
}
TEXT = (
    "the registry keeps every version of a model and the router sends each request "
    "to a replica that serves it; a canary takes a slice of the traffic until it is trusted. "
) * 40


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def tensor_data(name: str) -> bytes:
    rng = np.random.default_rng(0)
    shape = (256, 256) if name == "mlp" else (32, 64, 256)
    return npz(INPUT=rng.standard_normal(shape).astype(np.float32))


def build_decoder(root: Path) -> Path:
    """A 4-layer Llama from a config, with a byte-level BPE tokenizer trained on TEXT."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)  # fmt: skip
    core.train_from_iterator([TEXT], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=256, intermediate_size=768,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True)  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    version = root / "decoder" / "1"
    model.save_pretrained(version, safe_serialization=True)
    tokenizer.save_pretrained(version)
    (root / "decoder" / "config.pbtxt").write_text(
        'name: "decoder"\nbackend: "generative"\nmax_batch_size: 0\n'
    )
    return root / "decoder"


def decoder_data() -> bytes:
    words = TEXT.split()
    lines = [
        json.dumps(
            {
                "prompt": " ".join(words[i : i + 8]),
                "reference": " " + " ".join(words[i + 8 : i + 16]),
            }
        )
        for i in range(0, 320, 16)
    ]
    return "\n".join(lines).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,encoder,decoder")
    parser.add_argument("--aoti", action="store_true", help="Also compile AOTInductor packages.")
    args = parser.parse_args()
    os.environ.setdefault("MODELPORT_DERIVE_TIMING_SECONDS", "3")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-derive-") as tmp:
        root = Path(tmp)
        from modelport.inference.samples import build_samples

        build_samples(root / "repo", encoder=True)
        for name in args.models.split(","):
            if name == "decoder":
                parent, data, fmt, methods = (
                    build_decoder(root),
                    decoder_data(),
                    "jsonl",
                    DECODER_METHODS,
                )
            else:
                parent, data, fmt = root / "repo" / name, tensor_data(name), "npz"
                methods = dict(TENSOR_METHODS)
                if args.aoti:
                    methods["aoti"] = DeriveSpec(compile="aoti")
                    methods["int8-dynamic+aoti"] = DeriveSpec(
                        quantize="int8-dynamic", compile="aoti"
                    )
            for method, spec in methods.items():
                started = time.perf_counter()
                child = derive_folder(parent, spec, root / "children" / name / method)
                m = evaluate(parent, child.model_dir, data, fmt).metrics
                rows.append((name, method, m, time.perf_counter() - started))
                print(f"... {name} {method} done", file=sys.stderr)
    print(
        "| model | method | size child/parent | latency p50 b1 child/parent (ms) | throughput child/parent | accuracy (parent → child) | derive+measure s |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, method, m, seconds in rows:
        print(
            f"| {name} | {method} | {m['size_bytes'] / m['parent.size_bytes']:.2f} "
            f"| {m['latency_p50_ms'] / m['parent.latency_p50_ms']:.2f} ({m['parent.latency_p50_ms']:.2f} → {m['latency_p50_ms']:.2f}) "
            f"| {m['throughput_per_s'] / m['parent.throughput_per_s']:.2f} "
            f"| {m['parent.accuracy']:.4g} → {m['accuracy']:.4g} | {seconds:.0f} |"
        )


if __name__ == "__main__":
    main()
