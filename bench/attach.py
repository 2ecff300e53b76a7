#!/usr/bin/env python3
"""Joining namespaces other runtimes made: `netctl attach --netns PATH` at N namespaces, and
netd-oci-hook's whole createRuntime (state and config.json read, attach, files written),
side by side with `netavark setup` on namespaces made the same way (Podman's path).

Each (tool, N) runs in a fresh bench host; the namespaces are made beforehand, untimed, as a
runtime makes them.

Usage (root): bench/attach.py [--sizes 10,100,1000] [--skip-netavark]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

from benchlib import BIN, BenchHost, Netd, PeerNamespaces, build, print_table, summary, timed
from netavark import NETAVARK, netavark_run


def attach_run(n):
    """(attach ms, hook createRuntime ms, detach ms) for n namespaces in a bench host."""
    host = BenchHost(f"at{n}")
    netd = namespaces = None
    tmp = tempfile.mkdtemp(prefix="ndbench-at-")
    try:
        netd = Netd("--no-default-network")
        timed(netd.netctl("network", "create", "--subnet", "10.88.0.0/16", "benchnet"))
        namespaces = PeerNamespaces(host, 2 * n)
        attach = [timed(netd.netctl("attach", "--netns", path, "--name", f"a{i}", "--network", "benchnet"))[0]
                  for i, path in enumerate(namespaces.paths[:n])]
        detach = [timed(netd.netctl("detach", f"a{i}"))[0] for i in range(n)]
        # The hook: one bundle per container, its namespace path in config.json.
        hook = os.path.join(BIN, "netd-oci-hook")
        env = dict(os.environ, NETD_SOCKET=netd.socket)
        created = []
        for i, path in enumerate(namespaces.paths[n:]):
            bundle = f"{tmp}/b{i}"
            os.makedirs(bundle)
            with open(f"{bundle}/config.json", "w") as f:
                json.dump({"ociVersion": "1.0.2", "root": {"path": "rootfs", "readonly": True},
                           "annotations": {"netd.networks": "benchnet", "netd.name": f"h{i}"},
                           "linux": {"namespaces": [{"type": "network", "path": path}]}}, f)
            state = json.dumps({"ociVersion": "1.0.2", "id": f"ctr{i}", "status": "creating",
                                "bundle": bundle}).encode()
            created.append(timed([hook, "createRuntime"], stdin=state, env=env)[0])
        return attach, created, detach
    finally:
        if netd:
            netd.close()
        if namespaces:
            namespaces.close()
        host.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--skip-netavark", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("error: run as root (the benchmark creates network namespaces)")
    build()
    peers = () if a.skip_netavark or not os.path.exists(NETAVARK) else ("netavark",)
    rows = []
    for n in [int(x) for x in a.sizes.split(",")]:
        attach, hook, detach = attach_run(n)
        nv = netavark_run(n, ports=0) if peers else None
        rows.append((n, "attach", summary(attach), {"netavark": nv and summary(nv[0])}))
        rows.append((n, "hook", summary(hook), {"netavark": nv and summary(nv[0])}))
        rows.append((n, "detach", summary(detach), {"netavark": nv and summary(nv[1])}))
        print(f"N={n} done", file=sys.stderr)
    print("per-namespace latency, ms (growth = median of last tenth / first tenth)")
    print_table(rows, peers=peers)
    print("netd: attach = netctl attach --netns (veth, address, route, name); hook = netd-oci-hook "
          "createRuntime (state, config.json, attach, files); detach = netctl detach")
    print("netavark: attach and hook rows = setup, detach row = teardown; namespaces made beforehand")


if __name__ == "__main__":
    main()
