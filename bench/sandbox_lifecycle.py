#!/usr/bin/env python3
"""Per-sandbox latency of `netctl run -d` (a sandbox on a network) and `netctl rm`, side by
side with `netavark setup` / `teardown` (Podman's network backend, Debian 1.4), at several N.

Each (tool, N) runs in a fresh bench host (throwaway namespace). netctl run -d does more
than netavark setup: it also creates the namespace and its pause process (netavark gets a
namespace a runtime made beforehand, untimed, as Podman does).

Usage (root): bench/sandbox_lifecycle.py [--sizes 10,100,1000] [--skip-netavark]
"""
import argparse
import os
import sys

from benchlib import build, netd_lifecycle, print_table, summary
from netavark import NETAVARK, netavark_run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--skip-netavark", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("error: run as root (the benchmark creates network namespaces)")
    build()
    peers = () if a.skip_netavark or not os.path.exists(NETAVARK) else ("netavark",)
    rows, rss = [], None
    for n in [int(x) for x in a.sizes.split(",")]:
        create, remove, rss = netd_lifecycle(n, f"netd{n}", lambda i: [])
        nv = netavark_run(n, ports=0) if peers else None
        rows.append((n, "create", summary(create), {"netavark": nv and summary(nv[0])}))
        rows.append((n, "remove", summary(remove), {"netavark": nv and summary(nv[1])}))
        print(f"N={n} done", file=sys.stderr)
    print("per-sandbox latency, ms (growth = median of last tenth / first tenth)")
    print_table(rows, peers=peers)
    print("netd: create = netctl run -d (namespace, pause, veth, address, route); remove = netctl rm")
    print("netavark: create = setup, remove = teardown; namespace made beforehand (untimed)")
    print(f"netd RSS with {rows[-1][0]} sandboxes: {rss:.1f} MiB")


if __name__ == "__main__":
    main()
