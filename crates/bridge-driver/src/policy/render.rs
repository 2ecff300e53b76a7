//! Policies as firewall state: a chain per policy and direction, and kernel sets holding
//! what selectors select, so that sandboxes coming, going or changing labels change set
//! members and never rules.
//!
//! Layout (filter table), entered from `NETD-FORWARD` after the isolation chains, for
//! packets that open a connection (replies are accepted before, in `NETD-CT`):
//!
//! ```text
//! NETD-POLICY      -m set --match-set NETD-POL-EGRESS src  -j NETD-POLICY-OUT
//!                  -m set --match-set NETD-POL-INGRESS dst -j NETD-POLICY-IN
//! NETD-POLICY-OUT  -j MARK --set-xmark 0/MARK
//!                  -m set --match-set <selected by P> src -j NETD-PO-<P>   (each egress policy)
//!                  -m mark ! --mark MARK/MARK -j DROP
//!                  -j MARK --set-xmark 0/MARK
//! NETD-PO-<P>      <peer set> <ports> -j MARK --set-xmark MARK/MARK        (each allowed peer x port)
//! ```
//!
//! and the same for ingress with `src`/`dst` swapped. A packet goes on (to the network's
//! own chains) only when every direction that restricts it has a policy allowing it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};
use linkd::ipset::MemberChange;
use sha2::{Digest, Sha256};

use super::labels::{namespace_labels, namespace_of, LabelSelector, Labels};
use super::model::{NetworkPolicy, Peer, PolicyPort, PolicyType};
use crate::firewall::Chain;

pub const CHAIN_POLICY: &str = "NETD-POLICY";
pub const CHAIN_POLICY_IN: &str = "NETD-POLICY-IN";
pub const CHAIN_POLICY_OUT: &str = "NETD-POLICY-OUT";
/// Sandboxes some ingress (egress) policy selects: the only ones policy restricts.
pub const SET_INGRESS: &str = "NETD-POL-INGRESS";
pub const SET_EGRESS: &str = "NETD-POL-EGRESS";
/// The packet mark bit that says "a policy allowed this" while the policy chains run; it
/// is cleared before and after, so it means nothing outside them.
pub const POLICY_MARK: u32 = 0x40000;

/// A sandbox as policy sees it: where it is, what it is labelled, its addresses (on every
/// network, on this node or another).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyEndpoint {
    pub labels: Labels,
    pub ips: Vec<Ipv4Addr>,
}

/// What a set holds: addresses (`hash:ip`) or networks with exceptions (`hash:net`, the
/// exceptions as `nomatch` entries, which is `ipBlock.except` exactly).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SetKind {
    HashIp,
    HashNet,
}

impl SetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SetKind::HashIp => "hash:ip",
            SetKind::HashNet => "hash:net",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SetMember {
    pub net: Ipv4Net,
    pub nomatch: bool,
}

impl std::fmt::Display for SetMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.net.prefix_len() == 32 {
            write!(f, "{}", self.net.addr())?;
        } else {
            write!(f, "{}", self.net)?;
        }
        if self.nomatch {
            write!(f, " nomatch")?;
        }
        Ok(())
    }
}

/// A kernel set: its name, kind and members (sorted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    pub name: String,
    pub kind: SetKind,
    pub members: BTreeSet<SetMember>,
}

/// The firewall state of all policies: filter-table chains (in order) and sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyRules {
    pub chains: Vec<Chain>,
    pub sets: Vec<IpSet>,
    /// Which address sets a sandbox belongs to, by its labels.
    pub membership: Membership,
}

/// The address sets whose members are sandboxes, with what puts a sandbox in each; a
/// sandbox that changes changes only its own memberships.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    pods: Vec<(String, PodSet)>,
    /// Per direction, the pod sets that policies of that direction select.
    ingress: Vec<usize>,
    egress: Vec<usize>,
}

impl Membership {
    /// The names of the sets a sandbox with these labels is in.
    pub fn sets_of(&self, labels: &Labels) -> BTreeSet<&str> {
        let matched: Vec<bool> = self.pods.iter().map(|(_, p)| p.matches(labels)).collect();
        let mut out: BTreeSet<&str> = self
            .pods
            .iter()
            .zip(&matched)
            .filter(|(_, m)| **m)
            .map(|((name, _), _)| name.as_str())
            .collect();
        if self.ingress.iter().any(|&i| matched[i]) {
            out.insert(SET_INGRESS);
        }
        if self.egress.iter().any(|&i| matched[i]) {
            out.insert(SET_EGRESS);
        }
        out
    }

