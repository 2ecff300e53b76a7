#!/usr/bin/env python3
"""Cluster networks across bench hosts (namespaces on an underlay bridge), with a real etcd.

1. Throughput: one iperf3 TCP stream sandbox-to-sandbox across two hosts, for vxlan, host-gw
   and vxlan with direct routing; side by side with the same topology made by hand with
   `ip` (bridge + veths, vxlan device with static neighbour/FDB/route, or plain routes).
   Runs alternate (netd, by hand, netd, ...) because this VM's speed drifts.
2. Convergence: H hosts with a 3-member etcd; time from a new node's netd start until every
   other node pings a sandbox on it, and from `netctl run` returning until its name
   resolves on every other node.
3. Attach latency on a cluster network vs a local one on the same netd, at N sandboxes
   (runs alternate between the two networks).
4. Scale: P simulated peers (lease records written into etcd by the benchmark, no kernel of
   their own); time until the node has programmed all of them (routes, neighbours, FDB),
   and until it has removed them; netd's RSS; attach latency with them; etcd requests per
   node per minute at rest.

Usage (root): bench/cluster.py [--parts 1,2,3,4] [--hosts 20] [--sizes 10,500] [--peers 1000]
"""
import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from benchlib import BIN, CLONE_NEWNET, build, enter_netns, libc, remove_mounts_under, rss_mib

UL = "192.168.70"
TAG = f"ndcl{os.getpid()}"
CONTROLLER = f"/run/netns/{TAG}ctl"


def run(*args, check=True, ns=None, **kw):
    argv = (["nsenter", f"--net={ns}"] if ns else []) + [str(a) for a in args]
    out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {out.stderr.strip()}")
    return out.stdout.strip()


class Bed:
    """An underlay bridge and the namespaces on it; everything removed on close."""

    count = 0

    def __init__(self):
        self.names = []
        self.ul = self.netns("ul")
        run("ip", "link", "add", "ul", "type", "bridge", ns=self.ul)
        run("ip", "link", "set", "ul", "up", ns=self.ul)
        self.ports = 0
        self.procs = []
        self.dirs = []
        # This process's leg on the underlay (to reach etcd's HTTP API), a new name each
        # time: an old one may outlive its bed for a moment (namespaces die lazily).
        Bed.count += 1
        self.leg = f"ul{Bed.count}"
        self.plug(CONTROLLER, f"{UL}.250", ifname=self.leg)

    def netns(self, what):
        name = f"{TAG}{what}"
        run("ip", "netns", "add", name)
        self.names.append(name)
        path = f"/run/netns/{name}"
        run("ip", "link", "set", "lo", "up", ns=path)
        return path

    def plug(self, ns, ip, ifname="eth0"):
        self.ports += 1
        port = f"p{self.ports}"
        run("ip", "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", ns, ns=self.ul)
        run("ip", "link", "set", port, "master", "ul", "up", ns=self.ul)
        run("ip", "addr", "add", f"{ip}/24", "dev", ifname, ns=ns)
        run("ip", "link", "set", ifname, "up", ns=ns)

    def host(self, what, ip):
        ns = self.netns(what)
        self.plug(ns, ip)
        return ns

    def spawn(self, argv, ns, log):
        p = subprocess.Popen(["nsenter", f"--net={ns}"] + argv, stdout=subprocess.DEVNULL,
                             stderr=open(log, "w"))
        self.procs.append(p)
        return p

    def tmpdir(self):
        d = tempfile.mkdtemp(prefix="ndcl-")
        self.dirs.append(d)
        return d

    def close(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        subprocess.run(["ip", "link", "del", self.leg], stderr=subprocess.DEVNULL)
        # Pause processes of the sandboxes of this bed's netds (in namespaces of their own).
        for pid in os.listdir("/proc"):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"netd-pause") and any(d.encode() in a for d in self.dirs for a in argv):
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass
        for d in self.dirs:
            remove_mounts_under(d)
            shutil.rmtree(d, ignore_errors=True)
        for name in reversed(self.names):
            # Processes left in a namespace (pause processes of sandboxes) end with it.
            for pid in run("ip", "netns", "pids", name, check=False).split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", name], stderr=subprocess.DEVNULL)


