#!/usr/bin/env bash
# A demo of netd's main job, in a throwaway network namespace (a "demo host") with its own
# netd and directories; nothing outside it changes, and everything is removed at the end.
#   mynet is created; two sandboxes on it reach each other by address and by name (netd's
#   DNS), one reaches the "internet" (a second namespace, with its own DNS server) through
#   NAT and by name, and a port it publishes answers a client in the "internet".
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
DNSMASQ_PID=
cleanup() {
  set +e
  if [ -S "$DIR/run/netd.sock" ]; then
    for id in $(in_host "$BIN/netctl" --socket "$DIR/run/netd.sock" ps -q 2>/dev/null); do
      in_host "$BIN/netctl" --socket "$DIR/run/netd.sock" rm -f "$id" >/dev/null
    done
  fi
  [ -n "$NETD_PID" ] && kill "$NETD_PID" 2>/dev/null && wait "$NETD_PID" 2>/dev/null
  [ -n "$DNSMASQ_PID" ] && kill "$DNSMASQ_PID" 2>/dev/null && wait "$DNSMASQ_PID" 2>/dev/null
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

# The "internet" has a resolver that knows one name; it is the demo host's only upstream.
nsenter --net="/run/netns/$INET" dnsmasq --conf-file=/dev/null --keep-in-foreground --no-resolv \
  --no-hosts --bind-interfaces --listen-address=198.51.100.1 --pid-file= --user=root --group=root \
  --host-record=www.example.test,198.51.100.1 >/dev/null 2>&1 &
DNSMASQ_PID=$!
echo "nameserver 198.51.100.1" > "$DIR/resolv.conf"

# nsenter execs netd, so $! is netd's own pid.
nsenter --net="/run/netns/$HOST" "$BIN/netd" --root "$DIR/root" --run-dir "$DIR/run" \
  --resolv-conf "$DIR/resolv.conf" >"$DIR/netd.log" 2>&1 &
NETD_PID=$!
for _ in $(seq 100); do [ -S "$DIR/run/netd.sock" ] && break; sleep 0.05; done
export NETD_SOCKET=$DIR/run/netd.sock
netctl() { step "netctl $*"; in_host "$BIN/netctl" "$@"; }

netctl network ls
netctl network create --subnet 10.1.0.0/24 mynet
netctl run -d --name web --network mynet --alias www -p 8080:80 -- \
  socat TCP-LISTEN:80,fork,reuseaddr "SYSTEM:echo hello from web"
netctl run -d --name client --network mynet
netctl ps
netctl exec client -- ping -c 2 10.1.0.2
netctl exec client -- cat /etc/resolv.conf
netctl exec client -- ping -c 2 web
netctl exec client -- getent hosts www.netd.internal
netctl exec web -- ping -c 2 www.example.test
netctl exec web -- ip route
netctl port web
step "(in the internet) socat - TCP:198.51.100.2:8080"
nsenter --net="/run/netns/$INET" timeout 5 socat -T2 - TCP:198.51.100.2:8080,connect-timeout=2
netctl network inspect mynet
netctl rm -f web client
netctl network rm mynet
printf '\ndemo done: netd log in this run:\n'; sed 's/^/  /' "$DIR/netd.log"
