#!/usr/bin/env python3
"""Network policy's costs: attaching a namespace and starting a sandbox with 0 and with 100
policies loaded (alternating rounds at the same sandbox count, so growth with the count is
not taken for policy's cost), applying one policy that selects 1000 sandboxes, iperf3 between two sandboxes a policy allows with
100 policies loaded against none, and the rule count with 10 policies at 10 and at 1000
sandboxes (it must not depend on the number of sandboxes).

No peer runs here: Debian packages no NetworkPolicy implementation (netavark and the
reference CNI plugins have none; Calico is not packaged).

Usage (root): bench/policy.py [--sandboxes 1000] [--no-iperf]
"""
import argparse
import json
import os
import subprocess
import sys
import time

from benchlib import BenchHost, Netd, PeerNamespaces, build, summary, timed
from published_ports import iperf_gbits


def policy(name, spec, namespace="default"):
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def apply(netd, policies):
    text = json.dumps({"apiVersion": "v1", "kind": "List", "items": policies}).encode()
    return timed(netd.netctl("policy", "apply", "-f", "-"), stdin=text)[0]


def many_policies(n):
    """n policies, each selecting its own service and letting its own clients in."""
    return [policy(f"svc{i}", {"podSelector": {"matchLabels": {"app": f"svc{i}"}},
                                "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": f"client{i}"}}}],
                                             "ports": [{"protocol": "TCP", "port": 8000 + i}]}]})
            for i in range(n)]


def rule_count():
    out = subprocess.run(["iptables-save", "-t", "filter"], capture_output=True, text=True).stdout
    return sum(1 for line in out.splitlines() if line.startswith("-A NETD-P"))


ROUNDS = 4
PER_ROUND = 25


def with_and_without(netd, host, labels):
    """(attach, run) latencies without and with 100 policies: ROUNDS rounds each way,
    alternating, each round PER_ROUND attaches and PER_ROUND runs."""
    namespaces = PeerNamespaces(host, 2 * ROUNDS * PER_ROUND)
    paths = iter(namespaces.paths)
    policies = many_policies(100)
    out = {False: ([], []), True: ([], [])}
    k = 0
    try:
        for _ in range(ROUNDS):
            for loaded in (False, True):
                if loaded:
                    apply(netd, policies)
                for _ in range(PER_ROUND):
                    out[loaded][0].append(timed(netd.netctl(
                        "attach", "--netns", next(paths), "--name", f"a{k}", "--network", "benchnet",
                        *labels(k)))[0])
                    out[loaded][1].append(timed(netd.netctl(
                        "run", "-d", "--name", f"s{k}", "--network", "benchnet", *labels(k)))[0])
                    k += 1
                if loaded:
                    timed(netd.netctl("policy", "rm", *[p["metadata"]["name"] for p in policies]))
        return out, k
    finally:
        namespaces.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sandboxes", type=int, default=1000)
    ap.add_argument("--no-iperf", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("error: run as root (the benchmark creates network namespaces)")
    build()
    host = BenchHost("pol")
    netd = None
    try:
        netd = Netd("--no-default-network")
        timed(netd.netctl("network", "create", "--subnet", "10.90.0.0/16", "benchnet"))
        labels = lambda i: ["--label", f"app=svc{i % 100}", "--label", "tier=web"]
        latencies, started = with_and_without(netd, host, labels)
        apply(netd, many_policies(100))
        # Fill up to N sandboxes, then one policy selecting all of them.
        for i in range(started, a.sandboxes):
            timed(netd.netctl("run", "-d", "--name", f"s{i}", "--network", "benchnet", *labels(i)))
        selecting_all = apply(netd, [policy("all-web", {"podSelector": {"matchLabels": {"tier": "web"}},
                                                       "ingress": [{"from": [{"podSelector": {}}]}]})])
        for i, what in enumerate(("attach (netctl attach --netns)", "sandbox start (netctl run -d)")):
            without = summary(latencies[False][i])["median"]
            loaded = summary(latencies[True][i])["median"]
            print(f"{what}, ms: 0 policies median {without:.2f}, 100 policies median {loaded:.2f} "
                  f"({loaded / without:.2f}x)")
        print(f"policy apply selecting {a.sandboxes} sandboxes: {selecting_all:.1f} ms")
        print(f"netd RSS with {a.sandboxes} sandboxes and 101 policies: {netd.rss_mib():.1f} MiB")
    finally:
        if netd:
            netd.close()
        host.close()

    counts = {}
    for n in (10, a.sandboxes):
        host = BenchHost(f"rc{n}")
        netd = None
        try:
            netd = Netd("--no-default-network")
            timed(netd.netctl("network", "create", "--subnet", "10.91.0.0/16", "benchnet"))
            apply(netd, many_policies(10))
            for i in range(n):
                timed(netd.netctl("run", "-d", "--name", f"r{i}", "--network", "benchnet",
                                  "--label", f"app=svc{i % 10}", "--label", f"role=client{(i + 1) % 10}"))
            counts[n] = rule_count()
        finally:
            if netd:
                netd.close()
            host.close()
    print(f"policy rules with 10 policies: {counts[10]} at 10 sandboxes, {counts[a.sandboxes]} at {a.sandboxes}")

    if not a.no_iperf:
        host = BenchHost("poliperf")
        netd = None
        try:
            netd = Netd("--no-default-network")
            timed(netd.netctl("network", "create", "--subnet", "10.92.0.0/24", "perf"))
            timed(netd.netctl("run", "-d", "--name", "srv", "--network", "perf", "--label", "app=srv",
                              "--", "iperf3", "-s"))
            timed(netd.netctl("run", "-d", "--name", "cli", "--network", "perf", "--label", "role=cli"))
            time.sleep(0.5)
            key = json.loads(subprocess.run(netd.netctl("inspect", "cli"), capture_output=True,
                                            text=True).stdout)[0]["NetworkSettings"]["SandboxKey"]
            server_ip = "10.92.0.2"
            client = ["nsenter", f"--net={key}", "iperf3", "-c", server_ip, "-t", "5"]
            plain = [iperf_gbits(client) for _ in range(3)]
            allow = policy("srv", {"podSelector": {"matchLabels": {"app": "srv"}},
                                   "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "cli"}}}]}]})
            apply(netd, [allow] + many_policies(100))
            policed = [iperf_gbits(client) for _ in range(3)]
            print(f"iperf3 sandbox->sandbox, best of 3 x 5 s: no policy {max(plain):.1f} Gbit/s, "
                  f"101 policies {max(policed):.1f} Gbit/s ({max(policed) / max(plain) * 100:.0f}%)")
        finally:
            if netd:
                netd.close()
            host.close()


if __name__ == "__main__":
    main()
