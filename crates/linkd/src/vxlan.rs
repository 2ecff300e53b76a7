//! What a vxlan cluster network needs of the kernel, as flannel programs it: the vxlan
//! device (learning off), permanent neighbour entries (peer subnet -> peer VTEP MAC),
//! permanent FDB entries (VTEP MAC -> peer node IP) and onlink routes through the device.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteFlags, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::Result;
use crate::link::{format_mac, Mac};
use crate::netlink::{Netlink, Request};
use crate::route::{route_message, Route};

/// A vxlan device to create.
#[derive(Debug, Clone)]
pub struct VxlanSpec<'a> {
    pub name: &'a str,
    pub vni: u32,
    /// The node IP: the source of the encapsulated packets.
    pub local: Ipv4Addr,
    /// The interface the node IP is on.
    pub underlay: u32,
    pub port: u16,
    pub mtu: u32,
    /// The VTEP MAC peers' FDB entries point at.
    pub mac: Mac,
}

/// The request that creates a vxlan device (down; learning off, no miss notifications).
pub fn create_vxlan_request(spec: &VxlanSpec<'_>) -> Request {
    let mut msg = LinkMessage::default();
    msg.attributes
        .push(LinkAttribute::IfName(spec.name.to_string()));
    msg.attributes.push(LinkAttribute::Mtu(spec.mtu));
    msg.attributes
        .push(LinkAttribute::Address(spec.mac.to_vec()));
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Vxlan),
        LinkInfo::Data(InfoData::Vxlan(vec![
            InfoVxlan::Id(spec.vni),
            InfoVxlan::Local(spec.local),
            InfoVxlan::Link(spec.underlay),
            InfoVxlan::Port(spec.port),
            InfoVxlan::Learning(false),
        ])),
    ]));
    Request::new(
        format!("create vxlan {} (vni {})", spec.name, spec.vni),
        RouteNetlinkMessage::NewLink(msg),
        NLM_F_CREATE | NLM_F_EXCL,
    )
}

/// A permanent neighbour entry: `ip` on link `index` is at `mac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub index: u32,
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

/// A permanent FDB entry of a vxlan device: frames for `mac` go to `remote`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    pub index: u32,
    pub mac: Mac,
    pub remote: Ipv4Addr,
}

fn neighbour_message(n: &Neighbour) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.ifindex = n.index;
    msg.header.state = NeighbourState::Permanent;
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            n.ip,
        )));
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(n.mac.to_vec()));
    msg
}

fn fdb_message(e: &FdbEntry) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = e.index;
    msg.header.state = NeighbourState::Permanent;
    // NTF_SELF: the entry belongs to the vxlan device itself, not to a bridge above it.
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(e.mac.to_vec()));
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            e.remote,
        )));
    msg
}

/// The request that adds (or replaces) a permanent neighbour entry.
pub fn neighbour_request(n: &Neighbour) -> Request {
    Request::new(
        format!("add neighbour {} lladdr {}", n.ip, format_mac(&n.mac)),
        RouteNetlinkMessage::NewNeighbour(neighbour_message(n)),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
}

pub fn delete_neighbour_request(n: &Neighbour) -> Request {
    Request::new(
        format!("delete neighbour {}", n.ip),
        RouteNetlinkMessage::DelNeighbour(neighbour_message(n)),
        0,
    )
}

/// The request that adds (or replaces) a permanent FDB entry.
pub fn fdb_request(e: &FdbEntry) -> Request {
    Request::new(
        format!("add fdb {} dst {}", format_mac(&e.mac), e.remote),
        RouteNetlinkMessage::NewNeighbour(fdb_message(e)),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
}

pub fn delete_fdb_request(e: &FdbEntry) -> Request {
    Request::new(
        format!("delete fdb {} dst {}", format_mac(&e.mac), e.remote),
        RouteNetlinkMessage::DelNeighbour(fdb_message(e)),
        0,
    )
}

fn onlink_message(destination: Ipv4Net, gateway: Ipv4Addr, oif: u32) -> RouteMessage {
    let mut msg = route_message(&Route {
        destination,
        gateway: Some(gateway),
        oif: Some(oif),
    });
    // The gateway (the peer subnet's network address) is on no local subnet: the
    // neighbour entry says where it is.
    msg.header.flags = RouteFlags::Onlink;
    msg
}

/// The request that installs (or replaces) `destination via gateway dev oif onlink`.
pub fn onlink_route_request(destination: Ipv4Net, gateway: Ipv4Addr, oif: u32) -> Request {
    Request::new(
        format!("add route {destination} via {gateway} onlink"),
        RouteNetlinkMessage::NewRoute(onlink_message(destination, gateway, oif)),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
}

/// The address and MAC of a neighbour or FDB message. In AF_BRIDGE messages the address
/// is not typed as IPv4, so four bytes count as one.
pub(crate) fn address_and_mac(msg: &NeighbourMessage) -> Option<(Ipv4Addr, Mac)> {
    let ip = msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
            <[u8; 4]>::try_from(bytes.as_slice())
                .ok()
                .map(Ipv4Addr::from)
        }
        _ => None,
    })?;
    let mac = msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
        _ => None,
    })?;
    Some((ip, mac))
}

impl Netlink {
    /// The neighbour messages of a link, in one family.
    fn neighbour_dump(
        &mut self,
        what: &str,
        family: AddressFamily,
        index: u32,
    ) -> Result<Vec<NeighbourMessage>> {
        let mut req = NeighbourMessage::default();
        req.header.family = family;
        // A strict dump filters by the attribute; the header's index must stay 0.
        req.attributes.push(NeighbourAttribute::IfIndex(index));
        let answers = self.dump(what, RouteNetlinkMessage::GetNeighbour(req))?;
        Ok(answers
            .into_iter()
            .filter_map(|answer| match answer {
                RouteNetlinkMessage::NewNeighbour(msg) if msg.header.ifindex == index => Some(msg),
                _ => None,
            })
            .collect())
    }

    /// The permanent IPv4 neighbour entries of a link.
    pub fn neighbours(&mut self, index: u32) -> Result<Vec<Neighbour>> {
        let messages = self.neighbour_dump("list neighbours", AddressFamily::Inet, index)?;
        Ok(messages
            .iter()
            .filter(|msg| msg.header.state == NeighbourState::Permanent)
            .filter_map(address_and_mac)
            .map(|(ip, mac)| Neighbour { index, ip, mac })
            .collect())
    }

    /// The FDB entries with a remote of a vxlan device.
    pub fn fdb_entries(&mut self, index: u32) -> Result<Vec<FdbEntry>> {
        let messages = self.neighbour_dump("list fdb entries", AddressFamily::Bridge, index)?;
        Ok(messages
            .iter()
            .filter_map(address_and_mac)
            .map(|(remote, mac)| FdbEntry { index, mac, remote })
            .collect())
    }
}
