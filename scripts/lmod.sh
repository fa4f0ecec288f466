#!/usr/bin/env bash
# lmod.sh bash SUBCOMMAND [ARGS...]
#
# A small stand-in for Lmod, the module system of the Alliance clusters, for the Alliance-like
# mode of scripts/local_slurm.sh. Like Lmod's own command it prints shell code for the caller
# to eval (the `module` function of the node's profile does: eval "$(lmod.sh bash "$@")") and
# writes its messages to stderr. Subcommands: load (add), unload (del, rm), list, purge,
# avail (spider). Modules it knows, as on the clusters' StdEnv/2023 (defaults marked D):
#   StdEnv/2023 (D, sticky)   gcc/12.3 (D)   cuda/12.2 (D), cuda/12.6   python/3.11.5 (D), python/3.13
# `python/3.11` and `python` mean python/3.11.5; python/3.11.5 and python/3.13 (what the project's
# cluster profiles load: the newest Pythons have the wheels) both put the sandbox's one python and
# `virtualenv` on PATH (a stand-in: the interpreter is whichever local_slurm.sh was given). An unknown module is an error in Lmod's words, and nothing is loaded.
#
# State lives where Lmod keeps it: $LOADEDMODULES (colon-separated full names). Needs
# ALLIANCE_SOFTWARE: the folder whose <name>/<version>/bin a module puts on PATH.
set -euo pipefail

SOFTWARE=${ALLIANCE_SOFTWARE:?ALLIANCE_SOFTWARE is not set}
KNOWN=(StdEnv/2023 gcc/12.3 cuda/12.2 cuda/12.6 python/3.11.5 python/3.13)
STICKY=(StdEnv/2023)

# full_name NAME: the module NAME stands for (NAME or NAME/PARTIAL-VERSION), '' if none
full_name() {
  case "$1" in
    StdEnv | StdEnv/2023) echo StdEnv/2023 ;;
    gcc | gcc/12 | gcc/12.3) echo gcc/12.3 ;;
    cuda | cuda/12.2) echo cuda/12.2 ;;
    cuda/12.6) echo cuda/12.6 ;;
    python | python/3 | python/3.11 | python/3.11.5) echo python/3.11.5 ;;
    python/3.13) echo python/3.13 ;;
    *) echo "" ;;
  esac
}

