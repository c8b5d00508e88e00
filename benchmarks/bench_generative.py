"""Generation throughput: continuous batching vs one-at-a-time vs a padded static batch.

    .venv/bin/python benchmarks/bench_generative.py [--requests 64] [--concurrency 1,4,16,64]

One pool of requests with mixed prompt lengths (uniform --prompt-len) and mixed
output lengths (uniform --output-len), greedy, end of sequence ignored so every
mode produces exactly the same tokens. Every mode serves the whole pool:

- `generate, one at a time`: transformers' `generate` per request, in turn.
- `padded generate batch of B`: the pool in left-padded batches of B; a batch
  runs until its longest request is done (the usual static batching).
- `engine, max_num_seqs 1`: the continuous-batching engine serving one
  request at a time (the same code path, no batching).
- `engine, C streams`: C concurrent streams pulling from the pool (closed loop).
- `model alone, C streams`: no engine, no scheduling: an estimate of the time
  the model itself needs for the pool, in process: every prompt's prefill once
  (one forward, last position's logits), plus the pool's output tokens as
  decode steps of batch C, each costing one timed forward of C rows against a
  KV cache of the pool's mean length. What C streams could reach if serving
  cost nothing; not a strict bound (the engine runs prefill chunks inside
  decode steps, which reads the weights once for both, so at low C it can
  beat this).
- `vllm, C streams` (with --with-vllm, after `make vllm`): the same streams
  against the vLLM engine (VllmEngine: vLLM in its own process, float32, eager,
  max_num_seqs C), the model saved to a temporary directory for it; one vLLM
  start (about a minute) serves every C.
- `transformers generate_batch` (with --with-transformers-cb): transformers' own
  continuous-batching manager over the whole pool; it takes one
  max_new_tokens for all, so every request asks for the pool's mean output length.

With --repeats N every mode runs N times, the rounds one after another, and
the table gives medians: of tokens/s and of each round's own ratio to that
round's `generate, one at a time`. Each round prints the share of CPU time
the hypervisor took for other guests meanwhile (steal, from /proc/stat): on a
shared VM a round with high steal is noise, and the median absorbs it.

`rows/step` for the engine is the mean number of sequences sampled per step:
with C closed-loop streams over a finite pool it falls below C at the end,
when fewer than C requests remain (the tail), which `model alone` ignores.

Aggregate tokens/s counts the generated tokens each request asked for, over
the wall time of the whole pool. TTFT and ITL are what a streaming caller
sees: submit → first delta, and the gaps between deltas. Ratios are against
`generate, one at a time` in the same run; the machine may be shared, so read
the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "services"))

from modelport.inference.generative.engine import ContinuousBatchingEngine, EngineConfig
from modelport.inference.generative.sample_decoder import Recipe, corpus_text, train_tokenizer
from modelport.inference.generative.types import SamplingParams
from transformers import LlamaConfig, LlamaForCausalLM


def build_model(args: argparse.Namespace) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=args.hidden * 4,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=args.hidden // 64,
        max_position_embeddings=2048,
    )
    return LlamaForCausalLM(config).eval()


def make_pool(args: argparse.Namespace) -> list[tuple[list[int], int]]:
    rng = random.Random(args.seed)
    lo, hi = (int(x) for x in args.prompt_len.split("-"))
    olo, ohi = (int(x) for x in args.output_len.split("-"))
    return [
        ([rng.randrange(3, args.vocab) for _ in range(rng.randint(lo, hi))], rng.randint(olo, ohi))
        for _ in range(args.requests)
    ]


def run_sequential(model: LlamaForCausalLM, pool: list[tuple[list[int], int]]) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for prompt, n in pool:
            model.generate(
                torch.tensor([prompt]),
                max_new_tokens=n,
                min_new_tokens=n,
                do_sample=False,
                pad_token_id=0,
            )
    return time.perf_counter() - start


def run_padded(model: LlamaForCausalLM, pool: list[tuple[list[int], int]], batch: int) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(pool), batch):
            group = pool[i : i + batch]
            width = max(len(p) for p, _ in group)
            ids = torch.zeros(len(group), width, dtype=torch.long)
            mask = torch.zeros(len(group), width, dtype=torch.long)
            for row, (prompt, _) in enumerate(group):
                ids[row, width - len(prompt) :] = torch.tensor(prompt)
                mask[row, width - len(prompt) :] = 1
            longest = max(n for _, n in group)
            model.generate(
                ids,
                attention_mask=mask,
                max_new_tokens=longest,
                min_new_tokens=longest,
                do_sample=False,
                pad_token_id=0,
            )
    return time.perf_counter() - start


async def run_engine(
    model: LlamaForCausalLM,
    tokenizer: object,
    pool: list[tuple[list[int], int]],
    streams: int,
    max_num_seqs: int,
    args: argparse.Namespace,
) -> tuple[float, list[float], list[float], float]:
    config = EngineConfig(
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max(args.step_tokens, max_num_seqs),
        max_waiting=len(pool),
        kv_cache_bytes=args.kv_mb << 20,
    )
    engine = ContinuousBatchingEngine(model, tokenizer, config)  # type: ignore[arg-type]
    await engine.start()
    try:
        wall, ttft, itl = await drive(engine, pool, streams)
    finally:
        await engine.close()
    c = engine.counters
    rows_per_step = c.generated_tokens / c.sampling_steps if c.sampling_steps else 0.0
    return wall, ttft, itl, rows_per_step


async def drive(
    engine: Any, pool: list[tuple[list[int], int]], streams: int
) -> tuple[float, list[float], list[float]]:
    """`streams` closed-loop streams through the pool; (wall seconds, TTFTs, ITLs)."""
    # warm up the kernels once
    async for _ in engine.generate(
        pool[0][0], SamplingParams(max_tokens=4, temperature=0, ignore_eos=True)
    ):
        pass
    todo = list(pool)
    ttft: list[float] = []
    itl: list[float] = []

    async def stream() -> None:
        while todo:
            prompt, n = todo.pop(0)
            sent = last = time.perf_counter()
            first = True
            params = SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)
            async for _ in engine.generate(prompt, params):
                now = time.perf_counter()
                (ttft if first else itl).append(now - (sent if first else last))
                first, last = False, now

    start = time.perf_counter()
    await asyncio.gather(*(stream() for _ in range(streams)))
    wall = time.perf_counter() - start
    return wall, ttft, itl


async def run_vllm(
    model: LlamaForCausalLM,
    tokenizer: Any,
    pool: list[tuple[list[int], int]],
    levels: list[int],
    args: argparse.Namespace,
) -> list[tuple[int, float, list[float], list[float]]]:
    """One vLLM worker (max_num_seqs the highest C); each C admits C sequences at most."""
    from modelport.inference.generative.vllm_engine import VllmEngine
    from modelport.inference.generative.vllm_process import VllmConfig, VllmWorker

    with tempfile.TemporaryDirectory(prefix="bench-vllm-") as tmp:
        model_dir = Path(tmp)
        model.save_pretrained(model_dir)
        top = max(levels)
        worker_config = VllmConfig(
            max_num_seqs=top,
            max_num_batched_tokens=max(args.step_tokens, top),
            kv_cache_bytes=args.kv_mb << 20,
            dtype="float32",
        )
        model_config = json.loads((model_dir / "config.json").read_text())
        worker = VllmWorker(worker_config.engine_args(model_dir, model_config), name="bench")
        started = time.perf_counter()
        await worker.start()
        print(f"vLLM worker started in {time.perf_counter() - started:.0f} s")
        results = []
        try:
            for c in levels:
                engine = VllmEngine(
                    model_dir, tokenizer, VllmConfig(max_num_seqs=c, max_waiting=len(pool)),
                    worker=worker,
                )  # fmt: skip
                await engine.start()
                results.append((c, *await drive(engine, pool, c)))
                await engine.close()
        finally:
            await worker.close()
    return results


def run_model_alone(
    model: LlamaForCausalLM, pool: list[tuple[list[int], int]], batch: int
) -> float:
    """Seconds the model alone needs: each prefill once + decode steps of `batch` rows."""
    from transformers import DynamicCache

    with torch.inference_mode():
        prefill = 0.0
        for prompt, _ in pool:
            start = time.perf_counter()
            model(torch.tensor([prompt]), use_cache=True, logits_to_keep=1)
            prefill += time.perf_counter() - start
        # one decode step at batch `batch`, against a cache of the pool's mean context
        context = round(sum(len(p) + n / 2 for p, n in pool) / len(pool))
        cache = DynamicCache(config=model.config)
        model(torch.randint(3, model.config.vocab_size, (batch, context)), past_key_values=cache)
        token = torch.randint(3, model.config.vocab_size, (batch, 1))
        steps = []
        for _ in range(12):
            start = time.perf_counter()
            model(token, past_key_values=cache, use_cache=True, logits_to_keep=1)
            steps.append(time.perf_counter() - start)
            cache.crop(-1)  # every step sees the same context length
        step = float(np.median(steps[2:]))
    decode_steps = sum(n for _, n in pool) / batch
    return prefill + decode_steps * step


def run_transformers_cb(
    model: LlamaForCausalLM, pool: list[tuple[list[int], int]]
) -> tuple[int, float]:
    from transformers import GenerationConfig

    mean_out = round(sum(n for _, n in pool) / len(pool))
    config = GenerationConfig(
        max_new_tokens=mean_out, do_sample=False, eos_token_id=-1, pad_token_id=0
    )
    with torch.inference_mode():
        model.generate_batch([p for p, _ in pool[:4]], generation_config=config)  # warm
        start = time.perf_counter()
        results = model.generate_batch([p for p, _ in pool], generation_config=config)
        wall = time.perf_counter() - start
    return sum(len(r.generated_tokens) for r in results.values()), wall


def pct(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q) * 1000:.1f}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--prompt-len", default="16-128")
    parser.add_argument("--output-len", default="16-96")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument(
        "--step-tokens", type=int, default=256, help="engine max_num_batched_tokens"
    )
    parser.add_argument("--kv-mb", type=int, default=256)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeats", type=int, default=1, help="rounds of every mode; medians are reported"
    )
    parser.add_argument(
        "--with-transformers-cb", action="store_true", help="also time generate_batch"
    )
    parser.add_argument(
        "--with-vllm", action="store_true", help="also the vLLM engine (needs `make vllm`)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer = train_tokenizer(
        corpus_text(), Recipe().vocab_size
    )  # detokenizes only; ids are random
    pool = make_pool(args)
    tokens = sum(n for _, n in pool)
    levels = [int(c) for c in args.concurrency.split(",")]
    print(
        f"{len(pool)} requests, prompts {args.prompt_len} tokens, outputs {args.output_len} "
        f"({tokens} tokens); Llama {args.layers} layers d={args.hidden} vocab {args.vocab}; "
        f"torch threads {torch.get_num_threads()}"
    )
    rounds = []
    for r in range(args.repeats):
        before = cpu_times()
        rounds.append(one_round(tokenizer, pool, levels, args, extras=r == 0))
        print(f"round {r + 1}/{args.repeats}: steal {steal_share(before, cpu_times()):.0%} of CPU")
    report(rounds)


Round = dict[str, tuple[float, list[float], list[float], float | None]]


def one_round(
    tokenizer: Any,
    pool: list[tuple[list[int], int]],
    levels: list[int],
    args: argparse.Namespace,
    *,
    extras: bool,
) -> Round:
    """Every mode once: name → (tokens/s, TTFTs, ITLs, engine rows/step); the first is the base."""
    tokens = sum(n for _, n in pool)
    # A fresh copy of the same weights each round: the engine swaps the model's
    # attention and linear layers, and the reference modes need them as built.
    model = build_model(args)
    run_sequential(model, pool[:2])  # warm up
    out: Round = {"generate, one at a time": (tokens / run_sequential(model, pool), [], [], None)}
    for b in sorted({c for c in levels if c > 1}):
        out[f"padded generate batch of {b}"] = (tokens / run_padded(model, pool, b), [], [], None)
    # Before the engine runs: it installs its own attention on the model.
    for c in levels:
        out[f"model alone, {c} streams"] = (tokens / run_model_alone(model, pool, c), [], [], None)
    wall, ttft, itl, per_step = asyncio.run(run_engine(model, tokenizer, pool, 1, 1, args))
    out["engine, max_num_seqs 1"] = (tokens / wall, ttft, itl, per_step)
    for c in levels:
        wall, ttft, itl, per_step = asyncio.run(
            run_engine(model, tokenizer, pool, c, max(c, 1), args)
        )
        out[f"engine, {c} streams"] = (tokens / wall, ttft, itl, per_step)
    # vLLM's start costs a minute and generate_batch is slow: the first round only.
    if extras and args.with_vllm:
        for c, wall, ttft, itl in asyncio.run(
            run_vllm(build_model(args), tokenizer, pool, levels, args)
        ):
            out[f"vllm, {c} streams"] = (tokens / wall, ttft, itl, None)
    if extras and args.with_transformers_cb:
        made, wall = run_transformers_cb(build_model(args), pool)
        out["transformers generate_batch"] = (made / wall, [], [], None)
    return out


def report(rounds: list[Round]) -> None:
    """Medians over the rounds; each ratio is taken inside its own round first."""
    base_name = next(iter(rounds[0]))
    print(
        f"\n{'mode':32} {'tokens/s':>9} {'x 1-at-a-time':>13} {'TTFT p50':>9} {'p99':>7} "
        f"{'ITL p50':>8} {'p99':>7}  (ms) {'rows/step':>9}"
    )
    for name in rounds[0]:
        seen = [r[name] for r in rounds if name in r]
        ratios = [r[name][0] / r[base_name][0] for r in rounds if name in r]
        rate = statistics.median(x[0] for x in seen)
        ratio = statistics.median(ratios)
        ttft = [t for x in seen for t in x[1]]
        itl = [t for x in seen for t in x[2]]
        steps = [x[3] for x in seen if x[3] is not None]
        per_step = f"{statistics.median(steps):9.1f}" if steps else " " * 9
        spread = f"  ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""
        print(
            f"{name:32} {rate:9.0f} {ratio:12.2f}x {pct(ttft, 50):>9} {pct(ttft, 99):>7} "
            f"{pct(itl, 50):>8} {pct(itl, 99):>7}      {per_step}{spread}"
        )
    if len(rounds) > 1:
        print(f"medians of {len(rounds)} rounds; (lo-hi) is the ratio's range over the rounds")


def cpu_times() -> list[int]:
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]


def steal_share(before: list[int], after: list[int]) -> float:
    """The hypervisor's share of this VM's CPU time between two /proc/stat readings."""
    delta = [b - a for a, b in zip(before, after, strict=False)]
    total = sum(delta[:8])  # user nice system idle iowait irq softirq steal
    return delta[7] / total if total else 0.0


if __name__ == "__main__":
    main()
