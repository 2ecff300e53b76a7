#!/usr/bin/env python3
"""Hostile DNS clients for netd's tests: hand-made packets that no resolver library sends.

  dnsprobe.py bad SERVER          send malformed and odd requests; print one line per case:
                                  "<case> <rcode or 'none'>"
  dnsprobe.py flood SERVER NAME SECONDS
                                  send requests for NAME as fast as possible, without
                                  waiting for answers; print how many were sent
"""
import os
import random
import socket
import struct
import sys
import time


def name_bytes(name):
    out = b""
    for label in name.split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def header(qid, flags=0x0100, qd=1, an=0, ns=0, ar=0):
    return struct.pack(">HHHHHH", qid, flags, qd, an, ns, ar)


def question(name, qtype=1, qclass=1):
    return name_bytes(name) + struct.pack(">HH", qtype, qclass)


def opt(version=0, size=1232):
    # root name, TYPE OPT, CLASS = payload size, TTL = ext-rcode/version/flags, RDLEN 0
    return b"\0" + struct.pack(">HHBBHH", 41, size, 0, version, 0, 0)


def cases():
    long_label = "a" * 64
    long_name = ".".join(["b" * 63] * 5)  # 320 octets: over the 255 limit
    yield "empty", b""
    yield "short-header", b"\x12\x34\x01"
    yield "header-only", header(1, qd=0)
    yield "truncated-question", header(2) + b"\x03web"
    yield "label-over-63", header(3) + b"\x40" + long_label.encode() + b"\0\0\1\0\1"
    yield "name-over-255", header(4) + question(long_name)
    yield "pointer-loop", header(5) + b"\xc0\x0c\0\1\0\1"
    yield "two-questions", header(6, qd=2) + question("web") + question("www")
    yield "counts-lie", header(7, an=50, ar=9) + question("web")
    yield "type-unknown", header(8) + question("web", qtype=65399)
    yield "type-mx", header(9) + question("web", qtype=15)
    yield "class-chaos", header(10) + question("version.bind", qtype=16, qclass=3)
    yield "opcode-status", header(11, flags=0x1100) + question("web")
    yield "opcode-update", header(12, flags=0x2900) + question("web")
    yield "edns-version-1", header(13, ar=1) + question("web") + opt(version=1)
    yield "is-a-response", header(14, flags=0x8180) + question("web")
    yield "random-bytes", bytes(random.Random(7).getrandbits(8) for _ in range(300))
    yield "trailing-garbage", header(15) + question("web") + b"\xff" * 40


def rcode_of(answer, sent):
    if len(answer) < 12:
        return "short-answer"
    if len(sent) >= 2 and answer[:2] != sent[:2]:
        return "wrong-id"
    names = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
             5: "REFUSED"}
    rcode = answer[3] & 0x0F
    # BADVERS (16): header rcode 0 and extended rcode 1 in an OPT record that ends the
    # answer (root name, type 41, class, ext-rcode, version, flags, rdlength 0).
    tail = answer[-11:]
    if rcode == 0 and len(answer) >= 23 and tail[:3] == b"\x00\x00\x29" and tail[5] == 1:
        return "BADVERS"
    return names.get(rcode, str(rcode))


def bad(server):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    for label, packet in cases():
        s.sendto(packet, (server, 53))
        try:
            answer, _ = s.recvfrom(65535)
            print(label, rcode_of(answer, packet))
        except socket.timeout:
            print(label, "none")
        sys.stdout.flush()


def flood(server, name, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    end = time.monotonic() + float(seconds)
    sent = 0
    body = question(name)
    while time.monotonic() < end:
        for _ in range(256):
            try:
                s.sendto(header(sent & 0xFFFF) + body, (server, 53))
                sent += 1
            except (BlockingIOError, ConnectionRefusedError):
                pass
        try:
            while True:
                s.recv(65535)
        except (BlockingIOError, ConnectionRefusedError):
            pass
    print(sent)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "bad":
        bad(sys.argv[2])
    elif len(sys.argv) == 5 and sys.argv[1] == "flood":
        flood(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
