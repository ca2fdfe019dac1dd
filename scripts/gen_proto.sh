#!/usr/bin/env bash
# Regenerate the Python messages, type stubs and gRPC stubs in onnxplain/v1/ from proto/.
# Run from anywhere; needs grpcio-tools. The generated files are committed.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -Iproto \
  --python_out=. --pyi_out=. --grpc_python_out=. \
  proto/onnxplain/v1/explain.proto proto/onnxplain/v1/admin.proto
