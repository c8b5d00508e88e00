"""Idle OpenMP workers are freed where a model was built, so the thread that runs it is fast.

Each check runs in a fresh interpreter: OpenMP's pools are per-thread, process-wide state.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.fast

PRELUDE = """
import os, torch
def threads():
    return len(os.listdir("/proc/self/task"))
torch.set_num_threads(2)
def parallel_work():
    torch.randn(64, 256) @ torch.randn(256, 32000)  # a GEMM OpenMP splits over 2 threads
"""


def run(body: str) -> str:
    script = PRELUDE + textwrap.dedent(body)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip()


def test_release_frees_the_calling_threads_worker_and_a_later_region_starts_one_again() -> None:
    out = run(
        """
        from modelport.common.openmp import release_idle_workers
        base = threads()
        parallel_work()
        with_pool = threads()
        freed = release_idle_workers()
        after = threads()
        parallel_work()
        print(base, with_pool, freed, after, threads())
        """
    )
    base, with_pool, freed, after, again = out.split()
    assert int(with_pool) == int(base) + 1, out  # one worker beside this thread
    assert freed == "True" and int(after) == int(base), out
    assert int(again) == int(base) + 1, out  # the pool comes back when work does


def test_the_engine_frees_the_workers_of_the_thread_that_built_it() -> None:
    out = run(
        """
        from transformers import LlamaConfig, LlamaForCausalLM
        from modelport.inference.generative.engine import ContinuousBatchingEngine, EngineConfig
        from modelport.inference.generative.sample_decoder import (
            Recipe, corpus_text, train_tokenizer,
        )
        config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128,
                             num_hidden_layers=1, num_attention_heads=2)
        model = LlamaForCausalLM(config).eval()
        tokenizer = train_tokenizer(corpus_text(), Recipe().vocab_size)
        base = threads()
        parallel_work()
        before = threads()
        ContinuousBatchingEngine(model, tokenizer, EngineConfig(kv_cache_bytes=1 << 20))
        print(base, before, threads())
        """
    )
    base, before, after = (int(x) for x in out.split()[-3:])
    assert before == base + 1 and after == base, out
