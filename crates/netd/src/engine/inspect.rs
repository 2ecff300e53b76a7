//! Read-only views in Docker's JSON shapes (`network inspect`, `inspect`, `ls`, `ps`).

use bridge_driver::Network;
use linkd::format_mac;
use serde_json::{json, Map, Value};

use super::Engine;
use crate::error::Result;
use crate::pause;
use crate::state::Sandbox;

impl Engine {
    pub fn network_json(&self, network: &Network) -> Value {
        let mut containers = Map::new();
        for sandbox in self.state.attached(&network.id) {
            for ep in sandbox
                .endpoints
                .iter()
                .filter(|e| e.network_id == network.id)
            {
                containers.insert(
                    sandbox.id.clone(),
                    json!({
                        "Name": sandbox.name,
                        "EndpointID": ep.endpoint_id,
                        "MacAddress": format_mac(&ep.mac),
                        "IPv4Address": format!("{}/{}", ep.ip, network.subnet.prefix_len()),
                        "IPv6Address": "",
                    }),
                );
            }
        }
        let mut config = json!({
            "Subnet": network.subnet.to_string(),
            "Gateway": network.gateway.to_string(),
        });
        if let Some(range) = network.ip_range {
            config["IPRange"] = json!(range.to_string());
        }
        json!({
            "Name": network.name,
            "Id": network.id,
            "Created": network.created,
            "Scope": "local",
            "Driver": network.driver,
            "EnableIPv4": true,
            "EnableIPv6": false,
            "IPAM": {"Driver": "default", "Options": {}, "Config": [config]},
            "Internal": network.internal,
            "Attachable": false,
            "Ingress": false,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": false,
            "Containers": containers,
            "Options": network.options,
            "Labels": network.labels,
        })
    }

    pub fn inspect_networks(&self, references: &[String]) -> Result<Vec<Value>> {
        references
            .iter()
            .map(|r| Ok(self.network_json(self.state.network(r)?)))
            .collect()
    }

    pub fn list_networks(&self) -> Vec<Value> {
        self.ordered_networks()
            .into_iter()
            .map(|n| self.network_json(n))
            .collect()
    }

    pub fn sandbox_json(&self, sandbox: &Sandbox) -> Value {
        let pid = self
            .runtime
            .get(&sandbox.id)
            .and_then(|r| r.pause_pid)
            .unwrap_or(0);
        let running = pid > 0 && pause::is_pause_of(pid, &sandbox.id) && pause::is_alive(pid);
        let mut networks = Map::new();
        for ep in &sandbox.endpoints {
            let Some(network) = self.state.networks.get(&ep.network_id) else {
                continue;
            };
            networks.insert(
                network.name.clone(),
                json!({
                    "IPAMConfig": if ep.static_ip { json!({"IPv4Address": ep.ip.to_string()}) } else { Value::Null },
                    "Aliases": ep.aliases,
                    "NetworkID": network.id,
                    "EndpointID": ep.endpoint_id,
                    "Gateway": network.gateway.to_string(),
                    "IPAddress": ep.ip.to_string(),
                    "IPPrefixLen": network.subnet.prefix_len(),
                    "MacAddress": format_mac(&ep.mac),
                    "InterfaceName": format!("eth{}", ep.interface),
                }),
            );
        }
        let mut ports = Map::new();
        for m in &sandbox.ports {
            let key = format!("{}/{}", m.container_port, m.protocol);
            let binding =
                json!({"HostIp": m.host_ip.to_string(), "HostPort": m.host_port.to_string()});
            match ports.get_mut(&key).and_then(Value::as_array_mut) {
                Some(list) => list.push(binding),
                None => {
                    ports.insert(key, json!([binding]));
                }
            }
        }
        let paths = self.paths();
        let files_of = sandbox.netns_owner();
        json!({
            "Id": sandbox.id,
            "Created": sandbox.created,
            "Name": format!("/{}", sandbox.name),
            "State": {
                "Status": if running { "running" } else { "dead" },
                "Running": running,
                "Pid": if running { pid } else { 0 },
            },
            "HostnamePath": paths.sandbox_file(files_of, "hostname"),
            "HostsPath": paths.sandbox_file(files_of, "hosts"),
            "ResolvConfPath": paths.sandbox_file(files_of, "resolv.conf"),
            "LogPath": paths.sandbox_file(&sandbox.id, "log"),
            "Config": {"Hostname": self.state.sandboxes.get(files_of).map(|s| s.short_id()).unwrap_or(sandbox.short_id())},
            "HostConfig": {"NetworkMode": sandbox.network_mode, "PortBindings": ports.clone()},
            "NetworkSettings": {
                "SandboxID": sandbox.netns_owner(),
                "SandboxKey": self.netns_path(sandbox),
                "Ports": ports,
                "Networks": networks,
            },
        })
    }

    pub fn inspect_sandbox(&self, reference: &str) -> Result<Value> {
        Ok(self.sandbox_json(self.state.sandbox(reference)?))
    }

    pub fn list_sandboxes(&self) -> Vec<Value> {
        let mut sandboxes: Vec<&Sandbox> = self.state.sandboxes.values().collect();
        sandboxes.sort_by(|a, b| b.created.cmp(&a.created));
        sandboxes
            .into_iter()
            .map(|s| self.sandbox_json(s))
            .collect()
    }
}
