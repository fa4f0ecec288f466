#!/usr/bin/env bash
# local_slurm.sh start|stop|status [DIR]
#
# A real one-node Slurm cluster on this machine (Debian/Ubuntu slurm-wlm + munge), to try job
# scripts and `mnist-hpc submit --cluster local` before queueing on a real cluster.
# Everything it writes (config, munge key and socket, state, spool, logs, pid files) lives in
# DIR (default /tmp/mnist-hpc-slurm). /etc/slurm/slurm.conf is linked to DIR's config so that
# plain sbatch/squeue/scancel/scontrol work (unless that path is a real file, or links to
# another sandbox that is running; then use `source DIR/env.sh`). Needs root: it installs
# packages with apt-get and runs the daemons.
#
#   start   install slurmctld, slurmd, slurm-client and munge if missing, write the config,
#           start munged, slurmctld and slurmd, wait until the node is idle. A healthy
#           instance in DIR started with the same mode is reused; leftovers of a broken one,
#           or one of the other mode, are stopped first.
#   stop    cancel all jobs, stop the daemons (by their recorded pids), remove the link.
#   status  print whether the daemons run and the node state (exit 1 when not running).
#
# The node looks like one GPU node of an Alliance cluster to the scheduler, so the
# ready-to-edit slurm/*.sh scripts queue unchanged: 4 pretend H100 GPUs (typed, as there),
# 48 CPUs and 128 GB, whatever the machine has. Nothing checks those promises (no cgroups: --mem
# is not enforced, CPUs are shared); the jobs see no CUDA device and train on the CPU.
#
# Knobs (environment):
#   LOCAL_SLURM_ALLIANCE=1     an Alliance-like node (see below)
#   LOCAL_SLURM_CPUS=N         CPUs the node advertises (default: max(nproc, 48)); more than the
#                              machine has lets jobs asking for many cores run, slowly
#   LOCAL_SLURM_MEM_MB=M       memory the node advertises (default: max(RAM - 512 MB, 128 GB))
#   LOCAL_SLURM_GPUS=N         pretend GPUs (gres without devices; default 4, 0 for none)
#   LOCAL_SLURM_GPU_TYPE=T     their type (default h100), so that typed requests such as
#                              --gpus-per-node=h100:1 (slurm/*.sh) are accepted, untyped too
#   LOCAL_SLURM_SLURM_TMPDIR=1 give every job a private $SLURM_TMPDIR (as Alliance clusters
#                              do), created by a TaskProlog and removed by the Epilog
#   LOCAL_SLURM_CRED_EXPIRE=S  job credential lifetime, which is also the least time before a
#                              requeued job can start again (default 10; Slurm's is 120)
#   LOCAL_SLURM_KILL_WAIT=S    grace between SIGTERM and SIGKILL on cancel/timeout (default 10)
#   LOCAL_SLURM_PORT=P         slurmctld port; slurmd uses P+1 (default 6817)
#   LOCAL_SLURM_LINK_ETC=0     leave /etc/slurm/slurm.conf alone (clients: source DIR/env.sh)
#   LOCAL_SLURM_TIMEOUT=S      how long to wait for the node to become idle (default 60)
#
# The Alliance-like node (LOCAL_SLURM_ALLIANCE=1): what a job on an Alliance cluster meets
# before its first line of Python, so that job scripts run here exactly as they will there:
#   - Lmod's `module` command in every job shell (load, unload, list, purge, avail; it knows
#     StdEnv/2023, gcc/12.3, cuda/12.2, cuda/12.6, python/3.11 = python/3.11.5, python/3.13 (the
#     same interpreter: the cluster profiles load it); an unknown
#     module fails with Lmod's message); `virtualenv` once python is loaded (scripts/lmod.sh);
#   - a wheelhouse reached through a pip configuration file (PIP_CONFIG_FILE: find-links to
#     it, no-index), the way the clusters point pip at theirs; the submitting shell's PIP_*
#     variables are dropped. Built once with `pip download` (needs the internet, about 3 GB
#     and half a minute for torch and friends) into LOCAL_SLURM_CACHE/wheelhouse and kept;
#     built again, adding to it, when LOCAL_SLURM_WHEELS changes;
#   - $SLURM_TMPDIR per job (LOCAL_SLURM_SLURM_TMPDIR is implied);
#   - no network in the jobs: slurmctld and slurmd run in a network namespace of their own
#     that has only a loopback device, and the jobs are their children. Slurm's commands on
#     this machine reach slurmctld through a relay (scripts/netns_relay.py) that only forwards
#     into the namespace; salloc and srun cannot be used from outside (they need slurmctld to
#     call them back), sbatch, squeue, scontrol and scancel can. The node's name resolves to
#     127.0.0.1, so DDP rendezvous between tasks works inside.
#   Knobs: LOCAL_SLURM_CACHE (default /var/cache/mnist-hpc), LOCAL_SLURM_WHEELS (default
#   "torch torchvision numpy pyyaml click tqdm matplotlib tensorboard"), LOCAL_SLURM_PYTHON
#   (the interpreter behind python/3.11, default: python3.11 from PATH).
set -euo pipefail
umask 022