    /// The set changes that move one sandbox from `old` (labels, addresses) to `new`;
    /// `None` is absent. Deletions come first, so an address kept in a set stays.
    pub fn changes(
        &self,
        old: Option<(&Labels, &[Ipv4Addr])>,
        new: Option<(&Labels, &[Ipv4Addr])>,
    ) -> Vec<MemberChange> {
        let memberships = |side: Option<(&Labels, &[Ipv4Addr])>| -> Vec<(&str, Ipv4Addr)> {
            let Some((labels, ips)) = side else {
                return Vec::new();
            };
            self.sets_of(labels)
                .into_iter()
                .flat_map(|set| ips.iter().map(move |ip| (set, *ip)))
                .collect()
        };
        let before = memberships(old);
        let after = memberships(new);
        let change = |(set, ip): &(&str, Ipv4Addr), add: bool| MemberChange {
            set: set.to_string(),
            member: *ip,
            add,
        };
        before
            .iter()
            .filter(|m| !after.contains(m))
            .map(|m| change(m, false))
            .chain(
                after
                    .iter()
                    .filter(|m| !before.contains(m))
                    .map(|m| change(m, true)),
            )
            .collect()
    }

    /// [`Membership::changes`] as `ipset restore` lines.
    pub fn update_text(
        &self,
        old: Option<(&Labels, &[Ipv4Addr])>,
        new: Option<(&Labels, &[Ipv4Addr])>,
    ) -> String {
        self.changes(old, new)
            .iter()
            .map(MemberChange::restore_line)
            .collect()
    }
}

impl PolicyRules {
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }
}

/// The chain of policy `key` (`namespace/name`) for one direction.
pub fn policy_chain(direction: PolicyType, key: &str) -> String {
    let prefix = match direction {
        PolicyType::Ingress => "NETD-PI-",
        PolicyType::Egress => "NETD-PO-",
    };
    format!("{prefix}{}", hash12(key))
}

