//! Links: bridges, veth pairs born with their peer inside a target namespace, and the
//! attributes netd manages (up, mtu, mac, master, alias).

use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    InfoBridge, InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth,
    LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;

use crate::error::{LinkdError, Result};
use crate::netlink::{Netlink, Request};

/// A MAC address, kept as bytes and printed the usual way.
pub type Mac = [u8; 6];

/// What netd needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub mac: Option<Mac>,
    pub mtu: u32,
    pub up: bool,
    pub master: Option<u32>,
    pub alias: Option<String>,
    /// Hairpin mode, for a bridge port.
    pub hairpin: Option<bool>,
}

impl Link {
    /// A link as the kernel makes it: down, MTU 1500, no MAC, master or alias yet.
    pub fn new(index: u32, name: &str, kind: Option<&str>) -> Link {
        Link {
            index,
            name: name.to_string(),
            kind: kind.map(str::to_string),
            mac: None,
            mtu: 1500,
            up: false,
            master: None,
            alias: None,
            hairpin: None,
        }
    }
}

/// A bridge to create.
#[derive(Debug, Clone)]
pub struct BridgeSpec<'a> {
    pub name: &'a str,
    pub mac: Mac,
    pub mtu: u32,
    /// Marks the bridge as owned (and by which network) so leaks can be found later.
    pub alias: &'a str,
}

/// A veth pair whose host end is attached to a bridge and whose peer is created directly
/// inside the container namespace: moving a link between namespaces costs an RCU grace
/// period (~17 ms), creating it in place costs nothing extra.
#[derive(Debug)]
pub struct VethSpec<'a> {
    pub host_name: &'a str,
    pub master: u32,
    pub mtu: u32,
    pub peer_name: &'a str,
    pub peer_mac: Mac,
    pub peer_netns: BorrowedFd<'a>,
}

fn up_message(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    msg
}

/// The request that creates a bridge (up, with a pinned MAC so it never changes as ports
/// come and go).
pub fn create_bridge_request(spec: &BridgeSpec<'_>) -> Request {
    let mut msg = up_message(0);
    msg.attributes
        .push(LinkAttribute::IfName(spec.name.to_string()));
    msg.attributes
        .push(LinkAttribute::Address(spec.mac.to_vec()));
    msg.attributes.push(LinkAttribute::Mtu(spec.mtu));
    // Multicast snooping makes every port coming up cost time proportional to the ports
    // already there; container bridges have no querier, so it only floods anyway.
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Bridge),
        LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::MulticastSnooping(false)])),
    ]));
    Request::new(
        format!("create bridge {}", spec.name),
        RouteNetlinkMessage::NewLink(msg),
        NLM_F_CREATE | NLM_F_EXCL,
    )
}

/// The request that sets a link's alias, found by name (the kernel ignores an alias given
/// at creation, so it follows the create in the same batch).
pub fn set_alias_request(name: &str, alias: &str) -> Request {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    msg.attributes
        .push(LinkAttribute::IfAlias(alias.to_string()));
    Request::new(
        format!("set alias of {name}"),
        RouteNetlinkMessage::SetLink(msg),
        0,
    )
}

/// The request that creates a veth pair: host end enslaved, both ends down (the caller
/// brings them up once configured), the peer in its namespace.
pub fn create_veth_request(spec: &VethSpec<'_>) -> Request {
    // The peer cannot be brought up at creation (the kernel answers ENOTCONN): the caller
    // sets it up from inside the namespace, batched with its address and routes.
    let mut peer = LinkMessage::default();
    peer.attributes
        .push(LinkAttribute::IfName(spec.peer_name.to_string()));
    peer.attributes
        .push(LinkAttribute::Address(spec.peer_mac.to_vec()));
    peer.attributes.push(LinkAttribute::Mtu(spec.mtu));
    peer.attributes
        .push(LinkAttribute::NetNsFd(spec.peer_netns.as_raw_fd()));

    let mut msg = LinkMessage::default();
    msg.attributes
        .push(LinkAttribute::IfName(spec.host_name.to_string()));
    msg.attributes.push(LinkAttribute::Mtu(spec.mtu));
    msg.attributes.push(LinkAttribute::Controller(spec.master));
    let info = vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ];
    msg.attributes.push(LinkAttribute::LinkInfo(info));
    Request::new(
        format!("create veth {} (peer {})", spec.host_name, spec.peer_name),
        RouteNetlinkMessage::NewLink(msg),
        NLM_F_CREATE | NLM_F_EXCL,
    )
}

