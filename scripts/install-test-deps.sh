#!/usr/bin/env bash
# Installs the system packages netd's tests and demo use (Debian/Ubuntu, as root).
set -euo pipefail
# dnsutils: dig; dnsmasq-base: the upstream resolver of the DNS tests; python3: their
# hand-made bad requests.
# containernetworking-plugins: the reference CNI plugins the CNI tests mix with ours.
# containerd, runc, busybox-static (the pause image), python3-grpcio and python3-protobuf
# (the CRI client): the test that runs our plugins under containerd's CRI.
# protobuf-compiler and libprotobuf-dev (google/protobuf/*.proto): protoc, which the
# etcd-client crate runs at build time; etcd-server and
# etcd-client: the store the multi-host tests start on test-host addresses; openssl: the
# certificates of the TLS one; python3-docker: the Docker SDK the Docker API test drives;
# ipset: the kernel sets network policy matches on. systemd: systemd-analyze (verifying
# the units) and systemd-socket-activate; binutils: strip, for the Debian package; passwd:
# the users and group of the socket access test; python3-prometheus-client: the parser
# the metrics test reads /metrics with.
packages=(iptables iproute2 iputils-ping socat util-linux procps conntrack dnsutils dnsmasq-base python3 openssl
  containernetworking-plugins containerd runc busybox-static python3-grpcio python3-protobuf
  protobuf-compiler libprotobuf-dev etcd-server etcd-client python3-docker ipset systemd binutils passwd python3-prometheus-client)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The docker CLI (the client alone), taken out of Debian's docker.io package without
# installing it, so that no dockerd is set up or started: the Docker API test runs it.
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -x "$root/target/test-tools/docker" ]; then
  tmp="$(mktemp -d)"
  (cd "$tmp" && apt-get download -q docker.io >/dev/null 2>&1)
  dpkg-deb -x "$tmp"/docker.io_*.deb "$tmp/x"
  install -D -m 0755 "$tmp/x/usr/bin/docker" "$root/target/test-tools/docker"
  rm -rf "$tmp"
fi
