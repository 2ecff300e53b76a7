//! Published ports: choosing host ports, holding them, and the DNAT rules of a sandbox.
//!
//! netd holds every published host port with a bound socket (not listening: the DNAT
//! rules catch the traffic first), like Docker's port allocator. The bind both detects a
//! port another program already uses and keeps others from taking it later.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;

use bridge_driver::firewall::{
    append_text, hostport_chain, port_rules, sandbox_comment, PublishedPort,
};
use bridge_driver::ports::{parse_expose, PortMapping, PortRequest, Protocol};
use bridge_driver::ModelError;
use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockProtocol, SockType, SockaddrIn};

use super::Engine;
use crate::error::{NetdError, Result};
use crate::state::Sandbox;

/// The host ports in use, and the sockets that hold them.
#[derive(Debug, Default)]
pub(super) struct PortTable {
    /// (protocol, port) -> (host address, sandbox id) of every mapping.
    by_port: HashMap<(Protocol, u16), Vec<(Ipv4Addr, String)>>,
    sockets: HashMap<PortMapping, OwnedFd>,
}

impl PortTable {
    /// The sandbox holding a port that `mapping` would conflict with.
    fn holder(&self, mapping: &PortMapping) -> Option<&str> {
        self.by_port
            .get(&(mapping.protocol, mapping.host_port))?
            .iter()
            .find(|(ip, _)| {
                *ip == mapping.host_ip || ip.is_unspecified() || mapping.host_ip.is_unspecified()
            })
            .map(|(_, id)| id.as_str())
    }

    /// Records a mapping and holds its port; fails if another program has it.
    fn take(&mut self, mapping: PortMapping, sandbox_id: &str) -> Result<()> {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.sockets.entry(mapping) {
            if let Some(fd) = hold(&mapping)? {
                slot.insert(fd);
            }
        }
        self.by_port
            .entry((mapping.protocol, mapping.host_port))
            .or_default()
            .push((mapping.host_ip, sandbox_id.to_string()));
        Ok(())
    }

    pub(super) fn release(&mut self, mapping: &PortMapping, sandbox_id: &str) {
        self.sockets.remove(mapping);
        if let Some(list) = self.by_port.get_mut(&(mapping.protocol, mapping.host_port)) {
            list.retain(|(ip, id)| !(*ip == mapping.host_ip && id == sandbox_id));
            if list.is_empty() {
                self.by_port.remove(&(mapping.protocol, mapping.host_port));
            }
        }
    }
}

/// Binds a socket on the mapping's host address and port. `None` for SCTP when the
/// kernel has no SCTP (nothing else can hold the port then either).
fn hold(mapping: &PortMapping) -> Result<Option<OwnedFd>> {
    let (kind, protocol) = match mapping.protocol {
        Protocol::Tcp => (SockType::Stream, SockProtocol::Tcp),
        Protocol::Udp => (SockType::Datagram, SockProtocol::Udp),
        Protocol::Sctp => (SockType::Stream, SockProtocol::Sctp),
    };
    let fd = match socket(AddressFamily::Inet, kind, SockFlag::SOCK_CLOEXEC, protocol) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::EPROTONOSUPPORT) if mapping.protocol == Protocol::Sctp => {
            return Ok(None)
        }
        Err(e) => {
            return Err(NetdError::io(
                format!("socket for port {mapping}"),
                std::io::Error::from(e),
            ))
        }
    };
    let octets = mapping.host_ip.octets();
    let addr = SockaddrIn::new(
        octets[0],
        octets[1],
        octets[2],
        octets[3],
        mapping.host_port,
    );
    match bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
        Ok(()) => Ok(Some(fd)),
        Err(nix::errno::Errno::EADDRINUSE) => Err(NetdError::Conflict(format!(
            "-p: host port {}:{}/{} is already in use by another program on the host",
            mapping.host_ip, mapping.host_port, mapping.protocol
        ))),
        Err(nix::errno::Errno::EADDRNOTAVAIL) => Err(NetdError::Invalid(format!(
            "-p: {} is not an address of this host",
            mapping.host_ip
        ))),
        Err(e) => Err(NetdError::io(
            format!("cannot hold port {mapping}"),
            std::io::Error::from(e),
        )),
    }
}

/// What `run` asks to publish.
#[derive(Debug, Clone, Default)]
pub struct PublishRequest {
    pub publish: Vec<String>,
    pub publish_all: bool,
    pub expose: Vec<String>,
}