ACTION=${1:-}
DIR=${2:-/tmp/mnist-hpc-slurm}
case "$DIR" in /*) ;; *) DIR="$PWD/$DIR" ;; esac
CONF="$DIR/etc/slurm.conf"
SOCKET="$DIR/munge/munge.sock"
NODE=$(hostname -s)
ALLIANCE=${LOCAL_SLURM_ALLIANCE:-0}
PORT=${LOCAL_SLURM_PORT:-6817}
CACHE=${LOCAL_SLURM_CACHE:-/var/cache/mnist-hpc}
WHEELS=${LOCAL_SLURM_WHEELS:-torch torchvision numpy pyyaml click tqdm matplotlib tensorboard}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODE=$([ "$ALLIANCE" = 1 ] && echo alliance || echo plain)
PYTHON_FOR_NODE=""

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

node_state() { SLURM_CONF="$CONF" sinfo --noheader --nodes="$NODE" --format=%T 2>/dev/null | head -n1 || true; }

daemons_running() {
  local d
  for d in munged slurmctld slurmd; do running "$DIR/run/$d.pid" "$d" || return 1; done
  [ "$(cat "$DIR/etc/mode" 2>/dev/null)" != alliance ] || relay_running
}

# the relay of the Alliance-like mode (a python process): its pid file and command line
relay_running() {
  local pid
  [ -s "$DIR/run/relay.pid" ] || return 1
  pid=$(cat "$DIR/run/relay.pid")
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q netns_relay
}

stop_relay() {
  if relay_running; then kill -TERM "$(cat "$DIR/run/relay.pid")" 2>/dev/null || true; fi
  rm -f "$DIR/run/relay.pid"
}

active_jobs() { SLURM_CONF="$CONF" squeue --noheader --format=%i 2>/dev/null; }

install_packages() {
  local missing=() p made_policy=0 rc=0
  local wanted=(slurmctld slurmd slurm-client munge)
  [ "$ALLIANCE" = 1 ] && wanted+=(iproute2)
  for p in "${wanted[@]}"; do
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
  local cpus mem_mb extra="" gpus=${LOCAL_SLURM_GPUS:-4} gpu_type=${LOCAL_SLURM_GPU_TYPE:-h100} gres=""
  cpus=${LOCAL_SLURM_CPUS:-$(( $(nproc) > 48 ? $(nproc) : 48 ))}
  mem_mb=$(awk '/^MemTotal:/ { print int($2 / 1024) - 512 }' /proc/meminfo)
  mem_mb=${LOCAL_SLURM_MEM_MB:-$(( mem_mb > 131072 ? mem_mb : 131072 ))}
  if [ "${LOCAL_SLURM_SLURM_TMPDIR:-0}" = 1 ] || [ "$ALLIANCE" = 1 ]; then
    # A TaskProlog's "export NAME=value" and "unset NAME" lines change the environment of each
    # task (the batch shell included).
    cat >"$DIR/etc/task_prolog.sh" <<EOF
#!/bin/sh
dir="$DIR/tmp/job_\$SLURM_JOB_ID"
mkdir -p "\$dir" && echo "export SLURM_TMPDIR=\$dir"
EOF
    if [ "$ALLIANCE" = 1 ]; then
      cat >>"$DIR/etc/task_prolog.sh" <<EOF
# the Alliance-like node: pip configured by the node (the submitting shell's PIP_* variables
# describe another machine), Lmod's module command in every bash (BASH_ENV), StdEnv loaded
env | sed -n 's/^\(PIP_[A-Za-z0-9_]*\)=.*/unset \1/p'
echo "export PIP_CONFIG_FILE=$DIR/alliance/pip.conf"
echo "export BASH_ENV=$DIR/alliance/profile.sh"
echo "export ALLIANCE_SOFTWARE=$DIR/alliance/software"
[ -n "\${LOADEDMODULES:-}" ] || echo "export LOADEDMODULES=StdEnv/2023"
EOF
    fi
    echo "exit 0" >>"$DIR/etc/task_prolog.sh"
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
SlurmctldPort=$PORT
SlurmdPort=$(( PORT + 1 ))
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
  if [ "$ALLIANCE" = 1 ]; then
    echo "export MNIST_HPC_WHEELHOUSE=$CACHE/wheelhouse  # mnist-hpc submit checks the job's packages there" >>"$DIR/env.sh"
  fi
  link_etc
}

