//! Firewall rules as data: the desired iptables state of netd's chains, rendered from the
//! networks (a pure function, golden-tested), and the restore text that makes the kernel
//! match it in one transaction.
//!
//! Layout (names are stable; renaming them would break upgrades):
//! - filter `FORWARD` jumps to `NETD-USER` (first, left to administrators) and `NETD-FORWARD`.
//! - `NETD-FORWARD` first accepts, through `NETD-CT`, packets of established and related
//!   flows in or out of netd's bridges (most packets stop there, after one conntrack match
//!   and two interface matches per network, instead of walking the isolation chains, which
//!   grow with the number of networks), then sends traffic
//!   through `NETD-ISOLATION-1/2` (no traffic between networks),
//!   then to one chain per network, `NETD-FWD-<hash>`, matched by bridge, so per-network
//!   rules stay together and the shared chain grows by two jumps per network, not per
//!   container.
//! - filter `INPUT` jumps to `NETD-INPUT`, which accepts DNS (UDP and TCP port 53) to the
//!   gateway of each network with netd's DNS server, for hosts whose INPUT policy drops.
//! - nat `POSTROUTING` jumps to `NETD-POSTROUTING`, which masquerades each network's subnet
//!   leaving through any other interface, and (first) what `NETD-HOSTPORT-MASQ` selects.
//! - Published ports: nat `PREROUTING` and `OUTPUT` jump, for local destinations, to
//!   `NETD-HOSTPORT-DNAT`, which goes to one `NETD-HP-<hash>` chain per network holding one
//!   DNAT rule per published port, tagged with the sandbox's id in a comment, so a
//!   sandbox's rules are appended and removed on their own. `NETD-HOSTPORT-MASQ` (first in
//!   `NETD-POSTROUTING`) masquerades the DNATed flows that need it, by conntrack state:
//!   hairpin and same-network ones (from the network's subnet to it) and localhost ones
//!   (from 127.0.0.0/8 out of its bridge). Everyone else keeps their source address.

use std::collections::BTreeMap;

use ipnet::Ipv4Net;

use crate::model::Network;
use crate::names::short_hash;

pub const CHAIN_USER: &str = "NETD-USER";
pub const CHAIN_INPUT: &str = "NETD-INPUT";
pub const CHAIN_FORWARD: &str = "NETD-FORWARD";
pub const CHAIN_CT: &str = "NETD-CT";
pub const CHAIN_ISOLATION_1: &str = "NETD-ISOLATION-1";
pub const CHAIN_ISOLATION_2: &str = "NETD-ISOLATION-2";
pub const CHAIN_POSTROUTING: &str = "NETD-POSTROUTING";
pub const CHAIN_HOSTPORT_DNAT: &str = "NETD-HOSTPORT-DNAT";
pub const CHAIN_HOSTPORT_MASQ: &str = "NETD-HOSTPORT-MASQ";
/// Every per-network port chain starts with this.
pub const HOSTPORT_CHAIN_PREFIX: &str = "NETD-HP-";

/// Every per-network filter chain starts with this.
pub const NETWORK_CHAIN_PREFIX: &str = "NETD-FWD-";
/// Every chain netd owns starts with this.
pub const CHAIN_PREFIX: &str = "NETD-";

/// What the firewall needs to know about one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkFirewall {
    pub id: String,
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub internal: bool,
    pub icc: bool,
    pub masquerade: bool,
    /// The gateway, when netd's DNS server listens there.
    pub dns: Option<std::net::Ipv4Addr>,
    /// Ports published by the network's sandboxes, in the order they were published.
    pub ports: Vec<PublishedPort>,
    /// The cluster subnet of a cluster network (`subnet` is this node's part of it):
    /// traffic within it is forwarded both ways without NAT; other networks cannot reach it.
    pub cluster: Option<Ipv4Net>,
}

/// A published port of a sandbox, with the address it is forwarded to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPort {
    pub sandbox_id: String,
    pub container_ip: std::net::Ipv4Addr,
    pub mapping: crate::ports::PortMapping,
}

