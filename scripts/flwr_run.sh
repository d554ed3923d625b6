#!/usr/bin/env bash
# Run PrivRec through the Flower CLI (`flwr run .`) in a local simulation, then stop the local
# SuperLink that flwr leaves running. Extra arguments go to `flwr run`, e.g.
#   bash scripts/flwr_run.sh --run-config "num-rounds=2 run-dir='$PWD/runs'"
set -euo pipefail
cd "$(dirname "$0")/.."
export FLWR_HOME="$PWD/scripts/flwr_home"
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1  # else the SuperLink builds a venv with CUDA torch
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0             # Ray uses the loopback address only
export FLWR_TELEMETRY_ENABLED=0
export PATH="$PWD/.venv/bin:$PATH"
stop_superlink() { pkill -f "flower-superlink.*$FLWR_HOME" 2>/dev/null || true; }
trap stop_superlink EXIT
flwr run . local-simulation --stream "$@"
