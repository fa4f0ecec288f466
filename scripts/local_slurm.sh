#!/usr/bin/env bash
# local_slurm.sh start|stop|status [DIR]
#
# A real one-node Slurm cluster on this machine (Debian/Ubuntu slurm-wlm + munge), to try job
# scripts and `mnist-hpc submit --cluster local` before queueing on a real cluster.
# Everything it writes (config, munge key and socket, state, spool, logs, pid files) lives in
# DIR (default /tmp/mnist-hpc-slurm). /etc/slurm/slurm.conf is linked to DIR's config so that
# plain sbatch/squeue/scancel/scontrol work (unless that path is a real file; then use
# `source DIR/env.sh`). Needs root: it installs packages with apt-get and runs the daemons.
#
#   start   install slurmctld, slurmd, slurm-client and munge if missing, write the config,
#           start munged, slurmctld and slurmd, wait until the node is idle. A healthy
#           instance in DIR is reused; leftovers of a broken one are stopped first.
#   stop    cancel all jobs, stop the daemons (by their recorded pids), remove the link.
#   status  print whether the daemons run and the node state (exit 1 when not running).
#
# Knobs (environment):
#   LOCAL_SLURM_CPUS=N         CPUs the node advertises (default: max(nproc, 4)), more than
#                              the machine has lets two or three small jobs run side by side
#   LOCAL_SLURM_GPUS=N         advertise N pretend GPUs (gres without devices, default 0), so
#                              that job scripts asking for GPUs are scheduled; the jobs see
#                              no CUDA device and train on the CPU
#   LOCAL_SLURM_GPU_TYPE=T     the type of the pretend GPUs (default h100), so that typed
#                              requests such as --gpus-per-node=h100:1 (slurm/*.sh) are accepted
#   LOCAL_SLURM_SLURM_TMPDIR=1 give every job a private $SLURM_TMPDIR (as Alliance clusters
#                              do), created by a TaskProlog and removed by the Epilog
#   LOCAL_SLURM_CRED_EXPIRE=S  job credential lifetime, which is also the least time before a
#                              requeued job can start again (default 10; Slurm's is 120)
#   LOCAL_SLURM_KILL_WAIT=S    grace between SIGTERM and SIGKILL on cancel/timeout (default 10)
#   LOCAL_SLURM_PORT=P         slurmctld port; slurmd uses P+1 (default 6817)
#   LOCAL_SLURM_TIMEOUT=S      how long to wait for the node to become idle (default 60)
set -euo pipefail
umask 022