is_default() { case "$1" in StdEnv/2023 | gcc/12.3 | cuda/12.2 | python/3.11.5) return 0 ;; esac; return 1; }
is_sticky() { local s; for s in "${STICKY[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }
mark() { if is_sticky "$1"; then echo ' (S)'; elif is_default "$1"; then echo ' (D)'; fi; }

loaded=()
if [ -n "${LOADEDMODULES:-}" ]; then IFS=: read -r -a loaded <<<"$LOADEDMODULES"; fi
path=${PATH:-}

bin_of() { echo "$SOFTWARE/${1%%/*}/${1#*/}/bin"; }
path_add() { path="$1${path:+:$path}"; }
path_del() {
  local out="" part
  IFS=: read -r -a parts <<<"$path"
  for part in "${parts[@]}"; do [ "$part" = "$1" ] || out="${out:+$out:}$part"; done
  path=$out
}

# the shell code of adding/removing module $2 (besides LOADEDMODULES and PATH)
env_code() {  # env_code load|unload MODULE
  local name=${2%%/*} version=${2#*/} upper
  upper=$(echo "$name" | tr '[:lower:]' '[:upper:]')
  if [ "$1" = load ]; then
    printf 'export EBROOT%s=%q;\nexport EBVERSION%s=%q;\n' "$upper" "$SOFTWARE/$name/$version" "$upper" "$version"
    if [ "$name" = cuda ]; then printf 'export CUDA_HOME=%q;\n' "$SOFTWARE/$name/$version"; fi
  else
    printf 'unset EBROOT%s EBVERSION%s;\n' "$upper" "$upper"
    if [ "$name" = cuda ]; then printf 'unset CUDA_HOME;\n'; fi
  fi
}

change() {  # change load|unload MODULE: the module's environment and PATH, appended to $code
  code+=$(env_code "$1" "$2")$'\n'
  [ -d "$(bin_of "$2")" ] || return 0
  if [ "$1" = load ]; then path_add "$(bin_of "$2")"; else path_del "$(bin_of "$2")"; fi
}

lmod_error() {  # the way Lmod reports a mistake: a message, then `false` for the caller's eval
  printf '\nLmod has detected the following error:  %s\n\n' "$*" >&2
  echo "false;"
}

emit_state() {
  local IFS=:
  printf 'export LOADEDMODULES=%q;\nexport PATH=%q;\n' "${loaded[*]}" "$path"
}

index_of_name() {  # index_of_name NAME: where a module of that name (any version) is loaded, or -1
  local i
  for i in "${!loaded[@]}"; do [ "${loaded[$i]%%/*}" = "$1" ] && { echo "$i"; return; }; done
  echo -1
}

do_load() {
  local want=() unknown=() m full i code=""
  [ $# -gt 0 ] || { lmod_error "module load: no module named"; return; }
  for m in "$@"; do
    full=$(full_name "$m")
    if [ -z "$full" ]; then unknown+=("\"$m\""); else want+=("$full"); fi
  done
  if [ ${#unknown[@]} -gt 0 ]; then
    lmod_error "The following module(s) are unknown: ${unknown[*]}

   Please check the spelling or version number. Also try \"module spider ...\"
   It is also possible your cache file is out-of-date; it may help to try:
     \$ module --ignore_cache load ${unknown[*]}

   Also make sure that all modulefiles written in TCL start with the string #%Module
"
    return
  fi
  for full in "${want[@]}"; do
    i=$(index_of_name "${full%%/*}")
    if [ "$i" -ge 0 ]; then
      [ "${loaded[$i]}" = "$full" ] && continue
      echo "The following have been reloaded with a version change:
  1) ${loaded[$i]} => $full
" >&2
      change unload "${loaded[$i]}"
      unset 'loaded[i]'
      loaded=("${loaded[@]}")
    fi
    change load "$full"
    loaded+=("$full")
  done
  printf '%s' "$code"
  emit_state
}

do_unload() {
  local m full keep=() code="" l
  for m in "$@"; do
    full=$(full_name "$m")
    keep=()
    for l in "${loaded[@]}"; do
      if [ "$l" = "$full" ] || [ "${l%%/*}" = "$m" ]; then change unload "$l"; else keep+=("$l"); fi
    done
    loaded=("${keep[@]}")
  done
  printf '%s' "$code"
  emit_state
}

do_purge() {  # sticky modules stay unless --force, as on the clusters
  local force=$1 keep=() code="" l n=0 msg=""
  for l in "${loaded[@]}"; do
    if [ "$force" = 0 ] && is_sticky "$l"; then
      keep+=("$l"); n=$((n + 1)); msg+="  $n) $l"$'\n'
    else
      change unload "$l"
    fi
  done
  loaded=("${keep[@]}")
  if [ -n "$msg" ]; then
    printf 'The following modules were not unloaded:\n  (Use "module --force purge" to unload all):\n\n%s\n' "$msg" >&2
  fi
  printf '%s' "$code"
  emit_state
}

do_list() {
  local i line=""
  if [ ${#loaded[@]} -eq 0 ]; then echo "No modules loaded" >&2; return; fi
  for i in "${!loaded[@]}"; do line+="  $((i + 1))) ${loaded[$i]}$(mark "${loaded[$i]}")  "; done
  printf '\nCurrently Loaded Modules:\n%s\n\n' "$line" >&2
  is_sticky "${loaded[0]}" && printf '  Where:\n   S:  Module is Sticky, requires --force to unload or purge\n\n' >&2
  return 0
}

do_avail() {
  local m
  printf '\n---------------------- %s ----------------------\n' "$SOFTWARE" >&2
  for m in "${KNOWN[@]}"; do printf '   %s%s\n' "$m" "$(if is_default "$m"; then echo ' (D)'; fi)" >&2; done
  printf '\n  Where:\n   D:  Default Module\n\n' >&2
}

[ "${1:-}" = bash ] || { echo "usage: $0 bash SUBCOMMAND [ARGS...]" >&2; exit 2; }
shift
force=0
while [ $# -gt 0 ]; do
  case "$1" in
    --force | -f) force=1 ;;
    -q | --quiet | --ignore_cache | --ignore-cache) ;;
    -*) lmod_error "unknown option: $1"; exit 0 ;;
    *) break ;;
  esac
  shift
done
cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
  load | add) do_load "$@" ;;
  unload | del | rm) do_unload "$@" ;;
  purge) do_purge "$force" ;;
  list) do_list ;;
  avail | spider) do_avail ;;
  "") lmod_error "module: a subcommand is needed (load, unload, list, purge, avail)" ;;
  *) lmod_error "Invalid command: $cmd" ;;
esac
