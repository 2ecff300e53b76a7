#!/usr/bin/env python3
"""Connectivity probes for netd's network policy tests, run inside namespaces.

  policyprobe.py serve tcp:80 udp:5353 ...   answer "ok" on each port until killed
  policyprobe.py probe IP:tcp:80 IP:udp:5353 ...
                                             try each at once (1 s each); print
                                             "<target> ok" or "<target> blocked" per line
"""
import socket
import sys
import threading

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


def probe_one(target, results):
    ip, proto, port = target.split(":")
    answer = b""
    try:
        if proto == "tcp":
            with socket.create_connection((ip, int(port)), timeout=TIMEOUT) as s:
                s.settimeout(TIMEOUT)
                answer = s.recv(16)
        else:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(TIMEOUT)
                s.sendto(b"?", (ip, int(port)))
                answer, _ = s.recvfrom(16)
    except OSError:
        pass
    results[target] = "ok" if answer == b"ok" else "blocked"


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
    else:
        probe(sys.argv[2:])
