//! Sample records and the properties every answer must have, shared by the unit tests and
//! the fuzz target (`fuzz/`). Not part of netd's interface.

// Fixtures and property checks: failing loudly is their job.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use bridge_driver::Network;
use hickory_proto::op::{Message, MessageType};

use super::query::{handle, question_end, Outcome, Transport, MAX_UDP_PAYLOAD};
use super::records::Records;
use crate::state::{Endpoint, Sandbox, State};

/// The gateways of networks `a` and `b`, and a sandbox on `a`.
pub const SERVER_A: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
pub const SERVER_B: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 1);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);

/// A DNS-enabled network named and identified by `id`.
pub fn network(id: &str, subnet: &str, internal: bool) -> Network {
    let subnet: ipnet::Ipv4Net = subnet.parse().expect("subnet");
    Network {
        id: id.into(),
        name: id.into(),
        driver: "bridge".into(),
        created: String::new(),
        bridge: format!("br-{id}"),
        bridge_mac: [2, 0, 0, 0, 0, 1],
        subnet,
        gateway: Ipv4Addr::from(u32::from(subnet.network()) + 1),
        ip_range: None,
        internal,
        icc: true,
        masquerade: true,
        mtu: 1500,
        options: BTreeMap::new(),
        labels: BTreeMap::new(),
        default: false,
        dns: true,
        dns_upstreams: Vec::new(),
        cluster: None,
    }
}

/// A sandbox with endpoints (network id, address, aliases).
pub fn sandbox(id: &str, name: &str, endpoints: &[(&str, &str, &[&str])]) -> Sandbox {
    Sandbox {
        id: id.repeat(64 / id.len()),
        name: name.into(),
        created: String::new(),
        network_mode: crate::state::NetworkMode::None,
        joined: None,
        endpoints: endpoints
            .iter()
            .enumerate()
            .map(|(i, (net, ip, aliases))| Endpoint {
                network_id: net.to_string(),
                endpoint_id: String::new(),
                interface: i as u32,
                ip: ip.parse().expect("ip"),
                mac: [2, 0, 0, 0, 0, 2],
                aliases: aliases.iter().map(|a| a.to_string()).collect(),
                default_route: i == 0,
                static_ip: false,
            })
            .collect(),
        ports: Vec::new(),
        attached: None,
        hostname: None,
        labels: Default::default(),
    }
}

/// client (a), web (a, b; alias www), db (b only), and an internal network c.
pub fn records() -> Records {
    let mut state = State::default();
    for n in [
        network("a", "10.1.0.0/24", false),
        network("b", "10.2.0.0/24", false),
        network("c", "10.3.0.0/24", true),
    ] {
        state.networks.insert(n.id.clone(), n);
    }
    for s in [
        sandbox("1", "client", &[("a", "10.1.0.2", &[])]),
        sandbox(
            "2",
            "web",
            &[("a", "10.1.0.3", &["www"]), ("b", "10.2.0.3", &[])],
        ),
        sandbox("3", "db", &[("b", "10.2.0.4", &[])]),
        sandbox("4", "lonely", &[("c", "10.3.0.2", &[])]),
    ] {
        state.sandboxes.insert(s.id.clone(), s);
    }
    Records::from_state(&state)
}

/// Whatever arrives, the handler answers with a well-formed message of the request's
/// id, within the size allowed, or drops it; it never panics.
pub fn check(packet: &[u8], r: &Records) {
    for transport in [Transport::Udp, Transport::Tcp] {
        match handle(packet, SERVER_A, CLIENT, r, transport) {
            Outcome::Answer(bytes) => {
                let m = Message::from_vec(&bytes).expect("answers parse");
                assert_eq!(m.metadata.message_type, MessageType::Response);
                assert_eq!(bytes[..2], packet[..2]);
                if transport == Transport::Udp {
                    assert!(bytes.len() <= usize::from(MAX_UDP_PAYLOAD));
                }
            }
            Outcome::Forward { client_max, .. } => assert!(client_max >= 512),
            Outcome::Drop => assert!(packet.len() < 12 || packet[2] & 0x80 != 0),
        }
    }
    let _ = question_end(packet);
}