/// The request that puts a link in promiscuous mode.
pub fn set_promisc_request(index: u32) -> Request {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.flags = LinkFlags::Promisc;
    msg.header.change_mask = LinkFlags::Promisc;
    Request::new(
        format!("set promisc on link {index}"),
        RouteNetlinkMessage::SetLink(msg),
        0,
    )
}

/// The request that deletes a link (its veth peer goes with it).
pub fn delete_link_request(index: u32, what: &str) -> Request {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    Request::new(
        format!("delete {what}"),
        RouteNetlinkMessage::DelLink(msg),
        0,
    )
}

/// The request that turns hairpin mode on or off on a bridge port, found by index (or by
/// name when `index` is 0 and `name` is given).
pub fn set_hairpin_request(index: u32, on: bool) -> Request {
    set_hairpin(index, None, on)
}

/// [`set_hairpin_request`] for a port found by name.
pub fn set_hairpin_by_name_request(name: &str, on: bool) -> Request {
    set_hairpin(0, Some(name), on)
}

fn set_hairpin(index: u32, name: Option<&str>, on: bool) -> Request {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    if let Some(name) = name {
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    }
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::PortKind(InfoPortKind::Bridge),
        LinkInfo::PortData(InfoPortData::BridgePort(vec![InfoBridgePort::HairpinMode(
            on,
        )])),
    ]));
    // Bridge-port attributes are only applied through RTM_NEWLINK (without NLM_F_CREATE):
    // RTM_SETLINK ignores IFLA_INFO_SLAVE_DATA.
    let what = match name {
        Some(name) => format!("set hairpin mode of {name}"),
        None => format!("set hairpin mode of link {index}"),
    };
    Request::new(what, RouteNetlinkMessage::NewLink(msg), 0)
}

/// The request that brings a link, found by name, up.
pub fn set_up_by_name_request(name: &str) -> Request {
    let mut msg = up_message(0);
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    Request::new(
        format!("set {name} up"),
        RouteNetlinkMessage::SetLink(msg),
        0,
    )
}

/// The request that takes a link off its bridge and down, found by name: from then on it
/// carries nothing, so it can wait to be deleted (which takes the kernel far longer).
pub fn release_port_by_name_request(name: &str) -> Request {
    let mut msg = LinkMessage::default();
    msg.header.change_mask = LinkFlags::Up;
    msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    msg.attributes.push(LinkAttribute::Controller(0));
    Request::new(
        format!("take {name} off its bridge and down"),
        RouteNetlinkMessage::SetLink(msg),
        0,
    )
}

/// The request that brings a link up.
pub fn set_up_request(index: u32, what: &str) -> Request {
    Request::new(
        format!("set {what} up"),
        RouteNetlinkMessage::SetLink(up_message(index)),
        0,
    )
}

/// The request that gives a link no IPv6 addresses of its own (address generation
/// mode none): no link-local address, so no DAD, router solicitations or MLD reports.
/// For interfaces netd puts in namespaces it does not own, whose sysctls are not its to
/// change; on an IPv4-only bridge that chatter is flooded to every port.
pub fn no_ipv6_addresses_request(index: u32, what: &str) -> Request {
    use netlink_packet_route::link::{AfSpecInet6, AfSpecUnspec, In6AddrGenMode};
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes
        .push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )]));
    Request::new(
        format!("set no IPv6 addresses on {what}"),
        RouteNetlinkMessage::SetLink(msg),
        0,
    )
}

