#!/bin/bash
#SBATCH --job-name=golden
#SBATCH --account=def-someone
#SBATCH --mail-user=someone@example.com
#SBATCH --mail-type=END,FAIL
#SBATCH --time=2:00:00
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=4
#SBATCH --mem=8G
#SBATCH --dependency=afterany:1234
#SBATCH --output=/home/someone/scratch/mnist-hpc/runs/golden-20260101-120000/slurm-%j.out
#SBATCH --signal=B:USR1@90
#SBATCH --requeue
#SBATCH --open-mode=append
#
# A sweep's report, after its job array has ended (sweep submit --then report): a small CPU
# job writing report.md into the sweep folder, naming the runs that did not complete.
# Made by mnist-hpc for the cluster profile rorqual (Rorqual (Calcul Québec), NVIDIA H100-80gb, 4 per node; successor of Béluga).
# Submit:   sbatch /home/someone/scratch/mnist-hpc/runs/golden-20260101-120000/job.sh   (from the project folder, or any other)
# Follow it:   sq   (or mnist-hpc status)   and   cat /home/someone/scratch/mnist-hpc/runs/golden-20260101-120000/slurm-JOBID.out   (or mnist-hpc logs JOBID -f)
set -euo pipefail

SWEEP=/home/someone/scratch/mnist-hpc/configs/sweeps/learning_rate.yaml  # the sweep file
DATA_ARCHIVE=/home/someone/scratch/mnist-hpc/data/mnist-hpc-data.tar  # from `mnist-hpc data pack`, unpacked into $SLURM_TMPDIR
DATA_DIR=''  # datasets folder when there is no $SLURM_TMPDIR (empty: $MNIST_HPC_DATA_DIR or the user cache)
MODULES=(StdEnv/2023 python/3.13)
PACKAGES=(torch torchvision numpy pyyaml click tqdm matplotlib)  # from the cluster's wheelhouse, into $SLURM_TMPDIR/env (or the $HOME virtualenv of `mnist-hpc setup`)
CODE_DIR=''  # the folder holding the mnist_hpc package (empty: this script's project)
SUBMIT_PYTHON=''  # the python where no virtualenv is built (empty: the project's .venv, else python3)
REQUEUE_SIGNAL=USR1  # keep in step with --signal above and runtime.requeue_signal

# Slurm delivers the time-limit warning (--signal=B:...) to this batch shell only, not to the
# programs it starts, and bash runs a trap only between commands. So the work runs in the
# background while the shell waits, and the trap passes the signal on: the trainer then
# checkpoints and requeues the job, and the next start resumes (--resume auto).
# The trap is set before the node setup (modules, virtualenv: a minute or more): a signal that
# comes before the trainer's pid is known is passed on as soon as it is.
child=
pending=
trap 'if [ -n "$child" ]; then kill -s "$REQUEUE_SIGNAL" "$child" 2>/dev/null || true; else pending=1; fi' "$REQUEUE_SIGNAL"

cd /home/someone/scratch/mnist-hpc

# ---- the code: CODE_DIR holds the mnist_hpc package the job runs; empty, the project of this
# script: the folder sbatch ran in when it holds mnist_hpc, else the folder above the script's
# (Slurm runs a copy of the script; scontrol knows where the original is) ----
if [ -z "$CODE_DIR" ] && [ -f mnist_hpc/__init__.py ]; then
  CODE_DIR=$PWD
