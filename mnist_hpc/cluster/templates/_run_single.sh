# Slurm delivers the time-limit warning (--signal=B:...) to this batch shell only, not to the
# programs it starts, and bash runs a trap only between commands. So the work runs in the
# background while the shell waits, and the trap passes the signal on: the trainer then
# checkpoints and requeues the job, and the next start resumes (--resume auto).
child=
trap '[ -n "$child" ] && kill -s "$REQUEUE_SIGNAL" "$child" 2>/dev/null || true' "$REQUEUE_SIGNAL"
"$PYTHON" -m mnist_hpc "${args[@]}" &
child=$!
status=0
wait "$child" || status=$?
while kill -0 "$child" 2>/dev/null; do  # the wait above was cut short by the signal
  status=0
  wait "$child" || status=$?
done
exit "$status"
