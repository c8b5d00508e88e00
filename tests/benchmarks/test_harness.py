"""The benchmark harness runs end to end, and its CPU breakdown reads py-spy's format.

Benchmarks are not tests: nothing here looks at a figure, only at whether the
harness produced one for every target it was asked for.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from harness import breakdown  # noqa: E402

RAW = """\
thread (101): MainThread;<module> (modelport:6);run (asyncio/runners.py:118);wrapper (modelport/common/grpc_errors.py:60);_infer (modelport/inference/servicer.py:98);decode_inputs (modelport/inference/codec.py:46);frombuffer (numpy/core.py:1) 3
thread (101): MainThread;<module> (modelport:6);run (asyncio/runners.py:118) 5
thread (101): MainThread;<module> (modelport:6);run (asyncio/runners.py:118);submit (modelport/inference/batcher.py:120);request_done (modelport/inference/stats.py:120);record (opentelemetry/sdk/metrics/_internal/instrument.py:3) 2
thread (202): exec-model;_execute (modelport/inference/batcher.py:289);run (modelport/inference/backends.py:126);__call__ (torch/_ops.py:840) 4
"""


def test_breakdown_splits_each_threads_cpu_by_its_samples() -> None:
    samples = breakdown.parse_raw(RAW)
    assert samples[101] == {
        "decode inputs": 3,
        breakdown.TRANSPORT: 5,
        "metrics (OpenTelemetry)": 2,
    }
    assert samples[202] == {"model: torch op calls": 4}
    ticks = breakdown.TICKS
    before = {101: ("python", 0), 202: ("python", 0), 303: ("event_engine", 0)}
    after = {101: ("python", ticks), 202: ("python", ticks // 2), 303: ("event_engine", ticks)}
    costs = breakdown.per_request(breakdown.combine(before, after, samples), requests=1000)
    assert round(costs["decode inputs"]) == 300  # 30% of 1 s over 1000 requests
    assert round(costs[breakdown.TRANSPORT]) == 500
    assert round(costs["model: torch op calls"]) == 500
    assert round(costs["native threads (OpenMP, gRPC pollers)"]) == 1000


def test_bench_full_measures_every_target_it_starts(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_full.py"), "--models", "mlp",
         "--targets", "bare,modelport", "--drivers", "loadtest", "--batches", "2",
         "--concurrency", "1", "--repeats", "1", "--seconds", "0.5", "--floor-seconds", "0.02",
         "--json", str(out)],
        capture_output=True, text=True, timeout=170,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    section = json.loads(out.read_text())["sections"][0]
    assert section["model"] == "mlp" and section["floor"]
    cells = {cell["target"]: cell for cell in section["cells"]}
    assert set(cells) == {"bare", "modelport"}
    for cell in cells.values():
        assert cell["infer_per_s"] > 0 and cell["errors"] == 0 and cell["batch"] == 2
        assert cell["cpu_us"]["server"] > 0
    assert "/bare" in run.stdout  # the table was printed
