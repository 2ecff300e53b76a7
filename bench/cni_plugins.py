#!/usr/bin/env python3
"""CNI plugins: ADD and DEL latency of the chain netd-bridge (+ netd-ipam) + netd-portmap with
one port mapping, at several N, side by side with bridge + host-local + portmap from the
Debian package (same configuration, same runtime driving them), in one run.

Each (chain, N) runs in a fresh bench host (throwaway namespace) with N container
namespaces made beforehand (untimed), as a runtime does; ADD is timed for each container in
turn, then DEL for each.

It also prints what decoding the chain's inputs costs one ADD (in-process, Go-compatible
decoding of netd-bridge's, netd-ipam's and netd-portmap's configurations, prevResult and
the IPAM result; `cargo run --example decode_cost`), for libcni's lowercase keys and for
containerd's capitalised ones.

Usage (root): bench/cni_plugins.py [--sizes 10,100,500]
"""
import argparse
import os
import subprocess
import sys

import cni
from benchlib import BIN, ROOT, build, print_table, summary

CHAINS = {
    "netd": (("netd-bridge", "netd-ipam", "netd-portmap"), f"{BIN}:{cni.CNI_PATH}"),
    "reference": (("bridge", "host-local", "portmap"), cni.CNI_PATH),
}


def run_chain(label, n):
    types, path = CHAINS[label]
    return cni.lifecycle(n, f"cni{label[:3]}{n}", ports=1, types=types, path=path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,100,500")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("error: run as root (the benchmark creates network namespaces)")
    if not os.path.exists(os.path.join(cni.CNI_PATH, "portmap")):
        sys.exit(f"error: the reference plugins are missing from {cni.CNI_PATH} "
                 "(apt-get install containernetworking-plugins)")
    build()
    rows = []
    for n in [int(x) for x in a.sizes.split(",")]:
        ours = run_chain("netd", n)
        ref = run_chain("reference", n)
        rows.append((n, "ADD", summary(ours[0]), {"reference": summary(ref[0])}))
        rows.append((n, "DEL", summary(ours[1]), {"reference": summary(ref[1])}))
        print(f"N={n} done", file=sys.stderr)
    print("CNI chain latency per container with one port mapping, ms "
          "(growth = last tenth / first tenth)")
    print_table(rows, ours="netd", peers=["reference"])
    decode = subprocess.run(
        ["cargo", "run", "--release", "-q", "-p", "cni-compat", "--example", "decode_cost"],
        cwd=ROOT, check=True, capture_output=True, text=True).stdout
    print(decode.rstrip())
    print("netd: netd-bridge (+ netd-ipam, exec'd through CNI_PATH) then netd-portmap")
    print("reference: bridge (+ host-local) then portmap, containernetworking-plugins "
          "(Debian)")


if __name__ == "__main__":
    main()
