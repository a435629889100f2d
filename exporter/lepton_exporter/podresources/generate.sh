#!/bin/sh
# Regenerates the Python gRPC client and server stubs from api.proto.
# Run from anywhere; needs grpcio-tools (a dev dependency).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
exporter=$(cd "$here/../.." && pwd)
cd "$exporter"
python -m grpc_tools.protoc -I . \
  --python_out=. --pyi_out=. --grpc_python_out=. \
  lepton_exporter/podresources/api.proto
