//! A fake kernel of one namespace: links, addresses and routes as a small model that the
//! requests netd sends change, and a log of every request.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::os::fd::RawFd;

use ipnet::Ipv4Net;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoPortData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::address::Address;
use crate::error::Result;
use crate::kernel::Kernel;
use crate::link::Link;
use crate::netlink::{kernel_error, Request};
use crate::route::{route_from_message, Route};
use crate::vxlan::{address_and_mac, FdbEntry, Neighbour};

/// A fake kernel for unit tests: links, addresses and routes as a small model that the
/// requests it understands change (creating bridges and veths, up, mtu, mac, alias,
/// hairpin, deleting links, addresses, routes), sysctls as a map, and a log of every
/// request's description and sysctl write. A request whose description contains
/// `fail_on` fails with `EINVAL`; one the kernel would refuse (a name taken, a link that
/// is not there) fails as the kernel's would.
#[derive(Debug, Default)]
pub struct RecordingKernel {
    pub links: Vec<Link>,
    pub addresses: BTreeMap<u32, Vec<Ipv4Net>>,
    pub routes: Vec<Route>,
    /// Permanent neighbour entries and vxlan FDB entries.
    pub neighbours: Vec<Neighbour>,
    pub fdb: Vec<FdbEntry>,
    pub sysctls: BTreeMap<String, String>,
    /// What was asked, in order: request descriptions, and `sysctl KEY=VALUE`.
    pub log: Vec<String>,
    pub fail_on: Option<String>,
}

/// What a request did beyond this namespace, for a fake of several ([`super::FakeHost`]).
#[derive(Debug)]
pub(crate) enum Effect {
    None,
    /// A veth was made whose peer is born in the namespace open at `netns`.
    PeerBorn {
        local: String,
        netns: RawFd,
        peer: Link,
    },
    /// A link was deleted (its veth peer, wherever it is, goes too).
    Deleted(String),
}

fn name_of(msg: &LinkMessage) -> Option<&str> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn infos(msg: &LinkMessage) -> &[LinkInfo] {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => Some(infos.as_slice()),
            _ => None,
        })
        .unwrap_or(&[])
}

fn kind_of(msg: &LinkMessage) -> Option<String> {
    infos(msg).iter().find_map(|i| match i {
        LinkInfo::Kind(InfoKind::Bridge) => Some("bridge".to_string()),
        LinkInfo::Kind(InfoKind::Veth) => Some("veth".to_string()),
        LinkInfo::Kind(other) => Some(other.to_string()),
        _ => None,
    })
}

fn veth_peer(msg: &LinkMessage) -> Option<&LinkMessage> {
    infos(msg).iter().find_map(|i| match i {
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))) => Some(peer),
        _ => None,
    })
}

fn address_of(msg: &AddressMessage) -> Option<Ipv4Net> {
    let ip = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
        _ => None,
    })?;
    Ipv4Net::new(ip, msg.header.prefix_len).ok()
}

fn errno(what: &str, code: i32) -> crate::LinkdError {
    kernel_error(what, io::Error::from_raw_os_error(code))
}

impl RecordingKernel {
    /// A namespace as the kernel makes it: loopback, down.
    pub fn new_namespace() -> Self {
        RecordingKernel::default().with_link(Link {
            mtu: 65536,
            ..Link::new(1, "lo", None)
        })
    }