ACTION=${1:-}
DIR=${2:-/tmp/mnist-hpc-slurm}
case "$DIR" in /*) ;; *) DIR="$PWD/$DIR" ;; esac
CONF="$DIR/etc/slurm.conf"
SOCKET="$DIR/munge/munge.sock"
NODE=$(hostname -s)

say() { echo "[local-slurm] $*"; }
die() { echo "[local-slurm] error: $*" >&2; exit 1; }

# ---------------------------------------------------------------------------- helpers

# running PIDFILE NAME: the pid in PIDFILE is alive and is the program NAME
running() {
  local pid
  [ -s "$1" ] || return 1
  pid=$(cat "$1")
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}

# stop_daemon NAME: TERM the daemon recorded in DIR/run/NAME.pid, KILL it after 15 s
stop_daemon() {
  local pidfile="$DIR/run/$1.pid" pid _
  if running "$pidfile" "$1"; then
    pid=$(cat "$pidfile")
    say "stopping $1 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 75); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

node_state() { SLURM_CONF="$CONF" sinfo --noheader --nodes="$NODE" --format=%T 2>/dev/null | head -n1; }

daemons_running() {
  local d
  for d in munged slurmctld slurmd; do running "$DIR/run/$d.pid" "$d" || return 1; done
}

active_jobs() { SLURM_CONF="$CONF" squeue --noheader --format=%i 2>/dev/null; }

install_packages() {
  local missing=() p made_policy=0 rc=0
  for p in slurmctld slurmd slurm-client munge; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "slurm is not installed and apt-get is not available"
  say "installing ${missing[*]}"
  # There is no init system to manage the daemons: keep the packages' install scripts from
  # starting them with the stock configuration.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } || rc=$?
  [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || die "apt-get install failed (exit $rc)"
}

write_config() {
  local cpus mem_mb extra="" gpus=${LOCAL_SLURM_GPUS:-0} gpu_type=${LOCAL_SLURM_GPU_TYPE:-h100} gres=""
  cpus=${LOCAL_SLURM_CPUS:-$(( $(nproc) > 4 ? $(nproc) : 4 ))}
  mem_mb=$(awk '/^MemTotal:/ { print int($2 / 1024) - 512 }' /proc/meminfo)
  if [ "${LOCAL_SLURM_SLURM_TMPDIR:-0}" = 1 ]; then
    # A TaskProlog's "export NAME=value" lines are added to the environment of each task.
    cat >"$DIR/etc/task_prolog.sh" <<EOF
#!/bin/sh
dir="$DIR/tmp/job_\$SLURM_JOB_ID"
mkdir -p "\$dir" && echo "export SLURM_TMPDIR=\$dir"
exit 0
EOF
    cat >"$DIR/etc/epilog.sh" <<EOF
#!/bin/sh
[ -n "\$SLURM_JOB_ID" ] && rm -rf "$DIR/tmp/job_\$SLURM_JOB_ID"
exit 0
EOF
    chmod 755 "$DIR/etc/task_prolog.sh" "$DIR/etc/epilog.sh"
    extra="TaskProlog=$DIR/etc/task_prolog.sh
Epilog=$DIR/etc/epilog.sh"
  fi
  if [ "$gpus" -gt 0 ]; then
    # slurmd counts GPUs by their device files: character devices like /dev/null stand in
    mkdir -p "$DIR/gpu"
    for (( i = 0; i < gpus; i++ )); do
      [ -e "$DIR/gpu/nvidia$i" ] || mknod "$DIR/gpu/nvidia$i" c 1 3 2>/dev/null || touch "$DIR/gpu/nvidia$i"
    done
    # typed, as Alliance clusters are: typed and untyped requests are both accepted
    echo "NodeName=$NODE Name=gpu Type=$gpu_type File=$DIR/gpu/nvidia[0-$(( gpus - 1 ))]" >"$DIR/etc/gres.conf"
    extra="$extra
GresTypes=gpu"
    gres=" Gres=gpu:$gpu_type:$gpus"
  fi
  cat >"$CONF" <<EOF
# written by mnist-hpc scripts/local_slurm.sh: a one-node cluster for trying job scripts
ClusterName=local
SlurmctldHost=localhost
SlurmctldPort=${LOCAL_SLURM_PORT:-6817}
SlurmdPort=$(( ${LOCAL_SLURM_PORT:-6817} + 1 ))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET,cred_expire=${LOCAL_SLURM_CRED_EXPIRE:-10}
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# no cgroups in a container: processes are tracked through /proc, --mem is not enforced
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
KillWait=${LOCAL_SLURM_KILL_WAIT:-10}
MinJobAge=3600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.log
MailProg=/bin/true
$extra
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb$gres State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  echo "export SLURM_CONF=$CONF" >"$DIR/env.sh"
  mkdir -p /etc/slurm
  if [ ! -e /etc/slurm/slurm.conf ] || [ -L /etc/slurm/slurm.conf ]; then
    ln -sfn "$CONF" /etc/slurm/slurm.conf
  else
    say "/etc/slurm/slurm.conf is a real file and was left alone: run 'source $DIR/env.sh'"
  fi
}

# ---------------------------------------------------------------------------- actions

do_start() {
  local p deadline state=""
  [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and runs the Slurm daemons)"
  install_packages
  if daemons_running && [ -r "$CONF" ]; then
    case "$(node_state)" in
      idle | mixed | allocated | completing) say "already running in $DIR"; return 0 ;;
    esac
  fi
  for p in slurmd slurmctld munged; do stop_daemon "$p"; done

  mkdir -p "$DIR"/{etc,munge,state,spool,log,run,tmp}
  chmod 755 "$DIR" "$DIR"/{etc,munge,log,run}
  chmod 1777 "$DIR/tmp"
  # munged refuses a socket below a directory that not everyone may enter
  p=$DIR
  while [ "$p" != / ]; do
    [ $(( 0$(stat -c %a "$p") & 1 )) = 1 ] || die "$p is not world-executable, which munged requires; choose another DIR"
    p=$(dirname "$p")
  done
  rm -rf "${DIR:?}/state/"* "${DIR:?}/spool/"*   # a fresh start: no old jobs, job ids from 1

  [ -s "$DIR/etc/munge.key" ] || mungekey --create --keyfile="$DIR/etc/munge.key"
  chmod 600 "$DIR/etc/munge.key"
  rm -f "$SOCKET" "$SOCKET.lock"
  /usr/sbin/munged --key-file="$DIR/etc/munge.key" --socket="$SOCKET" --pid-file="$DIR/run/munged.pid" \
    --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" ||
    die "munged did not start; see $DIR/log/munged.log"

  write_config
  export SLURM_CONF="$CONF"
  slurmctld -f "$CONF" || die "slurmctld did not start; see $DIR/log/slurmctld.log"
  slurmd -f "$CONF" -N "$NODE" || die "slurmd did not start; see $DIR/log/slurmd.log"

  deadline=$(( $(date +%s) + ${LOCAL_SLURM_TIMEOUT:-60} ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    state=$(node_state)
    [ "$state" = idle ] && break
    sleep 0.3
  done
  [ "$state" = idle ] || die "node $NODE is '${state:-not answering}' instead of idle; see $DIR/log/"
  say "node $NODE is idle: $(SLURM_CONF="$CONF" sinfo --noheader --format='%c CPUs, %m MB')"
  say "try: sbatch slurm/cpu_only.sh   or   mnist-hpc submit configs/quickstart.yaml --cluster local"
  say "stop: $0 stop $DIR"
}

do_stop() {
  local d _
  if running "$DIR/run/slurmctld.pid" slurmctld && [ -n "$(active_jobs)" ]; then
    say "cancelling jobs: $(active_jobs | tr '\n' ' ')"
    SLURM_CONF="$CONF" scancel --partition=debug || true
    for _ in $(seq 120); do [ -z "$(active_jobs)" ] && break; sleep 0.5; done
  fi
  for d in slurmd slurmctld; do stop_daemon "$d"; done
  # job step daemons of this instance keep running after slurmd stops
  for d in /proc/[0-9]*; do
    [ "$(cat "$d/comm" 2>/dev/null)" = slurmstepd ] || continue
    if [ "$(readlink "$d/fd/2" 2>/dev/null)" = "$DIR/log/slurmd.log" ] ||
      find "$d/fd" -lname "$DIR/*" 2>/dev/null | grep -q .; then
      kill -KILL "${d#/proc/}" 2>/dev/null || true
    fi
  done
  stop_daemon munged
  rm -f "$SOCKET" "$SOCKET.lock"
  if [ -L /etc/slurm/slurm.conf ] && [ "$(readlink /etc/slurm/slurm.conf)" = "$CONF" ]; then
    rm -f /etc/slurm/slurm.conf
  fi
  say "stopped"
}

do_status() {
  if daemons_running; then
    say "running in $DIR; node $NODE is $(node_state)"
    SLURM_CONF="$CONF" squeue
  else
    say "not running in $DIR"
    return 1
  fi
}

case "$ACTION" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  *) echo "usage: $0 start|stop|status [DIR]   (default DIR: /tmp/mnist-hpc-slurm)" >&2; exit 2 ;;
esac
