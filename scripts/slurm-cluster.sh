#!/usr/bin/env bash
# A real local SLURM cluster (4 nodes, one fake-GPU node) on this one machine, for the test
# suite and CI. Debian 12, run as root, no systemd needed.
#
#   scripts/slurm-cluster.sh start    install packages if missing, (re)start, wait until idle
#   scripts/slurm-cluster.sh stop     cancel all jobs, stop every daemon this script started
#   scripts/slurm-cluster.sh status   exit 0 and print `sinfo -N` if all nodes respond
#   scripts/slurm-cluster.sh env      `export` lines for: eval "$(scripts/slurm-cluster.sh env)"
#
# Everything (config, logs, spool, pid files, munge key/socket, fake GPU devices) lives in
# ${SLURM_HOG_CLUSTER_DIR:-/tmp/slurm-hog-cluster}. slurmctld listens on
# ${SLURM_HOG_CLUSTER_PORT:-6817}, the slurmd's on the next ports from PORT+4 on.
set -euo pipefail

STATE_DIR=$(realpath -m "${SLURM_HOG_CLUSTER_DIR:-/tmp/slurm-hog-cluster}")
CTLD_PORT=${SLURM_HOG_CLUSTER_PORT:-6817}
NODES=(n1 n2 n3 n4)
GPU_NODE=n4
START_TIMEOUT=60  # seconds for every node to become idle
CONF=$STATE_DIR/etc/slurm.conf
MUNGE_DIR=$STATE_DIR/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket
PACKAGES=(slurmctld slurmd slurm-client munge)

export SLURM_CONF=$CONF

say() { printf 'slurm-cluster: %s\n' "$*"; }
die() { printf 'slurm-cluster: error: %s\n' "$*" >&2; exit 1; }

node_port() { echo $((CTLD_PORT + 4 + $1)); }  # $1 = node index from 0