# /etc/slurm/slurm.conf -> DIR's config, unless it is a real file or another running sandbox's
link_etc() {
  local current other
  [ "${LOCAL_SLURM_LINK_ETC:-1}" = 1 ] || return 0
  mkdir -p /etc/slurm
  current=$(readlink /etc/slurm/slurm.conf 2>/dev/null || true)
  other=$(dirname "$(dirname "$current")")
  if [ -e /etc/slurm/slurm.conf ] && [ ! -L /etc/slurm/slurm.conf ]; then
    say "/etc/slurm/slurm.conf is a real file and was left alone: run 'source $DIR/env.sh'"
  elif [ -n "$current" ] && [ "$current" != "$CONF" ] && running "$other/run/slurmctld.pid" slurmctld; then
    say "/etc/slurm/slurm.conf belongs to the sandbox running in $other; left alone: run 'source $DIR/env.sh'"
  else
    ln -sfn "$CONF" /etc/slurm/slurm.conf
  fi
}

# ---------------------------------------------------------------------------- the Alliance-like node

# the interpreter behind python/3.11: LOCAL_SLURM_PYTHON, else python3.11 (else python3) from
# PATH; one with pip (it builds the wheelhouse), and the base interpreter, never a virtualenv's
find_python() {
  local cand real
  for cand in ${LOCAL_SLURM_PYTHON:-python3.11 python3}; do
    real=$("$cand" -c 'import sys; print(getattr(sys, "_base_executable", "") or sys.executable)' 2>/dev/null) ||
      continue
    if "$real" -m pip --version >/dev/null 2>&1; then echo "$real"; return 0; fi
  done
  return 1
}

# the wheelhouse (pip download of WHEELS, wheels only) and virtualenv, in CACHE; built again,
# adding to what is there, when the list of packages or the python version changes
build_cache() {  # build_cache PYTHON
  local house=$CACHE/wheelhouse want t0=$SECONDS
  want="python $("$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'): $(echo "$WHEELS" | tr ' ' '\n' | sort -u | xargs)"
  mkdir -p "$house"
  exec 9>"$CACHE/.lock"
  flock 9  # one build at a time, whichever sandbox asks
  if [ "$(cat "$house/.packages" 2>/dev/null)" != "$want" ]; then
    say "building the wheelhouse $house: pip download $WHEELS (about 3 GB and half a minute the first time)"
    # shellcheck disable=SC2086  # WHEELS is a list of package names
    "$1" -m pip download --quiet --only-binary=:all: --dest "$house" $WHEELS >"$CACHE/build.log" 2>&1 ||
      die "could not build the wheelhouse with pip download (it needs the internet): $(grep -v 'is ignored' "$CACHE/build.log" | tail -n 2 | tr '\n' ' ')"
    echo "$want" >"$house/.packages"
    say "wheelhouse ready after $((SECONDS - t0)) s: $(find "$house" -name '*.whl' | wc -l) wheels, $(du -sh "$house" | cut -f1)"
  fi
  if [ ! -d "$CACHE/software/virtualenv/virtualenv" ]; then
    "$1" -m pip install --quiet --target "$CACHE/software/virtualenv" virtualenv >>"$CACHE/build.log" 2>&1 ||
      die "could not install virtualenv into $CACHE/software (pip install --target; it needs the internet)"
  fi
  flock -u 9
}

# DIR/alliance: what the jobs of the node see (the module command, python/3.11.5 and virtualenv,
# the pip configuration, the relay)
write_node() {  # write_node PYTHON
  local a=$DIR/alliance bin name version
  rm -rf "$a"
  for version in 3.11.5 3.13; do  # python/3.13 (the profiles' choice) loads the same interpreter
    bin=$a/software/python/$version/bin
    mkdir -p "$bin"
    for name in python python3 python3.11 python3.13; do ln -s "$1" "$bin/$name"; done
    cat >"$bin/virtualenv" <<EOF
#!/bin/sh
PYTHONPATH="$CACHE/software/virtualenv" exec "$1" -m virtualenv "\$@"
EOF
    chmod 755 "$bin/virtualenv"
  done
  install -m 755 "$HERE/lmod.sh" "$a/lmod"
  install -m 644 "$HERE/netns_relay.py" "$a/netns_relay.py"
  cat >"$a/profile.sh" <<EOF
# Read by every non-interactive bash of a job (BASH_ENV, set by the TaskProlog): Lmod's module
# command, defined the way Lmod defines it on the clusters.
module() { eval "\$("$a/lmod" bash "\$@")"; }
EOF
  cat >"$a/pip.conf" <<EOF
# pip on the nodes of the Alliance-like sandbox (PIP_CONFIG_FILE): the local wheelhouse only
[global]
find-links = $CACHE/wheelhouse
no-index = true
EOF
  echo "$1" >"$a/python"
}

