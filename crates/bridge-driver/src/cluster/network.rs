//! A cluster network as one node records it: a local bridge network on the node's leased
//! subnet, plus what makes it part of the cluster (the stored configuration, this node's
//! lease, the peers last seen), and the overlay it needs in the kernel.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::config::FlannelConfig;
use super::lease::{vtep_mac, LeaseAttrs, VxlanData};
use super::peers::{peer_plans, PeerPlan, PeerRoute};
use crate::error::ModelError;
use crate::model::Network;

/// What makes a node's network part of a cluster network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMembership {
    /// The configuration every node reads from the store.
    pub config: FlannelConfig,
    /// The address peers reach this node on.
    pub node_ip: Ipv4Addr,
    pub node_name: String,
    /// The interface that carries the node IP (the vxlan device's underlay).
    pub underlay: String,
    /// The other nodes' leases, as last read from the store: kept, so a restart without
    /// the store programs the same peers and traffic keeps flowing.
    #[serde(default)]
    pub peers: Vec<(Ipv4Net, LeaseAttrs)>,
}

impl ClusterMembership {
    /// The vxlan device's name: `netd.<vni>`.
    pub fn device(&self) -> Option<String> {
        self.config.vxlan().map(|(vni, _)| format!("netd.{vni}"))
    }

    /// This node's lease record for a subnet.
    pub fn lease(&self) -> LeaseAttrs {
        LeaseAttrs {
            public_ip: self.node_ip,
            backend_type: self.config.backend.kind,
            backend_data: self.config.vxlan().map(|(vni, _)| VxlanData {
                vni,
                vtep_mac: linkd::format_mac(&vtep_mac(self.node_ip, vni)),
            }),
            node_name: self.node_name.clone(),
        }
    }
}

/// The id of a cluster network: the same on every node, from its name and subnet.
pub fn cluster_network_id(name: &str, config: &FlannelConfig) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("netd cluster network {name} {}", config.network));
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The local network of a cluster network on this node: its bridge on the leased
/// `subnet` with the subnet's first address as gateway, names by netd's DNS, and the
/// MTU the driver leaves of the underlay's.
pub fn build_cluster_network(
    name: &str,
    created: String,
    subnet: Ipv4Net,
    membership: ClusterMembership,
    underlay_mtu: u32,
) -> Result<Network, ModelError> {
    let id = cluster_network_id(name, &membership.config);
    let gateway = crate::model::first_host(subnet)?;
    let mut options = BTreeMap::new();
    options.insert(
        "node-subnet-len".to_string(),
        membership.config.subnet_len.to_string(),
    );
    if let Some((vni, port)) = membership.config.vxlan() {
        options.insert("vni".into(), vni.to_string());
        options.insert("port".into(), port.to_string());
        options.insert(
            "direct-routing".into(),
            membership.config.backend.direct_routing.to_string(),
        );
    }
    let bridge = crate::names::default_bridge_name(&id);
    Ok(Network {
        bridge_mac: crate::mac::bridge_mac(&id),
        bridge,
        driver: membership.config.backend.kind.as_str().to_string(),
        mtu: membership.config.mtu(underlay_mtu),
        id,
        name: name.to_string(),
        created,
        subnet,
        gateway,
        ip_range: None,
        internal: false,
        icc: true,
        masquerade: true,
        options,
        labels: BTreeMap::new(),
        default: false,
        dns: true,
        dns_upstreams: Vec::new(),
        cluster: Some(membership),
    })
}

