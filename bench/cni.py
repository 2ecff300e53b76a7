"""A minimal CNI runtime for benchmarks: runs a plugin chain the way libcni does (each
plugin exec'd with the CNI_* environment and its config on stdin, prevResult chained,
runtimeConfig given to plugins that declare the capability, DEL in reverse order)."""
import json
import os

from benchlib import timed

CNI_PATH = os.environ.get("CNI_PATH", "/usr/lib/cni")


def reference_chain(state_dir, bridge="ndcni0"):
    """bridge (gateway, masquerade, hairpin, host-local 10.88.0.0/16) + portmap."""
    return {
        "cniVersion": "1.0.0",
        "name": "benchnet",
        "plugins": [
            {"type": "bridge", "bridge": bridge, "isGateway": True, "ipMasq": True,
             "hairpinMode": True,
             "ipam": {"type": "host-local",
                      "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]],
                      "routes": [{"dst": "0.0.0.0/0"}],
                      "dataDir": os.path.join(state_dir, "ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        ],
    }


def _invoke(command, plugin, netconf, container_id, netns, runtime_config, prev):
    conf = dict(plugin)
    conf["name"] = netconf["name"]
    conf["cniVersion"] = netconf["cniVersion"]
    caps = conf.pop("capabilities", {})
    granted = {k: v for k, v in runtime_config.items() if caps.get(k)}
    if granted:
        conf["runtimeConfig"] = granted
    if prev is not None:
        conf["prevResult"] = prev
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": container_id, "CNI_NETNS": netns,
           "CNI_IFNAME": "eth0", "CNI_PATH": CNI_PATH, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    ms, out = timed([os.path.join(CNI_PATH, plugin["type"])], json.dumps(conf).encode(), env)
    return ms, (json.loads(out) if out else None)


def add(netconf, container_id, netns, runtime_config):
    """(total ms, final result)."""
    total, prev = 0.0, None
    for plugin in netconf["plugins"]:
        ms, prev = _invoke("ADD", plugin, netconf, container_id, netns, runtime_config, prev)
        total += ms
    return total, prev


def delete(netconf, container_id, netns, runtime_config, result):
    total = 0.0
    for plugin in reversed(netconf["plugins"]):
        ms, _ = _invoke("DEL", plugin, netconf, container_id, netns, runtime_config, result)
        total += ms
    return total
