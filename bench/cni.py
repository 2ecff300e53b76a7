"""A minimal CNI runtime for benchmarks: runs a plugin chain the way libcni does (each
plugin exec'd with the CNI_* environment and its config on stdin, prevResult chained,
runtimeConfig given to plugins that declare the capability, DEL in reverse order)."""
import hashlib
import json
import os
import shutil
import tempfile

from benchlib import BenchHost, PeerNamespaces, timed

CNI_PATH = os.environ.get("CNI_PATH", "/usr/lib/cni")


def reference_chain(state_dir, bridge="ndcni0", types=("bridge", "host-local", "portmap")):
    """bridge (gateway, masquerade, hairpin, host-local 10.88.0.0/16) + portmap; `types`
    names the three plugins (netd's: netd-bridge, netd-ipam, netd-portmap)."""
    return {
        "cniVersion": "1.0.0",
        "name": "benchnet",
        "plugins": [
            {"type": types[0], "bridge": bridge, "isGateway": True, "ipMasq": True,
             "hairpinMode": True,
             "ipam": {"type": types[1],
                      "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]],
                      "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": os.path.join(state_dir, "ipam")}},
            {"type": types[2], "capabilities": {"portMappings": True}, "snat": True},
        ],
    }


def _invoke(command, plugin, netconf, container_id, netns, runtime_config, prev, path=None):
    conf = dict(plugin)
    conf["name"] = netconf["name"]
    conf["cniVersion"] = netconf["cniVersion"]
    caps = conf.pop("capabilities", {})
    granted = {k: v for k, v in runtime_config.items() if caps.get(k)}
    if granted:
        conf["runtimeConfig"] = granted
    if prev is not None:
        conf["prevResult"] = prev
    path = path or CNI_PATH
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns,
           "CNI_IFNAME": "eth0", "CNI_PATH": path, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    if os.environ.get("NETD_CNI_RUN_DIR"):
        env["NETD_CNI_RUN_DIR"] = os.environ["NETD_CNI_RUN_DIR"]
    binary = next(os.path.join(d, plugin["type"]) for d in path.split(":")
                  if os.path.exists(os.path.join(d, plugin["type"])))
    ms, out = timed([binary], json.dumps(conf).encode(), env)
    return ms, (json.loads(out) if out else None)


def add(netconf, container_id, netns, runtime_config, path=None):
    """(total ms, final result)."""
    total, prev = 0.0, None
    for plugin in netconf["plugins"]:
        ms, prev = _invoke("ADD", plugin, netconf, container_id, netns, runtime_config, prev, path)
        total += ms
    return total, prev


def delete(netconf, container_id, netns, runtime_config, result, path=None):
    total = 0.0
    for plugin in reversed(netconf["plugins"]):
        ms, _ = _invoke("DEL", plugin, netconf, container_id, netns, runtime_config, result, path)
        total += ms
    return total


def lifecycle(n, tag, ports, types=("bridge", "host-local", "portmap"), path=None):
    """In a fresh bench host with n container namespaces made beforehand (untimed): ADD each
    container with `ports` port mappings (host ports 20000+i, 30000+i, ...), then DEL each.
    Returns (ADD ms list, DEL ms list)."""
    host = BenchHost(tag)
    state = tempfile.mkdtemp(prefix="ndbench-cni-")
    namespaces = None
    conf = reference_chain(state, types=types)
    # netd's plugins keep their lock and rule handles here instead of /run/netd-cni.
    os.environ["NETD_CNI_RUN_DIR"] = os.path.join(state, "netd-cni")
    try:
        namespaces = PeerNamespaces(host, n)
        adds, dels, attached = [], [], []
        for i, netns in enumerate(namespaces.paths):
            rc = {"portMappings": [
                {"hostPort": 20000 + 10000 * k + i, "containerPort": port, "protocol": "tcp"}
                for k, port in enumerate([80, 443][:ports])]}
            cid = hashlib.sha256(f"ndbench-{tag}-{i}".encode()).hexdigest()
            ms, result = add(conf, cid, netns, rc, path)
            adds.append(ms)
            attached.append((cid, rc, result, netns))
        for cid, rc, result, netns in attached:
            dels.append(delete(conf, cid, netns, rc, result, path))
        return adds, dels
    finally:
        if namespaces:
            namespaces.close()
        host.close()
        shutil.rmtree(state, ignore_errors=True)
        os.environ.pop("NETD_CNI_RUN_DIR", None)