# True if pid $1 is a live process named $2 (any name if empty). A killed daemon whose parent
# does not reap it stays a zombie, and `kill -0` still succeeds on it: read /proc/PID/stat.
proc_live() {
  local pid=$1 name=${2:-} stat comm state
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  # (read, not $(<file): in bash 5.2 a failing $(<file) ends a `set -e` script.)
  { read -r stat <"/proc/$pid/stat"; } 2>/dev/null || return 1
  comm=${stat#*(}; comm=${comm%)*}
  state=${stat##*) }; state=${state%% *}
  [[ $state != [ZX] ]] && [[ -z $name || $comm == "$name" ]]
}

# Prints the pid in pid file $1 if it is a live process named $2.
pidfile_live() {
  local pid=
  { read -r pid <"$1" || [[ -n $pid ]]; } 2>/dev/null || return 1
  pid=${pid//[!0-9]/}
  proc_live "$pid" "$2" && echo "$pid"
}

munged_pid() { pidfile_live "$MUNGE_DIR/munged.pid" munged; }
ctld_pid() { pidfile_live "$STATE_DIR/run/slurmctld.pid" slurmctld; }
slurmd_pid() { pidfile_live "$STATE_DIR/run/slurmd-$1.pid" slurmd; }

# Daemons of this cluster found by their command line (which names a file in the state dir),
# also catching ones whose pid file was lost.
stray_daemons() {
  local p pid comm cmd
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    { read -r comm <"$p/comm"; } 2>/dev/null || continue
    case $comm in slurmctld | slurmd | munged) ;; *) continue ;; esac
    { cmd=$(tr '\0' ' ' <"$p/cmdline"); } 2>/dev/null || continue
    [[ $cmd == *"$STATE_DIR/"* ]] && proc_live "$pid" && echo "$pid"
  done
  return 0
}

# slurmstepd's of this cluster and all their descendants (the job processes): killing slurmd
# does not kill them, and once a slurmstepd dies its children can no longer be traced to it.
# A slurmstepd overwrites its command line and environment, but keeps its slurmd's log open.
job_processes() {
  local p pid ppid comm stat rest fd
  local -A children=()
  local -a roots=()
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    { read -r stat <"$p/stat"; } 2>/dev/null || continue
    rest=${stat##*) }; read -r _ ppid _ <<<"$rest"
    children[$ppid]+=" $pid"
    comm=${stat#*(}; comm=${comm%)*}
    [[ $comm == slurmstepd ]] || continue
    for fd in "$p"/fd/*; do
      if [[ $(readlink "$fd" 2>/dev/null) == "$STATE_DIR/"* ]]; then
        roots+=("$pid")
        break
      fi
    done
  done
  local -a queue=("${roots[@]}")
  while ((${#queue[@]})); do
    pid=${queue[0]}; queue=("${queue[@]:1}")
    proc_live "$pid" && echo "$pid"
    # shellcheck disable=SC2206  # word splitting of the child list is wanted
    queue+=(${children[$pid]:-})
  done
}

# Waits up to $1 seconds until none of the pids is alive (zombies count as gone).
wait_gone() {
  local deadline=$((SECONDS + $1)) pid left
  shift
  while :; do
    left=()
    for pid in "$@"; do proc_live "$pid" && left+=("$pid"); done
    ((${#left[@]})) || return 0
    ((SECONDS < deadline)) || { echo "${left[*]}"; return 1; }
    sleep 0.2
  done
}

install_packages() {
  local p missing=()
  for p in "${PACKAGES[@]}"; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == *' ok installed' ]] || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  say "installing ${missing[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Ports in LISTEN state on this machine (any address), from /proc so that no tool is needed.
listening_ports() {
  local _sl local_addr _rem st _rest
  cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | while read -r _sl local_addr _rem st _rest; do
    [[ $st == 0A ]] && echo $((16#${local_addr##*:}))
  done
  return 0
}

short_hostname() { local h; h=$(uname -n); echo "${h%%.*}"; }

slurm_conf() {
  local host i
  host=$(short_hostname)
  cat <<EOF
# Written by scripts/slurm-cluster.sh; rewritten on every start.
ClusterName=hogtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
CredType=cred/munge
StateSaveLocation=$STATE_DIR/ctld
SlurmctldPidFile=$STATE_DIR/run/slurmctld.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmctldDebug=info
# %n: several slurmd's share this host, each needs its own spool, pid and log.
SlurmdSpoolDir=$STATE_DIR/spool/%n
SlurmdPidFile=$STATE_DIR/run/slurmd-%n.pid
SlurmdLogFile=$STATE_DIR/log/slurmd-%n.log
SlurmdDebug=info
# Let nodes claim more CPUs and memory than the machine has.
SlurmdParameters=config_overrides
# No cgroups or PMIx needed on a plain test machine.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# Start batch jobs at once; a frequent backfill pass starts jobs queued behind a blocked one.
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=2,sched_interval=10
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE_DIR/log/jobcomp.txt
MailProg=/bin/true
KillWait=5
# A finished job stays visible to \`squeue -j\` for this long.
MinJobAge=30
MaxJobCount=100000
ReturnToService=2
# A dead slurmd is marked down* within about a minute.
SlurmdTimeout=30
SlurmctldTimeout=30
InactiveLimit=0
GresTypes=gpu
NodeName=DEFAULT CPUs=4 RealMemory=2000 State=UNKNOWN
EOF
  for i in "${!NODES[@]}"; do
    # All nodes are this host, told apart by port (NodeHostname may not go in DEFAULT).
    printf 'NodeName=%s NodeHostname=%s NodeAddr=127.0.0.1 Port=%s' \
      "${NODES[i]}" "$host" "$(node_port "$i")"
    [[ ${NODES[i]} == "$GPU_NODE" ]] && printf ' Gres=gpu:2'
    printf '\n'
  done
  printf 'PartitionName=debug Nodes=%s Default=YES MaxTime=INFINITE State=UP\n' \
    "$(IFS=,; echo "${NODES[*]}")"
}

gres_conf() {
  printf 'NodeName=%s Name=gpu File=%s/dev/nvidia[0-1]\n' "$GPU_NODE" "$STATE_DIR"
}

# Prints what is wrong, or nothing when every daemon is alive and every node responds.
problems() {
  local n states line name state
  munged_pid >/dev/null || echo "munged not running"
  ctld_pid >/dev/null || echo "slurmctld not running"
  for n in "${NODES[@]}"; do slurmd_pid "$n" >/dev/null || echo "slurmd $n not running"; done
  ctld_pid >/dev/null || return 0
  states=$(timeout 10 sinfo -h -N -o '%N %t' 2>&1) || { echo "sinfo failed: $states"; return 0; }
  for n in "${NODES[@]}"; do
    line=$(grep -m1 "^$n " <<<"$states") || { echo "node $n unknown to slurmctld"; continue; }
    read -r name state <<<"$line"
    # Busy nodes are fine; down/drain/unknown or a trailing '*' (not responding) are not.
    case $state in idle | alloc | mix | comp) ;; *) echo "node $name is $state" ;; esac
  done
}

config_current() {
  [[ -f $CONF && -f $STATE_DIR/etc/gres.conf ]] &&
    [[ $(<"$CONF") == "$(slurm_conf)" && $(<"$STATE_DIR/etc/gres.conf") == "$(gres_conf)" ]]
}

print_info() {
  say "cluster up: ${NODES[*]} (gpu:2 on $GPU_NODE); slurmctld on port $CTLD_PORT"
  say "config: $CONF"
  say "logs:   $STATE_DIR/log/ (slurmctld.log, slurmd-nX.log, jobcomp.txt, munged.log)"
  say "use:    eval \"\$($0 env)\""
}

cancel_all_jobs() {
  local ids deadline
  ids=$(timeout 10 squeue -h -o %A 2>/dev/null) || return 0
  [[ -n $ids ]] || return 0
  say "cancelling $(wc -l <<<"$ids") job(s)"
  # shellcheck disable=SC2086  # one id per word
  timeout 30 scancel $ids 2>/dev/null || true
  # Wait for running jobs to be killed (KillWait=5) and leave the completing state.
  deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    ids=$(timeout 10 squeue -h -o %A 2>/dev/null) || return 0
    [[ -n $ids ]] || return 0
    sleep 0.5
  done
  say "warning: jobs still listed after 30 s: $(tr '\n' ' ' <<<"$ids")"
}

stop_cluster() {
  local pids=() jobs=() left n pid
  if ctld_pid >/dev/null; then cancel_all_jobs; fi
  # Whatever the cancel did not end (e.g. slurmctld was already dead): kill job processes.
  mapfile -t jobs < <(job_processes)
  if ((${#jobs[@]})); then
    say "killing ${#jobs[@]} leftover job process(es)"
    kill -KILL "${jobs[@]}" 2>/dev/null || true
  fi
  # slurmd's first, slurmctld next, munged (which both need) last.
  for n in "${NODES[@]}"; do pid=$(slurmd_pid "$n") && pids+=("$pid"); done
  pid=$(ctld_pid) && pids+=("$pid")
  pid=$(munged_pid) && pids+=("$pid")
  mapfile -t -O "${#pids[@]}" pids < <(stray_daemons)
  if ((${#pids[@]})); then
    mapfile -t pids < <(printf '%s\n' "${pids[@]}" | awk '!seen[$0]++')
    say "stopping ${#pids[@]} daemon(s)"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    if ! left=$(wait_gone 15 "${pids[@]}"); then
      say "still alive after SIGTERM, sending SIGKILL: $left"
      read -ra pids <<<"$left"
      kill -KILL "${pids[@]}" 2>/dev/null || true
      left=$(wait_gone 5 "${pids[@]}") || die "could not stop pid(s): $left"
    fi
    # Job processes can survive their slurmd; catch any that started meanwhile.
    mapfile -t jobs < <(job_processes)
    if ((${#jobs[@]})); then kill -KILL "${jobs[@]}" 2>/dev/null || true; fi
  fi
  rm -f "$STATE_DIR"/run/*.pid "$MUNGE_DIR/munged.pid"
  if ((${#pids[@]} + ${#jobs[@]})); then say "stopped"; else say "not running"; fi
}

make_gpu_devices() {
  local i dev
  mkdir -p "$STATE_DIR/dev"
  for i in 0 1; do
    dev=$STATE_DIR/dev/nvidia$i
    [[ -c $dev ]] && continue
    rm -f "$dev"
    # GRES needs character devices (plain files are rejected); same numbers as /dev/null.
    # Without CAP_MKNOD, a symlink to /dev/null is also a character device to slurmd.
    mknod "$dev" c 1 3 2>/dev/null || ln -s /dev/null "$dev"
  done
}

start_munged() {
  # Others must be able to reach the socket; the key itself is 0400.
  install -d -o munge -g munge -m 0755 "$MUNGE_DIR"
  if [[ ! -s $MUNGE_DIR/munge.key ]]; then
    (umask 077 && dd if=/dev/urandom of="$MUNGE_DIR/munge.key" bs=1024 count=1 status=none)
  fi
  chown munge:munge "$MUNGE_DIR/munge.key"
  chmod 0400 "$MUNGE_DIR/munge.key"
  rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
  # A private munged (own key and socket, found by slurm through AuthInfo) leaves any system
  # munge alone. It runs as the munge user; --force accepts a state dir under a group-writable
  # path, which is fine for a throwaway test cluster.
  spawn "$STATE_DIR/log/munged.out" runuser -u munge -- /usr/sbin/munged --force \
    --socket="$MUNGE_SOCKET" --key-file="$MUNGE_DIR/munge.key" \
    --pid-file="$MUNGE_DIR/munged.pid" --seed-file="$MUNGE_DIR/munged.seed" \
    --log-file="$STATE_DIR/log/munged.log" ||
    die "munged did not start; see $STATE_DIR/log/munged.out and munged.log"
  munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET" >/dev/null ||
    die "munge does not work; see $STATE_DIR/log/munged.log"
}

# Runs daemon command $2... with its early output (before it opens its log) in file $1 and with
# no other inherited fd: a daemon holding the lock file or a caller's pipe would block them.
spawn() {
  local out=$1 fd
  shift
  (
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      ((fd > 2)) && exec {fd}>&-
    done
    exec "$@"
  ) </dev/null >"$out" 2>&1
}

wait_for() {  # timeout command...: true once command succeeds within timeout seconds
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

ctld_up() { [[ $(timeout 5 scontrol ping 2>/dev/null) == *UP* ]]; }

all_idle() {
  local states n
  states=$(timeout 5 sinfo -h -N -o '%N %t' 2>/dev/null) || return 1
  for n in "${NODES[@]}"; do grep -qx "$n idle" <<<"$states" || return 1; done
}

start_cluster() {
  local busy=() listening port i n t0=${EPOCHREALTIME/,/.} logs=$STATE_DIR/log
  install_packages
  if [[ -z $(problems) ]] && config_current; then
    say "already running"
    print_info
    return 0
  fi
  stop_cluster

  listening=$(listening_ports)
  for port in "$CTLD_PORT" $(for i in "${!NODES[@]}"; do node_port "$i"; done); do
    grep -qx "$port" <<<"$listening" && busy+=("$port")
  done
  ((${#busy[@]} == 0)) ||
    die "port(s) ${busy[*]} already in use; set SLURM_HOG_CLUSTER_PORT to another base port"

  # Fresh state each time: clean job state, spool and logs (the previous logs are kept as .old).
  rm -rf "$STATE_DIR/ctld" "$STATE_DIR/spool" "$STATE_DIR/run" "$STATE_DIR/log.old"
  [[ -d $logs ]] && mv "$logs" "$STATE_DIR/log.old"
  mkdir -p "$STATE_DIR/etc" "$STATE_DIR/ctld" "$STATE_DIR/run" "$logs"
  for n in "${NODES[@]}"; do mkdir -p "$STATE_DIR/spool/$n"; done
  # munged runs as the munge user and must be able to write its log.
  install -o munge -g munge -m 0640 /dev/null "$logs/munged.log"
  slurm_conf >"$CONF"
  gres_conf >"$STATE_DIR/etc/gres.conf"
  make_gpu_devices

  start_munged
  spawn "$logs/slurmctld.out" slurmctld -c -f "$CONF" ||
    die "slurmctld did not start: $(cat "$logs/slurmctld.out") (see $logs/slurmctld.log)"
  wait_for 30 ctld_up || die "slurmctld does not answer after 30 s; see $logs/slurmctld.log"
  for n in "${NODES[@]}"; do
    spawn "$logs/slurmd-$n.out" slurmd -N "$n" -f "$CONF" ||
      die "slurmd $n did not start: $(cat "$logs/slurmd-$n.out") (see $logs/slurmd-$n.log)"
  done
  if ! wait_for "$START_TIMEOUT" all_idle; then
    timeout 5 sinfo -N >&2 || true
    die "nodes not idle after ${START_TIMEOUT} s: $(problems | tr '\n' ';') logs: $logs/slurmctld.log $logs/slurmd-*.log"
  fi
  say "started in $(awk -v a="$t0" -v b="${EPOCHREALTIME/,/.}" 'BEGIN { printf "%.1f", b - a }') s"
  print_info
}

status_cluster() {
  local p
  p=$(problems)
  if [[ -n $p ]]; then
    printf 'slurm-cluster: not up: %s\n' "${p//$'\n'/; }" >&2
    return 1
  fi
  sinfo -N
}

print_env() {
  printf 'export SLURM_CONF=%q\n' "$CONF"
  printf 'export SLURM_HOG_CLUSTER_DIR=%q\n' "$STATE_DIR"
}

# start and stop change the state: one at a time (tests may run several in parallel).
locked() {
  mkdir -p "$STATE_DIR"
  exec 9>"$STATE_DIR/lock"
  flock -w 300 9 || die "another start/stop holds $STATE_DIR/lock"
  "$@"
}

case ${1:-} in
  start) locked start_cluster ;;
  stop) locked stop_cluster ;;
  status) status_cluster ;;
  env) print_env ;;
  *)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
