# Sourced by the perf_analyzer scripts: a venv with perf_analyzer, what it needs, and helpers.
#
# perf_analyzer ships inside tritonclient==2.41.0; on a CPU-only machine it
# still needs Debian's libb64-0d and the CUDA runtime library from the
# nvidia-cuda-runtime-cu12 wheel on LD_LIBRARY_PATH.
venv=.venv-perf
if [ ! -x $venv/bin/perf_analyzer ]; then
  python3 -m venv $venv
  $venv/bin/pip install -q 'tritonclient[grpc]==2.41.0' nvidia-cuda-runtime-cu12
fi
dpkg -s libb64-0d >/dev/null 2>&1 || apt-get install -y -q libb64-0d
export LD_LIBRARY_PATH=$(echo $PWD/$venv/lib/python3*/site-packages/nvidia/cuda_runtime/lib)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

free_port() {
  .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_ready PORT: until the server on 127.0.0.1:PORT says it is ready (2 minutes at most).
wait_ready() {
  for _ in $(seq 120); do
    .venv/bin/python - "$1" 2>/dev/null <<'PY' && return 0
import sys
import grpc
from modelport.proto.inference import grpc_service_pb2 as pb, grpc_service_pb2_grpc as pbg
stub = pbg.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{sys.argv[1]}"))
sys.exit(0 if stub.ServerReady(pb.ServerReadyRequest(), timeout=2).ready else 1)
PY
    sleep 1
  done
  return 1
}
