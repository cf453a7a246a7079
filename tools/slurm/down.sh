#!/usr/bin/env bash
# Stop what tools/slurm/up.sh started (and nothing else): cancel the cluster's jobs, then stop
# slurmd, slurmctld, slurmdbd, MariaDB and munged through their pid files.
set -uo pipefail
exec </dev/null
DIR=${KDBENCH_SLURM_DIR:-/tmp/kdbench-slurm}
pid_of() { local p; p=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$p" ] && [ -r "/proc/$p/stat" ] && [ "$(awk '{print $3}' "/proc/$p/stat")" != Z ] && echo "$p"; }
command -v scancel >/dev/null && scancel --cluster=kdbench --full --quiet -u root 2>/dev/null
stop() {  # stop PIDFILE
  local p; p=$(pid_of "$1") || return 0
  kill "$p" 2>/dev/null
  for _ in $(seq 50); do pid_of "$1" >/dev/null || return 0; sleep 0.1; done
  kill -9 "$p" 2>/dev/null; true
}
for f in slurmd slurmctld slurmdbd; do stop "$DIR/run/$f.pid"; done
pkill -KILL -x slurmstepd 2>/dev/null   # steps of this cluster's jobs that outlived slurmd
stop "$DIR/mysqlrun/mysqld.pid"
munged_pid=$(pgrep -u munge -x munged || true)
[ -n "$munged_pid" ] && kill $munged_pid 2>/dev/null
echo "[slurm-down] stopped"
exit 0
