"""Derived versions against their parents: size, latency, throughput and accuracy delta.

    .venv/bin/python benchmarks/bench_derive.py [--models mlp,encoder,decoder] [--aoti] [--threads N]

For each sample model (the MLP, the transformer encoder, and a small Llama decoder in
Hugging Face layout built from a config) and each method, the child is derived with the
same code the registry's worker runs (`derive_folder`), then parent and child are
measured one after the other in this process on the same data (`evaluate`): the
table shows child/parent ratios taken in one run. Accuracy: max-abs-diff against the
parent's outputs for tensor models, perplexity for the decoder (of the text it was
trained on for a few steps, so that broken weights would show).
`--aoti` adds AOTInductor packages (a minute or more of compiling each).
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' tiny decoder

from modelport.compression.derive import derive_folder
from modelport.compression.evaluate import evaluate
from modelport.compression.spec import DeriveSpec

from tests.compression.tiny_models import decoder_jsonl, write_decoder

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


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def tensor_data(name: str) -> bytes:
    rng = np.random.default_rng(0)
    shape = (256, 256) if name == "mlp" else (32, 64, 256)
    return npz(INPUT=rng.standard_normal(shape).astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,encoder,decoder")
    parser.add_argument("--aoti", action="store_true", help="Also compile AOTInductor packages.")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch intra-op threads (default: torch's)."
    )
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)  # a busy machine: 1 keeps the ratios steadier
    os.environ.setdefault("MODELPORT_DERIVE_TIMING_SECONDS", "3")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-derive-") as tmp:
        root = Path(tmp)
        from modelport.inference.samples import build_samples

        build_samples(root / "repo", encoder=True)
        for name in args.models.split(","):
            if name == "decoder":
                parent, data, fmt, methods = (
                    write_decoder(root, hidden=256, layers=4, steps=60),
                    decoder_jsonl(samples=20),
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