impl PublishRequest {
    pub fn is_empty(&self) -> bool {
        self.publish.is_empty() && (!self.publish_all || self.expose.is_empty())
    }
}

impl Engine {
    /// Parses, chooses host ports for and holds the ports `sandbox_id` publishes. Nothing
    /// is held when this fails.
    pub(super) fn take_ports(
        &mut self,
        sandbox_id: &str,
        request: &PublishRequest,
    ) -> Result<Vec<PortMapping>> {
        let mut requests = Vec::new();
        for spec in &request.publish {
            requests.push(PortRequest::parse(spec)?);
        }
        for spec in &request.expose {
            let exposed = parse_expose(spec)?;
            if request.publish_all {
                requests.push(exposed);
            }
        }
        let host_addresses: Vec<Ipv4Addr> = self
            .host
            .addresses()?
            .into_iter()
            .map(|a| a.net.addr())
            .collect();
        let mut taken: Vec<PortMapping> = Vec::new();
        let result = (|| {
            for req in &requests {
                if !req.host_ip.is_unspecified() && !host_addresses.contains(&req.host_ip) {
                    return Err(NetdError::Invalid(format!(
                        "-p: {} is not an address of this host",
                        req.host_ip
                    )));
                }
                let mappings = {
                    let ports = &self.ports;
                    let chosen = &taken;
                    req.expand(|protocol, ip, range| pick_free(ports, chosen, protocol, ip, range))?
                };
                for mapping in mappings {
                    if taken.iter().any(|t| t.conflicts_with(&mapping)) {
                        return Err(NetdError::Invalid(format!(
                            "-p: host port {}:{}/{} is given twice",
                            mapping.host_ip, mapping.host_port, mapping.protocol
                        )));
                    }
                    if let Some(holder) = self.ports.holder(&mapping) {
                        let name = self
                            .state
                            .sandboxes
                            .get(holder)
                            .map(|s| s.name.clone())
                            .unwrap_or_else(|| holder.to_string());
                        return Err(NetdError::Conflict(format!(
                            "-p: host port {}:{}/{} is already published by sandbox {name}",
                            mapping.host_ip, mapping.host_port, mapping.protocol
                        )));
                    }
                    self.ports.take(mapping, sandbox_id)?;
                    taken.push(mapping);
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            for mapping in &taken {
                self.ports.release(mapping, sandbox_id);
            }
            return Err(e);
        }
        Ok(taken)
    }

    /// Gives back the ports of a sandbox.
    pub(super) fn release_ports(&mut self, sandbox: &Sandbox) {
        for mapping in &sandbox.ports {
            self.ports.release(mapping, &sandbox.id);
        }
    }

    /// Re-holds the recorded ports at start-up; a port another program took meanwhile is
    /// reported (its DNAT rules still win over that program).
    pub(super) fn hold_recorded_ports(&mut self) -> Vec<String> {
        let mut warnings = Vec::new();
        let sandboxes: Vec<Sandbox> = self.state.sandboxes.values().cloned().collect();
        for sandbox in sandboxes {
            for mapping in &sandbox.ports {
                if let Err(e) = self.ports.take(*mapping, &sandbox.id) {
                    warnings.push(format!("sandbox {}: {e}", sandbox.name));
                    self.ports
                        .by_port
                        .entry((mapping.protocol, mapping.host_port))
                        .or_default()
                        .push((mapping.host_ip, sandbox.id.clone()));
                }
            }
        }
        warnings
    }

    /// The published ports of a sandbox with the address they go to (its first endpoint's).
    pub(super) fn published(&self, sandbox: &Sandbox) -> Option<(String, Vec<PublishedPort>)> {
        let endpoint = sandbox.endpoints.first()?;
        if sandbox.ports.is_empty() {
            return None;
        }
        let ports = sandbox
            .ports
            .iter()
            .map(|m| PublishedPort {
                sandbox_id: sandbox.id.clone(),
                container_ip: endpoint.ip,
                mapping: *m,
            })
            .collect();
        Some((endpoint.network_id.clone(), ports))
    }

    /// The rule lines of a sandbox's published ports (as `iptables-save` prints them).
    fn sandbox_port_rules(&self, sandbox: &Sandbox) -> Vec<String> {
        let Some((network_id, ports)) = self.published(sandbox) else {
            return Vec::new();
        };
        let Some(network) = self.state.networks.get(&network_id) else {
            return Vec::new();
        };
        ports
            .iter()
            .flat_map(|p| port_rules(&network.id, p))
            .collect()
    }

    /// Adds a sandbox's DNAT rules in one transaction (appends: no other rule is touched),
    /// learning their handles (on nf_tables) so that removing them needs no search.
    pub(super) fn apply_ports(&mut self, sandbox: &Sandbox) -> Result<()> {
        let rules = self.sandbox_port_rules(sandbox);
        let Some((network_id, _)) = self.published(sandbox).filter(|_| !rules.is_empty()) else {
            return Ok(());
        };
        let text = append_text("nat", &rules);
        let chain = hostport_chain(&network_id);
        let comment = sandbox_comment(&sandbox.id);
        let tag = linkd::Tag {
            table: "nat",
            chain: &chain,
            comment: &comment,
        };
        match self.firewall.append_tagged(&text, &tag, rules.len())? {
            Some(handles) => self.rule_handles.insert(sandbox.id.clone(), handles),
            None => self.rule_handles.remove(&sandbox.id),
        };
        self.flush_udp_conntrack(&sandbox.ports);
        Ok(())
    }

    /// Deletes conntrack entries of UDP flows to the mapped host ports (see
    /// `linkd::conntrack::flush_udp_to_port`).
    fn flush_udp_conntrack(&mut self, mappings: &[PortMapping]) {
        for m in mappings.iter().filter(|m| m.protocol == Protocol::Udp) {
            self.firewall.flush_udp_conntrack(m.host_port);
        }
    }

    /// Forgets every learned handle: after netd rewrites its chains, the rules have new ones.
    pub(super) fn forget_rule_handles(&mut self) {
        self.rule_handles.clear();
    }

    /// Removes a sandbox's DNAT rules in one transaction: by handle over nf_tables (learned,
    /// or found by the sandbox's comment; no full-table fetch), or from `iptables-save`
    /// where iptables is the legacy backend.
    pub(super) fn remove_port_rules(&mut self, sandbox: &Sandbox) -> Result<()> {
        let learned = self.rule_handles.remove(&sandbox.id);
        if self.sandbox_port_rules(sandbox).is_empty() {
            return Ok(());
        }
        let Some((network_id, _)) = self.published(sandbox) else {
            return Ok(());
        };
        let chain = hostport_chain(&network_id);
        let comment = sandbox_comment(&sandbox.id);
        let tag = linkd::Tag {
            table: "nat",
            chain: &chain,
            comment: &comment,
        };
        self.firewall.delete_tagged(&tag, learned.as_deref())?;
        self.flush_udp_conntrack(&sandbox.ports);
        Ok(())
    }
}

/// Picks a free host port: the first free one of `range`, or a free one of the ephemeral
/// range starting at a random place.
fn pick_free(
    table: &PortTable,
    chosen: &[PortMapping],
    protocol: Protocol,
    ip: Ipv4Addr,
    range: Option<(u16, u16)>,
) -> std::result::Result<u16, ModelError> {
    let (start, end, offset) = match range {
        Some((s, e)) => (s, e, 0),
        None => {
            let (s, e) = ephemeral_range();
            let mut seed = [0u8; 2];
            let _ = getrandom::fill(&mut seed);
            (s, e, u16::from_ne_bytes(seed))
        }
    };
    let span = u32::from(end - start) + 1;
    for i in 0..span {
        let port = start + ((u32::from(offset) + i) % span) as u16;
        let candidate = PortMapping {
            host_ip: ip,
            host_port: port,
            container_port: 0,
            protocol,
        };
        if table.holder(&candidate).is_some() || chosen.iter().any(|c| c.conflicts_with(&candidate))
        {
            continue;
        }
        // A port another program holds is skipped too.
        if hold(&candidate)
            .map(|fd| fd.is_some() || protocol == Protocol::Sctp)
            .unwrap_or(false)
        {
            return Ok(port);
        }
    }
    Err(ModelError::invalid(
        "-p",
        format!("no free host port left in {start}-{end}/{protocol}"),
    ))
}

/// The kernel's ephemeral port range in netd's namespace.
fn ephemeral_range() -> (u16, u16) {
    let text = linkd::sysctl::get("net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut parts = text
        .split_whitespace()
        .filter_map(|p| p.parse::<u16>().ok());
    match (parts.next(), parts.next()) {
        (Some(s), Some(e)) if s <= e && s > 0 => (s, e),
        _ => (32768, 60999),
    }
}
