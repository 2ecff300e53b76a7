//! The names the DNS server answers for: an immutable snapshot of netd's state, swapped in
//! whole after every change so a query never sees half an update, and kept up to date one
//! sandbox at a time (persistent maps make the snapshot a cheap clone).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use hickory_proto::rr::Name;

use crate::state::{Sandbox, State};

/// The search domain sandboxes get; names under it are netd's alone (never forwarded).
pub const SEARCH_DOMAIN: &str = "netd.internal";

/// How long resolvers may cache an answer: short, because sandboxes come and go.
pub const TTL: u32 = 60;

/// One DNS-enabled network: its listener address and its names. The maps are persistent
/// (`imbl`): a snapshot is a cheap clone, and a sandbox's change is a few inserts.
#[derive(Debug, Clone)]
pub struct NetworkRecords {
    pub gateway: Ipv4Addr,
    /// Internal networks answer their own names and forward nothing.
    pub internal: bool,
    /// The network's own resolvers (`--opt dns-upstream`); `None`: the host's.
    pub upstreams: Option<Arc<[SocketAddr]>>,
    /// Lower-case name, alias or short id -> addresses on this network.
    names: imbl::HashMap<String, Vec<Ipv4Addr>>,
    /// Address -> the fully qualified name of the sandbox that has it.
    reverse: imbl::HashMap<Ipv4Addr, Name>,
}

impl NetworkRecords {
    pub fn addresses(&self, name: &str) -> Option<&[Ipv4Addr]> {
        self.names.get(name).map(Vec::as_slice)
    }

    pub fn name_of(&self, ip: Ipv4Addr) -> Option<&Name> {
        self.reverse.get(&ip)
    }

    fn add_name(&mut self, name: &str, ip: Ipv4Addr) {
        let key = name.to_ascii_lowercase();
        match self.names.get_mut(&key) {
            Some(entry) => {
                if !entry.contains(&ip) {
                    entry.push(ip);
                }
            }
            None => {
                self.names.insert(key, vec![ip]);
            }
        }
    }

    fn remove_name(&mut self, name: &str, ip: Ipv4Addr) {
        let key = name.to_ascii_lowercase();
        let empty = match self.names.get_mut(&key) {
            Some(entry) => {
                entry.retain(|a| *a != ip);
                entry.is_empty()
            }
            None => false,
        };
        if empty {
            self.names.remove(&key);
        }
    }
}

/// Every DNS-enabled network's records, and which networks each sandbox address may see.
#[derive(Debug, Default, Clone)]
pub struct Records {
    networks: Vec<NetworkRecords>,
    by_gateway: HashMap<Ipv4Addr, usize>,
    /// A network's id -> its place in `networks`.
    index_of: HashMap<String, usize>,
    /// A sandbox's address -> the DNS-enabled networks the sandbox is on, the address's
    /// own network first.
    scopes: imbl::HashMap<Ipv4Addr, Vec<usize>>,
}

/// What a sandbox puts into the records: enough to tell whether it changed and to take
/// its entries out again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SandboxNames {
    name: String,
    id: String,
    /// (network id, address, aliases) of each endpoint.
    endpoints: Vec<(String, Ipv4Addr, Vec<String>)>,
}

impl SandboxNames {
    fn of(sandbox: &Sandbox) -> Self {
        SandboxNames {
            name: sandbox.name.clone(),
            id: sandbox.id.clone(),
            endpoints: sandbox
                .endpoints
                .iter()
                .map(|e| (e.network_id.clone(), e.ip, e.aliases.clone()))
                .collect(),
        }
    }

    /// Whether `sandbox` still puts exactly these names in (compared without copying).
    fn same_as(&self, sandbox: &Sandbox) -> bool {
        self.name == sandbox.name
            && self.endpoints.len() == sandbox.endpoints.len()
            && self
                .endpoints
                .iter()
                .zip(&sandbox.endpoints)
                .all(|((network, ip, aliases), e)| {
                    *network == e.network_id && *ip == e.ip && *aliases == e.aliases
                })
    }
}

