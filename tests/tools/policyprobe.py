#!/usr/bin/env python3
"""Connectivity probes for netd's network policy tests, run inside namespaces.

  policyprobe.py serve tcp:80 udp:5353 ...   answer "ok" on each port until killed
  policyprobe.py probe IP:tcp:80 IP:udp:5353 ...
                                             try each at once (1 s each); print
                                             "<target> ok" or "<target> blocked" per line
  policyprobe.py wait ok|blocked IP:tcp:80 SECONDS
                                             probe every 50 ms (100 ms each) until the
                                             verdict is the one given; print the seconds
                                             it took, or exit 1 when SECONDS pass first
"""
import socket
import sys
import threading
import time

TIMEOUT = 1.0


def serve(specs):
    threads = []
    for spec in specs:
        proto, port = spec.split(":")
        port = int(port)
        if proto == "tcp":
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port))
            s.listen(64)

            def tcp_loop(s=s):
                while True:
                    conn, _ = s.accept()
                    try:
                        conn.sendall(b"ok")
                    finally:
                        conn.close()
            threads.append(threading.Thread(target=tcp_loop, daemon=True))
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("0.0.0.0", port))

            def udp_loop(s=s):
                while True:
                    _, peer = s.recvfrom(512)
                    s.sendto(b"ok", peer)
            threads.append(threading.Thread(target=udp_loop, daemon=True))
    for t in threads:
        t.start()
    print("ready", flush=True)
    threading.Event().wait()


def verdict(target, timeout):
    ip, proto, port = target.split(":")
    answer = b""
    try:
        if proto == "tcp":
            with socket.create_connection((ip, int(port)), timeout=timeout) as s:
                s.settimeout(timeout)
                answer = s.recv(16)
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(timeout)
                s.sendto(b"?", (ip, int(port)))
                answer, _ = s.recvfrom(16)
    except OSError:
        pass
    return "ok" if answer == b"ok" else "blocked"


def probe_one(target, results):
    results[target] = verdict(target, TIMEOUT)


def wait(want, target, seconds):
    start = time.monotonic()
    while True:
        if verdict(target, 0.1) == want:
            print(f"{time.monotonic() - start:.3f}")
            return 0
        if time.monotonic() - start > seconds:
            print(f"still not {want} after {seconds} s")
            return 1
        time.sleep(0.05)


def probe(targets):
    results = {}
    threads = [threading.Thread(target=probe_one, args=(t, results)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for t in targets:
        print(t, results[t])


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2:])
    elif sys.argv[1] == "wait":
        sys.exit(wait(sys.argv[2], sys.argv[3], float(sys.argv[4])))
    else:
        probe(sys.argv[2:])
