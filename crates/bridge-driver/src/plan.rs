//! Plans: the kernel state a network or an endpoint needs, as plain data. The daemon and
//! the CNI plugins apply them with `linkd`; reconciliation compares them with what is there.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::mac::mac_from_ip;
use crate::model::Network;
use crate::names::{bridge_alias, host_veth_name};

/// A bridge as planned, in the form `linkd::ensure_bridge` applies (plain data).
pub use linkd::{BridgeState as BridgePlan, OtherAddresses, Ownership};

/// A network's bridge: netd's alone, with the gateway address, and `route_localnet`
/// (published ports answer on 127.0.0.1: DNATed loopback traffic must be routable there).
pub fn bridge_plan(net: &Network) -> BridgePlan {
    BridgePlan {
        name: net.bridge.clone(),
        mac: net.bridge_mac,
        mtu: net.mtu,
        alias: bridge_alias(&net.id),
        ownership: Ownership::Exclusive,
        addresses: vec![net.gateway_net()],
        other_addresses: OtherAddresses::Keep,
        promisc: false,
        sysctls: vec![(
            format!("net/ipv4/conf/{}/route_localnet", net.bridge),
            "1".to_string(),
        )],
    }
}

/// netd-bridge's bridge (the reference plugin's `bridge`, `mtu`, `promiscMode`): any
/// bridge of that name is used as it is; a new one gets a MAC derived from its name.
/// `gateways` are the addresses `isGateway` puts on it (none before IPAM has answered);
/// another address of their subnet is refused, or replaced with `forceAddress`.
pub fn cni_bridge_plan(
    name: &str,
    mtu: u32,
    promisc: bool,
    gateways: Vec<Ipv4Net>,
    force_address: bool,
) -> BridgePlan {
    BridgePlan {
        name: name.to_string(),
        mac: crate::mac::bridge_mac(&format!("cni bridge {name}")),
        mtu,
        alias: "netd cni bridge".to_string(),
        ownership: Ownership::Shared,
        addresses: gateways,
        other_addresses: if force_address {
            OtherAddresses::Replace
        } else {
            OtherAddresses::Refuse
        },
        promisc,
        sysctls: Vec::new(),
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

/// A route inside a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutePlan {
    pub destination: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
}

/// What the CNI bridge plugin's IPAM plugin handed out (IPv4 only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniIpam {
    /// Each address with the gateway IPAM named for it, if any.
    pub addresses: Vec<(Ipv4Net, Option<Ipv4Addr>)>,
    pub routes: Vec<RoutePlan>,
}

/// What the CNI bridge plugin makes of an IPAM result (the reference bridge's
/// `calcGateways` and route set-up): the container's addresses with their gateways, its
/// routes, and the gateway addresses the bridge carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniAttachmentPlan {
    /// Address, and the gateway the result reports for it: IPAM's, else (with
    /// `isGateway`) the subnet's first address, as the reference bridge reports it.
    pub addresses: Vec<(Ipv4Net, Option<Ipv4Addr>)>,
    /// In the order they are installed; a route without a gateway of its own goes via the
    /// first address's gateway.
    pub routes: Vec<RoutePlan>,
    /// Gateway addresses on the bridge (`isGateway`), with the address's prefix length.
    pub bridge_addresses: Vec<Ipv4Net>,
    /// The host must forward (`isGateway`).
    pub forwarding: bool,
    /// The default route the plugin added (`isDefaultGateway`), which its result reports
    /// besides IPAM's routes.
    pub added_default_route: Option<RoutePlan>,
}