elif [ -z "$CODE_DIR" ] && [ -n "${SLURM_JOB_ID:-}" ] && [ -n "${SLURM_SUBMIT_DIR:-}" ]; then  # a batch job
  script=$(timeout 10 scontrol show job "$SLURM_JOB_ID" 2>/dev/null | sed -n 's/^ *Command=//p' | head -n 1) || script=
  case $script in /*) ;; ?*) script=$PWD/$script ;; esac
  if [ -n "$script" ] && [ -f "$(dirname "$(dirname "$script")")/mnist_hpc/__init__.py" ]; then
    CODE_DIR=$(dirname "$(dirname "$script")")
  fi
fi
# a relative path that is not in the folder sbatch ran in is the project's
in_project() {  # in_project VARIABLE
  local value=${!1}
  if [ -n "$value" ] && [ "${value#/}" = "$value" ] && [ ! -e "$value" ] && [ -n "$CODE_DIR" ] &&
    [ -e "$CODE_DIR/$value" ]; then
    printf -v "$1" '%s' "$CODE_DIR/$value"
  fi
}
in_project SWEEP
in_project DATA_ARCHIVE

# ---- modules: Alliance clusters define `module`; a plain Slurm may not have it. A clean
# module environment first (what the submitting shell had loaded does not leak in), then the
# profile's StdEnv and a python the wheelhouse has torch wheels for [Python; Available Python
# wheels] ----
if [ ${#MODULES[@]} -gt 0 ] && command -v module >/dev/null 2>&1; then
  set +u  # Lmod's own scripts read unset variables
  module purge 2>/dev/null  # sticky modules (StdEnv) stay, as Lmod says on stderr
  module load "${MODULES[@]}"
  set -u
fi
# one OpenMP thread per core Slurm gave the task (training sets torch's thread count the same way)
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-${OMP_NUM_THREADS:-1}}

# ---- node setup: where the cluster has modules and a per-job local disk ($SLURM_TMPDIR), as
# the Alliance's have, a virtualenv there with PACKAGES from the cluster's wheelhouse (pip
# --no-index, pointed at the wheelhouse by the modules: compute nodes have no internet); on
# every cluster with $SLURM_TMPDIR the data archive unpacked there (one file on shared storage
# instead of many) ----
setup_node() {  # setup_node ARCHIVE BUILD_ENV PACKAGE...
  set -euo pipefail
  local archive=$1 build=$2 start=$SECONDS
  shift 2
  if [ "$build" = 1 ] && [ ! -x "$SLURM_TMPDIR/env/bin/python" ]; then
    if command -v virtualenv >/dev/null 2>&1; then
      virtualenv --no-download "$SLURM_TMPDIR/env" >/dev/null
    else
      python3 -m venv "$SLURM_TMPDIR/env"
    fi
    "$SLURM_TMPDIR/env/bin/python" -m pip install --no-index --quiet "$@"
    echo "$(hostname): virtualenv $SLURM_TMPDIR/env with $* ($((SECONDS - start)) s)"
  fi
  if [ -n "$archive" ] && [ -f "$archive" ]; then
    mkdir -p "$SLURM_TMPDIR/data"
    tar -xf "$archive" -C "$SLURM_TMPDIR/data"
  fi
}
export -f setup_node
BUILD_ENV=0
if [ -z "${MNIST_HPC_PYTHON:-}" ] && [ -n "${SLURM_TMPDIR:-}" ] && command -v module >/dev/null 2>&1; then
  BUILD_ENV=1
fi
if [ -n "${SLURM_TMPDIR:-}" ]; then
  setup_node "$DATA_ARCHIVE" "$BUILD_ENV" "${PACKAGES[@]}"
fi

# ---- python: $MNIST_HPC_PYTHON if set, else the virtualenv above, else the python that
# submitted the job, else the project's .venv, else python3 from PATH; it imports mnist_hpc
# from CODE_DIR ----
if [ -n "${MNIST_HPC_PYTHON:-}" ]; then
  PYTHON=$MNIST_HPC_PYTHON
elif [ "$BUILD_ENV" = 1 ]; then
  PYTHON=$SLURM_TMPDIR/env/bin/python
elif [ -n "$SUBMIT_PYTHON" ] && [ -x "$SUBMIT_PYTHON" ]; then
  PYTHON=$SUBMIT_PYTHON
elif [ -n "$CODE_DIR" ] && [ -x "$CODE_DIR/.venv/bin/python" ]; then
  PYTHON=$CODE_DIR/.venv/bin/python
else
  PYTHON=python3
fi
if [ -n "$CODE_DIR" ]; then
  export PYTHONPATH="$CODE_DIR${PYTHONPATH:+:$PYTHONPATH}"
fi

# ---- data: the unpacked archive, else DATA_DIR, else $MNIST_HPC_DATA_DIR as submitted ----
if [ -n "${SLURM_TMPDIR:-}" ] && [ -n "$DATA_ARCHIVE" ] && [ -f "$DATA_ARCHIVE" ]; then
  export MNIST_HPC_DATA_DIR=$SLURM_TMPDIR/data
elif [ -n "$DATA_DIR" ]; then
  export MNIST_HPC_DATA_DIR=$DATA_DIR
elif [ -n "${SLURM_TMPDIR:-}" ] && [ -n "$DATA_ARCHIVE" ]; then
  echo "note: no data archive at $DATA_ARCHIVE (make it with: mnist-hpc data pack); reading the data from shared storage" >&2
fi
echo "job ${SLURM_JOB_ID:-?} on $(hostname): python $PYTHON, code ${CODE_DIR:-(installed)}, data ${MNIST_HPC_DATA_DIR:-(the user cache)}, restarts ${SLURM_RESTART_COUNT:-0}"

# ---- the sweep's report, into its folder, with the runs that did not complete ----
args=(sweep report-job "$SWEEP")
"$PYTHON" -m mnist_hpc "${args[@]}" &
child=$!
if [ -n "$pending" ]; then kill -s "$REQUEUE_SIGNAL" "$child" 2>/dev/null || true; fi
status=0
wait "$child" || status=$?
while kill -0 "$child" 2>/dev/null; do  # the wait above was cut short by the signal
  status=0
  wait "$child" || status=$?
done
exit "$status"
