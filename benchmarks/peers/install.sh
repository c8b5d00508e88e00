#!/usr/bin/env bash
# Install the peer servers the benchmark compares against, each in its own
# ignored venv (their pins clash with ours and with each other):
#   .venv-kserve    kserve==0.21.0   (KServe's Python model server, gRPC v2)
#   .venv-mlserver  mlserver==1.7.1  (Seldon MLServer, gRPC v2)
# Both get the same local CPU torch as the project (constraints.txt), so every
# server runs the same exported programs with the same kernels.
#   benchmarks/peers/install.sh [kserve] [mlserver]
set -euo pipefail
cd "$(dirname "$0")/../.."
peers=("$@")
[ ${#peers[@]} -eq 0 ] && peers=(kserve mlserver)
declare -A spec=([kserve]="kserve==0.21.0" [mlserver]="mlserver==1.7.1")
# MLServer 1.7.1 calls asyncio.get_event_loop() in its workers, which uvloop 0.22+ refuses.
declare -A extra=([mlserver]="uvloop<0.22")
for peer in "${peers[@]}"; do
  venv=.venv-$peer
  [ -x "$venv/bin/python" ] && [ -f "$venv/.installed" ] && continue
  python3 -m venv "$venv"
  pip="$venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt"
  echo "installing $peer into $venv"
  $pip torch==2.13.0 numpy uvloop
  $pip "${spec[$peer]}" ${extra[$peer]:-}
  touch "$venv/.installed"
done
