#!/usr/bin/env bash
# Stop what tools/slurm/up.sh started (and nothing else) and undo what it changed outside its
# directory: cancel this cluster's jobs; stop slurmd (each node's), slurmctld, slurmdbd, MariaDB, and
# munged only if up.sh started it, through the pid files under $DIR; stop the slurmstepd processes of
# this cluster's jobs (those bound to a socket in $DIR/spool or with a file of $DIR open, and every
# process left in the namespaces of a cluster of several nodes), never others; remove those namespaces;
# put back the /etc/slurm files up.sh replaced and remove the /etc/hosts line it added.
set -uo pipefail
exec </dev/null
DIR=${KDBENCH_SLURM_DIR:-/tmp/kdbench-slurm}
say() { printf '[slurm-down] %s\n' "$*"; }
pid_of() {  # pid_of PIDFILE NAME: the live (not zombie) process in PIDFILE, if it is NAME
  local p; p=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$p" ] && [ -r "/proc/$p/stat" ] && [ "$(awk '{print $3}' "/proc/$p/stat")" != Z ] \
    && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] && echo "$p"
}
running() { [ -r "/proc/$1/stat" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; }
stop_pid() {  # stop_pid PID: TERM, then KILL after 5 s
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 50); do running "$1" || return 0; sleep 0.1; done
  kill -9 "$1" 2>/dev/null; true
}
stop() {  # stop PIDFILE NAME
  local p; p=$(pid_of "$1" "$2") && stop_pid "$p"
  rm -f "$1"
}
# This cluster's slurmstepd processes: bound to a socket in $DIR/spool, or holding a file of $DIR open.
our_stepds() {
  local inodes p
  inodes=$(awk -v d="$DIR/spool/" 'index($8, d) == 1 {print "socket:[" $7 "]"}' /proc/net/unix 2>/dev/null)
  for p in $(pgrep -x slurmstepd); do
    running "$p" || continue
    for fd in /proc/"$p"/fd/*; do
      link=$(readlink "$fd" 2>/dev/null) || continue
      if [[ $link == "$DIR/"* ]] || { [ -n "$inodes" ] && grep -qxF -- "$link" <<<"$inodes"; }; then echo "$p"; break; fi
    done
  done
}

if pid_of "$DIR/run/slurmctld.pid" slurmctld >/dev/null && command -v scancel >/dev/null; then
  scancel --full --quiet -u root 2>/dev/null
  for _ in $(seq 100); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.1; done
fi
stepds=$(our_stepds)   # before slurmd stops: its socket and log name them
for f in "$DIR"/run/slurmd-*.pid; do [ -e "$f" ] && stop "$f" slurmd; done   # a cluster of several nodes
for f in slurmd slurmctld slurmdbd; do stop "$DIR/run/$f.pid" "$f"; done
# shellcheck source=tools/slurm/nodes.sh
source "$(dirname "$0")/nodes.sh"
nodes_down   # what is left in the nodes' namespaces (their steps), then the namespaces and the bridge
for p in $stepds $(our_stepds); do running "$p" && { say "stopping slurmstepd $p (a step of this cluster's jobs)"; stop_pid "$p"; }; done
left=$(for p in $(pgrep -x slurmstepd); do running "$p" && printf '%s ' "$p"; done)
[ -n "$left" ] && say "warning: slurmstepd process(es) not of this cluster left running: $left"
stop "$DIR/mysqlrun/mysqld.pid" mariadbd
if [ -e "$DIR/run/munged.pid" ]; then stop "$DIR/run/munged.pid" munged
else pgrep -x munged >/dev/null && say "munged was running before up.sh: left running"; fi

# /etc/slurm: the files up.sh replaced go back; those it created go, if they are still its own.
if [ -d "$DIR/backup/etc" ]; then
  while IFS= read -r saved; do
    target=${saved#"$DIR/backup"}
    if [[ $saved == *.absent ]]; then
      target=${target%.absent}
      if [ -f "$target" ] && grep -qF -- "$DIR/" "$target"; then rm -f "$target"; fi
      rm -f "$saved"
    elif [ ! -e "$target" ] || grep -qF -- "$DIR/" "$target"; then
      cp -a "$saved" "$target" && rm -f "$saved" && say "restored $target"
    else
      say "warning: $target was changed by someone else since up.sh: left as it is (original in $saved)"
    fi
  done < <(find "$DIR/backup/etc" -type f)
  find "$DIR/backup/etc" -depth -type d -empty -delete 2>/dev/null
fi
if [ -e "$DIR/backup/etc-slurm-created" ]; then
  rmdir /etc/slurm 2>/dev/null; rm -f "$DIR/backup/etc-slurm-created"
fi
# /etc/hosts: only the line up.sh added (the file is rewritten in place: it may be a bind mount).
if [ -s "$DIR/run/hosts-line" ]; then
  line=$(cat "$DIR/run/hosts-line")
  if grep -qxF -- "$line" /etc/hosts; then
    kept=$(grep -vxF -- "$line" /etc/hosts)
    printf '%s\n' "$kept" > /etc/hosts && say "removed '$line' from /etc/hosts"
  fi
  rm -f "$DIR/run/hosts-line"
fi
say "stopped"
exit 0
