//! Network policy: policies applied, removed and listed; sandbox labels; and keeping the
//! kernel's sets equal to what the policies select, one changed sandbox at a time.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use bridge_driver::firewall::{SavedTable, StaleChains};
use bridge_driver::policy::labels::{is_dns_label, NAMESPACE_LABEL};
use bridge_driver::policy::render::CHAIN_POLICY;
use bridge_driver::policy::render::{set_destroy_text, set_update_text};
use bridge_driver::policy::{
    parse_policies, policy_rules, LabelChange, Labels, NetworkPolicy, PolicyEndpoint, PolicyRules,
};

use super::Engine;
use crate::error::{NetdError, Result};
use crate::state::Sandbox;
use crate::store::{Change, Kind};

/// What `policy apply` did to one policy, as kubectl says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyApplied {
    pub key: String,
    /// `created`, `configured` or `unchanged`.
    pub action: &'static str,
}

/// The sets as the kernel has them after netd's last change: the policies' rules, and
/// each sandbox's labels and addresses they reflect.
#[derive(Debug, Default)]
pub(super) struct PolicyState {
    pub rules: PolicyRules,
    pub reflected: HashMap<String, (Labels, Vec<Ipv4Addr>)>,
    /// Sets were made since start-up (so the checks look for them even without policies).
    pub had_sets: bool,
    /// Other nodes' sandboxes changed since the sets were last brought up to date.
    pub remote_changed: bool,
}

/// Checks `--label KEY=VALUE`s into labels.
pub fn parse_labels(specs: &[String]) -> Result<Labels> {
    let mut labels = Labels::new();
    for spec in specs {
        match LabelChange::parse("--label", spec)? {
            LabelChange::Set(key, value) => {
                labels.insert(key, value);
            }
            LabelChange::Remove(_) => {
                return Err(NetdError::Invalid(format!(
                    "--label {spec}: give KEY=VALUE"
                )))
            }
        }
    }
    check_namespace(&labels)?;
    Ok(labels)
}

fn check_namespace(labels: &Labels) -> Result<()> {
    match labels.get(NAMESPACE_LABEL) {
        Some(ns) if !is_dns_label(ns) => Err(NetdError::Invalid(format!(
            "--label {NAMESPACE_LABEL}={ns}: a namespace is lower-case letters, digits and '-' (at most 63)"
        ))),
        _ => Ok(()),
    }
}

/// What applying `policies` over `current` gives, and what it does to each, as kubectl
/// says it (the agent plans a clustered apply against the store's policies the same way).
pub fn plan_apply(
    current: &BTreeMap<String, NetworkPolicy>,
    policies: Vec<NetworkPolicy>,
) -> (BTreeMap<String, NetworkPolicy>, Vec<PolicyApplied>) {
    let mut wanted = current.clone();
    let mut applied = Vec::new();
    for policy in policies {
        let key = policy.key();
        let action = match current.get(&key) {
            None => "created",
            Some(old) if *old == policy => "unchanged",
            Some(_) => "configured",
        };
        applied.push(PolicyApplied {
            key: key.clone(),
            action,
        });
        wanted.insert(key, policy);
    }
    (wanted, applied)
}

pub fn policy_not_found(namespace: &str, name: &str) -> NetdError {
    NetdError::NotFound(format!(
        "network policy {name} not found in namespace {namespace}"
    ))
}

/// The store changes that turn `from` into `to`.
fn policy_changes(
    from: &BTreeMap<String, NetworkPolicy>,
    to: &BTreeMap<String, NetworkPolicy>,
) -> Result<Vec<Change>> {
    let mut changes = Vec::new();
    for (key, policy) in to {
        if from.get(key) != Some(policy) {
            changes.push(Change::put(Kind::Policy, key, policy)?);
        }
    }
    for key in from.keys().filter(|k| !to.contains_key(*k)) {
        changes.push(Change::delete(Kind::Policy, key));
    }
    Ok(changes)
}

fn endpoint_of(sandbox: &Sandbox) -> (Labels, Vec<Ipv4Addr>) {
    (
        sandbox.labels.clone(),
        sandbox.endpoints.iter().map(|e| e.ip).collect(),
    )
}

