#!/bin/bash
#SBATCH --job-name=golden
#SBATCH --account=def-someone
#SBATCH --mail-user=someone@example.com
#SBATCH --mail-type=END,FAIL
#SBATCH --time=2:00:00
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=24
#SBATCH --gpus-per-node=h100:4
#SBATCH --output=/home/someone/scratch/mnist-hpc/runs/golden-20260101-120000/slurm-%j.out
#SBATCH --signal=USR1@90
#SBATCH --requeue
#SBATCH --open-mode=append
#
# Data-parallel training on one node: one task per GPU, started by srun, joined by PyTorch
# DDP.
# Made by mnist-hpc for the cluster profile trillium (Trillium (SciNet), NVIDIA H100-80gb, 1 GPU or whole nodes of 4, 24 cores per GPU).
# Trillium: submit from $SCRATCH ($HOME is read-only on compute nodes); GPU jobs from the GPU
# login node trillium-gpu.alliancecan.ca, CPU jobs (whole 192-core nodes) from trillium.alliancecan.ca.
# A GPU job takes 1 GPU or whole nodes of 4 (--gpus-per-node=4), never 2 or 3. [Trillium Quickstart]
# Change the GPU count in --ntasks-per-node and the GPU request together.
# Submit from the project folder:   sbatch /home/someone/scratch/mnist-hpc/runs/golden-20260101-120000/job.sh
# Follow it:   sq   (or mnist-hpc status)   and   cat /home/someone/scratch/mnist-hpc/runs/golden-20260101-120000/slurm-JOBID.out   (or mnist-hpc logs JOBID -f)
set -euo pipefail

CONFIG=/home/someone/scratch/mnist-hpc/runs/golden-20260101-120000/config.yaml  # the experiment to run
RUN_DIR=/home/someone/scratch/mnist-hpc/runs/golden-20260101-120000  # empty: <output_dir>/<name>-job<JOBID>/, found again after a requeue
DATA_ARCHIVE=/home/someone/scratch/mnist-hpc/data/mnist-hpc-data.tar  # from `mnist-hpc data pack`, unpacked into $SLURM_TMPDIR
DATA_DIR=''  # datasets folder when there is no $SLURM_TMPDIR (empty: $MNIST_HPC_DATA_DIR or the user cache)
MODULES=(StdEnv/2023 python/3.11)

cd /home/someone/scratch/mnist-hpc
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
  setup_node "$DATA_ARCHIVE"
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

# ---- train: one process per task; srun starts them, torch.distributed joins them ----
args=(train "$CONFIG" --resume auto)
if [ -n "$RUN_DIR" ]; then args+=(--run-dir "$RUN_DIR"); fi

# rank 0 listens on the first node of the allocation, on a port derived from the job id
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=$(( 20000 + SLURM_JOB_ID % 20000 ))
export MASTER_ADDR MASTER_PORT
# The time-limit warning (--signal without B:) goes to every task of the step: each rank
# sees it, they checkpoint together and rank 0 requeues the job. `exec` keeps no shell between.
exec srun --cpus-per-task="$SLURM_CPUS_PER_TASK" "$PYTHON" -m mnist_hpc "${args[@]}"
