#!/usr/bin/env python3
"""Per-sandbox latency of `netctl run -d` (a sandbox on a network) and `netctl rm`, side by
side with `netavark setup` / `teardown` (Podman's network backend, Debian 1.4), at several N.

Everything runs in throwaway network namespaces ("bench hosts") made here and removed at the
end; nothing touches the machine's own namespace. Each (tool, N) gets a fresh bench host.

netctl run -d does more than netavark setup: it also creates the namespace and its pause
process (netavark is handed a namespace a runtime made beforehand, untimed, as Podman does).

Prints median, p90 and growth (median of the last tenth over the first tenth) per op, the
ratios netavark/netd, and netd's RSS at the largest N. Usage (root):
    bench/sandbox_lifecycle.py [--sizes 10,100,1000] [--skip-netavark]
"""
import argparse
import ctypes
import hashlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
NETAVARK = os.environ.get("NETAVARK", "/usr/lib/podman/netavark")
CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL("libc.so.6", use_errno=True)


def sh(*args, **kw):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def enter_netns(name):
    """Moves this (single-threaded) process into a namespace; children inherit it."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    os.close(fd)


class BenchHost:
    def __init__(self, tag):
        self.name = f"ndbench-{os.getpid()}-{tag}"
        self.original = os.open("/proc/self/ns/net", os.O_RDONLY)
        sh("ip", "netns", "add", self.name)
        enter_netns(self.name)
        sh("ip", "link", "set", "lo", "up")

    def close(self):
        libc.setns(self.original, CLONE_NEWNET)
        os.close(self.original)
        subprocess.run(["ip", "netns", "del", self.name], stderr=subprocess.DEVNULL)


def timed(argv, stdin=None):
    t = time.perf_counter_ns()
    out = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ms = (time.perf_counter_ns() - t) / 1e6
    if out.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed: {out.stderr.decode().strip()}")
    return ms, out.stdout.decode().strip()


def summary(samples):
    s = sorted(samples)
    tenth = max(1, len(samples) // 10)
    first = statistics.median(samples[:tenth])
    last = statistics.median(samples[-tenth:])
    return {
        "median": statistics.median(s),
        "p90": s[min(len(s) - 1, int(len(s) * 0.9))],
        "growth": last / first if first else float("nan"),
    }


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bench_netd(n):
    host = BenchHost(f"netd{n}")
    tmp = tempfile.mkdtemp(prefix="ndbench-")
    # The run directory on tmpfs, as /run is on a real host (it is not on every VM).
    os.makedirs(f"{tmp}/run")
    sh("mount", "-t", "tmpfs", "ndbench", f"{tmp}/run")
    sock = os.path.join(tmp, "run", "netd.sock")
    netd = subprocess.Popen(
        [os.path.join(BIN, "netd"), "--root", f"{tmp}/root", "--run-dir", f"{tmp}/run"],
        stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/netd.log", "w"))
    try:
        for _ in range(200):
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(sock)
                s.close()
                break
            except OSError:
                time.sleep(0.025)
        netctl = [os.path.join(BIN, "netctl"), "--socket", sock]
        sh(*netctl, "network", "create", "--subnet", "10.88.0.0/16", "benchnet")
        create, ids = [], []
        for _ in range(n):
            ms, out = timed(netctl + ["run", "-d", "--network", "benchnet"])
            create.append(ms)
            ids.append(out)
        rss = rss_mib(netd.pid)
        remove = [timed(netctl + ["rm", i])[0] for i in ids]
        return create, remove, rss
    finally:
        netd.terminate()
        netd.wait()
        host.close()
        remove_mounts_under(f"{tmp}/run")
        shutil.rmtree(tmp, ignore_errors=True)


def remove_mounts_under(path):
    """Unmounts what a failed run left under path (namespace mounts), then path itself."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(path)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], stderr=subprocess.DEVNULL)


def netavark_options(i):
    cid = hashlib.sha256(f"ndbench-{i}".encode()).hexdigest()
    return json.dumps({
        "container_id": cid,
        "container_name": f"c{i}",
        "networks": {"benchnet": {"static_ips": [f"10.89.{i // 250}.{i % 250 + 2}"],
                                   "interface_name": "eth0"}},
        "network_info": {"benchnet": {
            "name": "benchnet",
            "id": hashlib.sha256(b"benchnet").hexdigest(),
            "driver": "bridge",
            "network_interface": "nvbench0",
            "subnets": [{"subnet": "10.89.0.0/16", "gateway": "10.89.0.1"}],
            "ipv6_enabled": False,
            "internal": False,
            "dns_enabled": False,
            "ipam_options": {"driver": "host-local"}}},
    }).encode()


def bench_netavark(n):
    host = BenchHost(f"nv{n}")
    tmp = tempfile.mkdtemp(prefix="ndbench-nv-")
    names = [f"{host.name}-c{i}" for i in range(n)]
    try:
        with open(f"{tmp}/batch", "w") as f:
            f.writelines(f"netns add {name}\n" for name in names)
        sh("ip", "-batch", f"{tmp}/batch")
        conf = ["--config", f"{tmp}/conf"]
        setup = [timed([NETAVARK] + conf + ["setup", f"/run/netns/{nm}"], netavark_options(i))[0]
                 for i, nm in enumerate(names)]
        teardown = [timed([NETAVARK] + conf + ["teardown", f"/run/netns/{nm}"], netavark_options(i))[0]
                    for i, nm in enumerate(names)]
        return setup, teardown
    finally:
        with open(f"{tmp}/batch", "w") as f:
            f.writelines(f"netns del {name}\n" for name in names)
        subprocess.run(["ip", "-batch", f"{tmp}/batch"], stderr=subprocess.DEVNULL)
        host.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--skip-netavark", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("error: run as root (the benchmark creates network namespaces)")
    sh("cargo", "build", "--release", "--bins", "-q", cwd=ROOT)
    have_netavark = not a.skip_netavark and os.path.exists(NETAVARK)
    if not have_netavark and not a.skip_netavark:
        print(f"note: {NETAVARK} not found (apt-get install netavark); netd only")
    rows = []
    rss = None
    for n in [int(x) for x in a.sizes.split(",")]:
        create, remove, rss = bench_netd(n)
        nv_setup, nv_teardown = bench_netavark(n) if have_netavark else (None, None)
        rows.append((n, "create", summary(create), nv_setup and summary(nv_setup)))
        rows.append((n, "remove", summary(remove), nv_teardown and summary(nv_teardown)))
        print(f"N={n} done", file=sys.stderr)

    print("per-sandbox latency, ms (growth = median of last tenth / first tenth)")
    print(f"{'N':>5} {'op':<7} {'netd med':>9} {'p90':>7} {'growth':>7}   "
          f"{'netavark med':>12} {'p90':>7} {'growth':>7}   {'netavark/netd':>13}")
    for n, op, ours, peer in rows:
        line = f"{n:>5} {op:<7} {ours['median']:>9.2f} {ours['p90']:>7.2f} {ours['growth']:>7.2f}"
        if peer:
            line += (f"   {peer['median']:>12.2f} {peer['p90']:>7.2f} {peer['growth']:>7.2f}"
                     f"   {peer['median'] / ours['median']:>12.1f}x")
        print(line)
    print("netd: create = netctl run -d (namespace, pause, veth, address, route); "
          "remove = netctl rm")
    print("netavark: create = setup, remove = teardown, namespace made beforehand (untimed)")
    print(f"netd RSS with {rows[-1][0]} sandboxes: {rss:.1f} MiB")


if __name__ == "__main__":
    main()
