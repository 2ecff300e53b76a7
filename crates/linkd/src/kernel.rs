//! The kernel operations that applying a plan needs (netlink batches, link and address
//! lookups, sysctls), behind a trait: [`Netlink`] is the real one, [`RecordingKernel`] a
//! fake that keeps a small model of links and addresses and records every request, so
//! that appliers are unit-tested without root.

use std::collections::BTreeMap;
use std::io;

use ipnet::Ipv4Net;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;

use crate::error::{LinkdError, Result};
use crate::link::Link;
use crate::netlink::{kernel_error, Netlink, Request};

/// What an applier asks of the kernel of one network namespace.
pub trait Kernel {
    /// Sends requests in order; the first failure is returned.
    fn batch(&mut self, requests: Vec<Request>) -> Result<()>;
    /// A link by name; `None` when there is none.
    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>>;
    /// The IPv4 addresses of a link.
    fn addresses_of(&mut self, index: u32) -> Result<Vec<Ipv4Net>>;
    /// A sysctl (`/proc/sys` path) of the calling thread's namespace.
    fn sysctl_get(&mut self, key: &str) -> Result<String>;
    fn sysctl_set(&mut self, key: &str, value: &str) -> Result<()>;

    /// A link by name, or [`LinkdError::NoSuchLink`].
    fn require_link(&mut self, name: &str) -> Result<Link> {
        self.link_by_name(name)?
            .ok_or_else(|| LinkdError::NoSuchLink(name.to_string()))
    }
}

impl Kernel for Netlink {
    fn batch(&mut self, requests: Vec<Request>) -> Result<()> {
        Netlink::batch(self, requests)
    }

    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        Netlink::link_by_name(self, name)
    }

    fn addresses_of(&mut self, index: u32) -> Result<Vec<Ipv4Net>> {
        Netlink::addresses_of(self, index)
    }

    fn sysctl_get(&mut self, key: &str) -> Result<String> {
        crate::sysctl::get(key)
    }

    fn sysctl_set(&mut self, key: &str, value: &str) -> Result<()> {
        crate::sysctl::set(key, value)
    }
}

/// A fake kernel for unit tests: links and addresses as a small model that the requests
/// it understands change (creating bridges and veths, up, mtu, mac, alias, addresses),
/// sysctls as a map, and a log of every request's description and sysctl write. A
/// request whose description contains `fail_on` fails with `EINVAL`.
#[derive(Debug, Default)]
pub struct RecordingKernel {
    pub links: Vec<Link>,
    pub addresses: BTreeMap<u32, Vec<Ipv4Net>>,
    pub sysctls: BTreeMap<String, String>,
    /// What was asked, in order: request descriptions, and `sysctl KEY=VALUE`.
    pub log: Vec<String>,
    pub fail_on: Option<String>,
}

fn name_of(msg: &LinkMessage) -> Option<&str> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

fn kind_of(msg: &LinkMessage) -> Option<String> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(InfoKind::Bridge) => Some("bridge".to_string()),
            LinkInfo::Kind(InfoKind::Veth) => Some("veth".to_string()),
            LinkInfo::Kind(other) => Some(other.to_string()),
            _ => None,
        }),
        _ => None,
    })
}

impl RecordingKernel {
    /// Adds a link as if it were already there.
    pub fn with_link(mut self, link: Link) -> Self {
        self.links.push(link);
        self
    }

    fn link_mut(&mut self, msg: &LinkMessage) -> Option<&mut Link> {
        let index = msg.header.index;
        let name = name_of(msg).map(str::to_string);
        self.links
            .iter_mut()
            .find(|l| (index != 0 && l.index == index) || Some(&l.name) == name.as_ref())
    }

    fn apply(&mut self, message: &RouteNetlinkMessage) {
        match message {
            RouteNetlinkMessage::NewLink(msg)
                if msg.header.index == 0 && kind_of(msg).is_some() =>
            {
                let index = self.links.iter().map(|l| l.index).max().unwrap_or(0) + 1;
                let mut link = Link {
                    index,
                    name: name_of(msg).unwrap_or_default().to_string(),
                    kind: kind_of(msg),
                    mac: None,
                    mtu: 1500,
                    up: msg.header.flags.contains(LinkFlags::Up),
                    master: None,
                    alias: None,
                    hairpin: None,
                };
                Self::change(&mut link, msg);
                self.links.push(link);
            }
            RouteNetlinkMessage::NewLink(msg) | RouteNetlinkMessage::SetLink(msg) => {
                if let Some(link) = self.link_mut(msg) {
                    Self::change(link, msg);
                }
            }
            RouteNetlinkMessage::NewAddress(msg) => {
                let address = msg.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(std::net::IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                });
                if let Some(net) =
                    address.and_then(|ip| Ipv4Net::new(ip, msg.header.prefix_len).ok())
                {
                    let list = self.addresses.entry(msg.header.index).or_default();
                    if !list.contains(&net) {
                        list.push(net);
                    }
                }
            }
            _ => {}
        }
    }

    fn change(link: &mut Link, msg: &LinkMessage) {
        if msg.header.change_mask.contains(LinkFlags::Up) {
            link.up = msg.header.flags.contains(LinkFlags::Up);
        }
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                LinkAttribute::IfAlias(alias) => link.alias = Some(alias.clone()),
                LinkAttribute::Controller(master) => link.master = Some(*master),
                LinkAttribute::Address(mac) if mac.len() == 6 => {
                    let mut m = [0u8; 6];
                    m.copy_from_slice(mac);
                    link.mac = Some(m);
                }
                _ => {}
            }
        }
    }
}

impl Kernel for RecordingKernel {
    fn batch(&mut self, requests: Vec<Request>) -> Result<()> {
        for request in requests {
            self.log.push(request.what.clone());
            if self
                .fail_on
                .as_ref()
                .is_some_and(|f| request.what.contains(f.as_str()))
            {
                return Err(kernel_error(
                    &request.what,
                    io::Error::from_raw_os_error(libc::EINVAL),
                ));
            }
            self.apply(&request.message);
        }
        Ok(())
    }

    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        Ok(self.links.iter().find(|l| l.name == name).cloned())
    }

    fn addresses_of(&mut self, index: u32) -> Result<Vec<Ipv4Net>> {
        Ok(self.addresses.get(&index).cloned().unwrap_or_default())
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
