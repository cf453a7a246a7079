#!/usr/bin/env bash
# Bring up a throwaway single-node SLURM cluster on loopback for kdbench's launcher tests:
# Debian's slurmctld + slurmd + slurmdbd (with a private MariaDB, so sacct works: submitit needs it),
# munge, and fake GPUs as GRES. Idempotent: a healthy cluster is left as it is (~1 s).
# Prints "READY ..." on success; on failure the daemons' log tails and exit 1.
# Root only. Everything lives under $KDBENCH_SLURM_DIR (default /tmp/kdbench-slurm); configuration
# goes to /etc/slurm so that sbatch/srun/sacct (and submitit) work without SLURM_CONF.
# What it changes outside that directory is recorded there, for tools/slurm/down.sh to undo: the
# /etc/slurm files it overwrites (backed up under $DIR/backup on first start, restored by down.sh),
# the /etc/hosts line it may add ($DIR/run/hosts-line), and munged only when it started it
# ($DIR/run/munged.pid). A cluster that was already healthy is reported "READY (already running)".
# Knobs: KDBENCH_SLURM_CPUS (default 8: oversubscribes the cores so tests can run several jobs),
#        KDBENCH_SLURM_GPUS (fake GPUs, default 2), KDBENCH_SLURM_TIMEOUT (default 120 s),
#        KDBENCH_SLURM_NODES (default 1; with more, each node's slurmd runs in its own network and
#        host-name namespace with its own address, tools/slurm/nodes.sh; CPUs and GPUs are per node).
set -Eeuo pipefail
exec </dev/null
DIR=${KDBENCH_SLURM_DIR:-/tmp/kdbench-slurm}
CPUS=${KDBENCH_SLURM_CPUS:-8}
GPUS=${KDBENCH_SLURM_GPUS:-2}
WAIT=${KDBENCH_SLURM_TIMEOUT:-120}
NODES=${KDBENCH_SLURM_NODES:-1}
DB_PORT=3307
NODE=$(hostname -s)
PACKAGES=(munge slurm-client slurmctld slurmd slurmdbd mariadb-server)