class Etcd:
    """etcd members in their own namespaces on the underlay."""

    def __init__(self, bed, ips, max_txn_ops=128):
        self.bed, self.ips = bed, ips
        self.dir = bed.tmpdir()
        initial = ",".join(f"m{i}=http://{ip}:2380" for i, ip in enumerate(ips))
        self.ns = [bed.host(f"etcd{i}", ip) for i, ip in enumerate(ips)]
        for i, ip in enumerate(ips):
            bed.spawn(["etcd", "--name", f"m{i}", "--data-dir", f"{self.dir}/m{i}",
                       "--listen-client-urls", f"http://{ip}:2379", "--advertise-client-urls", f"http://{ip}:2379",
                       "--listen-peer-urls", f"http://{ip}:2380", "--initial-advertise-peer-urls", f"http://{ip}:2380",
                       "--initial-cluster", initial, "--max-txn-ops", str(max_txn_ops),
                       "--quota-backend-bytes", str(2 * 1024**3)],
                      self.ns[i], f"{self.dir}/m{i}.log")
        for _ in range(200):
            if subprocess.run(["nsenter", f"--net={self.ns[0]}", "etcdctl", "--endpoints", self.endpoints(),
                               "endpoint", "health"], capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("etcd did not start")

    def endpoints(self):
        return ",".join(f"http://{ip}:2379" for ip in self.ips)

    def store(self):
        return "etcd://" + ",".join(f"{ip}:2379" for ip in self.ips)

    def api(self, path, body):
        """etcd's JSON gateway, from this process (which lives in the controller namespace)."""
        req = urllib.request.Request(f"http://{self.ips[0]}:2379{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())

    def requests(self):
        """gRPC requests handled so far by method, summed over the members (/metrics)."""
        by_method = {}
        for ip in self.ips:
            with urllib.request.urlopen(f"http://{ip}:2379/metrics", timeout=5) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("grpc_server_started_total{"):
                        method = line.split('grpc_method="', 1)[1].split('"', 1)[0]
                        by_method[method] = by_method.get(method, 0) + float(line.rsplit(" ", 1)[1])
        return by_method


class Node:
    """A bench host running netd in the cluster."""

    def __init__(self, bed, etcd, n, extra=()):
        self.bed, self.n, self.ip = bed, n, f"{UL}.{n}"
        self.ns = bed.host(f"h{n}", self.ip)
        self.dir = bed.tmpdir()
        os.makedirs(f"{self.dir}/run")
        run("mount", "-t", "tmpfs", "ndcl", f"{self.dir}/run")
        with open(f"{self.dir}/resolv.conf", "w") as f:
            f.write("nameserver 192.0.2.1\n")
        self.socket = f"{self.dir}/run/netd.sock"
        self.argv = [os.path.join(BIN, "netd"), "--root", f"{self.dir}/root", "--run-dir", f"{self.dir}/run",
                     "--resolv-conf", f"{self.dir}/resolv.conf", "--no-default-network",
                     "--cluster-store", etcd.store(), "--node-ip", self.ip, "--node-name", f"node{n}", *extra]
        self.proc = None

    def start(self):
        self.proc = self.bed.spawn(self.argv, self.ns, f"{self.dir}/netd.log")
        for _ in range(400):
            if os.path.exists(self.socket):
                return
            time.sleep(0.005)
        raise RuntimeError(f"netd on node{self.n} did not start")

    def netctl(self, *args, check=True):
        return run(os.path.join(BIN, "netctl"), "--socket", self.socket, *args, ns=self.ns, check=check)

    def netns_of(self, sandbox):
        return json.loads(self.netctl("inspect", sandbox))[0]["NetworkSettings"]["SandboxKey"]

    def ip_of(self, sandbox, network):
        return json.loads(self.netctl("inspect", sandbox))[0]["NetworkSettings"]["Networks"][network]["IPAddress"]

    def gateway(self, network):
        return json.loads(self.netctl("network", "inspect", network))[0]["IPAM"]["Config"][0]["Gateway"]

    def nodes(self, network):
        out = self.netctl("network", "inspect", network, check=False)
        return len(json.loads(out)[0].get("Nodes", [])) if out.startswith("[") else 0

    def rss_mib(self):
        return rss_mib(self.proc.pid)


def wait(pred, timeout, step=0.005):
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


def iperf(client_ns, server_ns, server_ip, seconds):
    server = subprocess.Popen(["nsenter", f"--net={server_ns}", "iperf3", "-s", "-1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            out = subprocess.run(["nsenter", f"--net={client_ns}", "iperf3", "-c", server_ip, "-t", str(seconds), "-J"],
                                 capture_output=True, text=True)
            if out.returncode == 0:
                end = json.loads(out.stdout).get("end", {})
                if "sum_received" in end:
                    return end["sum_received"]["bits_per_second"] / 1e9
            time.sleep(0.1)
        raise RuntimeError(f"iperf3 to {server_ip} failed: {out.stdout[-300:]}")
    finally:
        server.kill()
        server.wait()


def by_hand(bed, mode, tag, nat=False):
    """Two hosts and a sandbox on each, configured with ip as netd configures them; with
    `nat`, also what any host that masquerades its sandboxes has: conntrack in FORWARD and
    a MASQUERADE rule (for traffic leaving the cluster subnet, so not this traffic)."""
    hosts, sandboxes = [], []
    base = 200 if not nat else 210
    mtu = 1500 if mode == "host-gw" else 1450
    for i in (1, 2):
        h = bed.host(f"{tag}m{i}", f"{UL}.{base + i}")
        run("sysctl", "-qw", "net.ipv4.ip_forward=1", ns=h)
        s = bed.netns(f"{tag}s{i}")
        run("ip", "link", "add", "br0", "type", "bridge", ns=h)
        run("ip", "link", "set", "br0", "mtu", mtu, "up", ns=h)
        run("ip", "addr", "add", f"10.99.{i}.1/24", "dev", "br0", ns=h)
        run("ip", "link", "add", "ve", "mtu", mtu, "type", "veth", "peer", "name", "eth0", "netns", s, ns=h)
        run("ip", "link", "set", "ve", "master", "br0", "up", ns=h)
        run("ip", "addr", "add", f"10.99.{i}.2/24", "dev", "eth0", ns=s)
        run("ip", "link", "set", "eth0", "mtu", mtu, "up", ns=s)
        run("ip", "route", "add", "default", "via", f"10.99.{i}.1", ns=s)
        if nat:
            run("iptables", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED",
                "-j", "ACCEPT", ns=h)
            run("iptables", "-t", "nat", "-A", "POSTROUTING", "-s", f"10.99.{i}.0/24", "!", "-d",
                "10.99.0.0/16", "-j", "MASQUERADE", ns=h)
        if mode != "host-gw":
            run("ip", "link", "add", "vx", "address", f"06:00:00:00:00:0{i}", "mtu", mtu, "type", "vxlan",
                "id", "1", "local", f"{UL}.{base + i}", "dev", "eth0", "dstport", "8472", "nolearning", ns=h)
            run("ip", "addr", "add", f"10.99.{i}.0/32", "dev", "vx", ns=h)
            run("ip", "link", "set", "vx", "up", ns=h)
        hosts.append(h)
        sandboxes.append(s)
    for i, j in ((1, 2), (2, 1)):
        h = hosts[i - 1]
        if mode == "vxlan":
            run("ip", "neigh", "add", f"10.99.{j}.0", "lladdr", f"06:00:00:00:00:0{j}", "dev", "vx", "nud", "permanent", ns=h)
            run("bridge", "fdb", "append", f"06:00:00:00:00:0{j}", "dev", "vx", "dst", f"{UL}.{base + j}", "self", "permanent", ns=h)
            run("ip", "route", "add", f"10.99.{j}.0/24", "via", f"10.99.{j}.0", "dev", "vx", "onlink", ns=h)
        else:
            run("ip", "route", "add", f"10.99.{j}.0/24", "via", f"{UL}.{base + j}", ns=h)
    return sandboxes[0], sandboxes[1], "10.99.2.2"


def part_throughput(args):
    print("1. iperf3, one TCP stream sandbox to sandbox across two hosts, Gbit/s "
          f"(median of {args.rounds} alternating runs of {args.seconds} s)")
    print(f"{'mode':<16} {'netd':>7} {'by hand':>8} {'netd/hand':>10} {'hand+nat':>9} {'netd/(hand+nat)':>16}")
    for mode, driver, opts in (("vxlan", "vxlan", []), ("host-gw", "host-gw", []),
                               ("direct-routing", "vxlan", ["--opt", "direct-routing=true"])):
        bed = Bed()
        try:
            etcd = Etcd(bed, [f"{UL}.100"])
            a, b = Node(bed, etcd, 1), Node(bed, etcd, 2)
            a.start()
            b.start()
            a.netctl("network", "create", "--driver", driver, "--subnet", "10.244.0.0/16", *opts, "ov")
            wait(lambda: b.nodes("ov") == 2 and a.nodes("ov") == 2, 10)
            a.netctl("run", "--name", "s1", "--network", "ov")
            b.netctl("run", "--name", "s2", "--network", "ov")
            ours = (a.netns_of("s1"), b.netns_of("s2"), b.ip_of("s2", "ov"))
            hand_mode = "host-gw" if mode == "direct-routing" else mode
            theirs = by_hand(bed, hand_mode, "x")
            natted = by_hand(bed, hand_mode, "y", nat=True)
            n, h, hn = [], [], []
            for _ in range(args.rounds):
                n.append(iperf(ours[0], ours[1], ours[2], args.seconds))
                h.append(iperf(theirs[0], theirs[1], theirs[2], args.seconds))
                hn.append(iperf(natted[0], natted[1], natted[2], args.seconds))
            mn, mh, mhn = statistics.median(n), statistics.median(h), statistics.median(hn)
            print(f"{mode:<16} {mn:>7.2f} {mh:>8.2f} {mn / mh:>9.0%} {mhn:>9.2f} {mn / mhn:>15.0%}")
        finally:
            bed.close()
    print("(direct-routing by hand: plain routes, as netd programs adjacent peers with it; "
          "hand+nat: the same with conntrack and a masquerade rule, as every host that NATs its "
          "sandboxes has)")


def part_convergence(args):
    bed = Bed()
    try:
        etcd = Etcd(bed, [f"{UL}.101", f"{UL}.102", f"{UL}.103"])
        nodes = [Node(bed, etcd, n) for n in range(1, args.hosts + 1)]
        old, new = nodes[:-1], nodes[-1]
        for node in old:
            node.start()
        old[0].netctl("network", "create", "--driver", "vxlan", "--subnet", "10.0.0.0/8",
                      "--opt", "node-subnet-len=24", "ov")
        if not wait(lambda: all(n.nodes("ov") == len(old) for n in old), 30, 0.1):
            raise RuntimeError("the first nodes did not converge")
        for node in old:
            node.netctl("run", "--name", f"p{node.n}", "--network", "ov")
        pinger = {node.n: node.netns_of(f"p{node.n}") for node in old}
        gateways = {node.n: node.gateway("ov") for node in old}

        t0 = time.perf_counter()
        new.start()
        # The new node learns of the network from the store, leases its subnet, sets it up.
        if not wait(lambda: new.nodes("ov") > 0, 10, 0.002):
            raise RuntimeError("the new node did not join the network")
        joined = time.perf_counter() - t0
        new.netctl("run", "--name", "target", "--network", "ov")
        target = new.ip_of("target", "ov")
        done = {}

        def reach(node):
            while time.perf_counter() - t0 < 30:
                if subprocess.run(["nsenter", f"--net={pinger[node.n]}", "ping", "-c1", "-W0.2", target],
                                  capture_output=True).returncode == 0:
                    done[node.n] = time.perf_counter() - t0
                    return
        threads = [threading.Thread(target=reach, args=(n,)) for n in old]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        reach_all = max(done.values()) if len(done) == len(old) else float("nan")

        new.netctl("run", "--name", "late", "--network", "ov")
        t1 = time.perf_counter()
        named = {}

        def resolve(node):
            while time.perf_counter() - t1 < 10:
                out = subprocess.run(["nsenter", f"--net={node.ns}", "dig", "+short", "+tries=1", "+time=1",
                                      f"@{gateways[node.n]}", "late"], capture_output=True, text=True)
                if out.stdout.strip():
                    named[node.n] = time.perf_counter() - t1
                    return
                time.sleep(0.005)
        threads = [threading.Thread(target=resolve, args=(n,)) for n in old]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        name_all = max(named.values()) if len(named) == len(old) else float("nan")
        print(f"2. convergence with {args.hosts} hosts and a 3-member etcd")
        print(f"   new node's netd start -> every other node pings a sandbox on it: {reach_all:.2f} s "
              f"(target < 2 s; median node {statistics.median(done.values()):.2f} s; "
              f"the new node had the network after {joined:.2f} s)")
        print(f"   netctl run returns -> its name resolves on every other node: {name_all:.3f} s (target < 0.5 s)")
    finally:
        bed.close()


def attach_times(node, network, n):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        node.netctl("run", "-d", "--network", network)
        out.append((time.perf_counter() - t) * 1000)
    return out


def part_attach(args):
    bed = Bed()
    try:
        etcd = Etcd(bed, [f"{UL}.100"])
        node = Node(bed, etcd, 1)
        node.start()
        node.netctl("network", "create", "--driver", "vxlan", "--subnet", "10.0.0.0/8",
                    "--opt", "node-subnet-len=20", "ov")
        wait(lambda: node.nodes("ov") == 1, 10)
        node.netctl("network", "create", "--subnet", "172.30.0.0/20", "local")
        print("3. attach latency (netctl run -d), ms, cluster network vs local network on one netd")
        print(f"{'N':>5} {'cluster med':>12} {'local med':>10} {'cluster/local':>14}")
        done = 0
        for size in [int(x) for x in args.sizes.split(",")]:
            cluster, local = [], []
            for _ in range(size - done):
                cluster += attach_times(node, "ov", 1)
                local += attach_times(node, "local", 1)
            done = size
            tenth = max(1, len(cluster) // 10)
            c, l = statistics.median(cluster[-tenth:]), statistics.median(local[-tenth:])
            print(f"{size:>5} {c:>12.2f} {l:>10.2f} {c / l:>13.2f}x")
        print("   (median of the last tenth of the runs up to N sandboxes per network)")
    finally:
        bed.close()


def part_scale(args):
    bed = Bed()
    try:
        etcd = Etcd(bed, [f"{UL}.100"], max_txn_ops=max(128, args.peers))
        node = Node(bed, etcd, 1)
        node.start()
        node.netctl("network", "create", "--driver", "vxlan", "--subnet", "10.0.0.0/8",
                    "--opt", "node-subnet-len=24", "ov")
        wait(lambda: node.nodes("ov") == 1, 10)
        before = attach_times(node, "ov", 20)

        def count():
            routes = run("ip", "-o", "route", "show", "dev", "netd.1", ns=node.ns).count("\n") + 1
            neigh = run("ip", "neigh", "show", "dev", "netd.1", "nud", "permanent", ns=node.ns).count("\n") + 1
            fdb = run("bridge", "fdb", "show", "dev", "netd.1", ns=node.ns).count(" dst ")
            return routes, neigh, fdb

        b64 = lambda s: base64.b64encode(s.encode()).decode()
        puts = []
        for i in range(args.peers):
            subnet = f"10.{(i + 16) // 256}.{(i + 16) % 256}.0"
            mac = f"06:aa:{i // 65536 % 256:02x}:{i // 256 % 256:02x}:{i % 256:02x}:01"
            lease = {"PublicIP": f"172.16.{i // 250}.{i % 250 + 1}", "BackendType": "vxlan",
                     "BackendData": {"VNI": 1, "VtepMAC": mac}, "NodeName": f"sim{i}"}
            puts.append({"requestPut": {"key": b64(f"/netd/networks/ov/subnets/{subnet}-24"),
                                        "value": b64(json.dumps(lease))}})
        t = time.perf_counter()
        etcd.api("/v3/kv/txn", {"success": puts})
        ok = wait(lambda: count() == (args.peers, args.peers, args.peers), 30, 0.01)
        programmed = time.perf_counter() - t if ok else float("nan")
        rss = node.rss_mib()
        during = attach_times(node, "ov", 20)
        requests = etcd.requests()
        time.sleep(args.rest)
        after = etcd.requests()
        delta = {m: after[m] - requests.get(m, 0) for m in after if after[m] != requests.get(m, 0)}
        at_rest = sum(delta.values()) * 60 / args.rest
        t = time.perf_counter()
        etcd.api("/v3/kv/deleterange", {"key": b64("/netd/networks/ov/subnets/10."),
                                        "range_end": b64("/netd/networks/ov/subnets/10/")})
        ok = wait(lambda: count()[2] == 0 and count()[0] <= 1, 30, 0.01)
        removed = time.perf_counter() - t if ok else float("nan")
        print(f"4. scale: {args.peers} simulated peers written into etcd in one transaction")
        print(f"   all programmed (route + neighbour + FDB each): {programmed:.2f} s (target < 1 s); "
              f"all removed: {removed:.2f} s")
        print(f"   netd RSS with them: {rss:.1f} MiB (target < 64)")
        print(f"   attach latency: {statistics.median(before):.2f} ms without, "
              f"{statistics.median(during):.2f} ms with them")
        print(f"   etcd requests at rest, per node and minute: {at_rest:.1f} (over {args.rest:.0f} s: "
              f"{delta or 'none'}; lease renewals every TTL/3, the watch is one stream)")
    finally:
        bed.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="1,2,3,4")
    ap.add_argument("--hosts", type=int, default=20)
    ap.add_argument("--sizes", default="10,500")
    ap.add_argument("--peers", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rest", type=float, default=30)
    a = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    if os.geteuid() != 0:
        sys.exit("error: run as root (the benchmark creates network namespaces)")
    build()
    # This process works from a controller namespace on the underlay (to reach etcd's
    # HTTP API); every host is its own namespace.
    subprocess.run(["ip", "netns", "add", os.path.basename(CONTROLLER)], check=True)
    original = os.open("/proc/self/ns/net", os.O_RDONLY)
    parts = [int(p) for p in a.parts.split(",")]
    try:
        enter_netns(CONTROLLER)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        for part, fn in ((1, part_throughput), (2, part_convergence), (3, part_attach), (4, part_scale)):
            if part in parts:
                fn(a)
    finally:
        libc.setns(original, CLONE_NEWNET)
        os.close(original)
        subprocess.run(["ip", "netns", "del", os.path.basename(CONTROLLER)], stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