fn hash12(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Which sandboxes a peer (or a policy's own podSelector) means: those of the namespaces
/// the namespace selector matches (or of `own` namespace) that the pod selector matches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PodSet {
    own: Option<String>,
    namespaces: Option<LabelSelector>,
    pods: LabelSelector,
}

impl PodSet {
    fn name(&self) -> String {
        // serde_json renders maps and lists in order: a stable description to hash.
        let description = serde_json::json!({
            "own": self.own, "namespaces": self.namespaces, "pods": self.pods,
        });
        format!("NETD-PODS-{}", hash12(&description.to_string()))
    }

    fn matches(&self, labels: &Labels) -> bool {
        let namespace = namespace_of(labels);
        let in_scope = match (&self.namespaces, &self.own) {
            (Some(selector), _) => selector.matches(&namespace_labels(namespace)),
            (None, Some(own)) => own == namespace,
            (None, None) => true,
        };
        in_scope && self.pods.matches(labels)
    }
}

/// Renders every policy (in `namespace/name` order) against the sandboxes known now.
pub fn policy_rules(policies: &[NetworkPolicy], endpoints: &[PolicyEndpoint]) -> PolicyRules {
    if policies.is_empty() {
        return PolicyRules::default();
    }
    let mut policies: Vec<&NetworkPolicy> = policies.iter().collect();
    policies.sort_by_key(|p| p.key());
    let mut sets: BTreeMap<String, IpSet> = BTreeMap::new();
    let mut membership = Membership::default();
    let pod_set = |set: PodSet,
                   sets: &mut BTreeMap<String, IpSet>,
                   membership: &mut Membership|
     -> (String, usize) {
        let name = set.name();
        if let Some(index) = membership.pods.iter().position(|(n, _)| *n == name) {
            return (name, index);
        }
        sets.insert(
            name.clone(),
            IpSet {
                name: name.clone(),
                kind: SetKind::HashIp,
                members: endpoints
                    .iter()
                    .filter(|e| set.matches(&e.labels))
                    .flat_map(|e| e.ips.iter().map(|ip| host_member(*ip)))
                    .collect(),
            },
        );
        membership.pods.push((name.clone(), set));
        (name, membership.pods.len() - 1)
    };
    let mark = format!("0x{POLICY_MARK:x}");
    let mut top = Chain::new(CHAIN_POLICY);
    let mut chains_in = Chain::new(CHAIN_POLICY_IN);
    let mut chains_out = Chain::new(CHAIN_POLICY_OUT);
    let mut per_policy = Vec::new();
    let mut selected_in = BTreeSet::new();
    let mut selected_out = BTreeSet::new();
    for direction in [PolicyType::Egress, PolicyType::Ingress] {
        let (parent, selected, own_side, peer_side) = match direction {
            PolicyType::Egress => (&mut chains_out, &mut selected_out, "src", "dst"),
            PolicyType::Ingress => (&mut chains_in, &mut selected_in, "dst", "src"),
        };
        parent.add(format!("-j MARK --set-xmark 0x0/{mark}"));
        for policy in policies.iter().filter(|p| p.has(direction)) {
            let key = policy.key();
            let (selection, index) = pod_set(
                PodSet {
                    own: Some(policy.metadata.namespace.clone()),
                    namespaces: None,
                    pods: policy.spec.pod_selector.clone(),
                },
                &mut sets,
                &mut membership,
            );
            match direction {
                PolicyType::Ingress => membership.ingress.push(index),
                PolicyType::Egress => membership.egress.push(index),
            }
            if let Some(set) = sets.get(&selection) {
                selected.extend(set.members.iter().copied());
            }
            let chain_name = policy_chain(direction, &key);
            parent.add(format!(
                "-m set --match-set {selection} {own_side} -m comment --comment \"{key}\" -j {chain_name}"
            ));
            let mut chain = Chain::new(&chain_name);
            let rules: Vec<(&[Peer], &[PolicyPort])> = match direction {
                PolicyType::Ingress => policy
                    .spec
                    .ingress
                    .iter()
                    .map(|r| (r.from.as_slice(), r.ports.as_slice()))
                    .collect(),
                PolicyType::Egress => policy
                    .spec
                    .egress
                    .iter()
                    .map(|r| (r.to.as_slice(), r.ports.as_slice()))
                    .collect(),
            };
            let label = match direction {
                PolicyType::Ingress => "ingress",
                PolicyType::Egress => "egress",
            };
            for (index, (peers, ports)) in rules.into_iter().enumerate() {
                let comment = format!("-m comment --comment \"{key} {label}[{index}]\"");
                let mut peer_matches: Vec<String> = Vec::new();
                if peers.is_empty() {
                    peer_matches.push(String::new());
                }
                for peer in peers {
                    if let Some(block) = &peer.ip_block {
                        let IpNet::V4(cidr) = block.cidr else {
                            // IPv4-only dataplane: an IPv6 block matches nothing here.
                            continue;
                        };
                        let mut members: BTreeSet<SetMember> = block_members(cidr);
                        for except in &block.except {
                            if let IpNet::V4(net) = except {
                                members.insert(SetMember {
                                    net: *net,
                                    nomatch: true,
                                });
                            }
                        }
                        let description: Vec<String> =
                            members.iter().map(ToString::to_string).collect();
                        let name = format!("NETD-NET-{}", hash12(&description.join(",")));
                        sets.entry(name.clone()).or_insert_with(|| IpSet {
                            name: name.clone(),
                            kind: SetKind::HashNet,
                            members,
                        });
                        peer_matches.push(format!("-m set --match-set {name} {peer_side} "));
                    } else {
                        // A namespace selector replaces the policy's own namespace.
                        let set = PodSet {
                            own: peer
                                .namespace_selector
                                .is_none()
                                .then(|| policy.metadata.namespace.clone()),
                            namespaces: peer.namespace_selector.clone(),
                            pods: peer.pod_selector.clone().unwrap_or_default(),
                        };
                        let (name, _) = pod_set(set, &mut sets, &mut membership);
                        peer_matches.push(format!("-m set --match-set {name} {peer_side} "));
                    }
                }
                let mut port_matches: Vec<String> = ports.iter().map(port_match).collect();
                if port_matches.is_empty() {
                    port_matches.push(String::new());
                }
                for peer in &peer_matches {
                    for port in &port_matches {
                        chain.add(format!(
                            "{peer}{port}{comment} -j MARK --set-xmark {mark}/{mark}"
                        ));
                    }
                }
            }
            per_policy.push(chain);
        }
        let what = match direction {
            PolicyType::Ingress => "ingress",
            PolicyType::Egress => "egress",
        };
        parent.add(format!(
            "-m mark ! --mark {mark}/{mark} -m comment --comment \"netd policy: {what} no policy allows\" -j DROP"
        ));
        parent.add(format!("-j MARK --set-xmark 0x0/{mark}"));
    }
    top.add(format!(
        "-m set --match-set {SET_EGRESS} src -j {CHAIN_POLICY_OUT}"
    ));
    top.add(format!(
        "-m set --match-set {SET_INGRESS} dst -j {CHAIN_POLICY_IN}"
    ));
    sets.insert(
        SET_INGRESS.to_string(),
        IpSet {
            name: SET_INGRESS.to_string(),
            kind: SetKind::HashIp,
            members: selected_in,
        },
    );
    sets.insert(
        SET_EGRESS.to_string(),
        IpSet {
            name: SET_EGRESS.to_string(),
            kind: SetKind::HashIp,
            members: selected_out,
        },
    );
    let mut chains = vec![top, chains_in, chains_out];
    chains.extend(per_policy);
    PolicyRules {
        chains,
        sets: sets.into_values().collect(),
        membership,
    }
}

/// A block's own entries: `hash:net` takes prefixes of 1 to 32, so 0.0.0.0/0 is its two
/// halves.
fn block_members(cidr: Ipv4Net) -> BTreeSet<SetMember> {
    let nets: Vec<Ipv4Net> = if cidr.prefix_len() == 0 {
        cidr.subnets(1).map(|s| s.collect()).unwrap_or_default()
    } else {
        vec![cidr]
    };
    nets.into_iter()
        .map(|net| SetMember {
            net,
            nomatch: false,
        })
        .collect()
}

fn host_member(ip: Ipv4Addr) -> SetMember {
    SetMember {
        net: Ipv4Net::from(ip),
        nomatch: false,
    }
}

fn port_match(port: &PolicyPort) -> String {
    let proto = port.protocol.as_str();
    match (port.port, port.end_port) {
        (Some(start), Some(end)) if end > start => {
            format!("-p {proto} -m {proto} --dport {start}:{end} ")
        }
        (Some(start), _) => format!("-p {proto} -m {proto} --dport {start} "),
        (None, _) => format!("-p {proto} "),
    }
}

/// The `ipset restore` text that makes the kernel's sets equal `sets`: each created if
/// missing, then filled from empty (a set's whole content in one transaction).
pub fn set_restore_text(sets: &[IpSet]) -> String {
    let mut out = String::new();
    for set in sets {
        out.push_str(&format!(
            "create {} {} family inet -exist\nflush {}\n",
            set.name,
            set.kind.as_str(),
            set.name
        ));
        for member in &set.members {
            out.push_str(&format!("add {} {member}\n", set.name));
        }
    }
    out
}

/// The `ipset restore` text that turns `old` sets into `new` ones by members: sets only in
/// `new` are created, members added and removed one by one. Sets only in `old` are left
/// for [`set_destroy_text`], once no rule uses them.
pub fn set_update_text(old: &[IpSet], new: &[IpSet]) -> String {
    let mut out = String::new();
    for set in new {
        match old.iter().find(|o| o.name == set.name) {
            Some(before) if before.kind == set.kind => {
                for gone in before.members.difference(&set.members) {
                    out.push_str(&format!("del {} {} -exist\n", set.name, gone.net_only()));
                }
                for added in set.members.difference(&before.members) {
                    out.push_str(&format!("add {} {added} -exist\n", set.name));
                }
            }
            _ => out.push_str(&set_restore_text(std::slice::from_ref(set))),
        }
    }
    out
}

/// The `ipset restore` text that destroys the sets of `old` that `new` no longer has.
pub fn set_destroy_text(old: &[IpSet], new: &[IpSet]) -> String {
    old.iter()
        .filter(|o| !new.iter().any(|n| n.name == o.name))
        .map(|o| format!("destroy {}\n", o.name))
        .collect()
}

impl SetMember {
    /// The member without its flags, as `ipset del` takes it.
    fn net_only(&self) -> String {
        SetMember {
            net: self.net,
            nomatch: false,
        }
        .to_string()
    }
}