/// The DNS-relevant part of the networks: when it changes, everything is rebuilt.
type NetworksKey = Vec<(String, Ipv4Addr, bool, Vec<SocketAddr>)>;

fn networks_key(state: &State) -> NetworksKey {
    let mut key: NetworksKey = state
        .networks
        .values()
        .filter(|n| n.dns)
        .map(|n| (n.id.clone(), n.gateway, n.internal, n.dns_upstreams.clone()))
        .collect();
    key.sort();
    key
}

/// Keeps the records equal to the state, changing only the sandboxes that changed, so
/// that publishing after a change costs the change, not the number of sandboxes.
#[derive(Debug, Default)]
pub struct RecordsBuilder {
    records: Records,
    sandboxes: HashMap<String, SandboxNames>,
    networks: NetworksKey,
    built: bool,
}

impl RecordsBuilder {
    /// The records for `state`. `remote_changed`: other nodes' names changed (they are
    /// few and come together, so they rebuild).
    pub fn update(&mut self, state: &State, remote_changed: bool) -> Records {
        let networks = networks_key(state);
        if !self.built || remote_changed || networks != self.networks {
            self.records = Records::from_state(state);
            self.sandboxes = state
                .sandboxes
                .values()
                .map(|s| (s.id.clone(), SandboxNames::of(s)))
                .collect();
            self.networks = networks;
            self.built = true;
            return self.records.clone();
        }
        let gone: Vec<String> = self
            .sandboxes
            .keys()
            .filter(|id| !state.sandboxes.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(names) = self.sandboxes.remove(&id) {
                self.records.remove_sandbox(&names);
            }
        }
        for sandbox in state.sandboxes.values() {
            match self.sandboxes.get(&sandbox.id) {
                Some(names) if names.same_as(sandbox) => continue,
                Some(names) => {
                    let names = names.clone();
                    self.records.remove_sandbox(&names);
                }
                None => {}
            }
            let names = SandboxNames::of(sandbox);
            self.records.add_sandbox(&names);
            self.sandboxes.insert(sandbox.id.clone(), names);
        }
        self.records.clone()
    }
}

impl Records {
    /// Builds the snapshot of the names on every DNS-enabled network.
    pub fn from_state(state: &State) -> Records {
        let mut records = Records::default();
        for network in state.networks.values().filter(|n| n.dns) {
            records
                .index_of
                .insert(network.id.clone(), records.networks.len());
            records
                .by_gateway
                .insert(network.gateway, records.networks.len());
            records.networks.push(NetworkRecords {
                gateway: network.gateway,
                internal: network.internal,
                upstreams: (!network.dns_upstreams.is_empty())
                    .then(|| Arc::from(network.dns_upstreams.as_slice())),
                names: imbl::HashMap::new(),
                reverse: imbl::HashMap::new(),
            });
        }
        for sandbox in state.sandboxes.values() {
            records.add_sandbox(&SandboxNames::of(sandbox));
        }
        // Sandboxes of other nodes on cluster networks: their name, short id and aliases.
        for (network_id, remote) in &state.remote_names {
            let Some(&index) = records.index_of.get(network_id.as_str()) else {
                continue;
            };
            let network = &mut records.networks[index];
            for record in remote {
                let short_id = &record.id[..record.id.len().min(12)];
                let names = [record.name.as_str(), short_id]
                    .into_iter()
                    .chain(record.aliases.iter().map(String::as_str));
                for name in names {
                    network.add_name(name, record.ip);
                }
                if let Some(fqdn) = qualified(&record.name) {
                    network.reverse.insert(record.ip, fqdn);
                }
            }
        }
        records
    }

