//! Plans: the kernel state a network or an endpoint needs, as plain data. The daemon and
//! the CNI plugins apply them with `linkd`; reconciliation compares them with what is there.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::mac::mac_from_ip;
use crate::model::Network;
use crate::names::{bridge_alias, host_veth_name};

/// A network's bridge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgePlan {
    pub name: String,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub alias: String,
    /// The gateway address on the bridge.
    pub address: Ipv4Net,
}

pub fn bridge_plan(net: &Network) -> BridgePlan {
    BridgePlan {
        name: net.bridge.clone(),
        mac: net.bridge_mac,
        mtu: net.mtu,
        alias: bridge_alias(&net.id),
        address: net.gateway_net(),
    }
}

/// The host-wide sysctls the networks need (`/proc/sys` paths and values).
pub fn host_sysctls(networks: &[Network]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if networks.iter().any(|n| !n.internal) {
        out.push(("net/ipv4/ip_forward".to_string(), "1".to_string()));
    }
    if networks.iter().any(|n| !n.icc) {
        // icc=false is enforced by iptables on bridged traffic, which needs br_netfilter.
        out.push((
            "net/bridge/bridge-nf-call-iptables".to_string(),
            "1".to_string(),
        ));
    }
    out
}

/// One interface of a sandbox on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointPlan {
    /// Host end of the veth pair, attached to the bridge.
    pub host_veth: String,
    pub bridge: String,
    /// The interface inside the sandbox (`eth0`, `eth1`, ...).
    pub interface: String,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub address: Ipv4Net,
    /// The gateway of the default route through this interface, if it carries it.
    pub default_gateway: Option<Ipv4Addr>,
}

/// Plans endpoint `ethN` of a sandbox on a network. Internal networks never carry the
/// default route: they have no way out.
pub fn endpoint_plan(
    net: &Network,
    sandbox_id: &str,
    interface: u32,
    ip: Ipv4Addr,
    wants_default_route: bool,
) -> EndpointPlan {
    EndpointPlan {
        host_veth: host_veth_name(sandbox_id, interface),
        bridge: net.bridge.clone(),
        interface: format!("eth{interface}"),
        mac: mac_from_ip(ip),
        mtu: net.mtu,
        // The prefix length comes from a valid subnet, so this cannot fail.
        address: Ipv4Net::new(ip, net.subnet.prefix_len()).unwrap_or(net.subnet),
        default_gateway: (wants_default_route && !net.internal).then_some(net.gateway),
    }
}
