#!/bin/bash
{{directives}}
#
{{about}}
# {{generated}}
{{#notes}}
{{notes}}
{{/notes}}
{{^multi_node}}
# Change the GPU count in --ntasks-per-node and the GPU request together.
{{/multi_node}}
# Submit:   sbatch {{script_name}}   (from the project folder, or any other)
# Follow it:   sq   (or mnist-hpc status)   and   cat {{log}}   (or mnist-hpc logs JOBID -f)
set -euo pipefail

CONFIG={{config}}  # the experiment to run: a shipped config's name or a file
RUN_DIR={{run_dir}}  # empty: <output_dir>/<name>-job<JOBID>/, found again after a requeue
{{#multi_node}}
DATA_ARCHIVE={{data_archive}}  # from `mnist-hpc data pack`, unpacked into each node's $SLURM_TMPDIR
{{/multi_node}}
{{^multi_node}}
DATA_ARCHIVE={{data_archive}}  # from `mnist-hpc data pack`, unpacked into $SLURM_TMPDIR
{{/multi_node}}
DATA_DIR={{data_dir}}  # datasets folder when there is no $SLURM_TMPDIR (empty: $MNIST_HPC_DATA_DIR or the user cache)
MODULES=({{modules}})
PACKAGES=({{packages}})  # from the cluster's wheelhouse, into $SLURM_TMPDIR/env (or the $HOME virtualenv of `mnist-hpc setup`)
CODE_DIR={{code}}  # the folder holding the mnist_hpc package (empty: this script's project)
SUBMIT_PYTHON={{python}}  # the python where no virtualenv is built (empty: the project's .venv, else python3)

{{> _setup.sh}}

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
