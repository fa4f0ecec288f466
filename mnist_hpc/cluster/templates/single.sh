#!/bin/bash
{{directives}}
#
{{about}}
# {{generated}}
{{#notes}}
{{notes}}
{{/notes}}
{{#sweep_array}}
# Set --array to 0-(N-1)%K for N runs, K at a time (`mnist-hpc sweep submit` does it for you).
{{/sweep_array}}
# Submit:   sbatch {{script_name}}   (from the project folder, or any other)
# Follow it:   sq   (or mnist-hpc status)   and   cat {{log}}   (or mnist-hpc logs JOBID -f)
set -euo pipefail

{{#sweep}}
SWEEP={{sweep_file}}  # the sweep file
{{/sweep}}
{{#sweep_array}}
INDEX_OFFSET={{index_offset}}  # added to the array index (a sweep longer than the cluster's largest array is split)
{{/sweep_array}}
{{^sweep}}
CONFIG={{config}}  # the experiment to run: a shipped config's name or a file
RUN_DIR={{run_dir}}  # empty: <output_dir>/<name>-job<JOBID>/, found again after a requeue
{{/sweep}}
DATA_ARCHIVE={{data_archive}}  # from `mnist-hpc data pack`, unpacked into $SLURM_TMPDIR
DATA_DIR={{data_dir}}  # datasets folder when there is no $SLURM_TMPDIR (empty: $MNIST_HPC_DATA_DIR or the user cache)
MODULES=({{modules}})
PACKAGES=({{packages}})  # from the cluster's wheelhouse, into $SLURM_TMPDIR/env (or the $HOME virtualenv of `mnist-hpc setup`)
CODE_DIR={{code}}  # the folder holding the mnist_hpc package (empty: this script's project)
SUBMIT_PYTHON={{python}}  # the python where no virtualenv is built (empty: the project's .venv, else python3)
REQUEUE_SIGNAL={{signal}}  # keep in step with --signal above and runtime.requeue_signal

# Slurm delivers the time-limit warning (--signal=B:...) to this batch shell only, not to the
# programs it starts, and bash runs a trap only between commands. So the work runs in the
# background while the shell waits, and the trap passes the signal on: the trainer then
# checkpoints and requeues the job, and the next start resumes (--resume auto).
# The trap is set before the node setup (modules, virtualenv: a minute or more): a signal that
# comes before the trainer's pid is known is passed on as soon as it is.
child=
pending=
trap 'if [ -n "$child" ]; then kill -s "$REQUEUE_SIGNAL" "$child" 2>/dev/null || true; else pending=1; fi' "$REQUEUE_SIGNAL"

{{> _setup.sh}}

{{#sweep_one}}
# ---- run this task's member of the sweep ----
args=(sweep run "$SWEEP" --index "$(( SLURM_ARRAY_TASK_ID + INDEX_OFFSET ))")
{{/sweep_one}}
{{#sweep_packed}}
# ---- run this task's {{pack}} runs of the sweep, one after another (completed ones are skipped) ----
args=(sweep task "$SWEEP" --task "$(( SLURM_ARRAY_TASK_ID + INDEX_OFFSET ))" --pack {{pack}})
{{/sweep_packed}}
{{#sweep_report}}
# ---- the sweep's report, into its folder, with the runs that did not complete ----
args=(sweep report-job "$SWEEP")
{{/sweep_report}}
{{^sweep}}
# ---- train ----
args=(train "$CONFIG" --resume auto)
if [ -n "$RUN_DIR" ]; then args+=(--run-dir "$RUN_DIR"); fi
{{/sweep}}
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
