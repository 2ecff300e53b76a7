//! What a node programs for each peer of a cluster network, as data: flannel's vxlan
//! entries (neighbour, FDB, onlink route, in that order), a plain route (host-gw, and
//! vxlan's direct routing), or nothing with the reason, when the peer cannot be reached.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::config::{Driver, FlannelConfig};
use super::lease::LeaseAttrs;

/// How a peer's subnet is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerRoute {
    /// Through the vxlan device: the neighbour entry (the peer subnet's network address
    /// -> the peer's VTEP MAC), the FDB entry (that MAC -> the peer's node IP), and the
    /// route `subnet via gateway dev <vxlan> onlink`.
    Vxlan {
        gateway: Ipv4Addr,
        vtep_mac: [u8; 6],
        node_ip: Ipv4Addr,
    },
    /// A plain route via the peer's node IP, on a directly connected subnet.
    Direct { via: Ipv4Addr },
    /// Not programmed; why.
    Unreachable { reason: String },
}

/// One peer of a cluster network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPlan {
    pub subnet: Ipv4Net,
    pub node_ip: Ipv4Addr,
    pub node_name: String,
    pub route: PeerRoute,
}

/// Plans every peer of a network from the leases in the store: all but this node's own,
/// each reached as the driver says. `connected` are the subnets of this node's
/// interfaces (a host-gw or direct-routing peer must be on one of them).
pub fn peer_plans(
    config: &FlannelConfig,
    own_subnet: Option<Ipv4Net>,
    own_ip: Ipv4Addr,
    leases: &[(Ipv4Net, LeaseAttrs)],
    connected: &[Ipv4Net],
) -> Vec<PeerPlan> {
    let mut plans: Vec<PeerPlan> = leases
        .iter()
        .filter(|(subnet, attrs)| Some(*subnet) != own_subnet && attrs.public_ip != own_ip)
        .map(|(subnet, attrs)| PeerPlan {
            subnet: *subnet,
            node_ip: attrs.public_ip,
            node_name: attrs.node_name.clone(),
            route: reach(config, *subnet, attrs, connected),
        })
        .collect();
    plans.sort_by_key(|p| p.subnet);
    plans
}

