#!/usr/bin/env bash
# A demo of netd's main job, in a throwaway network namespace (a "demo host") with its own
# netd and directories; nothing outside it changes, and everything is removed at the end.
#   mynet is created, two sandboxes on it ping each other, and one reaches the "internet"
#   (a second namespace) through NAT.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "error: run as root (the demo creates network namespaces)" >&2; exit 1; }
scripts/install-test-deps.sh
cargo build --release --bins -q
BIN=$PWD/target/release

HOST=netd-demo-$$
INET=$HOST-inet
DIR=$(mktemp -d /tmp/netd-demo.XXXXXX)
NETD_PID=
cleanup() {
  set +e
  if [ -S "$DIR/run/netd.sock" ]; then
    for id in $(in_host "$BIN/netctl" --socket "$DIR/run/netd.sock" ps -q 2>/dev/null); do
      in_host "$BIN/netctl" --socket "$DIR/run/netd.sock" rm -f "$id" >/dev/null
    done
  fi
  [ -n "$NETD_PID" ] && kill "$NETD_PID" 2>/dev/null && wait "$NETD_PID" 2>/dev/null
  ip netns del "$INET" 2>/dev/null
  ip netns del "$HOST" 2>/dev/null
  rm -rf "$DIR"
}
trap cleanup EXIT
in_host() { nsenter --net="/run/netns/$HOST" "$@"; }
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

ip netns add "$HOST"; ip netns add "$INET"
in_host ip link set lo up
in_host ip link add uplink type veth peer name wan netns "$INET"
in_host ip addr add 198.51.100.2/24 dev uplink; in_host ip link set uplink up
in_host ip route add default via 198.51.100.1
ip -n "$INET" addr add 198.51.100.1/24 dev wan; ip -n "$INET" link set wan up; ip -n "$INET" link set lo up

# nsenter execs netd, so $! is netd's own pid.
nsenter --net="/run/netns/$HOST" "$BIN/netd" --root "$DIR/root" --run-dir "$DIR/run" >"$DIR/netd.log" 2>&1 &
NETD_PID=$!
for _ in $(seq 100); do [ -S "$DIR/run/netd.sock" ] && break; sleep 0.05; done
export NETD_SOCKET=$DIR/run/netd.sock
netctl() { step "netctl $*"; in_host "$BIN/netctl" "$@"; }

netctl network ls
netctl network create --subnet 10.1.0.0/24 mynet
netctl run -d --name web --network mynet
netctl run -d --name client --network mynet
netctl ps
netctl exec client -- ping -c 2 10.1.0.2
netctl exec web -- ping -c 2 198.51.100.1
netctl exec web -- ip route
netctl network inspect mynet
netctl rm -f web client
netctl network rm mynet
printf '\ndemo done: netd log in this run:\n'; sed 's/^/  /' "$DIR/netd.log"