setup_alliance() {
  local py
  command -v unshare >/dev/null || die "unshare (util-linux) is needed for the jobs' network namespace"
  py=$(find_python) || die "no python 3.11 with pip found for the python/3.11 module (set LOCAL_SLURM_PYTHON)"
  case "$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" in
    3.11) ;;
    *) say "note: $py is not Python 3.11; the module python/3.11 loads it all the same" ;;
  esac
  build_cache "$py"
  PYTHON_FOR_NODE=$py
}

# slurmctld and slurmd: in the Alliance-like mode in a network namespace of their own with only
# a loopback device (so are the jobs, their children), reached from here through the relay
start_daemons() {
  local pid _
  if [ "$ALLIANCE" != 1 ]; then
    slurmctld -f "$CONF" || die "slurmctld did not start; see $DIR/log/slurmctld.log"
    slurmd -f "$CONF" -N "$NODE" || die "slurmd did not start; see $DIR/log/slurmd.log"
    return 0
  fi
  write_node "$PYTHON_FOR_NODE"
  # A second loopback address: Slurm resolves with getaddrinfo(AI_ADDRCONFIG), which finds nothing
  # where 127.0.0.1 is the only IPv4 address. Still no route out of the namespace.
  # shellcheck disable=SC2016  # $1 and $2 are for the inner bash
  unshare --net bash -c 'ip link set lo up && ip addr add 127.0.0.2/8 dev lo &&
    slurmctld -f "$1" && slurmd -f "$1" -N "$2"' _ "$CONF" "$NODE" ||
    die "could not start slurmctld and slurmd in a network namespace (unshare --net); see $DIR/log/"
  for _ in $(seq 50); do running "$DIR/run/slurmctld.pid" slurmctld && break; sleep 0.2; done
  pid=$(cat "$DIR/run/slurmctld.pid")
  setsid -f "$PYTHON_FOR_NODE" "$DIR/alliance/netns_relay.py" "$PORT" "/proc/$pid/ns/net" "$DIR/run/relay.pid" \
    </dev/null >>"$DIR/log/relay.log" 2>&1
  for _ in $(seq 50); do relay_running && return 0; sleep 0.2; done
  die "the relay to slurmctld did not start; see $DIR/log/relay.log"
}

# ---------------------------------------------------------------------------- actions

do_start() {
  local p deadline state=""
  [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and runs the Slurm daemons)"
  install_packages
  [ "$ALLIANCE" != 1 ] || setup_alliance
  if daemons_running && [ -r "$CONF" ] && [ "$(cat "$DIR/etc/mode" 2>/dev/null)" = "$MODE" ]; then
    case "$(node_state)" in
      idle | mixed | allocated | completing) say "already running in $DIR ($MODE)"; return 0 ;;
    esac
  fi
  for p in slurmd slurmctld munged; do stop_daemon "$p"; done
  stop_relay

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
  : >"$DIR/log/jobcomp.log"
  echo "$MODE" >"$DIR/etc/mode"

  [ -s "$DIR/etc/munge.key" ] || mungekey --create --keyfile="$DIR/etc/munge.key"
  chmod 600 "$DIR/etc/munge.key"
  rm -f "$SOCKET" "$SOCKET.lock"
  /usr/sbin/munged --key-file="$DIR/etc/munge.key" --socket="$SOCKET" --pid-file="$DIR/run/munged.pid" \
    --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" ||
    die "munged did not start; see $DIR/log/munged.log"

  write_config
  export SLURM_CONF="$CONF"
  start_daemons

  deadline=$(( $(date +%s) + ${LOCAL_SLURM_TIMEOUT:-60} ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    state=$(node_state)
    [ "$state" = idle ] && break
    sleep 0.3
  done
  [ "$state" = idle ] || die "node $NODE is '${state:-not answering}' instead of idle; see $DIR/log/"
  say "node $NODE is idle: $(SLURM_CONF="$CONF" sinfo --noheader --format='%c CPUs, %m MB, %G')"
  if [ "$ALLIANCE" = 1 ]; then
    say "Alliance-like: module (StdEnv/2023, python/3.11, cuda/12.6...), virtualenv, the wheelhouse $CACHE/wheelhouse"
    say "through PIP_CONFIG_FILE, \$SLURM_TMPDIR per job, no network in jobs (salloc/srun only inside jobs)"
    say "for mnist-hpc submit to check packages against the wheelhouse: source $DIR/env.sh"
  fi
  say "try: sbatch slurm/submit_job.sh   or   mnist-hpc submit quickstart --cluster local"
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
  stop_relay
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
    say "running in $DIR ($(cat "$DIR/etc/mode" 2>/dev/null || echo plain)); node $NODE is $(node_state)"
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
