//! IPv4 addresses on links.

use std::net::IpAddr;

use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::Result;
use crate::netlink::{Netlink, Request};

/// An address present on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub index: u32,
    pub net: Ipv4Net,
}

fn message(index: u32, net: Ipv4Net) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = net.prefix_len();
    msg.header.scope = AddressScope::Universe;
    msg.header.index = index;
    let addr = IpAddr::V4(net.addr());
    msg.attributes.push(AddressAttribute::Local(addr));
    msg.attributes.push(AddressAttribute::Address(addr));
    if net.prefix_len() < 31 {
        msg.attributes
            .push(AddressAttribute::Broadcast(net.broadcast()));
    }
    msg
}

/// The request that adds (or keeps) an address on a link.
pub fn add_address_request(index: u32, net: Ipv4Net, what: &str) -> Request {
    Request::new(
        format!("add address {net} to {what}"),
        RouteNetlinkMessage::NewAddress(message(index, net)),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
}

/// The request that removes an address from a link.
pub fn delete_address_request(index: u32, net: Ipv4Net) -> Request {
    Request::new(
        format!("delete address {net}"),
        RouteNetlinkMessage::DelAddress(message(index, net)),
        0,
    )
}

impl Netlink {
    pub fn add_address(&mut self, index: u32, net: Ipv4Net, what: &str) -> Result<()> {
        self.batch(vec![add_address_request(index, net, what)])
    }

    /// Every IPv4 address in this namespace.
    pub fn addresses(&mut self) -> Result<Vec<Address>> {
        let mut req = AddressMessage::default();
        req.header.family = AddressFamily::Inet;
        let answers = self.dump("list addresses", RouteNetlinkMessage::GetAddress(req))?;
        let mut out = Vec::new();
        for answer in answers {
            if let RouteNetlinkMessage::NewAddress(msg) = answer {
                let local = msg.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                });
                let addr = local.or_else(|| {
                    msg.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                        _ => None,
                    })
                });
                if let Some(ip) = addr {
                    if let Ok(net) = Ipv4Net::new(ip, msg.header.prefix_len) {
                        out.push(Address {
                            index: msg.header.index,
                            net,
                        });
                    }
                }
            }
        }
        Ok(out)
    }
}