/// Plans a CNI attachment from the IPAM result. A subnet's first address is the gateway
/// where IPAM names none, as in the reference plugin; `is_default_gateway` adds the default
/// route via the first gateway and implies `is_gateway`.
pub fn cni_attachment_plan(
    ipam: &CniIpam,
    is_gateway: bool,
    is_default_gateway: bool,
) -> Result<CniAttachmentPlan, crate::ModelError> {
    let is_gateway = is_gateway || is_default_gateway;
    let mut addresses = Vec::new();
    let mut gateways = Vec::new();
    for (address, named) in &ipam.addresses {
        let gateway = named.unwrap_or_else(|| Ipv4Addr::from(u32::from(address.network()) + 1));
        gateways.push(Ipv4Net::new(gateway, address.prefix_len()).unwrap_or(*address));
        addresses.push((*address, named.or(is_gateway.then_some(gateway))));
    }
    let first_gateway = gateways.first().map(Ipv4Net::addr);
    let mut routes = ipam.routes.clone();
    let default = Ipv4Net::default();
    let mut added_default_route = None;
    if let (true, Some(gw)) = (is_default_gateway, first_gateway) {
        match routes.iter().find(|r| r.destination == default) {
            Some(RoutePlan {
                gateway: Some(other),
                ..
            }) if *other != gw => {
                return Err(crate::ModelError::invalid(
                    "isDefaultGateway",
                    format!("the IPAM plugin already routes {default} via {other}"),
                ));
            }
            Some(_) => {}
            None => {
                let route = RoutePlan {
                    destination: default,
                    gateway: Some(gw),
                };
                added_default_route = Some(route);
                routes.push(route);
            }
        }
    }
    for route in &mut routes {
        route.gateway = route.gateway.or(first_gateway);
    }
    Ok(CniAttachmentPlan {
        addresses,
        routes,
        bridge_addresses: if is_gateway { gateways } else { Vec::new() },
        forwarding: is_gateway,
        added_default_route,
    })
}

#[cfg(test)]
mod cni_tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("net")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    #[test]
    fn the_gateway_is_the_subnets_first_address_unless_ipam_names_one() {
        let ipam = CniIpam {
            addresses: vec![(net("10.1.0.7/24"), None)],
            routes: vec![RoutePlan {
                destination: net("0.0.0.0/0"),
                gateway: None,
            }],
        };
        let plan = cni_attachment_plan(&ipam, true, false).expect("plan");
        assert_eq!(plan.addresses, [(net("10.1.0.7/24"), Some(ip("10.1.0.1")))]);
        assert_eq!(plan.routes[0].gateway, Some(ip("10.1.0.1")));
        assert_eq!(plan.bridge_addresses, [net("10.1.0.1/24")]);
        assert!(plan.forwarding);
        let plan = cni_attachment_plan(&ipam, false, false).expect("plan");
        assert_eq!(
            plan.addresses,
            [(net("10.1.0.7/24"), None)],
            "not isGateway"
        );
        let named = CniIpam {
            addresses: vec![(net("10.1.0.7/24"), Some(ip("10.1.0.254")))],
            ..ipam
        };
        let plan = cni_attachment_plan(&named, false, false).expect("plan");
        assert_eq!(
            plan.addresses,
            [(net("10.1.0.7/24"), Some(ip("10.1.0.254")))]
        );
        assert!(plan.bridge_addresses.is_empty() && !plan.forwarding);
        assert_eq!(plan.routes[0].gateway, Some(ip("10.1.0.254")));
    }

    #[test]
    fn is_default_gateway_adds_the_default_route_once() {
        let ipam = CniIpam {
            addresses: vec![(net("10.1.0.7/24"), None)],
            routes: vec![RoutePlan {
                destination: net("192.0.2.0/24"),
                gateway: Some(ip("10.1.0.9")),
            }],
        };
        let plan = cni_attachment_plan(&ipam, false, true).expect("plan");
        assert_eq!(
            plan.routes,
            [
                RoutePlan {
                    destination: net("192.0.2.0/24"),
                    gateway: Some(ip("10.1.0.9"))
                },
                RoutePlan {
                    destination: net("0.0.0.0/0"),
                    gateway: Some(ip("10.1.0.1"))
                },
            ]
        );
        assert!(plan.forwarding, "isDefaultGateway implies isGateway");
        let conflicting = CniIpam {
            routes: vec![RoutePlan {
                destination: net("0.0.0.0/0"),
                gateway: Some(ip("10.1.0.200")),
            }],
            ..ipam
        };
        let err = cni_attachment_plan(&conflicting, false, true).expect_err("conflict");
        assert!(err.to_string().starts_with("isDefaultGateway:"), "{err}");
    }
}