say() { printf '[slurm-up %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
fail() {
  echo "[slurm-up] ERROR: $*" >&2
  for f in "$DIR"/log/*.log "$DIR"/munge/*.log; do [ -s "$f" ] && { echo "--- tail $f" >&2; tail -n 20 "$f" >&2; }; done
  exit 1
}
trap 'fail "line $LINENO: $BASH_COMMAND"' ERR
[ "$(id -u)" = 0 ] || fail "must run as root"
[[ $NODES =~ ^[1-8]$ ]] || fail "KDBENCH_SLURM_NODES=$NODES: give a node count from 1 to 8"
# shellcheck source=tools/slurm/nodes.sh
source "$(dirname "$0")/nodes.sh"
if [ "$NODES" -gt 1 ]; then
  NODE_NAMES=(); for i in $(seq 1 "$NODES"); do NODE_NAMES+=("$(node_name "$i")"); done
  NODE_LIST="$(node_name "[1-$NODES]")"; CTLD_ADDR="$SUBNET.1"
else
  NODE_NAMES=("$NODE"); NODE_LIST=$NODE; CTLD_ADDR=127.0.0.1
fi
# slurmd_pid NAME: node NAME's slurmd pid file (one node keeps the name it always had).
slurmd_pid() { if [ "$NODES" -gt 1 ]; then echo "$DIR/run/slurmd-$1.pid"; else echo "$DIR/run/slurmd.pid"; fi; }

# alive PIDFILE NAME: the process in PIDFILE exists, is not a zombie, and is NAME.
alive() {
  local pid; pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] && [ "$(awk '{print $3}' "/proc/$pid/stat")" != Z ] \
    && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$2" ]
}
until_ok() {  # until_ok SECONDS WHAT COMMAND...
  local end=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do [ "$(date +%s)" -lt "$end" ] || fail "timed out waiting for $what"; sleep 0.2; done
}
healthy() {
  local name
  alive "$DIR/run/slurmctld.pid" slurmctld && alive "$DIR/run/slurmdbd.pid" slurmdbd \
    && scontrol ping 2>/dev/null | grep -q UP || return 1
  for name in "${NODE_NAMES[@]}"; do
    alive "$(slurmd_pid "$name")" slurmd && sinfo -h -n "$name" -o %T 2>/dev/null \
      | grep -Eq '^(idle|mixed|allocated|completing)' || return 1
  done
}

missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  say "apt: installing ${missing[*]} (10-40 s)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
fi
mkdir -p "$DIR"/{run,log,ctld,spool,gpu,mysql,mysqlrun,backup}
# add_host NAME ADDRESS: NAME resolves (to ADDRESS if this script has to add it to /etc/hosts).
add_host() {
  getent hosts "$1" >/dev/null && return 0
  local hosts_line="$2 $1  # added by kdbench tools/slurm/up.sh ($DIR)"
  say "$1 does not resolve: adding it to /etc/hosts (down.sh removes it)"
  printf '%s\n' "$hosts_line" >> /etc/hosts
  printf '%s\n' "$hosts_line" >> "$DIR/run/hosts-line"
}
add_host "$NODE" 127.0.0.1
if [ "$NODES" -gt 1 ]; then for i in $(seq 1 "$NODES"); do add_host "$(node_name "$i")" "$(node_addr "$i")"; done; fi

# Configuration (restart the daemons when it changes).
[ -d /etc/slurm ] || { mkdir -p /etc/slurm; : > "$DIR/backup/etc-slurm-created"; }
header="# written by kdbench tools/slurm/up.sh for $DIR/ (tools/slurm/down.sh puts back what was here)"
gres_line=""; gres_conf="$header
AutoDetect=off"
if [ "$GPUS" -gt 0 ]; then
  gres_line="Gres=gpu:$GPUS"
  for i in $(seq 0 $((GPUS - 1))); do [ -e "$DIR/gpu/fakegpu$i" ] || mknod -m 666 "$DIR/gpu/fakegpu$i" c 1 3; done
  gres_conf="$gres_conf
NodeName=$NODE_LIST Name=gpu File=$DIR/gpu/fakegpu[0-$((GPUS - 1))]"
fi
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) * 9 / 10 / 1024 / NODES ))
if [ "$NODES" -gt 1 ]; then
  slurmd_files="SlurmdSpoolDir=$DIR/spool/%n
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmdLogFile=$DIR/log/slurmd-%n.log"
  node_lines=$(for i in $(seq 1 "$NODES"); do
    echo "NodeName=$(node_name "$i") NodeAddr=$(node_addr "$i") NodeHostname=$(node_name "$i") CPUs=$CPUS RealMemory=$mem_mb $gres_line State=UNKNOWN"
  done)
else
  slurmd_files="SlurmdSpoolDir=$DIR/spool
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmdLogFile=$DIR/log/slurmd.log"
  node_lines="NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$CPUS RealMemory=$mem_mb $gres_line State=UNKNOWN"
fi
overrides=""; [ "$CPUS" -gt "$(nproc)" ] && overrides="SlurmdParameters=config_overrides"
# SlurmdTimeout=20 (SLURM's default: 300 s): a node whose slurmd stops answering is set DOWN, and its
# jobs requeued, within about half a minute instead of five, so the test that kills slurmd has a
# bound that fits a test run; 20 s still leaves a busy 2-core machine room to answer the pings.
slurm_conf="$header
ClusterName=kdbench
SlurmctldHost=$NODE($CTLD_ADDR)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/ctld
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
$slurmd_files
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
EnforcePartLimits=ALL
KillWait=5
SlurmdTimeout=20
MailProg=/bin/true
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
GresTypes=gpu
$overrides
$node_lines
PartitionName=debug Nodes=$NODE_LIST Default=YES MaxTime=INFINITE State=UP"
dbd_conf="$header
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=kdbench
StorageLoc=slurm_acct_db"
changed=0
# ours FILE: written by this script for this directory (every file it writes names $DIR/).
ours() { [ -f "$1" ] && grep -qF -- "$DIR/" "$1"; }
# keep_original FILE: before this cluster first writes FILE, a copy of what was there goes to
# $DIR/backup/FILE, or $DIR/backup/FILE.absent notes that nothing was; down.sh puts it back.
keep_original() {
  local saved="$DIR/backup$1"
  [ -e "$saved" ] || [ -e "$saved.absent" ] && return 0
  mkdir -p "$(dirname "$saved")"
  if [ -e "$1" ] && ! ours "$1"; then cp -a "$1" "$saved"; say "saved the existing $1 in $saved (down.sh restores it)"
  else : > "$saved.absent"; fi
}
write_conf() {  # write_conf FILE CONTENT MODE
  if [ "$(cat "$1" 2>/dev/null)" != "$2" ]; then keep_original "$1"; printf '%s\n' "$2" > "$1"; changed=1; fi
  chmod "$3" "$1"
}
write_conf /etc/slurm/slurm.conf "$slurm_conf" 644
write_conf /etc/slurm/gres.conf "$gres_conf" 644
write_conf /etc/slurm/slurmdbd.conf "$dbd_conf" 600
if [ "$changed" = 0 ] && healthy; then
  say "READY (already running): $NODES node(s) $NODE_LIST, $CPUS cpus, $GPUS fake gpus each"; exit 0
fi
if [ "$changed" = 1 ]; then
  for f in "$DIR"/run/slurmd*.pid "$DIR/run/slurmctld.pid"; do
    d=$(basename "$f" .pid); d=${d%%-*}
    alive "$f" "$d" && kill "$(cat "$f")" || true
  done
  # slurmctld saves its state before it exits (seen: more than a second): a fixed pause could find it
  # still alive below, which would then not start it, and wait for it in vain.
  stopped() {
    local f; for f in "$DIR"/run/slurmd*.pid; do alive "$f" slurmd && return 1; done
    ! alive "$DIR/run/slurmctld.pid" slurmctld
  }
  until_ok 30 "slurmd and slurmctld to stop" stopped
  [ "$NODES" -gt 1 ] || nodes_down   # the namespaces of an earlier cluster of several nodes
fi

# The nodes' namespaces and the bridge before any daemon starts: the daemons bind to this machine's
# addresses, and the controller's is the bridge's.
if [ "$NODES" -gt 1 ]; then nodes_up "$NODES"; fi   # not in an && list: a failure there stops the script

# munge
[ -s /etc/munge/munge.key ] || mungekey --create
mkdir -p /run/munge "$DIR/munge" && chown munge:munge /run/munge "$DIR/munge"
alive "$DIR/run/munged.pid" munged || rm -f "$DIR/run/munged.pid"   # only a munged this script started
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "starting munged"
  runuser -u munge -- /usr/sbin/munged --force --log-file="$DIR/munge/munged.log" >/dev/null 2>&1
  until_ok 20 munge sh -c 'munge -n | unmunge'
  cp /run/munge/munged.pid "$DIR/run/munged.pid"
fi

# private MariaDB on 127.0.0.1:$DB_PORT for slurmdbd
SOCK=$DIR/mysqlrun/mysqld.sock
if ! alive "$DIR/mysqlrun/mysqld.pid" mariadbd; then
  chown -R mysql:mysql "$DIR/mysql" "$DIR/mysqlrun"
  if [ ! -d "$DIR/mysql/mysql" ]; then
    say "initialising MariaDB in $DIR/mysql"
    mariadb-install-db --no-defaults --user=mysql --datadir="$DIR/mysql" --skip-test-db \
      --auth-root-authentication-method=socket >"$DIR/log/mysql-install.log" 2>&1
  fi
  say "starting MariaDB"
  setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DIR/mysql" --socket="$SOCK" \
    --pid-file="$DIR/mysqlrun/mysqld.pid" --bind-address=127.0.0.1 --port=$DB_PORT --skip-name-resolve \
    --innodb-buffer-pool-size=64M --log-error="$DIR/log/mysqld.log" </dev/null >/dev/null 2>&1 &
  until_ok 60 MariaDB mariadb-admin --socket="$SOCK" ping
fi
mariadb --socket="$SOCK" -u root -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'kdbench';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"

# slurm daemons (they daemonize themselves)
if ! alive "$DIR/run/slurmdbd.pid" slurmdbd; then say "starting slurmdbd"; /usr/sbin/slurmdbd </dev/null >/dev/null 2>&1; fi
until_ok 30 slurmdbd sacctmgr -n show cluster
cold=0
if ! alive "$DIR/run/slurmctld.pid" slurmctld; then
  say "starting slurmctld"; /usr/sbin/slurmctld -i </dev/null >/dev/null 2>&1; cold=1
fi
if [ "$NODES" -gt 1 ]; then
  for i in $(seq 1 "$NODES"); do
    alive "$(slurmd_pid "$(node_name "$i")")" slurmd || { say "starting slurmd of $(node_name "$i") ($(node_addr "$i"))"; start_node_slurmd "$i"; }
  done
elif ! alive "$DIR/run/slurmd.pid" slurmd; then say "starting slurmd"; /usr/sbin/slurmd </dev/null >/dev/null 2>&1; fi
until_ok "$WAIT" "slurmctld to answer" sh -c 'scontrol ping | grep -q UP'
# A cold start finds the jobs an earlier session left in the saved state (their files may be gone):
# this cluster is throwaway, so they are cancelled rather than run again.
if [ "$cold" = 1 ] && [ -n "$(squeue -h -o %i 2>/dev/null)" ]; then
  say "cancelling jobs left over from an earlier session"; scancel --quiet -u root || true
fi
# A node drained by an earlier session (a step that outlived its daemons) is put back in service.
node_usable() {
  local state; state=$(sinfo -h -n "$1" -o %T 2>/dev/null || true)
  case "$state" in
    idle|mixed|allocated|completing) return 0;;
    *drain*|*inval*|*down*|*fail*) scontrol update nodename="$1" state=resume >/dev/null 2>&1 || true;;
  esac
  return 1
}
for name in "${NODE_NAMES[@]}"; do until_ok "$WAIT" "node $name to be idle" node_usable "$name"; done
until_ok 30 "cluster registration" sh -c 'sacctmgr -n -P show cluster format=cluster,controlhost | grep -q "^kdbench|$CTLD_ADDR"'
ran=$(timeout 60 srun -N "$NODES" -t 1 hostname | sort -u | tr '\n' ' ') || fail "srun hostname did not run"
[ "$(wc -w <<<"$ran")" = "$NODES" ] || fail "srun -N $NODES ran on $ran"
say "READY: $NODES node(s) $NODE_LIST ($ran), $CPUS cpus, $GPUS fake gpus each, accounting on (logs in $DIR/log)"
