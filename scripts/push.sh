#!/usr/bin/env bash
# push.sh USER@HOST[:DIR] [--with-data] [--dry-run]
# Copy this project to a cluster (default DIR: scratch/<project folder name>), leaving out
# .venv, runs, data, .git and caches; the same as `mnist-hpc push`.
# Python: $MNIST_HPC_PYTHON, else the project's .venv, else python3.
set -euo pipefail
project=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${MNIST_HPC_PYTHON:-}
if [ -z "$python" ]; then
  if [ -x "$project/.venv/bin/python" ]; then python=$project/.venv/bin/python; else python=python3; fi
fi
cd "$project"
exec "$python" -m mnist_hpc push --project "$project" "$@"
