#!/usr/bin/env bash
# Triton's perf_analyzer against one modelport: a large tensor passed through
# system shared memory (`--shared-memory system`) vs in the gRPC messages.
#
#   benchmarks/bench_shared_memory.sh [MEBIBYTES] [CONCURRENCY_RANGE]
#   e.g. benchmarks/bench_shared_memory.sh 16 1:4:3
#
# The model is FP32 [N] -> FP32 [N] (x * 2, a torch.export program), so the tensor
# crosses twice per request. Both runs hit the same server in one go and the table
# gives their ratio; on a shared machine, repeat it and read the ratios.
# perf_analyzer comes as in perf_analyzer.sh (tritonclient 2.41 wheel, libb64-0d).
set -euo pipefail
cd "$(dirname "$0")/.."
mebibytes=${1:-16}
range=${2:-1:4:3}
source benchmarks/perf_analyzer_env.sh

work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
elements=$(( mebibytes * 1024 * 1024 / 4 ))
.venv/bin/python - "$work/models" "$elements" <<'PY'
import sys
from pathlib import Path
import torch

folder, n = Path(sys.argv[1]) / "large", int(sys.argv[2])
(folder / "1").mkdir(parents=True)
(folder / "config.pbtxt").write_text(f"""platform: "torch_export"
max_batch_size: 0
input [ {{ name: "INPUT" data_type: TYPE_FP32 dims: [ {n} ] }} ]
output [ {{ name: "OUTPUT" data_type: TYPE_FP32 dims: [ {n} ] }} ]
""")
class Double(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0
torch.export.save(torch.export.export(Double(), (torch.zeros(n),)), str(folder / "1" / "model.pt2"))
PY
port=$(free_port)
MODELPORT_LOG_LEVEL=warning .venv/bin/modelport serve inference --model-repository "$work/models" \
  --host 127.0.0.1 --grpc-port "$port" --metrics-port -1 --allow-shared-memory \
  --max-message-mb $(( mebibytes * 2 + 8 )) &
server=$!
wait_ready "$port"
for mode in none system; do
  $venv/bin/perf_analyzer -m large -u "127.0.0.1:$port" -i grpc --input-data zero \
    --shared-memory "$mode" --output-shared-memory-size $(( mebibytes * 1024 * 1024 )) \
    --concurrency-range "$range" --measurement-interval 4000 --stability-percentage 50 --max-trials 12 \
    -f "$work/$mode.csv" >"$work/$mode.log" 2>&1 || { cat "$work/$mode.log"; exit 1; }
done
.venv/bin/python - "$work" "$mebibytes" <<'PY'
import csv, sys
from pathlib import Path

work, size = Path(sys.argv[1]), sys.argv[2]
def rows(mode):
    with open(work / f"{mode}.csv") as f:
        return {int(r["Concurrency"]): r for r in csv.DictReader(f)}
grpc, shm = rows("none"), rows("system")
print(f"FP32 tensor of {size} MiB in and out, perf_analyzer, one server")
print(f"{'concurrency':>11} {'grpc infer/s':>13} {'shm infer/s':>12} {'shm/grpc':>9}"
      f" {'grpc p50 ms':>12} {'shm p50 ms':>11} {'p50 grpc/shm':>13}")
for c in sorted(grpc):
    g, s = grpc[c], shm[c]
    gt, st = float(g["Inferences/Second"]), float(s["Inferences/Second"])
    gp, sp = float(g["p50 latency"]) / 1000, float(s["p50 latency"]) / 1000
    print(f"{c:>11} {gt:>13.1f} {st:>12.1f} {st / gt:>9.2f} {gp:>12.2f} {sp:>11.2f} {gp / sp:>13.2f}")
PY
