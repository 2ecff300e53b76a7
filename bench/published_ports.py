#!/usr/bin/env python3
"""Published ports: per-sandbox latency of `netctl run -d -p A:80 -p B:443` and of its
removal at several N, side by side with the CNI reference chain bridge + host-local +
portmap (Debian containernetworking-plugins) and `netavark setup` with two port mappings,
in one run; then iperf3 through a published port against a direct connection to the
container's address.

Each (tool, N) runs in a fresh bench host (throwaway namespace). The peers get namespaces
made beforehand (untimed), as their runtimes do; netctl run -d also makes its own.

Usage (root): bench/published_ports.py [--sizes 10,100,500,1000] [--skip-peers] [--no-iperf]
"""
import argparse
import os
import re
import subprocess
import sys
import time

import cni
from benchlib import BenchHost, Netd, build, netd_lifecycle, print_table, summary, timed
from netavark import NETAVARK, netavark_run


def iperf_gbits(argv):
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout
    m = re.findall(r"([\d.]+) Gbits/sec\s+\d*\s*receiver", out) or re.findall(r"([\d.]+) Gbits/sec", out)
    return float(m[-1]) if m else float("nan")


def bench_iperf(seconds=5, runs=3):
    """Host -> container: directly to its address, and through its published port on the
    host's (gateway) address. Same veth and bridge; the difference is the DNAT."""
    host = BenchHost("iperf")
    netd = None
    try:
        netd = Netd()
        timed(netd.netctl("network", "create", "--subnet", "10.77.0.0/24", "perf"))
        timed(netd.netctl("run", "-d", "--name", "srv", "--network", "perf", "-p", "15201:5201",
                          "--", "iperf3", "-s"))
        time.sleep(0.5)
        direct, published = [], []
        for _ in range(runs):
            direct.append(iperf_gbits(["iperf3", "-c", "10.77.0.2", "-t", str(seconds)]))
            published.append(iperf_gbits(["iperf3", "-c", "10.77.0.1", "-p", "15201", "-t", str(seconds)]))
        return direct, published
    finally:
        if netd:
            netd.close()
        host.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,100,500,1000")
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--no-iperf", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("error: run as root (the benchmark creates network namespaces)")
    build()
    peers = []
    if not a.skip_peers and os.path.exists(os.path.join(cni.CNI_PATH, "portmap")):
        peers.append("cni")
    if not a.skip_peers and os.path.exists(NETAVARK):
        peers.append("netavark")
    rows, rss = [], None
    for n in [int(x) for x in a.sizes.split(",")]:
        create, remove, rss = netd_lifecycle(
            n, f"pnetd{n}", lambda i: ["-p", f"{20000 + i}:80", "-p", f"{30000 + i}:443"])
        c = cni.lifecycle(n, f"pcni{n}", ports=2) if "cni" in peers else None
        nv = netavark_run(n, ports=2) if "netavark" in peers else None
        rows.append((n, "create", summary(create),
                     {"cni": c and summary(c[0]), "netavark": nv and summary(nv[0])}))
        rows.append((n, "remove", summary(remove),
                     {"cni": c and summary(c[1]), "netavark": nv and summary(nv[1])}))
        print(f"N={n} done", file=sys.stderr)
    print("per-sandbox latency with two published ports, ms (growth = last tenth / first tenth)")
    print_table(rows, peers=peers)
    print("netd: create = netctl run -d -p A:80 -p B:443; remove = netctl rm")
    print("cni: bridge+host-local then portmap ADD; remove = portmap+bridge DEL")
    print("netavark: setup / teardown with two port mappings")
    print(f"netd RSS with {rows[-1][0]} sandboxes: {rss:.1f} MiB")
    if not a.no_iperf:
        direct, published = bench_iperf()
        d, p = max(direct), max(published)
        print(f"iperf3 host->container, best of {len(direct)} x 5 s: direct {d:.1f} Gbit/s, "
              f"published port {p:.1f} Gbit/s ({p / d * 100:.0f}%)")


if __name__ == "__main__":
    main()
