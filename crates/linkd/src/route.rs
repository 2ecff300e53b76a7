//! IPv4 routes in the main table, with replace semantics so applying twice is harmless.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::error::Result;
use crate::netlink::{Netlink, Request};

/// A route as netd sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub oif: Option<u32>,
}

/// The message that describes a route (main table, unicast).
pub(crate) fn route_message(route: &Route) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.destination_prefix_length = route.destination.prefix_len();
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.kind = RouteType::Unicast;
    msg.header.scope = if route.gateway.is_some() {
        RouteScope::Universe
    } else {
        RouteScope::Link
    };
    if route.destination.prefix_len() > 0 {
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(
                route.destination.network(),
            )));
    }
    if let Some(gw) = route.gateway {
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
    }
    if let Some(oif) = route.oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    msg
}

/// The route a message describes (`None` if its destination is not a valid prefix).
pub(crate) fn route_from_message(msg: &RouteMessage) -> Option<Route> {
    let mut destination = Ipv4Addr::UNSPECIFIED;
    let mut gateway = None;
    let mut oif = None;
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => destination = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gateway = Some(*ip),
            RouteAttribute::Oif(index) => oif = Some(*index),
            _ => {}
        }
    }
    let destination = Ipv4Net::new(destination, msg.header.destination_prefix_length).ok()?;
    Some(Route {
        destination,
        gateway,
        oif,
    })
}

/// How a route is named in error messages: `10.0.0.0/8 via 10.1.0.1`.
fn describe(route: &Route) -> String {
    match route.gateway {
        Some(gw) => format!("{} via {gw}", route.destination),
        None => route.destination.to_string(),
    }
}

/// The request that installs (or replaces) a route.
pub fn replace_route_request(route: &Route) -> Request {
    Request::new(
        format!("add route {}", describe(route)),
        RouteNetlinkMessage::NewRoute(route_message(route)),
        NLM_F_CREATE | NLM_F_REPLACE,
    )
}

/// The request that deletes a route.
pub fn delete_route_request(route: &Route) -> Request {
    Request::new(
        format!("delete route {}", describe(route)),
        RouteNetlinkMessage::DelRoute(route_message(route)),
        0,
    )
}

impl Netlink {
    pub fn replace_route(&mut self, route: &Route) -> Result<()> {
        self.batch(vec![replace_route_request(route)])
    }

    /// Deletes a route; one that is already gone is not an error.
    pub fn delete_route(&mut self, route: &Route) -> Result<()> {
        match self.batch(vec![delete_route_request(route)]) {
            Err(e) if e.errno() == Some(libc::ESRCH) => Ok(()),
            other => other,
        }
    }

    /// The IPv4 routes of the main table.
    pub fn routes(&mut self) -> Result<Vec<Route>> {
        let mut req = RouteMessage::default();
        req.header.address_family = AddressFamily::Inet;
        let answers = self.dump("list routes", RouteNetlinkMessage::GetRoute(req))?;
        let mut out = Vec::new();
        for answer in answers {
            let RouteNetlinkMessage::NewRoute(msg) = answer else {
                continue;
            };
            if msg.header.table != RouteHeader::RT_TABLE_MAIN
                || msg.header.kind != RouteType::Unicast
            {
                continue;
            }
            out.extend(route_from_message(&msg));
        }
        Ok(out)
    }
}
