#!/usr/bin/env bash
# Usage: gen_protos.sh PYTHON OUT_ROOT PROTO...
# Writes _pb2.py, _pb2_grpc.py and their typed .pyi stubs (mypy-protobuf) under
# OUT_ROOT/modelport/proto/, with every file known to protoc by its virtual path
# modelport/proto/<path>.
set -euo pipefail
python=$1 out=$2
shift 2
bin=$(dirname "$python")
"$python" -m grpc_tools.protoc -Imodelport/proto=protos \
  --plugin=protoc-gen-mypy="$bin/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="$bin/protoc-gen-mypy_grpc" \
  --python_out="$out" --mypy_out="$out" \
  --grpc_python_out="$out" --mypy_grpc_out="$out" "$@"
# Make every generated folder a regular package.
find "$out/modelport/proto" -type d -exec touch {}/__init__.py \;
