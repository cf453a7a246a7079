# Sourced by tools/slurm/up.sh and down.sh: the nodes of a local test cluster of several nodes
# (KDBENCH_SLURM_NODES > 1). Each node is a network namespace, kdbench-node<i>, joined to a bridge on
# this machine (kdbench0, 10.77.0.1/24: where slurmctld answers) by a veth pair, with its own address
# (10.77.0.<i+1>) and, for its slurmd and everything slurmd starts, its own host name (a UTS namespace):
# what the jobs see is two machines that share this machine's file system, as a real cluster's nodes
# share theirs. Nothing leaves this machine. What is created is recorded in $DIR/run/netns, so that
# down.sh (or an up.sh with another node count) removes exactly that.
BRIDGE=kdbench0
SUBNET=10.77.0
node_name() { printf 'kdbench-node%s' "$1"; }
node_addr() { printf '%s.%s' "$SUBNET" $(( $1 + 1 )); }

nodes_up() {  # nodes_up COUNT
  local i ns
  ip link show "$BRIDGE" >/dev/null 2>&1 || {
    ip link add "$BRIDGE" type bridge
    ip addr add "$SUBNET.1/24" dev "$BRIDGE"
  }
  ip link set "$BRIDGE" up
  grep -qx "bridge $BRIDGE" "$DIR/run/netns" 2>/dev/null || echo "bridge $BRIDGE" >> "$DIR/run/netns"
  for i in $(seq 1 "$1"); do
    ns=$(node_name "$i")
    # A node whose namespace lacks its address (an earlier namespace kept alive by a process left in it
    # keeps the host end of its veth pair) is made again from scratch: its leftovers go first.
    if ! ip netns exec "$ns" ip -4 addr show dev eth0 2>/dev/null | grep -qF " $(node_addr "$i")/"; then
      node_down "$ns"
      ip link del "kdv$i" 2>/dev/null || true
      ip netns add "$ns"
      ip link add "kdv$i" type veth peer name eth0 netns "$ns"
      ip link set "kdv$i" master "$BRIDGE" up
      ip netns exec "$ns" ip addr add "$(node_addr "$i")/24" dev eth0
      ip netns exec "$ns" ip link set eth0 up
      ip netns exec "$ns" ip link set lo up
    fi
    grep -qx "netns $ns" "$DIR/run/netns" 2>/dev/null || echo "netns $ns" >> "$DIR/run/netns"
  done
}

# nodes_down: stop every process left in the recorded namespaces (only this cluster's: slurmd, its
# steps, their tasks), then remove the namespaces (their veth ends go with them) and the bridge.
# node_down NAME: stop what runs in the node's namespace, then remove the namespace.
# Under up.sh's `set -e`, every step may fail harmlessly (the namespace may not exist).
node_down() {
  local pids
  pids=$( (ip netns pids "$1" 2>/dev/null || true) | tr '\n' ' ')
  if [ -n "$pids" ]; then kill $pids 2>/dev/null || true; sleep 1; kill -9 $pids 2>/dev/null || true; fi
  ip netns del "$1" 2>/dev/null || true
}

nodes_down() {
  [ -s "$DIR/run/netns" ] || return 0
  local kind name
  while read -r kind name; do
    [ "$kind" = netns ] && node_down "$name"
  done < "$DIR/run/netns"
  while read -r kind name; do [ "$kind" = bridge ] && ip link del "$name" 2>/dev/null; done < "$DIR/run/netns"
  rm -f "$DIR/run/netns"
  true
}

# start_node_slurmd I: node I's slurmd inside its namespace, with the node's host name.
start_node_slurmd() {
  local name; name=$(node_name "$1")
  # nsenter, not `ip netns exec`: that mounts a fresh /sys for the namespace, without the cgroup file
  # system slurmd reads.
  nsenter --net="/run/netns/$name" unshare --uts sh -c "hostname $name && exec /usr/sbin/slurmd -N $name" \
    </dev/null >/dev/null 2>&1
}
