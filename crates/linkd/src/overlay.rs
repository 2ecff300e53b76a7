//! A cluster network's overlay as it should be, and the applier that makes the kernel so:
//! the vxlan device (when the driver has one) and, per peer node, either flannel's vxlan
//! entries (permanent neighbour, permanent FDB entry, onlink route, added in that order
//! and removed in reverse) or a plain route via the peer's node IP.
//!
//! The applier compares with what the kernel has and sends only the difference, so the
//! same call creates, updates (a peer's new VTEP MAC or node IP), removes (a lease gone)
//! and repairs (an entry someone deleted).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::address::add_address_request;
use crate::error::Result;
use crate::kernel::Kernel;
use crate::link::{set_alias_request, set_mtu_request, set_up_request, Link, Mac};
use crate::route::{delete_route_request, replace_route_request, Route};
use crate::vxlan::{
    create_vxlan_request, delete_fdb_request, delete_neighbour_request, fdb_request,
    neighbour_request, onlink_route_request, FdbEntry, Neighbour, VxlanSpec,
};

/// A vxlan device as planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanState {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    /// The node IP: source of the encapsulated packets.
    pub local: Ipv4Addr,
    /// The interface that carries the node IP.
    pub underlay: String,
    pub mtu: u32,
    /// The VTEP MAC (stable across restarts, so peers' FDB entries stay right).
    pub mac: Mac,
    /// The node subnet's network address as a /32 (flannel's), the source of traffic the
    /// host itself sends into the overlay and the gateway peers route this node's subnet
    /// through.
    pub address: Ipv4Net,
    /// Marks the device as made by netd, and for which network.
    pub alias: String,
}

/// How one peer node's subnet is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEntry {
    /// Through the vxlan device: `gateway` (the peer subnet's network address) is at
    /// `mac`, which is at `remote` (the peer's node IP).
    Vxlan {
        subnet: Ipv4Net,
        gateway: Ipv4Addr,
        mac: Mac,
        remote: Ipv4Addr,
    },
    /// A plain route via the peer's node IP (host-gw, and vxlan's direct routing).
    Direct { subnet: Ipv4Net, via: Ipv4Addr },
}

impl PeerEntry {
    pub fn subnet(&self) -> Ipv4Net {
        match self {
            PeerEntry::Vxlan { subnet, .. } | PeerEntry::Direct { subnet, .. } => *subnet,
        }
    }
}

/// What one cluster network wants of the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayState {
    pub device: Option<VxlanState>,
    /// The cluster subnet: a route to a node subnet of it that no peer wants is netd's
    /// and is removed.
    pub cluster: Ipv4Net,
    /// The length of node subnets.
    pub node_subnet_len: u8,
    /// This node's own subnet (its bridge's connected route): never touched.
    pub own: Ipv4Net,
    pub peers: Vec<PeerEntry>,
}

impl OverlayState {
    fn is_ours(&self, route: &Route) -> bool {
        route.destination.prefix_len() == self.node_subnet_len
            && self.cluster.contains(&route.destination)
            && route.destination != self.own
    }
}