/// The kernel state a cluster network needs beyond its bridge, from the peers recorded
/// on it; `connected` are the subnets of this node's interfaces. Also returns every
/// peer's plan (for `network inspect`, unreachable ones with the reason).
pub fn overlay_plan(
    network: &Network,
    connected: &[Ipv4Net],
) -> Option<(linkd::OverlayState, Vec<PeerPlan>)> {
    let membership = network.cluster.as_ref()?;
    let config = &membership.config;
    let plans = peer_plans(
        config,
        Some(network.subnet),
        membership.node_ip,
        &membership.peers,
        connected,
    );
    let device = config.vxlan().map(|(vni, port)| linkd::VxlanState {
        name: membership.device().unwrap_or_default(),
        vni,
        port,
        local: membership.node_ip,
        underlay: membership.underlay.clone(),
        mtu: network.mtu,
        mac: vtep_mac(membership.node_ip, vni),
        address: Ipv4Net::new(network.subnet.network(), 32).unwrap_or(network.subnet),
        alias: format!("netd cluster network {}", network.id),
    });
    let peers = plans
        .iter()
        .filter_map(|p| match &p.route {
            PeerRoute::Vxlan {
                gateway,
                vtep_mac,
                node_ip,
            } => Some(linkd::PeerEntry::Vxlan {
                subnet: p.subnet,
                gateway: *gateway,
                mac: *vtep_mac,
                remote: *node_ip,
            }),
            PeerRoute::Direct { via } => Some(linkd::PeerEntry::Direct {
                subnet: p.subnet,
                via: *via,
            }),
            PeerRoute::Unreachable { .. } => None,
        })
        .collect();
    Some((
        linkd::OverlayState {
            device,
            cluster: config.network,
            node_subnet_len: config.subnet_len,
            own: network.subnet,
            peers,
        },
        plans,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::config::Driver;

    fn config(driver: Driver, direct: bool) -> FlannelConfig {
        let mut options = BTreeMap::new();
        if direct {
            options.insert("direct-routing".to_string(), "true".to_string());
        }
        FlannelConfig::from_request("10.244.0.0/16".parse().expect("net"), driver, &options)
            .expect("valid")
    }

    fn membership(driver: Driver, direct: bool, peers: &[(&str, &str)]) -> ClusterMembership {
        let cfg = config(driver, direct);
        let mut m = ClusterMembership {
            config: cfg,
            node_ip: "192.168.50.1".parse().expect("ip"),
            node_name: "a".into(),
            underlay: "eth0".into(),
            peers: Vec::new(),
        };
        for (subnet, ip) in peers {
            let mut peer = m.clone();
            peer.node_ip = ip.parse().expect("ip");
            m.peers.push((subnet.parse().expect("net"), peer.lease()));
        }
        m
    }

    #[test]
    fn a_vxlan_network_plans_its_device_and_one_entry_per_peer() {
        let m = membership(
            Driver::Vxlan,
            true,
            &[
                ("10.244.2.0/24", "192.168.50.2"),
                ("10.244.3.0/24", "10.9.0.3"),
            ],
        );
        let net = build_cluster_network(
            "n",
            "t".into(),
            "10.244.1.0/24".parse().expect("net"),
            m,
            1500,
        )
        .expect("network");
        assert_eq!(net.gateway.to_string(), "10.244.1.1");
        assert_eq!(net.mtu, 1450);
        assert_eq!(net.driver, "vxlan");
        let connected = ["192.168.50.0/24".parse().expect("net")];
        let (overlay, plans) = overlay_plan(&net, &connected).expect("cluster");
        let device = overlay.device.expect("vxlan");
        assert_eq!(device.name, "netd.1");
        assert_eq!(device.address.to_string(), "10.244.1.0/32");
        assert_eq!(plans.len(), 2);
        // The adjacent peer is routed directly, the other through the device.
        assert!(matches!(overlay.peers[0], linkd::PeerEntry::Direct { .. }));
        assert!(matches!(overlay.peers[1], linkd::PeerEntry::Vxlan { .. }));
    }

    #[test]
    fn host_gw_has_no_device_and_skips_peers_it_cannot_reach() {
        let m = membership(
            Driver::HostGw,
            false,
            &[
                ("10.244.2.0/24", "192.168.50.2"),
                ("10.244.3.0/24", "10.9.0.3"),
            ],
        );
        let net = build_cluster_network(
            "n",
            "t".into(),
            "10.244.1.0/24".parse().expect("net"),
            m,
            1500,
        )
        .expect("network");
        assert_eq!(net.mtu, 1500);
        let (overlay, plans) =
            overlay_plan(&net, &["192.168.50.0/24".parse().expect("net")]).expect("cluster");
        assert!(overlay.device.is_none());
        assert_eq!(overlay.peers.len(), 1);
        assert!(matches!(plans[1].route, PeerRoute::Unreachable { .. }));
    }

    #[test]
    fn the_id_is_the_same_on_every_node() {
        let a = cluster_network_id("n", &config(Driver::Vxlan, false));
        assert_eq!(a, cluster_network_id("n", &config(Driver::Vxlan, false)));
        assert_ne!(a, cluster_network_id("m", &config(Driver::Vxlan, false)));
        assert_eq!(a.len(), 64);
    }
}