/// The name of a network's port chain (nat table).
pub fn hostport_chain(network_id: &str) -> String {
    format!("{HOSTPORT_CHAIN_PREFIX}{}", short_hash(network_id))
}

/// The comment that ties a rule to its sandbox (the full id: it is how removal finds them).
pub fn sandbox_comment(sandbox_id: &str) -> String {
    format!("sandbox {sandbox_id}")
}

/// The rules of one published port, as `iptables-save` prints them (the network's chain).
pub fn port_rules(network_id: &str, port: &PublishedPort) -> Vec<String> {
    let chain = hostport_chain(network_id);
    let m = &port.mapping;
    let dst = if m.host_ip.is_unspecified() {
        String::new()
    } else {
        format!("-d {}/32 ", m.host_ip)
    };
    let proto = m.protocol.as_str();
    vec![format!(
        "-A {chain} {dst}-p {proto} -m {proto} --dport {} -m comment --comment \"{}\" -j DNAT --to-destination {}:{}",
        m.host_port,
        sandbox_comment(&port.sandbox_id),
        port.container_ip,
        m.container_port
    )]
}

impl From<&Network> for NetworkFirewall {
    fn from(n: &Network) -> Self {
        NetworkFirewall {
            id: n.id.clone(),
            bridge: n.bridge.clone(),
            subnet: n.subnet,
            internal: n.internal,
            icc: n.icc,
            masquerade: n.masquerade,
            dns: n.dns.then_some(n.gateway),
            ports: Vec::new(),
            cluster: n.cluster.as_ref().map(|c| c.config.network),
        }
    }
}

/// The name of a network's filter chain.
pub fn network_chain(network_id: &str) -> String {
    format!("{NETWORK_CHAIN_PREFIX}{}", short_hash(network_id))
}

/// One chain's rules, each in `iptables-save` form (`-A CHAIN ...`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub rules: Vec<String>,
}

impl Chain {
    pub(crate) fn new(name: &str) -> Self {
        Chain {
            name: name.to_string(),
            rules: Vec::new(),
        }
    }

    pub(crate) fn add(&mut self, spec: impl AsRef<str>) {
        self.rules
            .push(format!("-A {} {}", self.name, spec.as_ref()));
    }
}

/// The desired content of netd's chains, per table, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub filter: Vec<Chain>,
    pub nat: Vec<Chain>,
}

impl Ruleset {
    /// Adds the network policy chains: entered from `NETD-FORWARD` right after the
    /// isolation chains (so policy narrows what a network allows and never widens it),
    /// before the networks' own chains. Nothing changes when there is no policy.
    pub fn with_policy(mut self, policy: &crate::policy::PolicyRules) -> Ruleset {
        if policy.is_empty() {
            return self;
        }
        if let Some(forward) = self.filter.iter_mut().find(|c| c.name == CHAIN_FORWARD) {
            let isolation = format!("-A {CHAIN_FORWARD} -j {CHAIN_ISOLATION_1}");
            let at = forward
                .rules
                .iter()
                .position(|r| *r == isolation)
                .map_or(forward.rules.len(), |i| i + 1);
            forward.rules.insert(
                at,
                format!(
                    "-A {CHAIN_FORWARD} -j {}",
                    crate::policy::render::CHAIN_POLICY
                ),
            );
        }
        let at = self
            .filter
            .iter()
            .position(|c| c.name == CHAIN_ISOLATION_2)
            .map_or(self.filter.len(), |i| i + 1);
        for (offset, chain) in policy.chains.iter().enumerate() {
            self.filter.insert(at + offset, chain.clone());
        }
        self
    }
}

