#!/usr/bin/env bash
# Every GPU row of the performance table (benchmarks/gpu.py): run from anywhere, on a GPU node.
#   bash benchmarks/gpu.sh            -> benchmarks/results/gpu-<date>/{gpu.json,table.md}
#   bash benchmarks/gpu.sh --smoke    -> the same steps at toy sizes on the CPU (CI's check)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
exec "$PYTHON" -m benchmarks.gpu "$@"