/// The request that sets a link's MTU.
pub fn set_mtu_request(index: u32, mtu: u32) -> Request {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::Mtu(mtu));
    Request::new(
        format!("set mtu {mtu} on link {index}"),
        RouteNetlinkMessage::SetLink(msg),
        0,
    )
}

/// The request that sets a link's MAC address.
pub fn set_mac_request(index: u32, mac: Mac) -> Request {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
    Request::new(
        format!("set mac {} on link {index}", format_mac(&mac)),
        RouteNetlinkMessage::SetLink(msg),
        0,
    )
}

impl Netlink {
    pub fn create_bridge(&mut self, spec: &BridgeSpec<'_>) -> Result<()> {
        self.batch(vec![
            create_bridge_request(spec),
            set_alias_request(spec.name, spec.alias),
        ])
    }

    pub fn create_veth(&mut self, spec: &VethSpec<'_>) -> Result<()> {
        self.batch(vec![create_veth_request(spec)])
    }

    /// Looks a link up by name; `None` when there is no such link.
    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.get_one(&format!("get link {name}"), msg) {
            Ok(link) => Ok(link),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn get_one(&mut self, what: &str, msg: LinkMessage) -> Result<Option<Link>> {
        // A GET without NLM_F_DUMP answers with one message; reuse the dump reader, which
        // stops at the answer's end or error.
        let answers = self.request_answers(what, RouteNetlinkMessage::GetLink(msg))?;
        Ok(answers.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(link_from_message(&l)),
            _ => None,
        }))
    }

    /// Every link in this namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let answers = self.dump(
            "list links",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
        )?;
        Ok(answers
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_from_message(l)),
                _ => None,
            })
            .collect())
    }

    pub fn set_alias(&mut self, name: &str, alias: &str) -> Result<()> {
        self.batch(vec![set_alias_request(name, alias)])
    }

    pub fn set_up(&mut self, index: u32, what: &str) -> Result<()> {
        self.batch(vec![set_up_request(index, what)])
    }

    pub fn set_hairpin(&mut self, index: u32, on: bool) -> Result<()> {
        self.batch(vec![set_hairpin_request(index, on)])
    }

    /// Deletes a link; a link that is already gone is not an error.
    pub fn delete_link(&mut self, index: u32, what: &str) -> Result<()> {
        match self.batch(vec![delete_link_request(index, what)]) {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    pub fn delete_link_by_name(&mut self, name: &str) -> Result<()> {
        match self.link_by_name(name)? {
            Some(link) => self.delete_link(link.index, name),
            None => Ok(()),
        }
    }

    /// Looks a link up by name and fails with [`LinkdError::NoSuchLink`] when absent.
    pub fn require_link(&mut self, name: &str) -> Result<Link> {
        self.link_by_name(name)?
            .ok_or_else(|| LinkdError::NoSuchLink(name.to_string()))
    }
}

fn link_from_message(msg: &LinkMessage) -> Link {
    let mut link = Link {
        index: msg.header.index,
        name: String::new(),
        kind: None,
        mac: None,
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        master: None,
        alias: None,
        hairpin: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::Controller(m) => link.master = Some(*m),
            LinkAttribute::IfAlias(a) => link.alias = Some(a.clone()),
            LinkAttribute::Address(a) if a.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(a);
                link.mac = Some(mac);
            }
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(kind) => link.kind = Some(kind.to_string()),
                        LinkInfo::PortData(InfoPortData::BridgePort(attrs)) => {
                            for attr in attrs {
                                if let InfoBridgePort::HairpinMode(on) = attr {
                                    link.hairpin = Some(*on);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}

/// Formats a MAC the usual way: `02:42:ac:11:00:02`.
pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `02:42:ac:11:00:02`.
pub fn parse_mac(text: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in mac.iter_mut() {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(mac)
}
