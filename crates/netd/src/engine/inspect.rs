//! Read-only views in Docker's JSON shapes (`network inspect`, `inspect`, `ls`, `ps`), as
//! the API's types.

use std::collections::BTreeMap;

use bridge_driver::Network;
use linkd::format_mac;

use super::Engine;
use crate::api::types::{
    ClusterNode, ConfigFrom, EndpointIpamConfig, EndpointSettings, HostConfig, Ipam, IpamConfig,
    NetworkContainer, NetworkInfo, NetworkSettings, PortBinding, PortMap, SandboxConfig,
    SandboxInfo, SandboxState,
};
use crate::error::Result;
use crate::state::Sandbox;

impl Engine {
    pub fn network_info(&self, network: &Network) -> NetworkInfo {
        let mut containers = BTreeMap::new();
        for sandbox in self.state.attached(&network.id) {
            for ep in sandbox
                .endpoints
                .iter()
                .filter(|e| e.network_id == network.id)
            {
                containers.insert(
                    sandbox.id.clone(),
                    NetworkContainer {
                        name: sandbox.name.clone(),
                        endpoint_id: ep.endpoint_id.clone(),
                        mac_address: format_mac(&ep.mac),
                        ipv4_address: format!("{}/{}", ep.ip, network.subnet.prefix_len()),
                        ipv6_address: String::new(),
                    },
                );
            }
        }
        NetworkInfo {
            name: network.name.clone(),
            id: network.id.clone(),
            created: network.created.clone(),
            scope: if network.cluster.is_some() {
                "global".into()
            } else {
                "local".into()
            },
            driver: network.driver.clone(),
            enable_ipv4: true,
            enable_ipv6: false,
            ipam: Ipam {
                driver: "default".into(),
                options: BTreeMap::new(),
                config: vec![IpamConfig {
                    subnet: network.subnet.to_string(),
                    gateway: network.gateway.to_string(),
                    ip_range: network.ip_range.map(|r| r.to_string()),
                }],
            },
            internal: network.internal,
            attachable: false,
            ingress: false,
            config_from: ConfigFrom {
                network: String::new(),
            },
            config_only: false,
            containers,
            options: network.options.clone(),
            labels: network.labels.clone(),
            cluster_subnet: network
                .cluster
                .as_ref()
                .map(|c| c.config.network.to_string()),
            nodes: self.cluster_nodes(network),
        }
    }

    /// A cluster network's nodes: this one, then each peer with whether it is reached.
    fn cluster_nodes(&self, network: &Network) -> Vec<ClusterNode> {
        let Some(membership) = &network.cluster else {
            return Vec::new();
        };
        let mut nodes = vec![ClusterNode {
            name: membership.node_name.clone(),
            node_ip: membership.node_ip.to_string(),
            subnet: network.subnet.to_string(),
            reachable: true,
            reason: String::new(),
        }];
        if let Some((_, peers)) = bridge_driver::cluster::overlay_plan(network, &self.connected) {
            nodes.extend(peers.into_iter().map(|p| {
                let reason = match p.route {
                    bridge_driver::cluster::PeerRoute::Unreachable { reason } => reason,
                    _ => String::new(),
                };
                ClusterNode {
                    name: p.node_name,
                    node_ip: p.node_ip.to_string(),
                    subnet: p.subnet.to_string(),
                    reachable: reason.is_empty(),
                    reason,
                }
            }));
        }
        nodes
    }

    pub fn inspect_networks(&self, references: &[String]) -> Result<Vec<NetworkInfo>> {
        references
            .iter()
            .map(|r| Ok(self.network_info(self.state.network(r)?)))
            .collect()
    }

    pub fn list_networks(&self) -> Vec<NetworkInfo> {
        self.ordered_networks()
            .into_iter()
            .map(|n| self.network_info(n))
            .collect()
    }

    pub fn sandbox_info(&self, sandbox: &Sandbox) -> SandboxInfo {
        let pid = self
            .runtime
            .get(&sandbox.id)
            .and_then(|r| r.pause_pid)
            .unwrap_or(0);
        let (running, pid) = match &sandbox.attached {
            Some(attached) => (attached.alive(), attached.pid.unwrap_or(0)),
            None => (self.processes.is_pause_of(pid, &sandbox.id), pid),
        };
        let mut networks = BTreeMap::new();
        for ep in &sandbox.endpoints {
            let Some(network) = self.state.networks.get(&ep.network_id) else {
                continue;
            };
            networks.insert(
                network.name.clone(),
                EndpointSettings {
                    ipam_config: ep.static_ip.then(|| EndpointIpamConfig {
                        ipv4_address: ep.ip.to_string(),
                    }),
                    aliases: ep.aliases.clone(),
                    network_id: network.id.clone(),
                    endpoint_id: ep.endpoint_id.clone(),
                    gateway: network.gateway.to_string(),
                    ip_address: ep.ip.to_string(),
                    ip_prefix_len: network.subnet.prefix_len(),
                    mac_address: format_mac(&ep.mac),
                    interface_name: format!("eth{}", ep.interface),
                },
            );
        }
        let mut ports = PortMap::new();
        for m in &sandbox.ports {
            ports
                .entry(format!("{}/{}", m.container_port, m.protocol))
                .or_default()
                .push(PortBinding {
                    host_ip: m.host_ip.to_string(),
                    host_port: m.host_port.to_string(),
                });
        }
        let paths = self.paths();
        let files_of = sandbox.netns_owner();
        let files_dir = match self.state.sandboxes.get(files_of) {
            Some(owner) => self.files_dir(owner),
            None => paths.sandbox_dir(files_of),
        };
        let file = |name: &str| files_dir.join(name).display().to_string();
        SandboxInfo {
            managed: sandbox.attached.is_none(),
            id: sandbox.id.clone(),
            created: sandbox.created.clone(),
            name: format!("/{}", sandbox.name),
            state: SandboxState {
                status: if running { "running" } else { "dead" }.into(),
                running,
                pid: if running { pid } else { 0 },
            },
            hostname_path: file("hostname"),
            hosts_path: file("hosts"),
            resolv_conf_path: file("resolv.conf"),
            log_path: paths.sandbox_file(&sandbox.id, "log").display().to_string(),
            config: SandboxConfig {
                hostname: self
                    .state
                    .sandboxes
                    .get(files_of)
                    .map(|s| s.hostname())
                    .unwrap_or(sandbox.hostname())
                    .to_string(),
                labels: sandbox.labels.clone(),
            },
            host_config: HostConfig {
                network_mode: sandbox.network_mode.to_string(),
                port_bindings: ports.clone(),
            },
            network_settings: NetworkSettings {
                sandbox_id: sandbox.netns_owner().to_string(),
                sandbox_key: self.netns_path(sandbox).display().to_string(),
                ports,
                networks,
            },
        }
    }

    pub fn inspect_sandbox(&self, reference: &str) -> Result<SandboxInfo> {
        Ok(self.sandbox_info(self.state.sandbox(reference)?))
    }

    pub fn list_sandboxes(&self) -> Vec<SandboxInfo> {
        let mut sandboxes: Vec<&Sandbox> = self.state.sandboxes.values().collect();
        sandboxes.sort_by(|a, b| b.created.cmp(&a.created));
        sandboxes
            .into_iter()
            .map(|s| self.sandbox_info(s))
            .collect()
    }
}
