#!/usr/bin/env python3
"""What running netd as an observed service costs: `netctl run -d` / `rm` latency with
nobody watching and with an operator's tools attached (a `netctl system events` watcher
and a Prometheus scraper at 10 Hz), in alternating rounds at the same sandbox count; side
by side with `netavark setup` / `teardown`, which has neither metrics nor events.

Also: a /metrics scrape's latency and size at 10, 100 and 1000 sandboxes, how soon a
watcher sees an operation's event, and netd's RSS with the event history full.

Usage (root): bench/service.py [--sandboxes 1000 (with the rounds' own)] [--rounds 4] [--per-round 25]
                               [--skip-netavark]
"""
import argparse
import os
import subprocess
import sys
import threading
import time
import urllib.request

from benchlib import BenchHost, Netd, build, summary, timed
from netavark import NETAVARK, netavark_run

ADDR = "127.0.0.1:9464"
URL = f"http://{ADDR}/metrics"


def scrape():
    """(ms, bytes) of one /metrics scrape."""
    t = time.perf_counter_ns()
    with urllib.request.urlopen(URL, timeout=5) as r:
        body = r.read()
    return (time.perf_counter_ns() - t) / 1e6, len(body)


class Observers:
    """An events watcher and a 10 Hz scraper, as an operator's tools run beside netd."""

    def __init__(self, netd):
        self.events = subprocess.Popen(netd.netctl("system", "events"), stdout=subprocess.PIPE)
        self.lines = 0
        self.stop = threading.Event()
        self.scrapes = 0
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.scraper = threading.Thread(target=self._scrape, daemon=True)
        self.reader.start()
        self.scraper.start()

    def _read(self):
        for _ in self.events.stdout:
            self.lines += 1

    def _scrape(self):
        while not self.stop.wait(0.1):
            scrape()
            self.scrapes += 1

    def close(self):
        self.stop.set()
        self.scraper.join()
        self.events.terminate()
        self.events.wait()


def sandbox_rounds(netd, base, rounds, per_round):
    """Alternating quiet and observed rounds of run -d / rm at `base` sandboxes."""
    results = {"quiet": ([], []), "observed": ([], [])}
    events_seen = 0
    for r in range(2 * rounds):
        mode = "observed" if r % 2 else "quiet"
        observers = Observers(netd) if mode == "observed" else None
        try:
            ids = []
            for _ in range(per_round):
                ms, out = timed(netd.netctl("run", "-d", "--network", "benchnet"))
                results[mode][0].append(ms)
                ids.append(out)
            for i in ids:
                results[mode][1].append(timed(netd.netctl("rm", i))[0])
        finally:
            if observers:
                time.sleep(0.2)
                observers.close()
                events_seen += observers.lines
    return results, events_seen


def event_latency(netd, n):
    """ms from starting `netctl run -d` to its event arriving at a watcher, and the run's
    own ms, n times."""
    watcher = subprocess.Popen(netd.netctl("system", "events", "--filter", "event=start"),
                               stdout=subprocess.PIPE)
    time.sleep(0.2)
    seen, runs = [], []
    try:
        for _ in range(n):
            t = time.perf_counter_ns()
            ms, out = timed(netd.netctl("run", "-d", "--network", "benchnet"))
            watcher.stdout.readline()
            seen.append((time.perf_counter_ns() - t) / 1e6)
            runs.append(ms)
            # At the same count as the rounds (a bridge takes 1023 ports).
            timed(netd.netctl("rm", out))
    finally:
        watcher.terminate()
        watcher.wait()
    return seen, runs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sandboxes", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--per-round", type=int, default=25)
    ap.add_argument("--skip-netavark", action="store_true")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("error: run as root (the benchmark creates network namespaces)")
    build()
    host = BenchHost("svc")
    netd = None
    try:
        netd = Netd("--no-default-network", "--metrics-addr", ADDR)
        timed(netd.netctl("network", "create", "--subnet", "10.88.0.0/16", "benchnet"))
        scrapes = []
        made = 0
        # The rounds' sandboxes come on top: a bridge takes at most 1023 ports.
        for size in (10, 100, a.sandboxes - a.per_round):
            while made < size:
                timed(netd.netctl("run", "-d", "--network", "benchnet"))
                made += 1
            samples = [scrape() for _ in range(50)]
            scrapes.append((size, summary([ms for ms, _ in samples]), samples[-1][1]))
            print(f"{size} sandboxes made", file=sys.stderr)
        results, events_seen = sandbox_rounds(netd, made, a.rounds, a.per_round)
        seen, runs = event_latency(netd, 50)
        rss = netd.rss_mib()
    finally:
        if netd:
            netd.close()
        host.close()
    nv = None
    if not a.skip_netavark and os.path.exists(NETAVARK):
        nv = netavark_run(a.rounds * a.per_round, ports=0)

    print(f"run -d / rm at {made} sandboxes, ms: {a.rounds} alternating rounds of {a.per_round} each")
    print(f"{'op':<8} {'quiet med':>10} {'p90':>7} {'observed med':>13} {'p90':>7} {'observed/quiet':>15}"
          + (f" {'netavark med':>13} {'netavark/observed':>18}" if nv else ""))
    for k, op in enumerate(("run -d", "rm")):
        q = summary(results["quiet"][k])
        o = summary(results["observed"][k])
        line = (f"{op:<8} {q['median']:>10.2f} {q['p90']:>7.2f} {o['median']:>13.2f} {o['p90']:>7.2f}"
                f" {o['median'] / q['median']:>14.2f}x")
        if nv:
            p = summary(nv[k])
            line += f" {p['median']:>13.2f} {p['median'] / o['median']:>17.1f}x"
        print(line)
    expected = a.rounds * a.per_round * 2
    print(f"observed rounds: the watcher got {events_seen} events of {expected} operations")
    if nv:
        print("netavark: setup / teardown on namespaces made beforehand (untimed); no metrics or events")
    print()
    print(f"{'sandboxes':>9} {'scrape med ms':>14} {'p90':>7} {'bytes':>8}")
    for size, s, size_bytes in scrapes:
        print(f"{size:>9} {s['median']:>14.2f} {s['p90']:>7.2f} {size_bytes:>8}")
    s, r = summary(seen), summary(runs)
    print()
    print(f"event seen by a watcher: median {s['median']:.2f} ms after netctl run -d started "
          f"(the run itself: {r['median']:.2f} ms)")
    print(f"netd RSS at {made} sandboxes with the event history full: {rss:.1f} MiB")


if __name__ == "__main__":
    main()
