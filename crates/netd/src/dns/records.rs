//! The names the DNS server answers for: an immutable snapshot built from netd's state after
//! every change and swapped in whole, so a query never sees half an update.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use hickory_proto::rr::Name;

use crate::state::State;

/// The search domain sandboxes get; names under it are netd's alone (never forwarded).
pub const SEARCH_DOMAIN: &str = "netd.internal";

/// How long resolvers may cache an answer: short, because sandboxes come and go.
pub const TTL: u32 = 60;

/// One DNS-enabled network: its listener address and its names.
#[derive(Debug)]
pub struct NetworkRecords {
    pub gateway: Ipv4Addr,
    /// Internal networks answer their own names and forward nothing.
    pub internal: bool,
    /// The network's own resolvers (`--opt dns-upstream`); `None`: the host's.
    pub upstreams: Option<Arc<[SocketAddr]>>,
    /// Lower-case name, alias or short id -> addresses on this network.
    names: HashMap<String, Vec<Ipv4Addr>>,
    /// Address -> the fully qualified name of the sandbox that has it.
    reverse: HashMap<Ipv4Addr, Name>,
}

impl NetworkRecords {
    pub fn addresses(&self, name: &str) -> Option<&[Ipv4Addr]> {
        self.names.get(name).map(Vec::as_slice)
    }

    pub fn name_of(&self, ip: Ipv4Addr) -> Option<&Name> {
        self.reverse.get(&ip)
    }
}

/// Every DNS-enabled network's records, and which networks each sandbox address may see.
#[derive(Debug, Default)]
pub struct Records {
    networks: Vec<NetworkRecords>,
    by_gateway: HashMap<Ipv4Addr, usize>,
    /// A sandbox's address -> the DNS-enabled networks the sandbox is on, the address's
    /// own network first.
    scopes: HashMap<Ipv4Addr, Vec<usize>>,
}

impl Records {
    /// Builds the snapshot of the names on every DNS-enabled network.
    pub fn from_state(state: &State) -> Records {
        let mut records = Records::default();
        let mut index_of: HashMap<&str, usize> = HashMap::new();
        for network in state.networks.values().filter(|n| n.dns) {
            index_of.insert(network.id.as_str(), records.networks.len());
            records
                .by_gateway
                .insert(network.gateway, records.networks.len());
            records.networks.push(NetworkRecords {
                gateway: network.gateway,
                internal: network.internal,
                upstreams: (!network.dns_upstreams.is_empty())
                    .then(|| Arc::from(network.dns_upstreams.as_slice())),
                names: HashMap::new(),
                reverse: HashMap::new(),
            });
        }
        for sandbox in state.sandboxes.values() {
            let fqdn = qualified(&sandbox.name);
            let on: Vec<(usize, Ipv4Addr)> = sandbox
                .endpoints
                .iter()
                .filter_map(|e| index_of.get(e.network_id.as_str()).map(|&i| (i, e.ip)))
                .collect();
            for endpoint in &sandbox.endpoints {
                let Some(&index) = index_of.get(endpoint.network_id.as_str()) else {
                    continue;
                };
                let network = &mut records.networks[index];
                let names = [sandbox.name.as_str(), sandbox.short_id()]
                    .into_iter()
                    .chain(endpoint.aliases.iter().map(String::as_str));
                for name in names {
                    let entry = network.names.entry(name.to_ascii_lowercase()).or_default();
                    if !entry.contains(&endpoint.ip) {
                        entry.push(endpoint.ip);
                    }
                }
                if let Some(fqdn) = &fqdn {
                    network.reverse.insert(endpoint.ip, fqdn.clone());
                }
                let mut scope = vec![index];
                scope.extend(on.iter().map(|(i, _)| *i).filter(|i| *i != index));
                records.scopes.insert(endpoint.ip, scope);
            }
        }
        // Sandboxes of other nodes on cluster networks: their name, short id and aliases.
        for (network_id, remote) in &state.remote_names {
            let Some(&index) = index_of.get(network_id.as_str()) else {
                continue;
            };
            let network = &mut records.networks[index];
            for record in remote {
                let short_id = &record.id[..record.id.len().min(12)];
                let names = [record.name.as_str(), short_id]
                    .into_iter()
                    .chain(record.aliases.iter().map(String::as_str));
                for name in names {
                    let entry = network.names.entry(name.to_ascii_lowercase()).or_default();
                    if !entry.contains(&record.ip) {
                        entry.push(record.ip);
                    }
                }
                if let Some(fqdn) = qualified(&record.name) {
                    network.reverse.insert(record.ip, fqdn);
                }
            }
        }
        records
    }

    /// The gateway addresses to listen on.
    pub fn listeners(&self) -> impl Iterator<Item = &NetworkRecords> {
        self.networks.iter()
    }

    pub fn network_at(&self, gateway: Ipv4Addr) -> Option<&NetworkRecords> {
        self.by_gateway.get(&gateway).map(|&i| &self.networks[i])
    }

    /// The networks whose names a query from `client` to `server` may see, best first:
    /// a sandbox sees the networks it is on, the one the query came in on first; anyone
    /// else sees only the network it asked.
    pub fn scope(&self, server: Ipv4Addr, client: Ipv4Addr) -> Vec<&NetworkRecords> {
        let listener = self.by_gateway.get(&server).copied();
        let mut out = Vec::with_capacity(2);
        match self.scopes.get(&client) {
            Some(networks) => {
                if let Some(l) = listener.filter(|l| networks.contains(l)) {
                    out.push(&self.networks[l]);
                }
                out.extend(
                    networks
                        .iter()
                        .filter(|&&i| Some(i) != listener)
                        .map(|&i| &self.networks[i]),
                );
            }
            None => out.extend(listener.map(|l| &self.networks[l])),
        }
        out
    }
}

/// `name.netd.internal.`, or `None` for a name that is not a valid DNS name.
fn qualified(name: &str) -> Option<Name> {
    Name::from_ascii(format!("{}.{SEARCH_DOMAIN}.", name.to_ascii_lowercase())).ok()
}
