#!/usr/bin/env bash
# Installs netd as a system service: binaries, CNI plugins, the example conflist, the
# systemd units, shell completions and man pages.
#
#   scripts/install.sh [--prefix /usr/local] [--destdir DIR] [--cni-bin-dir /opt/cni/bin]
#                      [--unit-dir DIR] [--no-build] [--from DIR]
#
# --from takes the binaries from DIR (a cargo target directory's profile) instead of
# building them in release mode; --no-build takes target/release as it is.
# --destdir stages everything under DIR (as packagers use DESTDIR) and changes nothing
# else on this machine; without it, the netd group is created if missing and systemd is
# told about the units (not started: `systemctl enable --now netd.socket netd.service`).
set -euo pipefail
cd "$(dirname "$0")/.."

prefix=/usr/local
destdir=
cni_bin_dir=/opt/cni/bin
unit_dir=
build=1
from=
usage() { sed -n '5,6p' "$0" | sed 's/^# \{0,3\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --destdir) destdir="${2:?--destdir needs a directory}"; shift 2 ;;
    --cni-bin-dir) cni_bin_dir="${2:?--cni-bin-dir needs a directory}"; shift 2 ;;
    --unit-dir) unit_dir="${2:?--unit-dir needs a directory}"; shift 2 ;;
    --no-build) build=0; shift ;;
    --from) from="${2:?--from needs a directory}"; build=0; shift 2 ;;
    -h|--help) usage ;;
    *) echo "error: unknown argument $1" >&2; usage ;;
  esac
done
case "$prefix" in /*) ;; *) echo "error: --prefix must be absolute" >&2; exit 2 ;; esac
if [ -z "$unit_dir" ]; then
  # Units of /usr go where the distribution's do; of any other prefix, under it.
  if [ "$prefix" = /usr ]; then unit_dir=/lib/systemd/system; else unit_dir="$prefix/lib/systemd/system"; fi
fi

if [ "$build" = 1 ]; then
  cargo build --release --bins
fi
target="${from:-${CARGO_TARGET_DIR:-target}/release}"
for bin in netd netctl netd-pause netd-oci-hook netd-bridge netd-ipam netd-portmap netd-flannel; do
  [ -x "$target/$bin" ] || { echo "error: $target/$bin is missing (build first)" >&2; exit 1; }
done

root="${destdir%/}"
bindir="$prefix/bin"
install -d "$root$bindir" "$root$cni_bin_dir" "$root$unit_dir" \
  "$root$prefix/share/netd/examples" "$root$prefix/share/man/man1" "$root$prefix/share/man/man8" \
  "$root$prefix/share/bash-completion/completions" "$root$prefix/share/zsh/vendor-completions" \
  "$root$prefix/share/fish/vendor_completions.d"
for bin in netd netctl netd-pause netd-oci-hook; do
  install -m 0755 "$target/$bin" "$root$bindir/$bin"
done
for plugin in netd-bridge netd-ipam netd-portmap netd-flannel; do
  install -m 0755 "$target/$plugin" "$root$cni_bin_dir/$plugin"
done
install -m 0644 examples/cni/10-netd.conflist "$root$prefix/share/netd/examples/10-netd.conflist"
for unit in netd.service netd.socket; do
  sed "s|@BINDIR@|$bindir|g" "packaging/systemd/$unit" > "$root$unit_dir/$unit"
  chmod 0644 "$root$unit_dir/$unit"
done

# Completions and man pages, from the command line's own definition.
netctl="$target/netctl"
"$netctl" completion bash > "$root$prefix/share/bash-completion/completions/netctl"
"$netctl" completion zsh > "$root$prefix/share/zsh/vendor-completions/_netctl"
"$netctl" completion fish > "$root$prefix/share/fish/vendor_completions.d/netctl.fish"
man="$(mktemp -d)"
trap 'rm -rf "$man"' EXIT
"$netctl" generate-man "$man"
for page in "$man"/*.1; do gzip -9n < "$page" > "$root$prefix/share/man/man1/$(basename "$page").gz"; done
for page in "$man"/*.8; do gzip -9n < "$page" > "$root$prefix/share/man/man8/$(basename "$page").gz"; done
chmod 0644 "$root$prefix"/share/man/man*/*.gz "$root$prefix"/share/bash-completion/completions/netctl \
  "$root$prefix"/share/zsh/vendor-completions/_netctl "$root$prefix"/share/fish/vendor_completions.d/netctl.fish

if [ -z "$destdir" ]; then
  getent group netd >/dev/null || groupadd --system netd
  if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
  echo "installed; start with: systemctl enable --now netd.socket netd.service"
fi