    /// Adds a link as if it were already there.
    pub fn with_link(mut self, link: Link) -> Self {
        self.links.push(link);
        self
    }

    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }

    fn next_index(&self) -> u32 {
        self.links.iter().map(|l| l.index).max().unwrap_or(0) + 1
    }

    /// Adds a link made elsewhere (a veth peer born here); returns its index.
    pub(crate) fn adopt(&mut self, mut link: Link) -> u32 {
        link.index = self.next_index();
        self.links.push(link);
        self.links.last().map(|l| l.index).unwrap_or_default()
    }

    /// Removes a link by name with its addresses and routes.
    pub(crate) fn forget(&mut self, name: &str) {
        if let Some(position) = self.links.iter().position(|l| l.name == name) {
            let link = self.links.remove(position);
            self.addresses.remove(&link.index);
            self.routes.retain(|r| r.oif != Some(link.index));
            self.neighbours.retain(|n| n.index != link.index);
            self.fdb.retain(|e| e.index != link.index);
        }
    }

    fn find(&self, msg: &LinkMessage) -> Option<usize> {
        let index = msg.header.index;
        let name = name_of(msg);
        self.links.iter().position(|l| {
            (index != 0 && l.index == index) || (index == 0 && Some(l.name.as_str()) == name)
        })
    }

    /// Sends one request: logs it, applies it to the model, says what it did elsewhere.
    pub(crate) fn send(&mut self, request: &Request) -> Result<Effect> {
        self.log.push(request.what.clone());
        if self
            .fail_on
            .as_ref()
            .is_some_and(|f| request.what.contains(f.as_str()))
        {
            return Err(errno(&request.what, libc::EINVAL));
        }
        let what = &request.what;
        match &request.message {
            RouteNetlinkMessage::NewLink(msg)
                if msg.header.index == 0 && kind_of(msg).is_some() =>
            {
                let name = name_of(msg).unwrap_or_default().to_string();
                if self.link(&name).is_some() {
                    return Err(errno(what, libc::EEXIST));
                }
                let mut link = Link {
                    kind: kind_of(msg),
                    up: msg.header.flags.contains(LinkFlags::Up),
                    ..Link::new(self.next_index(), &name, None)
                };
                Self::change(&mut link, msg);
                self.links.push(link);
                if let Some(peer) = veth_peer(msg) {
                    let netns = peer.attributes.iter().find_map(|a| match a {
                        LinkAttribute::NetNsFd(fd) => Some(*fd),
                        _ => None,
                    });
                    let mut born = Link::new(0, name_of(peer).unwrap_or_default(), Some("veth"));
                    Self::change(&mut born, peer);
                    match netns {
                        Some(netns) => {
                            return Ok(Effect::PeerBorn {
                                local: name,
                                netns,
                                peer: born,
                            })
                        }
                        None => {
                            self.adopt(born);
                        }
                    }
                }
            }
            RouteNetlinkMessage::NewLink(msg) | RouteNetlinkMessage::SetLink(msg) => {
                let Some(position) = self.find(msg) else {
                    return Err(errno(what, libc::ENODEV));
                };
                Self::change(&mut self.links[position], msg);
            }
            RouteNetlinkMessage::DelLink(msg) => {
                let Some(position) = self.find(msg) else {
                    return Err(errno(what, libc::ENODEV));
                };
                let name = self.links[position].name.clone();
                self.forget(&name);
                // Ports of a deleted bridge are released.
                let index = msg.header.index;
                for link in &mut self.links {
                    if link.master == Some(index) {
                        link.master = None;
                    }
                }
                return Ok(Effect::Deleted(name));
            }
            RouteNetlinkMessage::NewAddress(msg) => {
                if !self.links.iter().any(|l| l.index == msg.header.index) {
                    return Err(errno(what, libc::ENODEV));
                }
                if let Some(net) = address_of(msg) {
                    let list = self.addresses.entry(msg.header.index).or_default();
                    if !list.contains(&net) {
                        list.push(net);
                    }
                }
            }
            RouteNetlinkMessage::DelAddress(msg) => {
                let net = address_of(msg);
                let list = self.addresses.entry(msg.header.index).or_default();
                let before = list.len();
                list.retain(|a| Some(*a) != net);
                if list.len() == before {
                    return Err(errno(what, libc::EADDRNOTAVAIL));
                }
            }
            RouteNetlinkMessage::NewRoute(msg) => {
                let Some(route) = route_from_message(msg) else {
                    return Err(errno(what, libc::EINVAL));
                };
                if let Some(oif) = route.oif {
                    if !self.links.iter().any(|l| l.index == oif) {
                        return Err(errno(what, libc::ENODEV));
                    }
                }
                self.routes.retain(|r| r.destination != route.destination);
                self.routes.push(route);
            }
            RouteNetlinkMessage::NewNeighbour(msg) | RouteNetlinkMessage::DelNeighbour(msg) => {
                let adding = matches!(&request.message, RouteNetlinkMessage::NewNeighbour(_));
                let index = msg.header.ifindex;
                if !self.links.iter().any(|l| l.index == index) {
                    return Err(errno(what, libc::ENODEV));
                }
                let Some((ip, mac)) = address_and_mac(msg) else {
                    return Err(errno(what, libc::EINVAL));
                };
                let gone = if msg.header.family == AddressFamily::Bridge {
                    let entry = FdbEntry {
                        index,
                        mac,
                        remote: ip,
                    };
                    self.fdb.retain(|e| !(e.index == index && e.mac == mac));
                    if adding {
                        self.fdb.push(entry);
                    }
                    false
                } else {
                    let before = self.neighbours.len();
                    self.neighbours
                        .retain(|n| !(n.index == index && n.ip == ip));
                    if adding {
                        self.neighbours.push(Neighbour { index, ip, mac });
                    }
                    !adding && self.neighbours.len() == before
                };
                if gone {
                    return Err(errno(what, libc::ENOENT));
                }
            }
            RouteNetlinkMessage::DelRoute(msg) => {
                let Some(route) = route_from_message(msg) else {
                    return Err(errno(what, libc::EINVAL));
                };
                let before = self.routes.len();
                self.routes.retain(|r| r.destination != route.destination);
                if self.routes.len() == before {
                    return Err(errno(what, libc::ESRCH));
                }
            }
            _ => {}
        }
        Ok(Effect::None)
    }

    fn change(link: &mut Link, msg: &LinkMessage) {
        if msg.header.change_mask.contains(LinkFlags::Up) {
            link.up = msg.header.flags.contains(LinkFlags::Up);
        }
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                LinkAttribute::IfAlias(alias) => link.alias = Some(alias.clone()),
                LinkAttribute::Controller(0) => link.master = None,
                LinkAttribute::Controller(master) => link.master = Some(*master),
                LinkAttribute::Address(mac) if mac.len() == 6 => {
                    let mut m = [0u8; 6];
                    m.copy_from_slice(mac);
                    link.mac = Some(m);
                }
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        if let LinkInfo::PortData(InfoPortData::BridgePort(attrs)) = info {
                            for attr in attrs {
                                if let netlink_packet_route::link::InfoBridgePort::HairpinMode(on) =
                                    attr
                                {
                                    link.hairpin = Some(*on);
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

impl Kernel for RecordingKernel {
    fn batch(&mut self, requests: Vec<Request>) -> Result<()> {
        for request in requests {
            self.send(&request)?;
        }
        Ok(())
    }

    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        Ok(self.link(name).cloned())
    }

    fn links(&mut self) -> Result<Vec<Link>> {
        Ok(self.links.clone())
    }

    fn addresses(&mut self) -> Result<Vec<Address>> {
        Ok(self
            .addresses
            .iter()
            .flat_map(|(index, nets)| {
                nets.iter().map(|net| Address {
                    index: *index,
                    net: *net,
                })
            })
            .collect())
    }

    fn routes(&mut self) -> Result<Vec<Route>> {
        Ok(self.routes.clone())
    }

    fn neighbours(&mut self, index: u32) -> Result<Vec<Neighbour>> {
        Ok(self
            .neighbours
            .iter()
            .filter(|n| n.index == index)
            .copied()
            .collect())
    }

    fn fdb_entries(&mut self, index: u32) -> Result<Vec<FdbEntry>> {
        Ok(self
            .fdb
            .iter()
            .filter(|e| e.index == index)
            .copied()
            .collect())
    }

    fn sysctl_get(&mut self, key: &str) -> Result<String> {
        Ok(self.sysctls.get(key).cloned().unwrap_or_else(|| "0".into()))
    }

    fn sysctl_set(&mut self, key: &str, value: &str) -> Result<()> {
        self.log.push(format!("sysctl {key}={value}"));
        self.sysctls.insert(key.to_string(), value.to_string());
        Ok(())
    }
}
