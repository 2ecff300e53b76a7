"""Driving netavark (Debian 1.4) the way Podman does: one `netavark setup|teardown NETNS`
per container, Podman's network options JSON on stdin, namespaces made beforehand."""
import hashlib
import json
import os
import shutil
import tempfile

from benchlib import BenchHost, PeerNamespaces, timed

NETAVARK = os.environ.get("NETAVARK", "/usr/lib/podman/netavark")


def options(i, ports):
    cid = hashlib.sha256(f"ndbench-{i}".encode()).hexdigest()
    o = {
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
    }
    mappings = [(20000 + i, 80), (30000 + i, 443)][:ports]
    if mappings:
        o["port_mappings"] = [{"host_ip": "", "container_port": c, "host_port": h,
                               "range": 1, "protocol": "tcp"} for h, c in mappings]
    return json.dumps(o).encode()


def netavark_run(n, ports):
    """(setup ms list, teardown ms list) for n containers in a fresh bench host."""
    host = BenchHost(f"nv{n}p{ports}")
    tmp = tempfile.mkdtemp(prefix="ndbench-nv-")
    namespaces = None
    try:
        namespaces = PeerNamespaces(host, n)
        conf = ["--config", f"{tmp}/conf"]
        setup = [timed([NETAVARK] + conf + ["setup", path], options(i, ports))[0]
                 for i, path in enumerate(namespaces.paths)]
        teardown = [timed([NETAVARK] + conf + ["teardown", path], options(i, ports))[0]
                    for i, path in enumerate(namespaces.paths)]
        return setup, teardown
    finally:
        if namespaces:
            namespaces.close()
        host.close()
        shutil.rmtree(tmp, ignore_errors=True)
