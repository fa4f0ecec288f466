cd {{workdir}}
PROJECT_DIR=$PWD

# ---- modules: Alliance clusters define `module`; a plain Slurm may not have it ----
if [ ${#MODULES[@]} -gt 0 ] && command -v module >/dev/null 2>&1; then
  set +u  # Lmod's own scripts read unset variables
  module load "${MODULES[@]}"
  set -u
fi

# ---- node setup: on clusters with a per-job local disk ($SLURM_TMPDIR, as on the Alliance),
# build a virtualenv there with wheels from the cluster's wheelhouse (pip --no-index: compute
# nodes have no internet) and unpack the data archive there (one file on shared storage
# instead of many). The project itself runs from PROJECT_DIR: `python -m` finds it there.
setup_node() {  # setup_node ARCHIVE
  set -euo pipefail
  local packages=(torch torchvision numpy pyyaml click tqdm matplotlib)
  if [ -z "${MNIST_HPC_PYTHON:-}" ] && [ ! -x "$SLURM_TMPDIR/env/bin/python" ]; then
    virtualenv --no-download "$SLURM_TMPDIR/env" >/dev/null 2>&1 || python3 -m venv "$SLURM_TMPDIR/env"
    "$SLURM_TMPDIR/env/bin/python" -m pip install --no-index --quiet "${packages[@]}"
  fi
  if [ -n "$1" ] && [ -f "$1" ]; then
    mkdir -p "$SLURM_TMPDIR/data"
    tar -xf "$1" -C "$SLURM_TMPDIR/data"
  fi
}
export -f setup_node
if [ -n "${SLURM_TMPDIR:-}" ]; then
{{#multi_node}}
  # once on every node (each has its own $SLURM_TMPDIR); $1 is for the inner bash
  # shellcheck disable=SC2016
  srun --nodes="$SLURM_NNODES" --ntasks="$SLURM_NNODES" --ntasks-per-node=1 bash -c 'setup_node "$1"' _ "$DATA_ARCHIVE"
{{/multi_node}}
{{^multi_node}}
  setup_node "$DATA_ARCHIVE"
{{/multi_node}}
fi

# ---- python: $MNIST_HPC_PYTHON if set, else the virtualenv above, else the project's .venv,
# else python3 from PATH ----
if [ -n "${MNIST_HPC_PYTHON:-}" ]; then
  PYTHON=$MNIST_HPC_PYTHON
elif [ -n "${SLURM_TMPDIR:-}" ]; then
  PYTHON=$SLURM_TMPDIR/env/bin/python
elif [ -x "$PROJECT_DIR/.venv/bin/python" ]; then
  PYTHON=$PROJECT_DIR/.venv/bin/python
else
  PYTHON=python3
fi

# ---- data: the unpacked archive, else DATA_DIR, else $MNIST_HPC_DATA_DIR as submitted ----
if [ -n "${SLURM_TMPDIR:-}" ] && [ -n "$DATA_ARCHIVE" ] && [ -f "$DATA_ARCHIVE" ]; then
  export MNIST_HPC_DATA_DIR=$SLURM_TMPDIR/data
elif [ -n "$DATA_DIR" ]; then
  export MNIST_HPC_DATA_DIR=$DATA_DIR
elif [ -n "${SLURM_TMPDIR:-}" ] && [ -n "$DATA_ARCHIVE" ]; then
  echo "note: no data archive at $DATA_ARCHIVE (make it with: mnist-hpc data pack); reading the data from shared storage" >&2
fi
echo "job ${SLURM_JOB_ID:-?} on $(hostname): python $PYTHON, data ${MNIST_HPC_DATA_DIR:-(the user cache)}, restarts ${SLURM_RESTART_COUNT:-0}"
