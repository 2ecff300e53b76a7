#!/usr/bin/env bash
# Installs the system packages netd's tests and demo use (Debian/Ubuntu, as root).
set -euo pipefail
# dnsutils: dig; dnsmasq-base: the upstream resolver of the DNS tests; python3: their
# hand-made bad requests.
# containernetworking-plugins: the reference CNI plugins the CNI tests mix with ours.
packages=(iptables iproute2 iputils-ping socat util-linux procps conntrack dnsutils dnsmasq-base python3
  containernetworking-plugins)
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
