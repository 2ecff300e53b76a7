#!/usr/bin/env bash
# The test command: installs what the tests need, checks formatting and lints, builds the
# binaries and runs every test (unit tests, golden files, and integration tests that run
# netd in throwaway network namespaces). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  echo "error: the tests create network namespaces; run as root" >&2
  exit 1
fi
scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
cargo test --workspace
# The tests that add and remove rules, again with iptables' legacy (x_tables) backend, as
# older hosts have it; each test host gets the legacy tools first in its PATH.
NETD_TEST_IPTABLES=legacy cargo test -p netd-tests --test ports --test cni --test cri --test recovery --test cluster --test policy