/// Makes the kernel match `plan`; returns what it changed (empty when all was in place).
pub fn ensure_overlay<K: Kernel + ?Sized>(
    kernel: &mut K,
    plan: &OverlayState,
) -> Result<Vec<String>> {
    let mut changes = Vec::new();
    let device = match &plan.device {
        Some(state) => Some(ensure_vxlan(kernel, state, &mut changes)?),
        None => None,
    };
    let (neighbours, fdb) = match &device {
        Some(link) => (
            kernel.neighbours(link.index)?,
            kernel.fdb_entries(link.index)?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    let routes = kernel.routes()?;

    let mut wanted_neighbours = Vec::new();
    let mut wanted_fdb = Vec::new();
    let mut wanted_routes = Vec::new();
    for peer in &plan.peers {
        match (*peer, &device) {
            (
                PeerEntry::Vxlan {
                    subnet,
                    gateway,
                    mac,
                    remote,
                },
                Some(link),
            ) => {
                wanted_neighbours.push(Neighbour {
                    index: link.index,
                    ip: gateway,
                    mac,
                });
                wanted_fdb.push(FdbEntry {
                    index: link.index,
                    mac,
                    remote,
                });
                wanted_routes.push((
                    Route {
                        destination: subnet,
                        gateway: Some(gateway),
                        oif: Some(link.index),
                    },
                    true,
                ));
            }
            // A vxlan peer without a device cannot be: the plan says both or neither.
            (PeerEntry::Vxlan { .. }, None) => {}
            (PeerEntry::Direct { subnet, via }, _) => wanted_routes.push((
                Route {
                    destination: subnet,
                    gateway: Some(via),
                    oif: None,
                },
                false,
            )),
        }
    }

    // Additions in flannel's order: neighbours, FDB entries, routes.
    let mut add = Vec::new();
    for n in wanted_neighbours.iter().filter(|n| !neighbours.contains(n)) {
        add.push(neighbour_request(n));
        changes.push(format!("added neighbour {} on {}", n.ip, name_of(&device)));
    }
    for e in wanted_fdb.iter().filter(|e| !fdb.contains(e)) {
        add.push(fdb_request(e));
        changes.push(format!(
            "added fdb entry {} dst {}",
            crate::link::format_mac(&e.mac),
            e.remote
        ));
    }
    for (route, onlink) in &wanted_routes {
        let present = routes.iter().any(|r| {
            r.destination == route.destination
                && r.gateway == route.gateway
                && (route.oif.is_none() || r.oif == route.oif)
        });
        if present {
            continue;
        }
        match (onlink, route.gateway, route.oif) {
            (true, Some(gateway), Some(oif)) => {
                add.push(onlink_route_request(route.destination, gateway, oif))
            }
            _ => add.push(replace_route_request(route)),
        }
        changes.push(format!(
            "added route {} via {}",
            route.destination,
            route.gateway.map(|g| g.to_string()).unwrap_or_default()
        ));
    }

    // Removals in reverse: routes, FDB entries, neighbours.
    let mut remove = Vec::new();
    for route in routes.iter().filter(|r| plan.is_ours(r)) {
        if !wanted_routes
            .iter()
            .any(|(w, _)| w.destination == route.destination)
        {
            remove.push(delete_route_request(route));
            changes.push(format!("removed route {}", route.destination));
        }
    }
    for e in fdb.iter().filter(|e| !wanted_fdb.contains(e)) {
        remove.push(delete_fdb_request(e));
        changes.push(format!(
            "removed fdb entry {} dst {}",
            crate::link::format_mac(&e.mac),
            e.remote
        ));
    }
    for n in neighbours.iter().filter(|n| !wanted_neighbours.contains(n)) {
        // A neighbour whose MAC changed is replaced by the addition above.
        if wanted_neighbours.iter().any(|w| w.ip == n.ip) {
            continue;
        }
        remove.push(delete_neighbour_request(n));
        changes.push(format!("removed neighbour {}", n.ip));
    }
    // Additions before removals: a peer whose MAC changed has its new entries in place
    // before the old ones go.
    add.extend(remove);
    if !add.is_empty() {
        kernel.batch(add)?;
    }
    Ok(changes)
}

fn name_of(device: &Option<Link>) -> &str {
    device.as_ref().map(|l| l.name.as_str()).unwrap_or("-")
}

/// The vxlan device as planned: made if missing, remade if its MAC is not the planned
/// one (a new node IP), MTU, address and up state restored.
fn ensure_vxlan<K: Kernel + ?Sized>(
    kernel: &mut K,
    state: &VxlanState,
    changes: &mut Vec<String>,
) -> Result<Link> {
    let existing = kernel.link_by_name(&state.name)?;
    let link = match existing {
        Some(link) if link.kind.as_deref() == Some("vxlan") && link.mac == Some(state.mac) => link,
        other => {
            if let Some(old) = other {
                kernel.delete_link(old.index, &state.name)?;
                changes.push(format!("removed outdated device {}", state.name));
            }
            let underlay = kernel.require_link(&state.underlay)?;
            kernel.batch(vec![
                create_vxlan_request(&VxlanSpec {
                    name: &state.name,
                    vni: state.vni,
                    local: state.local,
                    underlay: underlay.index,
                    port: state.port,
                    mtu: state.mtu,
                    mac: state.mac,
                }),
                set_alias_request(&state.name, &state.alias),
            ])?;
            changes.push(format!("created vxlan device {}", state.name));
            kernel.require_link(&state.name)?
        }
    };
    let mut requests = Vec::new();
    if link.mtu != state.mtu {
        requests.push(set_mtu_request(link.index, state.mtu));
        changes.push(format!("set mtu {} on {}", state.mtu, state.name));
    }
    if !kernel.addresses_of(link.index)?.contains(&state.address) {
        requests.push(add_address_request(link.index, state.address, &state.name));
        changes.push(format!("added address {} to {}", state.address, state.name));
    }
    if !link.up {
        requests.push(set_up_request(link.index, &state.name));
        changes.push(format!("set {} up", state.name));
    }
    if !requests.is_empty() {
        kernel.batch(requests)?;
    }
    Ok(link)
}

/// Removes what [`ensure_overlay`] made for `plan`: peer routes, then the device (its
/// neighbour and FDB entries go with it). Best effort, idempotent.
pub fn remove_overlay<K: Kernel + ?Sized>(kernel: &mut K, plan: &OverlayState) -> Result<()> {
    let mut result = Ok(());
    // One by one: a route already gone must not keep the others.
    for route in kernel.routes()?.iter().filter(|r| plan.is_ours(r)) {
        if let Err(e) = kernel.batch(vec![delete_route_request(route)]) {
            if e.errno() != Some(libc::ESRCH) {
                result = Err(e);
            }
        }
    }
    if let Some(device) = &plan.device {
        kernel.delete_link_by_name(&device.name)?;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::RecordingKernel;
    use crate::link::Link;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("test literal")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("test literal")
    }

    fn plan(peers: Vec<PeerEntry>) -> OverlayState {
        OverlayState {
            device: Some(VxlanState {
                name: "netd.1".into(),
                vni: 1,
                port: 8472,
                local: ip("192.168.50.1"),
                underlay: "eth0".into(),
                mtu: 1450,
                mac: [0x06, 0, 0, 0, 0, 1],
                address: net("10.244.1.0/32"),
                alias: "netd cluster network n".into(),
            }),
            cluster: net("10.244.0.0/16"),
            node_subnet_len: 24,
            own: net("10.244.1.0/24"),
            peers,
        }
    }

    fn peer(n: u8, mac: u8) -> PeerEntry {
        PeerEntry::Vxlan {
            subnet: net(&format!("10.244.{n}.0/24")),
            gateway: ip(&format!("10.244.{n}.0")),
            mac: [0x06, 0, 0, 0, 0, mac],
            remote: ip(&format!("192.168.50.{n}")),
        }
    }

    fn host() -> RecordingKernel {
        RecordingKernel::default().with_link(Link::new(2, "eth0", Some("veth")))
    }

    #[test]
    fn entries_are_added_in_flannels_order_and_only_once() {
        let mut k = host();
        let changes = ensure_overlay(&mut k, &plan(vec![peer(2, 2), peer(3, 3)])).expect("apply");
        assert!(changes.contains(&"created vxlan device netd.1".to_string()));
        let order: Vec<&str> = k
            .log
            .iter()
            .map(String::as_str)
            .skip_while(|l| !l.starts_with("add neighbour"))
            .collect();
        assert_eq!(
            order,
            [
                "add neighbour 10.244.2.0 lladdr 06:00:00:00:00:02",
                "add neighbour 10.244.3.0 lladdr 06:00:00:00:00:03",
                "add fdb 06:00:00:00:00:02 dst 192.168.50.2",
                "add fdb 06:00:00:00:00:03 dst 192.168.50.3",
                "add route 10.244.2.0/24 via 10.244.2.0 onlink",
                "add route 10.244.3.0/24 via 10.244.3.0 onlink",
            ]
        );
        let before = k.log.len();
        assert!(ensure_overlay(&mut k, &plan(vec![peer(2, 2), peer(3, 3)]))
            .expect("again")
            .is_empty());
        assert_eq!(k.log.len(), before, "nothing sent when all is in place");
    }

    #[test]
    fn a_changed_mac_is_reprogrammed_and_a_gone_peer_removed_in_reverse() {
        let mut k = host();
        ensure_overlay(&mut k, &plan(vec![peer(2, 2), peer(3, 3)])).expect("apply");
        k.log.clear();
        ensure_overlay(&mut k, &plan(vec![peer(2, 9)])).expect("update");
        assert_eq!(
            k.log,
            [
                "add neighbour 10.244.2.0 lladdr 06:00:00:00:00:09",
                "add fdb 06:00:00:00:00:09 dst 192.168.50.2",
                "delete route 10.244.3.0/24 via 10.244.3.0",
                "delete fdb 06:00:00:00:00:02 dst 192.168.50.2",
                "delete fdb 06:00:00:00:00:03 dst 192.168.50.3",
                "delete neighbour 10.244.3.0",
            ]
        );
        let dev = k.link_by_name("netd.1").expect("dump").expect("device");
        assert_eq!(k.neighbours(dev.index).expect("dump").len(), 1);
        assert_eq!(k.fdb_entries(dev.index).expect("dump").len(), 1);
    }

    #[test]
    fn direct_peers_get_plain_routes_and_removal_leaves_the_own_subnet() {
        let mut k = host();
        let direct = PeerEntry::Direct {
            subnet: net("10.244.4.0/24"),
            via: ip("192.168.50.4"),
        };
        let mut p = plan(vec![direct]);
        p.device = None;
        k.routes.push(Route {
            destination: net("10.244.1.0/24"),
            gateway: None,
            oif: Some(2),
        });
        ensure_overlay(&mut k, &p).expect("apply");
        assert!(k
            .log
            .contains(&"add route 10.244.4.0/24 via 192.168.50.4".to_string()));
        remove_overlay(&mut k, &p).expect("remove");
        let left: Vec<Ipv4Net> = k.routes.iter().map(|r| r.destination).collect();
        assert_eq!(left, [net("10.244.1.0/24")]);
        remove_overlay(&mut k, &p).expect("idempotent");
    }
}
