#!/bin/bash
{{directives}}
#
# Train one model on one node (one GPU, or CPU only).
# {{generated}}
# Submit from the project folder:   sbatch {{script_name}}
# Follow it:   sq   (or mnist-hpc status)   and   cat {{log}}   (or mnist-hpc logs JOBID -f)
set -euo pipefail

CONFIG={{config}}  # the experiment to run
RUN_DIR={{run_dir}}  # empty: <output_dir>/<name>-job<JOBID>/, found again after a requeue
DATA_ARCHIVE={{data_archive}}  # from `mnist-hpc data pack`, unpacked into $SLURM_TMPDIR
DATA_DIR={{data_dir}}  # datasets folder when there is no $SLURM_TMPDIR (empty: $MNIST_HPC_DATA_DIR or the user cache)
MODULES=({{modules}})
REQUEUE_SIGNAL={{signal}}  # keep in step with --signal above and runtime.requeue_signal

{{> _setup.sh}}

# ---- train ----
args=(train "$CONFIG" --resume auto)
if [ -n "$RUN_DIR" ]; then args+=(--run-dir "$RUN_DIR"); fi
{{> _run_single.sh}}
