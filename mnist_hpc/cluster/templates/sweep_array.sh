#!/bin/bash
{{directives}}
#
# A sweep as one job array: task I runs run I + INDEX_OFFSET of the sweep file.
# {{generated}}
# Set --array to 0-(N-1)%K for N runs, K at a time (`mnist-hpc sweep submit` does it for you).
# Submit from the project folder:   sbatch {{script_name}}
# Follow it:   sq   (or mnist-hpc status)   and   cat {{log}}   (or mnist-hpc logs JOBID -f)
set -euo pipefail

SWEEP={{sweep}}  # the sweep file
INDEX_OFFSET={{index_offset}}  # added to the array index (a sweep longer than the cluster's largest array is split)
DATA_ARCHIVE={{data_archive}}  # from `mnist-hpc data pack`, unpacked into $SLURM_TMPDIR
DATA_DIR={{data_dir}}  # datasets folder when there is no $SLURM_TMPDIR (empty: $MNIST_HPC_DATA_DIR or the user cache)
MODULES=({{modules}})
REQUEUE_SIGNAL={{signal}}  # keep in step with --signal above

{{> _setup.sh}}

# ---- run this task's member of the sweep ----
args=(sweep run "$SWEEP" --index "$(( SLURM_ARRAY_TASK_ID + INDEX_OFFSET ))")
{{> _run_single.sh}}