/// Renders the desired rules of every network (in the order given).
pub fn desired(networks: &[NetworkFirewall]) -> Ruleset {
    let mut input = Chain::new(CHAIN_INPUT);
    let mut forward = Chain::new(CHAIN_FORWARD);
    let mut ct = Chain::new(CHAIN_CT);
    let mut isolation1 = Chain::new(CHAIN_ISOLATION_1);
    let mut isolation2 = Chain::new(CHAIN_ISOLATION_2);
    let mut postrouting = Chain::new(CHAIN_POSTROUTING);
    let mut hostport_dnat = Chain::new(CHAIN_HOSTPORT_DNAT);
    let mut masq = Chain::new(CHAIN_HOSTPORT_MASQ);
    let mut per_network = Vec::new();
    let mut per_network_ports = Vec::new();

    forward.add(format!(
        "-m conntrack --ctstate RELATED,ESTABLISHED -j {CHAIN_CT}"
    ));
    forward.add(format!("-j {CHAIN_ISOLATION_1}"));
    // A published port is public: flows DNATed to it cross networks (both directions).
    isolation1.add("-m conntrack --ctstate DNAT -j RETURN");
    postrouting.add(format!("-j {CHAIN_HOSTPORT_MASQ}"));
    // A cluster network's own traffic to its other nodes leaves through the overlay, not
    // a bridge: it is no other network's, and other networks' traffic to it is dropped.
    for net in networks {
        if let Some(cluster) = net.cluster {
            isolation1.add(format!("-d {cluster} -i {} -j RETURN", net.bridge));
            isolation2.add(format!("-d {cluster} -j DROP"));
        }
    }
    for net in networks {
        let br = &net.bridge;
        if let Some(gateway) = net.dns {
            for proto in ["udp", "tcp"] {
                input.add(format!(
                    "-d {gateway}/32 -i {br} -p {proto} -m {proto} --dport 53 -j ACCEPT"
                ));
            }
        }
        let chain_name = network_chain(&net.id);
        // Only flows whose first packet these chains let through become established.
        ct.add(format!("-o {br} -j ACCEPT"));
        ct.add(format!("-i {br} -j ACCEPT"));
        forward.add(format!("-o {br} -j {chain_name}"));
        forward.add(format!("-i {br} -j {chain_name}"));
        isolation1.add(format!("-i {br} ! -o {br} -j {CHAIN_ISOLATION_2}"));
        isolation2.add(format!("-o {br} -j DROP"));

        let mut chain = Chain::new(&chain_name);
        let icc = if net.icc { "ACCEPT" } else { "DROP" };
        if net.internal {
            chain.add(format!("-i {br} -o {br} -j {icc}"));
            chain.add(format!("-i {br} ! -o {br} -j DROP"));
            chain.add(format!("! -i {br} -o {br} -j DROP"));
        } else {
            chain.add(format!("-i {br} -o {br} -j {icc}"));
            chain.add(format!("-i {br} ! -o {br} -j ACCEPT"));
            chain.add(format!("-o {br} -m conntrack --ctstate DNAT -j ACCEPT"));
            if let Some(cluster) = net.cluster {
                // Sandboxes on other nodes, with their own addresses.
                chain.add(format!("-s {cluster} -o {br} -j ACCEPT"));
            }
            chain.add(format!("-o {br} -j DROP"));
            match (net.masquerade, net.cluster) {
                (true, Some(cluster)) => postrouting.add(format!(
                    "-s {} ! -d {cluster} ! -o {br} -j MASQUERADE",
                    net.subnet
                )),
                (true, None) => {
                    postrouting.add(format!("-s {} ! -o {br} -j MASQUERADE", net.subnet))
                }
                (false, _) => {}
            }
        }
        per_network.push(chain);

        if net.internal {
            // No way out, so nothing published either.
            continue;
        }
        // A sandbox reaching a published port of its own network (itself included) must
        // get the answer back through the host: masquerade. So must localhost clients,
        // whose 127.0.0.1 cannot be answered from a sandbox.
        masq.add(format!(
            "-s {subnet} -d {subnet} -m conntrack --ctstate DNAT -j MASQUERADE",
            subnet = net.subnet
        ));
        masq.add(format!(
            "-s 127.0.0.0/8 -o {br} -m conntrack --ctstate DNAT -j MASQUERADE"
        ));
        let ports_chain = hostport_chain(&net.id);
        hostport_dnat.add(format!("-j {ports_chain}"));
        let mut chain = Chain::new(&ports_chain);
        for port in &net.ports {
            chain.rules.extend(port_rules(&net.id, port));
        }
        per_network_ports.push(chain);
    }

    let mut filter = vec![input, forward, ct, isolation1, isolation2];
    filter.extend(per_network);
    let mut nat = vec![postrouting, hostport_dnat, masq];
    nat.extend(per_network_ports);
    Ruleset { filter, nat }
}

