#!/usr/bin/env bash
# Builds target/debian/netd_<version>_<arch>.deb from the install tree of
# scripts/install.sh (prefix /usr, units in /lib/systemd/system), with dpkg-deb alone.
# Its maintainer scripts create the netd group and enable the units where systemd runs.
#
#   scripts/package-deb.sh [--no-build | --from DIR] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build=()
out=target/debian
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=(--no-build); shift ;;
    --from) build=(--from "${2:?--from needs a directory}"); shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    *) echo "error: unknown argument $1 (--no-build, --from DIR, --out DIR)" >&2; exit 2 ;;
  esac
done

version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
arch="$(dpkg --print-architecture)"
stage="$out/netd_${version}_${arch}"
rm -rf "$stage"
mkdir -p "$stage/DEBIAN"
scripts/install.sh --prefix /usr --destdir "$stage" "${build[@]}"
# Debug information stays out of the package (the release profile keeps it for profiling).
for bin in "$stage"/usr/bin/* "$stage"/opt/cni/bin/*; do
  strip --strip-debug "$bin"
done
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" packaging/debian/control > "$stage/DEBIAN/control"
echo "Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)" >> "$stage/DEBIAN/control"
for script in postinst prerm postrm; do
  install -m 0755 "packaging/debian/$script" "$stage/DEBIAN/$script"
done
deb="$out/netd_${version}_${arch}.deb"
# NETD_DEB_COMPRESSION=gzip builds faster (the tests use it); xz is the default.
dpkg-deb --root-owner-group -Z"${NETD_DEB_COMPRESSION:-xz}" --build "$stage" "$deb" >/dev/null
rm -rf "$stage"
echo "$deb"