fn reach(
    config: &FlannelConfig,
    subnet: Ipv4Net,
    attrs: &LeaseAttrs,
    connected: &[Ipv4Net],
) -> PeerRoute {
    let unreachable = |reason: String| PeerRoute::Unreachable { reason };
    if !config.network.contains(&subnet) || subnet.prefix_len() != config.subnet_len {
        return unreachable(format!(
            "its subnet {subnet} is not a /{} of {}",
            config.subnet_len, config.network
        ));
    }
    if attrs.backend_type != config.backend.kind {
        return unreachable(format!(
            "it uses the {} backend, this network {}",
            attrs.backend_type.as_str(),
            config.backend.kind.as_str()
        ));
    }
    let adjacent = connected.iter().any(|c| c.contains(&attrs.public_ip));
    match config.backend.kind {
        Driver::HostGw if adjacent => PeerRoute::Direct {
            via: attrs.public_ip,
        },
        Driver::HostGw => unreachable(format!(
            "host-gw needs the peer on a directly connected subnet, and {} is not",
            attrs.public_ip
        )),
        Driver::Vxlan if adjacent && config.backend.direct_routing => PeerRoute::Direct {
            via: attrs.public_ip,
        },
        Driver::Vxlan => {
            let (vni, _) = config.vxlan().unwrap_or_default();
            match (attrs.backend_data.as_ref(), attrs.vtep_mac()) {
                (Some(data), _) if data.vni != vni => {
                    unreachable(format!("its VNI is {}, this network's {vni}", data.vni))
                }
                (Some(_), Some(vtep_mac)) => PeerRoute::Vxlan {
                    gateway: subnet.network(),
                    vtep_mac,
                    node_ip: attrs.public_ip,
                },
                _ => unreachable("its lease has no VTEP MAC".to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::lease::VxlanData;
    use std::collections::BTreeMap;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("net")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    fn lease(public_ip: &str, kind: Driver, vni: u32) -> LeaseAttrs {
        LeaseAttrs {
            public_ip: ip(public_ip),
            backend_type: kind,
            backend_data: (kind == Driver::Vxlan).then(|| VxlanData {
                vni,
                vtep_mac: "06:00:00:00:00:02".into(),
            }),
            node_name: "n2".into(),
        }
    }

    fn config(driver: Driver, options: &[(&str, &str)]) -> FlannelConfig {
        let options: BTreeMap<String, String> = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        FlannelConfig::from_request(net("10.244.0.0/16"), driver, &options).expect("config")
    }

    #[test]
    fn vxlan_peers_get_flannels_entries_and_direct_routing_plain_routes() {
        let leases = vec![
            (
                net("10.244.1.0/24"),
                lease("192.168.1.10", Driver::Vxlan, 1),
            ),
            (
                net("10.244.2.0/24"),
                lease("192.168.1.11", Driver::Vxlan, 1),
            ),
            (net("10.244.3.0/24"), lease("172.16.0.5", Driver::Vxlan, 1)),
            (net("10.244.4.0/24"), lease("172.16.0.6", Driver::Vxlan, 7)),
        ];
        let connected = [net("192.168.1.0/24")];
        let plans = peer_plans(
            &config(Driver::Vxlan, &[]),
            Some(net("10.244.1.0/24")),
            ip("192.168.1.10"),
            &leases,
            &connected,
        );
        assert_eq!(plans.len(), 3, "not this node's own lease");
        assert_eq!(
            plans[0].route,
            PeerRoute::Vxlan {
                gateway: ip("10.244.2.0"),
                vtep_mac: [6, 0, 0, 0, 0, 2],
                node_ip: ip("192.168.1.11")
            }
        );
        assert!(matches!(plans[1].route, PeerRoute::Vxlan { .. }));
        assert!(
            matches!(&plans[2].route, PeerRoute::Unreachable { reason } if reason.contains("VNI is 7")),
            "{:?}",
            plans[2]
        );
        let direct = peer_plans(
            &config(Driver::Vxlan, &[("direct-routing", "true")]),
            Some(net("10.244.1.0/24")),
            ip("192.168.1.10"),
            &leases,
            &connected,
        );
        assert_eq!(
            direct[0].route,
            PeerRoute::Direct {
                via: ip("192.168.1.11")
            }
        );
        assert!(
            matches!(direct[1].route, PeerRoute::Vxlan { .. }),
            "not adjacent"
        );
    }

    #[test]
    fn host_gw_needs_adjacent_peers_and_the_same_backend() {
        let leases = vec![
            (
                net("10.244.2.0/24"),
                lease("192.168.1.11", Driver::HostGw, 0),
            ),
            (net("10.244.3.0/24"), lease("172.16.0.5", Driver::HostGw, 0)),
            (
                net("10.244.4.0/24"),
                lease("192.168.1.12", Driver::Vxlan, 1),
            ),
            (
                net("10.245.0.0/24"),
                lease("192.168.1.13", Driver::HostGw, 0),
            ),
        ];
        let plans = peer_plans(
            &config(Driver::HostGw, &[]),
            None,
            ip("192.168.1.10"),
            &leases,
            &[net("192.168.1.0/24")],
        );
        assert_eq!(
            plans[0].route,
            PeerRoute::Direct {
                via: ip("192.168.1.11")
            }
        );
        for (plan, says) in
            plans[1..]
                .iter()
                .zip(["directly connected", "vxlan backend", "not a /24"])
        {
            assert!(
                matches!(&plan.route, PeerRoute::Unreachable { reason } if reason.contains(says)),
                "{plan:?}"
            );
        }
    }
}