/// One table of `iptables-save` output: chains in order of declaration, with their rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedTable {
    pub chains: BTreeMap<String, Vec<String>>,
}

impl SavedTable {
    /// Parses the output of `iptables-save -t TABLE`.
    pub fn parse(text: &str) -> Self {
        let mut chains: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in text.lines() {
            if let Some(decl) = line.strip_prefix(':') {
                if let Some(name) = decl.split_whitespace().next() {
                    chains.entry(name.to_string()).or_default();
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                if let Some(name) = rule.split_whitespace().next() {
                    chains
                        .entry(name.to_string())
                        .or_default()
                        .push(line.trim_end().to_string());
                }
            }
        }
        SavedTable { chains }
    }

    pub fn rules(&self, chain: &str) -> &[String] {
        self.chains.get(chain).map(Vec::as_slice).unwrap_or(&[])
    }

    /// netd's chains present in this table.
    pub fn owned_chains(&self) -> impl Iterator<Item = &str> {
        self.chains
            .keys()
            .map(String::as_str)
            .filter(|c| c.starts_with(CHAIN_PREFIX))
    }
}

/// One change to the jumps from a built-in chain into netd's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryFix {
    /// A missing jump, inserted at `position` (1-based).
    Insert {
        chain: &'static str,
        position: u32,
        rule: String,
    },
    /// A jump that is there but out of place (it is inserted again where it belongs).
    Delete { chain: &'static str, rule: String },
}

impl EntryFix {
    /// The `iptables-restore` line.
    pub fn line(&self) -> String {
        match self {
            EntryFix::Insert {
                chain,
                position,
                rule,
            } => format!("-I {chain} {position} {rule}"),
            EntryFix::Delete { chain, rule } => format!("-D {chain} {rule}"),
        }
    }

    /// Whether this restores a missing jump (what a repair report names).
    pub fn restores(&self) -> bool {
        matches!(self, EntryFix::Insert { .. })
    }
}

/// Fixes for the jumps from built-in chains into netd's, and the admin chain, computed
/// from what is there now. Empty when everything is in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryFixes {
    /// Chains to declare because they are missing (declaring flushes, so only when missing).
    pub filter_declare: Vec<String>,
    pub filter: Vec<EntryFix>,
    pub nat: Vec<EntryFix>,
}

impl EntryFixes {
    pub fn is_empty(&self) -> bool {
        self.filter_declare.is_empty() && self.filter.is_empty() && self.nat.is_empty()
    }
}

/// Which entry jumps are missing or out of place.
pub fn entry_fixes(filter: &SavedTable, nat: &SavedTable) -> EntryFixes {
    let mut fixes = EntryFixes::default();
    if !filter.chains.contains_key(CHAIN_USER) {
        fixes.filter_declare.push(CHAIN_USER.to_string());
    }
    let insert = |chain: &'static str, position: u32, rule: String| EntryFix::Insert {
        chain,
        position,
        rule,
    };
    let present = |saved: &SavedTable, chain: &str, rule: &str| {
        saved.rules(chain).contains(&format!("-A {chain} {rule}"))
    };
    let user_jump = format!("-j {CHAIN_USER}");
    let forward = filter.rules("FORWARD");
    if forward.first() != Some(&format!("-A FORWARD {user_jump}")) {
        for _ in forward
            .iter()
            .filter(|r| **r == format!("-A FORWARD {user_jump}"))
        {
            fixes.filter.push(EntryFix::Delete {
                chain: "FORWARD",
                rule: user_jump.clone(),
            });
        }
        fixes.filter.push(insert("FORWARD", 1, user_jump));
    }
    let forward_jump = format!("-j {CHAIN_FORWARD}");
    if !present(filter, "FORWARD", &forward_jump) {
        fixes.filter.push(insert("FORWARD", 2, forward_jump));
    }
    let input_jump = format!("-j {CHAIN_INPUT}");
    if !present(filter, "INPUT", &input_jump) {
        fixes.filter.push(insert("INPUT", 1, input_jump));
    }
    let post_jump = format!("-j {CHAIN_POSTROUTING}");
    if !present(nat, "POSTROUTING", &post_jump) {
        fixes.nat.push(insert("POSTROUTING", 1, post_jump));
    }
    for hook in ["PREROUTING", "OUTPUT"] {
        let jump = format!("-m addrtype --dst-type LOCAL -j {CHAIN_HOSTPORT_DNAT}");
        if !present(nat, hook, &jump) {
            fixes.nat.push(insert(hook, 1, jump));
        }
    }
    fixes
}