    /// A sandbox's entries on the DNS-enabled networks it is on: (network index, address,
    /// the names that address answers to there).
    fn entries<'a>(&self, sandbox: &'a SandboxNames) -> Vec<(usize, Ipv4Addr, Vec<&'a str>)> {
        let short_id = &sandbox.id[..sandbox.id.len().min(12)];
        sandbox
            .endpoints
            .iter()
            .filter_map(|(network_id, ip, aliases)| {
                let index = *self.index_of.get(network_id)?;
                let names = [sandbox.name.as_str(), short_id]
                    .into_iter()
                    .chain(aliases.iter().map(String::as_str))
                    .collect();
                Some((index, *ip, names))
            })
            .collect()
    }

    fn add_sandbox(&mut self, sandbox: &SandboxNames) {
        let fqdn = qualified(&sandbox.name);
        let entries = self.entries(sandbox);
        let on: Vec<usize> = entries.iter().map(|(index, _, _)| *index).collect();
        for (index, ip, names) in entries {
            let network = &mut self.networks[index];
            for name in names {
                network.add_name(name, ip);
            }
            if let Some(fqdn) = &fqdn {
                network.reverse.insert(ip, fqdn.clone());
            }
            let mut scope = vec![index];
            scope.extend(on.iter().copied().filter(|i| *i != index));
            self.scopes.insert(ip, scope);
        }
    }

    fn remove_sandbox(&mut self, sandbox: &SandboxNames) {
        for (index, ip, names) in self.entries(sandbox) {
            let network = &mut self.networks[index];
            for name in names {
                network.remove_name(name, ip);
            }
            network.reverse.remove(&ip);
            self.scopes.remove(&ip);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::testing::{network, sandbox};

    fn same(a: &Records, b: &Records) -> bool {
        a.networks.len() == b.networks.len()
            && a.networks.iter().zip(&b.networks).all(|(x, y)| {
                x.gateway == y.gateway && x.names == y.names && x.reverse == y.reverse
            })
            && a.scopes == b.scopes
            && a.by_gateway == b.by_gateway
    }

    #[test]
    fn kept_up_to_date_one_sandbox_at_a_time_equals_a_rebuild() {
        let mut state = State::default();
        for n in [
            network("a", "10.1.0.0/24", false),
            network("b", "10.2.0.0/24", false),
        ] {
            state.networks.insert(n.id.clone(), n);
        }
        let mut builder = RecordsBuilder::default();
        type Step = Box<dyn Fn(&mut State)>;
        let steps: Vec<Step> = vec![
            Box::new(|s| {
                let x = sandbox("1", "web", &[("a", "10.1.0.2", &["www"])]);
                s.sandboxes.insert(x.id.clone(), x);
            }),
            Box::new(|s| {
                // Another sandbox with the same alias: both addresses answer.
                let x = sandbox(
                    "2",
                    "api",
                    &[("a", "10.1.0.3", &["www"]), ("b", "10.2.0.3", &[])],
                );
                s.sandboxes.insert(x.id.clone(), x);
            }),
            Box::new(|s| {
                // Renamed and moved: its old entries go.
                let x = sandbox("1", "front", &[("b", "10.2.0.2", &[])]);
                s.sandboxes.insert(x.id.clone(), x);
            }),
            Box::new(|s| {
                s.sandboxes.remove("2");
            }),
            Box::new(|s| {
                // A new network rebuilds.
                let n = network("c", "10.3.0.0/24", true);
                s.networks.insert(n.id.clone(), n);
                let x = sandbox("3", "db", &[("c", "10.3.0.2", &[])]);
                s.sandboxes.insert(x.id.clone(), x);
            }),
            Box::new(|s| {
                s.sandboxes.clear();
            }),
        ];
        for (i, step) in steps.iter().enumerate() {
            step(&mut state);
            let kept = builder.update(&state, false);
            assert!(
                same(&kept, &Records::from_state(&state)),
                "after step {i}: {kept:?}"
            );
        }
        let emptied = builder.update(&state, false);
        assert!(emptied
            .networks
            .iter()
            .all(|n| n.names.is_empty() && n.reverse.is_empty()));
    }
}
