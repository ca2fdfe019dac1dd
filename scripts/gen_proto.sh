#!/usr/bin/env bash
# Regenerate the Python messages, type stubs and gRPC stubs from proto/: onnxplain's own
# API into onnxplain/v1/, the Open Inference Protocol (package `inference`) into
# onnxplain/inference/. Run from anywhere; needs grpcio-tools. The generated files are
# committed.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -Iproto \
  --python_out=. --pyi_out=. --grpc_python_out=. \
  proto/onnxplain/v1/explain.proto proto/onnxplain/v1/admin.proto
# proto/inference/ is seen as onnxplain/inference/ so that the generated modules land in
# the onnxplain package (a bare top-level `inference` module would clash with others),
# while the .proto stays where buf expects package `inference`.
python -m grpc_tools.protoc -Ionnxplain/inference=proto/inference \
  --python_out=. --pyi_out=. --grpc_python_out=. \
  proto/inference/grpc_service.proto
