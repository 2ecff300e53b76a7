"""Shared pieces of netd's benchmarks: bench hosts (throwaway network namespaces), a netd
started in one, timing and statistics. Nothing here touches the machine's own namespace."""
import ctypes
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL("libc.so.6", use_errno=True)


def sh(*args, **kw):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def build():
    sh("cargo", "build", "--release", "--bins", "-q", cwd=ROOT)


def enter_netns(path):
    """Moves this (single-threaded) process into a namespace; children inherit it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)


class BenchHost:
    """A throwaway namespace this process works in until close()."""

    def __init__(self, tag):
        self.name = f"ndbench-{os.getpid()}-{tag}"
        self.original = os.open("/proc/self/ns/net", os.O_RDONLY)
        sh("ip", "netns", "add", self.name)
        enter_netns(f"/run/netns/{self.name}")
        sh("ip", "link", "set", "lo", "up")

    def close(self):
        libc.setns(self.original, CLONE_NEWNET)
        os.close(self.original)
        subprocess.run(["ip", "netns", "del", self.name], stderr=subprocess.DEVNULL)


def remove_mounts_under(path):
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(path)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], stderr=subprocess.DEVNULL)


class Netd:
    """netd running in the current bench host, its run directory on tmpfs (as /run is on
    a real host; it is not on every VM)."""

    def __init__(self, *extra_args):
        self.tmp = tempfile.mkdtemp(prefix="ndbench-")
        os.makedirs(f"{self.tmp}/run")
        sh("mount", "-t", "tmpfs", "ndbench", f"{self.tmp}/run")
        self.socket = f"{self.tmp}/run/netd.sock"
        self.proc = subprocess.Popen(
            [os.path.join(BIN, "netd"), "--root", f"{self.tmp}/root", "--run-dir", f"{self.tmp}/run",
             *extra_args],
            stdout=subprocess.DEVNULL, stderr=open(f"{self.tmp}/netd.log", "w"))
        for _ in range(200):
            try:
                s = socket.socket(socket.AF_UNIX)
                s.connect(self.socket)
                s.close()
                return
            except OSError:
                time.sleep(0.025)
        raise RuntimeError("netd did not start")

    def netctl(self, *args):
        return [os.path.join(BIN, "netctl"), "--socket", self.socket, *args]

    def rss_mib(self):
        return rss_mib(self.proc.pid)

    def close(self):
        # Sandboxes left by a failed run: their pause processes live in this host.
        try:
            ids = subprocess.run(self.netctl("ps", "-q"), capture_output=True, text=True).stdout.split()
            for i in ids:
                subprocess.run(self.netctl("rm", "-f", i), capture_output=True)
        finally:
            self.proc.terminate()
            self.proc.wait()
            remove_mounts_under(f"{self.tmp}/run")
            shutil.rmtree(self.tmp, ignore_errors=True)


def rss_mib(pid):
    """A process's resident memory."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed(argv, stdin=None, env=None):
    """Runs a command; returns (ms, stdout). Fails loudly."""
    t = time.perf_counter_ns()
    out = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    ms = (time.perf_counter_ns() - t) / 1e6
    if out.returncode != 0:
        raise RuntimeError(f"{argv[:3]} failed: {out.stdout.decode().strip()} {out.stderr.decode().strip()}")
    return ms, out.stdout.decode().strip()


def summary(samples):
    """median, p90 and growth (median of the last tenth over the first tenth)."""
    s = sorted(samples)
    tenth = max(1, len(samples) // 10)
    first = statistics.median(samples[:tenth])
    last = statistics.median(samples[-tenth:])
    return {
        "median": statistics.median(s),
        "p90": s[min(len(s) - 1, int(len(s) * 0.9))],
        "growth": last / first if first else float("nan"),
    }


def print_table(rows, ours="netd", peers=()):
    """rows: (N, op, our summary, {peer: summary or None})."""
    head = f"{'N':>5} {'op':<7} {ours + ' med':>9} {'p90':>7} {'growth':>7}"
    for p in peers:
        head += f"   {p + ' med':>14} {'p90':>7} {'growth':>7} {p + '/' + ours:>12}"
    print(head)
    for n, op, mine, theirs in rows:
        line = f"{n:>5} {op:<7} {mine['median']:>9.2f} {mine['p90']:>7.2f} {mine['growth']:>7.2f}"
        for p in peers:
            t = theirs.get(p)
            if t:
                line += (f"   {t['median']:>14.2f} {t['p90']:>7.2f} {t['growth']:>7.2f}"
                         f" {t['median'] / mine['median']:>11.1f}x")
        print(line)


def netd_lifecycle(n, tag, run_args):
    """In a fresh bench host: `netctl run -d --network benchnet RUN_ARGS(i)` n times, then
    `netctl rm` each. Returns (create ms, remove ms, netd RSS MiB at n sandboxes)."""
    host = BenchHost(tag)
    netd = None
    try:
        netd = Netd()
        timed(netd.netctl("network", "create", "--subnet", "10.88.0.0/16", "benchnet"))
        create, ids = [], []
        for i in range(n):
            ms, out = timed(netd.netctl("run", "-d", "--network", "benchnet", *run_args(i)))
            create.append(ms)
            ids.append(out)
        rss = netd.rss_mib()
        remove = [timed(netd.netctl("rm", i))[0] for i in ids]
        return create, remove, rss
    finally:
        if netd:
            netd.close()
        host.close()


class PeerNamespaces:
    """n container namespaces made beforehand for a peer (as its runtime would), removed on
    close; `paths` are their /run/netns paths."""

    def __init__(self, host, n):
        self.names = [f"{host.name}-c{i}" for i in range(n)]
        self.paths = [f"/run/netns/{name}" for name in self.names]
        self._batch("add")

    def _batch(self, verb):
        with tempfile.NamedTemporaryFile("w", suffix=".batch") as f:
            f.writelines(f"netns {verb} {name}\n" for name in self.names)
            f.flush()
            subprocess.run(["ip", "-batch", f.name], check=(verb == "add"), stderr=subprocess.DEVNULL)

    def close(self):
        self._batch("del")
