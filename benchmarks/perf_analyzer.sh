#!/usr/bin/env bash
# Drive a live modelport with Triton's own load generator, perf_analyzer.
#
#   benchmarks/perf_analyzer.sh [MODEL] [CONCURRENCY_RANGE] [-- extra serve flags]
#   e.g. benchmarks/perf_analyzer.sh mlp 1:32:31 -- --workers 2
#
# perf_analyzer ships inside tritonclient==2.41.0; on a CPU-only machine it
# still needs Debian's libb64-0d and the CUDA runtime library from the
# nvidia-cuda-runtime-cu12 wheel on LD_LIBRARY_PATH. Its `random` input data
# is raw random bytes (NaN, 3e38) and skews timings, so we give it real data.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-mlp}
range=${2:-1:32:31}
shift $(( $# >= 2 ? 2 : $# ))
[ "${1:-}" = "--" ] && shift
source benchmarks/perf_analyzer_env.sh

work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
.venv/bin/modelport samples --encoder "$work/models" >/dev/null
.venv/bin/python - "$work/data.json" "$model" <<'PY'
import json, sys
import numpy as np
shapes = {"mlp": [256], "encoder": [64, 256]}
x = np.random.default_rng(0).standard_normal(shapes[sys.argv[2]]).astype(np.float32)
json.dump({"data": [{"INPUT": {"content": x.ravel().tolist(), "shape": list(x.shape)}}]},
          open(sys.argv[1], "w"))
PY
port=$(free_port)
MODELPORT_LOG_LEVEL=warning .venv/bin/modelport serve inference --model-repository "$work/models" \
  --host 127.0.0.1 --grpc-port "$port" --metrics-port -1 "$@" &
server=$!
wait_ready "$port"
$venv/bin/perf_analyzer -m "$model" -u "127.0.0.1:$port" -i grpc --input-data "$work/data.json" \
  --concurrency-range "$range" --measurement-interval 5000 --stability-percentage 15
