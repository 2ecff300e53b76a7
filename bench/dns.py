#!/usr/bin/env python3
"""Embedded DNS: dnsperf from inside a sandbox against netd (a sandbox's name, and a name
forwarded to an upstream dnsmasq on the host's loopback), side by side with aardvark-dns
(started by netavark for a dns_enabled network, forwarding to the same kind of upstream)
and dnsmasq answering from a hosts file on the same bridge.

For each target: throughput (dnsperf, 4 clients, 100 outstanding, DURATION s), latency
percentiles under that load (a shorter dnsperf run with -v), and sequential latency (one
query outstanding), and the server's CPU time per answered query (its threads, user and
system: the kernel's work of receiving and sending is most of it). Then how long after
`netctl run` returns a new name resolves.

dnsperf runs on the same 2 cores as the servers; when it is the bottleneck (near 100% of
a core) every fast server shows about the same queries/s, and CPU per query tells them
apart.

Usage (root): bench/dns.py [--duration 10] [--containers 10] [--skip-peers]
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from benchlib import CLONE_NEWNET, BenchHost, Netd, PeerNamespaces, build, libc, timed
from netavark import NETAVARK

AARDVARK = os.environ.get("AARDVARK", "/usr/lib/podman/aardvark-dns")
UPSTREAM_NAME = "upstream.bench"
UPSTREAM_IP = "198.51.100.7"
CLIENTS = 4
OUTSTANDING = 100


def dnsmasq(listen, port, extra):
    """A dnsmasq that answers only what it is given (no upstream of its own)."""
    return subprocess.Popen(
        ["dnsmasq", "--conf-file=/dev/null", "--keep-in-foreground", "--no-resolv", "--no-hosts",
         "--bind-interfaces", f"--listen-address={listen}", f"--port={port}", "--pid-file=",
         "--user=root", "--group=root", "--cache-size=1000", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def query_packet(qid, name):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for part in name.rstrip(".").split("."):
        q += bytes([len(part)]) + part.encode()
    return q + b"\0" + struct.pack(">HH", 1, 1)


def socket_in(netns_path):
    """A UDP socket created inside another namespace (it stays there)."""
    original = os.open("/proc/self/ns/net", os.O_RDONLY)
    fd = os.open(netns_path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError("setns")
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    finally:
        libc.setns(original, CLONE_NEWNET)
        os.close(fd)
        os.close(original)
    return s


def ask(sock, server, port, name, timeout=1.0):
    """(ms, rcode, answer count) of one query, or None on timeout."""
    qid = int.from_bytes(os.urandom(2), "big")
    sock.settimeout(timeout)
    t0 = time.perf_counter_ns()
    sock.sendto(query_packet(qid, name), (server, port))
    try:
        while True:
            r = sock.recv(4096)
            if len(r) >= 12 and struct.unpack(">H", r[:2])[0] == qid:
                return (time.perf_counter_ns() - t0) / 1e6, r[3] & 0x0F, struct.unpack(">H", r[6:8])[0]
    except socket.timeout:
        return None


def sequential(netns, server, port, name, count=3000):
    sock = socket_in(netns)
    samples, failures = [], 0
    for _ in range(count):
        got = ask(sock, server, port, name)
        if got and got[1] == 0 and got[2] > 0:
            samples.append(got[0])
        else:
            failures += 1
    sock.close()
    return samples, failures


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))] if s else float("nan")


def start_dnsperf(netns, server, port, name, seconds, verbose=False):
    """dnsperf asking `name` (A) for `seconds`, running; returns (process, query file)."""
    with tempfile.NamedTemporaryFile("w", suffix=".q", delete=False) as f:
        f.write(f"{name} A\n")
        qfile = f.name
    argv = ["nsenter", f"--net={netns}", "dnsperf", "-s", server, "-p", str(port), "-d", qfile,
            "-l", str(seconds), "-c", str(CLIENTS), "-q", str(OUTSTANDING), "-t", "2"]
    if verbose:
        argv.append("-v")
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True), qfile


def dnsperf(netns, server, port, name, seconds, verbose=False):
    perf, qfile = start_dnsperf(netns, server, port, name, seconds, verbose)
    out = perf.communicate(timeout=seconds + 30)[0]
    os.unlink(qfile)
    if verbose:
        # "> NOERROR upstream.bench A 0.000123" per answer
        lat = [float(m) * 1000 for m in re.findall(r"^> \S+ \S+ \S+ ([\d.]+)$", out, re.M)]
        return lat
    field = lambda label: (re.search(label + r":\s+([\d.]+)", out) or [None, "nan"])[1]
    return {"qps": float(field("Queries per second")), "sent": int(float(field("Queries sent"))),
            "lost": int(float(field("Queries lost"))), "avg_ms": float(field(r"Average Latency \(s\)")) * 1000}


def cpu_seconds(pid):
    """User + system CPU time of a process, all its threads."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(label, netns, server, port, name, seconds, pid):
    print(f"  {label} ...", file=sys.stderr)
    before = cpu_seconds(pid)
    r = dnsperf(netns, server, port, name, seconds)
    r["cpu_us"] = (cpu_seconds(pid) - before) * 1e6 / max(1, r["sent"] - r["lost"])
    loaded = dnsperf(netns, server, port, name, max(2, seconds // 3), verbose=True)
    r["p50_load"], r["p99_load"] = pct(loaded, 0.5), pct(loaded, 0.99)
    seq, failures = sequential(netns, server, port, name)
    r["p50_seq"], r["p99_seq"], r["seq_fail"] = pct(seq, 0.5), pct(seq, 0.99), failures
    return label, r


def bench_netd(containers, seconds):
    host = BenchHost("dns-netd")
    upstream = reference = netd = None
    tmp = tempfile.mkdtemp(prefix="ndbench-dns-")
    try:
        upstream = dnsmasq("127.0.0.1", 53, [f"--host-record={UPSTREAM_NAME},{UPSTREAM_IP}"])
        with open(f"{tmp}/resolv.conf", "w") as f:
            f.write("nameserver 127.0.0.1\n")
        netd = Netd("--resolv-conf", f"{tmp}/resolv.conf")
        timed(netd.netctl("network", "create", "--subnet", "10.89.0.0/16", "benchnet"))
        ids = [timed(netd.netctl("run", "-d", "--name", f"c{i}", "--network", "benchnet"))[1]
               for i in range(1, containers + 1)]
        with open(f"{tmp}/hosts", "w") as f:
            f.write("10.89.0.3 c2.bench\n")
        reference = dnsmasq("10.89.0.1", 5353, [f"--addn-hosts={tmp}/hosts"])
        time.sleep(0.5)
        client = f"{netd.tmp}/run/netns/{ids[0]}"
        results = [
            measure("netd: sandbox name", client, "10.89.0.1", 53, "c2", seconds, netd.proc.pid),
            measure("netd: forwarded", client, "10.89.0.1", 53, UPSTREAM_NAME, seconds,
                    netd.proc.pid),
            measure("dnsmasq: hosts file", client, "10.89.0.1", 5353, "c2.bench", seconds,
                    reference.pid),
        ]
        results.append(("run -> resolvable", resolvable_after_run(netd, client)))
        results.append(("churn", churn(netd, client)))
        results.append(("netd RSS MiB", netd.rss_mib()))
        return results
    finally:
        for p in (upstream, reference):
            if p:
                p.terminate()
                p.wait()
        if netd:
            netd.close()
        host.close()
        shutil.rmtree(tmp, ignore_errors=True)


def resolvable_after_run(netd, client, rounds=50):
    """ms from `netctl run` returning to the first answer naming the new sandbox, asked
    at once (a NXDOMAIN first would count as a failure)."""
    sock = socket_in(client)
    delays, misses = [], 0
    for i in range(rounds):
        timed(netd.netctl("run", "-d", "--name", f"fresh{i}", "--network", "benchnet"))
        t0 = time.perf_counter_ns()
        got = ask(sock, "10.89.0.1", 53, f"fresh{i}")
        if got and got[1] == 0 and got[2] > 0:
            delays.append((time.perf_counter_ns() - t0) / 1e6)
        else:
            misses += 1
    sock.close()
    return {"max_ms": max(delays) if delays else float("nan"),
            "median_ms": statistics.median(delays) if delays else float("nan"), "misses": misses}


def churn(netd, client, seconds=5):
    """dnsperf for a sandbox name while sandboxes are made and removed (every change swaps
    the records): queries lost, and changes made meanwhile."""
    perf, qfile = start_dnsperf(client, "10.89.0.1", 53, "c2", seconds)
    changes, i = 0, 0
    deadline = time.monotonic() + seconds - 0.5
    while time.monotonic() < deadline:
        _, sid = timed(netd.netctl("run", "-d", "--name", f"churn{i}", "--network", "benchnet"))
        timed(netd.netctl("rm", sid))
        changes += 2
        i += 1
    out = perf.communicate(timeout=seconds + 30)[0]
    os.unlink(qfile)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    return {"changes": changes, "lost": int(lost[1]) if lost else -1,
            "rate": float(qps[1]) if qps else float("nan")}


def aardvark_options(i, cid):
    return {
        "container_id": cid,
        "container_name": f"c{i}",
        "networks": {"dnsnet": {"static_ips": [f"10.90.0.{i + 1}"], "aliases": [cid[:12]],
                                "interface_name": "eth0"}},
        "network_info": {"dnsnet": {
            "name": "dnsnet", "id": hashlib.sha256(b"dnsnet").hexdigest(), "driver": "bridge",
            "network_interface": "nvdns0",
            "subnets": [{"subnet": "10.90.0.0/16", "gateway": "10.90.0.1"}],
            "ipv6_enabled": False, "internal": False, "dns_enabled": True,
            "ipam_options": {"driver": "host-local"}}},
    }


def bench_aardvark(containers, seconds):
    host = BenchHost("dns-nv")
    tmp = tempfile.mkdtemp(prefix="ndbench-dnsnv-")
    etc = f"/etc/netns/{host.name}"
    upstream = namespaces = None
    conf = f"{tmp}/conf"
    opts = []
    try:
        # aardvark-dns reads /etc/resolv.conf; `ip netns exec` gives it this one.
        os.makedirs(etc, exist_ok=True)
        os.makedirs(conf)
        with open(f"{etc}/resolv.conf", "w") as f:
            f.write("nameserver 127.0.0.1\n")
        upstream = dnsmasq("127.0.0.1", 53, [f"--host-record={UPSTREAM_NAME},{UPSTREAM_IP}"])
        namespaces = PeerNamespaces(host, containers)
        for i, path in enumerate(namespaces.paths, start=1):
            cid = hashlib.sha256(f"ndbench-dns-{i}".encode()).hexdigest()
            o = json.dumps(aardvark_options(i, cid)).encode()
            opts.append((path, o))
            timed(["ip", "netns", "exec", host.name, NETAVARK, "--config", conf, "-a", AARDVARK,
                   "setup", path], o)
        time.sleep(0.5)
        client = namespaces.paths[0]
        pid = int(open(f"{conf}/aardvark-dns/aardvark.pid").read().strip())
        return [
            measure("aardvark-dns: container name", client, "10.90.0.1", 53, "c2.dns.podman",
                    seconds, pid),
            measure("aardvark-dns: forwarded", client, "10.90.0.1", 53, UPSTREAM_NAME, seconds, pid),
        ]
    finally:
        for path, o in opts:
            subprocess.run(["ip", "netns", "exec", host.name, NETAVARK, "--config", conf, "-a",
                            AARDVARK, "teardown", path], input=o, capture_output=True)
        pid_file = f"{conf}/aardvark-dns/aardvark.pid"
        if os.path.exists(pid_file):
            try:
                os.kill(int(open(pid_file).read().strip()), 15)
            except (ValueError, ProcessLookupError):
                pass
        if upstream:
            upstream.terminate()
            upstream.wait()
        if namespaces:
            namespaces.close()
        host.close()
        shutil.rmtree(etc, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--containers", type=int, default=10)
    ap.add_argument("--skip-peers", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("error: run as root (the benchmark creates network namespaces)")
    build()
    results = bench_netd(a.containers, a.duration)
    if not a.skip_peers and os.path.exists(AARDVARK):
        results += bench_aardvark(a.containers, a.duration)
    print(f"dnsperf {a.duration} s from a sandbox, {CLIENTS} clients x {OUTSTANDING} outstanding; "
          "latency in ms (load: a dnsperf -v run; seq: one query at a time)")
    print(f"{'target':<30} {'qps':>9} {'lost':>6} {'avg':>6} {'p50 load':>9} {'p99 load':>9}"
          f" {'p50 seq':>8} {'p99 seq':>8} {'cpu us/q':>9}")
    table = {}
    for label, r in results:
        if isinstance(r, dict) and "qps" in r:
            table[label] = r
            print(f"{label:<30} {r['qps']:>9.0f} {r['lost']:>6} {r['avg_ms']:>6.2f} {r['p50_load']:>9.3f}"
                  f" {r['p99_load']:>9.3f} {r['p50_seq']:>8.3f} {r['p99_seq']:>8.3f}"
                  f" {r['cpu_us']:>9.2f}")
    for ours, theirs in [("netd: sandbox name", "aardvark-dns: container name"),
                         ("netd: forwarded", "aardvark-dns: forwarded"),
                         ("netd: sandbox name", "dnsmasq: hosts file")]:
        if ours in table and theirs in table:
            o, t = table[ours], table[theirs]
            print(f"{ours} / {theirs}: {o['qps'] / t['qps']:.2f}x queries/s, "
                  f"p99 under load {o['p99_load']:.3f} vs {t['p99_load']:.3f} ms, "
                  f"p99 sequential {o['p99_seq']:.3f} vs {t['p99_seq']:.3f} ms, "
                  f"server CPU per query {o['cpu_us']:.2f} vs {t['cpu_us']:.2f} us")
    for label, r in results:
        if label == "run -> resolvable":
            print(f"new name resolvable after `netctl run` returns: median {r['median_ms']:.2f} ms, "
                  f"max {r['max_ms']:.2f} ms, asked-too-early misses {r['misses']}")
        if label == "churn":
            print(f"while {r['changes']} sandbox changes were made: {r['rate']:.0f} queries/s, "
                  f"{r['lost']} lost")
        if label == "netd RSS MiB":
            print(f"netd RSS: {r:.1f} MiB")


if __name__ == "__main__":
    main()