/// The `iptables-restore --noflush` text that appends `rules` (`-A ...` lines) to `table`
/// and touches nothing else.
pub fn append_text(table: &str, rules: &[String]) -> String {
    let mut out = format!("*{table}\n");
    for rule in rules {
        out.push_str(rule);
        out.push('\n');
    }
    out.push_str("COMMIT\n");
    out
}

/// The `iptables-restore --noflush` text that sets netd's chains to `ruleset`, deletes the
/// chains named in `stale` (per table), and applies the entry fixes.
pub fn restore_text(ruleset: &Ruleset, stale: &StaleChains, fixes: &EntryFixes) -> String {
    let mut out = String::new();
    render_table(
        &mut out,
        "filter",
        &ruleset.filter,
        &stale.filter,
        &fixes.filter_declare,
        &fixes.filter,
    );
    render_table(&mut out, "nat", &ruleset.nat, &stale.nat, &[], &fixes.nat);
    out
}

/// Chains of netd's that exist but are no longer wanted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StaleChains {
    pub filter: Vec<String>,
    pub nat: Vec<String>,
}

impl StaleChains {
    /// netd's chains present in the saved tables that `ruleset` does not have.
    pub fn find(ruleset: &Ruleset, filter: &SavedTable, nat: &SavedTable) -> Self {
        let stale = |chains: &[Chain], saved: &SavedTable| -> Vec<String> {
            saved
                .owned_chains()
                .filter(|c| *c != CHAIN_USER && !chains.iter().any(|w| w.name == *c))
                .map(str::to_string)
                .collect()
        };
        StaleChains {
            filter: stale(&ruleset.filter, filter),
            nat: stale(&ruleset.nat, nat),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.filter.is_empty() && self.nat.is_empty()
    }
}

fn render_table(
    out: &mut String,
    table: &str,
    chains: &[Chain],
    stale: &[String],
    declare: &[String],
    fixes: &[EntryFix],
) {
    out.push_str(&format!("*{table}\n"));
    for name in declare
        .iter()
        .chain(chains.iter().map(|c| &c.name))
        .chain(stale.iter())
    {
        out.push_str(&format!(":{name} - [0:0]\n"));
    }
    for chain in chains {
        for rule in &chain.rules {
            out.push_str(rule);
            out.push('\n');
        }
    }
    for name in stale {
        out.push_str(&format!("-X {name}\n"));
    }
    for fix in fixes {
        out.push_str(&fix.line());
        out.push('\n');
    }
    out.push_str("COMMIT\n");
}

/// Chains whose live rules differ from the desired ones (missing chains included).
pub fn drifted_chains<'a>(
    ruleset: &'a Ruleset,
    filter: &SavedTable,
    nat: &SavedTable,
) -> Vec<&'a str> {
    let mut out = Vec::new();
    for (chains, saved) in [(&ruleset.filter, filter), (&ruleset.nat, nat)] {
        for chain in chains {
            match saved.chains.get(&chain.name) {
                Some(rules) if *rules == chain.rules => {}
                _ => out.push(chain.name.as_str()),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(fixes: &[EntryFix]) -> Vec<String> {
        fixes.iter().map(EntryFix::line).collect()
    }

    fn net(id: &str, bridge: &str, subnet: &str) -> NetworkFirewall {
        NetworkFirewall {
            id: id.into(),
            bridge: bridge.into(),
            subnet: subnet.parse().expect("subnet"),
            internal: false,
            icc: true,
            masquerade: true,
            dns: None,
            ports: Vec::new(),
            cluster: None,
        }
    }

    #[test]
    fn entry_fixes_on_an_empty_host() {
        let empty =
            SavedTable::parse("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\nCOMMIT\n");
        let fixes = entry_fixes(&empty, &SavedTable::default());
        assert_eq!(fixes.filter_declare, vec!["NETD-USER"]);
        assert_eq!(
            lines(&fixes.filter),
            vec![
                "-I FORWARD 1 -j NETD-USER",
                "-I FORWARD 2 -j NETD-FORWARD",
                "-I INPUT 1 -j NETD-INPUT"
            ]
        );
        assert_eq!(
            lines(&fixes.nat),
            vec![
                "-I POSTROUTING 1 -j NETD-POSTROUTING",
                "-I PREROUTING 1 -m addrtype --dst-type LOCAL -j NETD-HOSTPORT-DNAT",
                "-I OUTPUT 1 -m addrtype --dst-type LOCAL -j NETD-HOSTPORT-DNAT",
            ]
        );
    }

    #[test]
    fn entry_fixes_when_all_in_place() {
        let filter = SavedTable::parse(
            ":FORWARD ACCEPT [0:0]\n:NETD-USER - [0:0]\n:NETD-FORWARD - [0:0]\n-A FORWARD -j NETD-USER\n-A FORWARD -j NETD-FORWARD\n-A INPUT -j NETD-INPUT\n",
        );
        let nat = SavedTable::parse(
            ":POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -j NETD-POSTROUTING\n\
             -A PREROUTING -m addrtype --dst-type LOCAL -j NETD-HOSTPORT-DNAT\n\
             -A OUTPUT -m addrtype --dst-type LOCAL -j NETD-HOSTPORT-DNAT\n",
        );
        assert!(entry_fixes(&filter, &nat).is_empty());
    }

    #[test]
    fn user_chain_moved_back_to_first() {
        let filter = SavedTable::parse(
            ":FORWARD ACCEPT [0:0]\n:NETD-USER - [0:0]\n-A FORWARD -j ACCEPT\n-A FORWARD -j NETD-USER\n-A FORWARD -j NETD-FORWARD\n-A INPUT -j NETD-INPUT\n",
        );
        let fixes = entry_fixes(&filter, &SavedTable::default());
        assert!(
            fixes.filter_declare.is_empty(),
            "an existing admin chain is never flushed"
        );
        assert_eq!(
            lines(&fixes.filter),
            vec!["-D FORWARD -j NETD-USER", "-I FORWARD 1 -j NETD-USER"]
        );
    }

    #[test]
    fn stale_chains_and_drift() {
        let a = net("a", "br-a", "10.1.0.0/24");
        let b = net("b", "br-b", "10.2.0.0/24");
        let both = desired(&[a.clone(), b]);
        let only_a = desired(&[a]);
        let mut text = String::new();
        for c in &both.filter {
            text.push_str(&format!(":{} - [0:0]\n", c.name));
            for r in &c.rules {
                text.push_str(r);
                text.push('\n');
            }
        }
        text.push_str(":NETD-USER - [0:0]\n");
        let saved = SavedTable::parse(&text);
        let stale = StaleChains::find(&only_a, &saved, &SavedTable::default());
        assert_eq!(stale.filter, vec![network_chain("b")]);
        assert!(drifted_chains(&both, &saved, &SavedTable::default()).contains(&CHAIN_POSTROUTING));
        let drift = drifted_chains(&both, &saved, &SavedTable::default());
        assert!(
            both.filter
                .iter()
                .all(|c| !drift.contains(&c.name.as_str())),
            "filter chains match exactly: {drift:?}"
        );
        assert_eq!(drift.len(), both.nat.len(), "every nat chain is missing");
    }
}