impl Engine {
    /// `policy apply`: every policy in `text` is checked first; then all are recorded and
    /// applied in one firewall transaction, or none is.
    pub fn apply_policies(
        &mut self,
        text: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<PolicyApplied>> {
        let policies = parse_policies(text, namespace)?;
        let (wanted, applied) = plan_apply(&self.state.policies, policies);
        self.set_policies(wanted)?;
        Ok(applied)
    }

    /// `policy rm`.
    pub fn remove_policy(&mut self, namespace: &str, name: &str) -> Result<String> {
        let key = format!("{namespace}/{name}");
        let mut wanted = self.state.policies.clone();
        if wanted.remove(&key).is_none() {
            return Err(policy_not_found(namespace, name));
        }
        self.set_policies(wanted)?;
        Ok(key)
    }

    /// The cluster store's policies, which on a clustered node are the only ones: recorded
    /// and applied when they differ from this node's. Returns what changed.
    pub fn sync_cluster_policies(
        &mut self,
        wanted: BTreeMap<String, NetworkPolicy>,
    ) -> Result<Vec<String>> {
        let mut changes: Vec<String> = Vec::new();
        for (key, policy) in &wanted {
            match self.state.policies.get(key) {
                None => changes.push(format!("policy {key} created")),
                Some(old) if old != policy => changes.push(format!("policy {key} configured")),
                Some(_) => {}
            }
        }
        for key in self.state.policies.keys() {
            if !wanted.contains_key(key) {
                changes.push(format!("policy {key} removed"));
            }
        }
        if !changes.is_empty() {
            self.set_policies(wanted)?;
        }
        Ok(changes)
    }

    /// Makes `wanted` the policies: the changes recorded, then applied; on a failure both
    /// the record and the kernel go back to the policies as they were.
    fn set_policies(&mut self, wanted: BTreeMap<String, NetworkPolicy>) -> Result<()> {
        let before = std::mem::take(&mut self.state.policies);
        let changes = policy_changes(&before, &wanted)?;
        if changes.is_empty() {
            self.state.policies = before;
            return Ok(());
        }
        if let Err(e) = self.commit(changes) {
            self.state.policies = before;
            return Err(e);
        }
        self.state.policies = wanted;
        if let Err(e) = self.apply_policy_rules() {
            if let Ok(undo) = policy_changes(&self.state.policies, &before) {
                let _ = self.commit(undo);
            }
            self.state.policies = before;
            let _ = self.apply_policy_rules();
            return Err(e);
        }
        Ok(())
    }

    /// `policy ls`: one namespace's, or every namespace's with `None`.
    pub fn policies(&self, namespace: Option<&str>) -> Vec<NetworkPolicy> {
        self.state
            .policies
            .values()
            .filter(|p| namespace.is_none_or(|ns| p.metadata.namespace == ns))
            .cloned()
            .collect()
    }

    pub fn policy(&self, namespace: &str, name: &str) -> Result<NetworkPolicy> {
        self.state
            .policies
            .get(&format!("{namespace}/{name}"))
            .cloned()
            .ok_or_else(|| policy_not_found(namespace, name))
    }

    /// `netctl label NAME KEY=VALUE... KEY-...`: policies follow at once (set members).
    pub fn label(&mut self, reference: &str, specs: &[String]) -> Result<Sandbox> {
        if specs.is_empty() {
            return Err(NetdError::Invalid(
                "label: give KEY=VALUE to set or KEY- to remove".into(),
            ));
        }
        let mut sandbox = self.state.sandbox(reference)?.clone();
        for spec in specs {
            LabelChange::parse("label", spec)?.apply(&mut sandbox.labels);
        }
        check_namespace(&sandbox.labels)?;
        self.commit(vec![Change::put(Kind::Sandbox, &sandbox.id, &sandbox)?])?;
        self.state
            .sandboxes
            .insert(sandbox.id.clone(), sandbox.clone());
        Ok(sandbox)
    }

    /// What every policy comes to, against every sandbox now.
    pub(super) fn desired_policy_rules(&self) -> PolicyRules {
        if self.state.policies.is_empty() {
            return PolicyRules::default();
        }
        let policies: Vec<NetworkPolicy> = self.state.policies.values().cloned().collect();
        let mut endpoints: Vec<PolicyEndpoint> = self
            .state
            .sandboxes
            .values()
            .map(|s| {
                let (labels, ips) = endpoint_of(s);
                PolicyEndpoint { labels, ips }
            })
            .collect();
        // Sandboxes of other nodes on cluster networks, as their nodes publish them.
        for records in self.state.remote_names.values() {
            endpoints.extend(records.iter().map(|r| PolicyEndpoint {
                labels: r.labels.clone(),
                ips: vec![r.ip],
            }));
        }
        policy_rules(&policies, &endpoints)
    }

    /// Applies the policies after one changed: new sets filled, then the chains in one
    /// transaction, then sets no rule uses any more destroyed.
    pub(super) fn apply_policy_rules(&mut self) -> Result<()> {
        let new = self.desired_policy_rules();
        let old_sets = std::mem::take(&mut self.policy.rules.sets);
        self.apply_host_sysctls()?;
        self.firewall
            .sets_restore(&set_update_text(&old_sets, &new.sets))?;
        self.policy.had_sets |= !new.sets.is_empty();
        let stale = self.stale_policy_chains(&new)?;
        self.policy.rules = new;
        self.apply_firewall(&stale)?;
        self.firewall
            .sets_restore(&set_destroy_text(&old_sets, &self.policy.rules.sets))?;
        self.reflect_all();
        Ok(())
    }

    /// Records that the sets hold every sandbox as it is now.
    fn reflect_all(&mut self) {
        self.policy.reflected = self
            .state
            .sandboxes
            .values()
            .map(|s| (s.id.clone(), endpoint_of(s)))
            .collect();
    }

    /// Moves the sets' members for sandboxes that came, went, or changed labels or
    /// addresses since the last time: no rule changes.
    pub(super) fn sync_policy_sets(&mut self) {
        if self.policy.rules.is_empty() {
            self.policy.reflected.clear();
            self.policy.remote_changed = false;
            return;
        }
        if std::mem::take(&mut self.policy.remote_changed) {
            // Other nodes' sandboxes come in batches from the store: all sets at once.
            let new = self.desired_policy_rules();
            match self
                .firewall
                .sets_restore(&set_update_text(&self.policy.rules.sets, &new.sets))
            {
                Ok(()) => {
                    self.policy.rules = new;
                    self.reflect_all();
                }
                Err(e) => tracing::error!("policy sets: {e}"),
            }
            return;
        }
        let mut changes = Vec::new();
        let gone: Vec<String> = self
            .policy
            .reflected
            .keys()
            .filter(|id| !self.state.sandboxes.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some((labels, ips)) = self.policy.reflected.remove(&id) {
                changes.extend(
                    self.policy
                        .rules
                        .membership
                        .changes(Some((&labels, &ips)), None),
                );
            }
        }
        let mut moved: BTreeMap<String, (Labels, Vec<Ipv4Addr>)> = BTreeMap::new();
        for sandbox in self.state.sandboxes.values() {
            let before = self.policy.reflected.get(&sandbox.id);
            // Compared in place: this runs after every change, over every sandbox.
            let unchanged = before.is_some_and(|(labels, ips)| {
                *labels == sandbox.labels
                    && ips.len() == sandbox.endpoints.len()
                    && ips
                        .iter()
                        .zip(&sandbox.endpoints)
                        .all(|(ip, e)| *ip == e.ip)
            });
            if unchanged {
                continue;
            }
            let now = endpoint_of(sandbox);
            match before {
                Some(before) if *before == now => {}
                before => {
                    let membership = &self.policy.rules.membership;
                    changes.extend(membership.changes(
                        before.map(|(l, ips)| (l, ips.as_slice())),
                        Some((&now.0, &now.1)),
                    ));
                    moved.insert(sandbox.id.clone(), now);
                }
            }
        }
        if changes.is_empty() {
            // Nothing moved (the sandbox is in no set); still recorded as reflected.
            self.policy.reflected.extend(moved);
            return;
        }
        match self.firewall.sets_change(&changes) {
            Ok(()) => self.policy.reflected.extend(moved),
            // The periodic check repairs the sets from the whole desired state.
            Err(e) => tracing::error!("policy sets: {e}"),
        }
    }

    /// The policy chains the kernel has that `rules` no longer has: deleted in the same
    /// transaction that writes the new ones.
    fn stale_policy_chains(&mut self, rules: &PolicyRules) -> Result<StaleChains> {
        let saved = SavedTable::parse(&self.firewall.save("filter")?);
        let filter = saved
            .owned_chains()
            .filter(|c| {
                (c.starts_with("NETD-PI-")
                    || c.starts_with("NETD-PO-")
                    || c.starts_with(CHAIN_POLICY))
                    && !rules.chains.iter().any(|w| w.name == *c)
            })
            .map(str::to_string)
            .collect();
        Ok(StaleChains {
            filter,
            nat: Vec::new(),
        })
    }
}

/// A set member as `ipset save` prints it, in one form (`10.0.0.2/32`, `+ nomatch`).
fn normal_member(text: &str) -> String {
    let (net, nomatch) = match text.strip_suffix(" nomatch") {
        Some(net) => (net, true),
        None => (text, false),
    };
    let net = net
        .parse::<ipnet::Ipv4Net>()
        .or_else(|_| net.parse::<Ipv4Addr>().map(ipnet::Ipv4Net::from))
        .map(|n| n.to_string())
        .unwrap_or_else(|_| net.to_string());
    if nomatch {
        format!("{net} nomatch")
    } else {
        net
    }
}

/// The prefixes of the sets that are netd's.
const SET_PREFIXES: &[&str] = &["NETD-PODS-", "NETD-NET-", "NETD-POL-"];

impl Engine {
    /// Makes the kernel's sets what the policies and sandboxes say (reconcile and the
    /// periodic check run it before the firewall, whose rules need the sets). Returns the
    /// repairs, and the sets to destroy once no rule uses them.
    pub(super) fn repair_policy_sets(&mut self) -> Result<(Vec<String>, Vec<String>)> {
        let desired = self.desired_policy_rules();
        if desired.is_empty() && self.policy.rules.sets.is_empty() && !self.policy.had_sets {
            self.policy.rules = desired;
            return Ok((Vec::new(), Vec::new()));
        }
        let saved = linkd::ipset::parse_save(&self.firewall.sets_save()?);
        let mut text = String::new();
        let mut repairs = Vec::new();
        for set in &desired.sets {
            let wanted: std::collections::BTreeSet<String> = set
                .members
                .iter()
                .map(|m| normal_member(&m.to_string()))
                .collect();
            let same = saved.get(&set.name).is_some_and(|s| {
                s.kind == set.kind.as_str()
                    && s.members
                        .iter()
                        .map(|m| normal_member(m))
                        .collect::<std::collections::BTreeSet<_>>()
                        == wanted
            });
            if !same {
                text.push_str(&bridge_driver::policy::render::set_restore_text(
                    std::slice::from_ref(set),
                ));
                repairs.push(format!("restored policy set {}", set.name));
            }
        }
        self.firewall.sets_restore(&text)?;
        let stale = saved
            .keys()
            .filter(|name| SET_PREFIXES.iter().any(|p| name.starts_with(p)))
            .filter(|name| !desired.sets.iter().any(|s| s.name == **name))
            .cloned()
            .collect();
        self.policy.had_sets = !desired.sets.is_empty();
        self.policy.rules = desired;
        self.reflect_all();
        Ok((repairs, stale))
    }

    /// Destroys sets no rule uses any more (after the firewall was repaired).
    pub(super) fn destroy_sets(&mut self, names: &[String]) -> Vec<String> {
        if names.is_empty() {
            return Vec::new();
        }
        let text: String = names.iter().map(|n| format!("destroy {n}\n")).collect();
        match self.firewall.sets_restore(&text) {
            Ok(()) => names
                .iter()
                .map(|n| format!("removed stale policy set {n}"))
                .collect(),
            Err(e) => vec![format!("could not remove stale policy sets: {e}")],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_checked() {
        assert!(parse_labels(&["app=web".into(), "netd.namespace=prod".into()]).is_ok());
        for bad in ["app", "app-", "bad key=x", "netd.namespace=Prod_1"] {
            assert!(parse_labels(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
