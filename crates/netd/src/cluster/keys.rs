//! The key layout under the prefix, and what the keys held say: the agent keeps every key
//! under `<prefix>/` as etcd has it (kept up to date by the watch) and reads views from
//! that copy. Records that do not parse are skipped and reported, never fatal.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use bridge_driver::cluster::{parse_lease, FlannelConfig, LeaseAttrs};
use bridge_driver::policy::{parse_policies, NetworkPolicy};
use ipnet::Ipv4Net;

use super::{ClusterView, NameRecord, NetworkView};

/// A key's value and the etcd lease it is attached to (0: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub value: Vec<u8>,
    pub lease: i64,
}

/// Names of netd's keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// `<prefix>/`: everything netd keeps in the store, listed and watched as one.
    pub root: String,
    /// `<prefix>/networks/`
    pub networks: String,
    /// `<prefix>/policies/`
    pub policies: String,
}

/// What one key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind<'a> {
    Config {
        network: &'a str,
    },
    Lease {
        network: &'a str,
        subnet: &'a str,
    },
    Name {
        network: &'a str,
        node: &'a str,
        sandbox: &'a str,
    },
    Policy {
        namespace: &'a str,
        name: &'a str,
    },
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        let root = format!("{}/", prefix.trim_end_matches('/'));
        Keys {
            networks: format!("{root}networks/"),
            policies: format!("{root}policies/"),
            root,
        }
    }

    /// A network policy's key, `<prefix>/policies/<namespace>/<name>`.
    pub fn policy(&self, namespace: &str, name: &str) -> String {
        format!("{}{namespace}/{name}", self.policies)
    }

    pub fn network(&self, name: &str) -> String {
        format!("{}{name}/", self.networks)
    }

    pub fn config(&self, name: &str) -> String {
        format!("{}{name}/config", self.networks)
    }

    pub fn lease(&self, name: &str, subnet: Ipv4Net) -> String {
        format!(
            "{}{name}/subnets/{}",
            self.networks,
            bridge_driver::cluster::subnet_key(subnet)
        )
    }

    pub fn name(&self, name: &str, node: &str, sandbox: &str) -> String {
        format!("{}{name}/names/{node}/{sandbox}", self.networks)
    }

    /// What a key under the prefix is; `None` for keys netd does not write.
    pub fn kind<'a>(&self, key: &'a str) -> Option<KeyKind<'a>> {
        if let Some(rest) = key.strip_prefix(self.policies.as_str()) {
            let (namespace, name) = rest.split_once('/')?;
            return (!namespace.is_empty() && !name.is_empty() && !name.contains('/'))
                .then_some(KeyKind::Policy { namespace, name });
        }
        let rest = key.strip_prefix(self.networks.as_str())?;
        let mut parts = rest.split('/');
        let network = parts.next().filter(|n| !n.is_empty())?;
        let kind = match (parts.next()?, parts.next(), parts.next()) {
            ("config", None, None) => KeyKind::Config { network },
            ("subnets", Some(subnet), None) => KeyKind::Lease { network, subnet },
            ("names", Some(node), Some(sandbox)) => KeyKind::Name {
                network,
                node,
                sandbox,
            },
            _ => return None,
        };
        parts.next().is_none().then_some(kind)
    }
}

/// One network's records, parsed.
#[derive(Debug, Clone, Default)]
pub struct NetworkRecords {
    pub config: Option<FlannelConfig>,
    /// Lease key -> subnet, attributes and the etcd lease id.
    pub leases: BTreeMap<String, (Ipv4Net, LeaseAttrs, i64)>,
    /// (node, sandbox id) -> name record.
    pub names: BTreeMap<(String, String), NameRecord>,
}

/// Every key netd holds and what it says, kept up to date one key at a time (a watch
/// event re-reads one record, not all of them).
#[derive(Debug, Clone)]
pub struct Index {
    keys: Keys,
    held: BTreeMap<String, Held>,
    networks: BTreeMap<String, NetworkRecords>,
    /// Network policies by `namespace/name`.
    policies: BTreeMap<String, NetworkPolicy>,
    /// Key -> why its record was skipped.
    problems: BTreeMap<String, String>,
}

impl Index {
    pub fn new(keys: Keys) -> Index {
        Index {
            keys,
            held: BTreeMap::new(),
            networks: BTreeMap::new(),
            policies: BTreeMap::new(),
            problems: BTreeMap::new(),
        }
    }

    pub fn held(&self) -> &BTreeMap<String, Held> {
        &self.held
    }

    pub fn networks(&self) -> &BTreeMap<String, NetworkRecords> {
        &self.networks
    }

    /// The cluster's network policies, by `namespace/name`.
    pub fn policies(&self) -> &BTreeMap<String, NetworkPolicy> {
        &self.policies
    }

    /// Records skipped (corrupt), with the reason.
    pub fn problems(&self) -> impl Iterator<Item = String> + '_ {
        self.problems
            .iter()
            .map(|(key, why)| format!("{key}: skipped: {why}"))
    }

    pub fn clear(&mut self) {
        self.held.clear();
        self.networks.clear();
        self.policies.clear();
        self.problems.clear();
    }

    /// A key's new value.
    pub fn put(&mut self, key: String, held: Held) {
        self.forget(&key);
        if let Err(why) = self.parse(&key, &held) {
            self.problems.insert(key.clone(), why);
        }
        self.held.insert(key, held);
    }

    /// Takes what one key says into the parsed records.
    fn parse(&mut self, key: &str, held: &Held) -> std::result::Result<(), String> {
        let Some(kind) = self.keys.kind(key) else {
            return Ok(());
        };
        match kind {
            KeyKind::Config { network } => {
                let config = serde_json::from_slice::<FlannelConfig>(&held.value)
                    .map_err(|e| e.to_string())
                    .and_then(|c| c.check().map(|()| c).map_err(|e| e.to_string()))
                    .map_err(|e| format!("not a network configuration: {e}"))?;
                self.networks.entry(network.to_string()).or_default().config = Some(config);
            }
            KeyKind::Lease { network, subnet } => {
                let (net, attrs) = parse_lease(subnet, &held.value).map_err(|e| e.to_string())?;
                self.networks
                    .entry(network.to_string())
                    .or_default()
                    .leases
                    .insert(key.to_string(), (net, attrs, held.lease));
            }
            KeyKind::Name {
                network,
                node,
                sandbox,
            } => {
                let record = serde_json::from_slice::<NameRecord>(&held.value)
                    .map_err(|e| format!("not a name record: {e}"))?;
                self.networks
                    .entry(network.to_string())
                    .or_default()
                    .names
                    .insert((node.to_string(), sandbox.to_string()), record);
            }
            KeyKind::Policy { namespace, name } => {
                let policy = parse_policy_record(namespace, name, &held.value)?;
                self.policies.insert(policy.key(), policy);
            }
        }
        Ok(())
    }

    /// A key deleted.
    pub fn delete(&mut self, key: &str) {
        self.forget(key);
        self.held.remove(key);
    }

    /// Every key under a prefix deleted.
    pub fn delete_prefix(&mut self, prefix: &str) {
        let gone: Vec<String> = self
            .held
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            self.delete(&key);
        }
    }

    /// Takes what a key said out of the parsed records.
    fn forget(&mut self, key: &str) {
        self.problems.remove(key);
        if !self.held.contains_key(key) {
            return;
        }
        let Some(kind) = self.keys.kind(key) else {
            return;
        };
        let network = match &kind {
            KeyKind::Config { network }
            | KeyKind::Lease { network, .. }
            | KeyKind::Name { network, .. } => network.to_string(),
            KeyKind::Policy { namespace, name } => {
                self.policies.remove(&format!("{namespace}/{name}"));
                return;
            }
        };
        let Some(records) = self.networks.get_mut(&network) else {
            return;
        };
        match kind {
            KeyKind::Config { .. } => records.config = None,
            KeyKind::Lease { .. } => {
                records.leases.remove(key);
            }
            KeyKind::Name { node, sandbox, .. } => {
                records
                    .names
                    .remove(&(node.to_string(), sandbox.to_string()));
            }
            KeyKind::Policy { .. } => {}
        }
        if records.config.is_none() && records.leases.is_empty() && records.names.is_empty() {
            self.networks.remove(&network);
        }
    }
}

/// A policy record: checked as `netctl policy apply` checks a file (another writer may
/// have put anything there), and named as its key says.
fn parse_policy_record(
    namespace: &str,
    name: &str,
    value: &[u8],
) -> std::result::Result<NetworkPolicy, String> {
    let text = std::str::from_utf8(value).map_err(|_| "not UTF-8 text".to_string())?;
    let mut policies =
        parse_policies(text, Some(namespace)).map_err(|e| format!("not a network policy: {e}"))?;
    let policy = match (policies.pop(), policies.is_empty()) {
        (Some(policy), true) => policy,
        _ => return Err("not one network policy".into()),
    };
    if policy.metadata.namespace != namespace || policy.metadata.name != name {
        return Err(format!(
            "the key names {namespace}/{name} but the policy is {}",
            policy.key()
        ));
    }
    Ok(policy)
}

/// The engine's view: networks with a valid configuration, this node's lease (by node
/// IP) apart from the others', and other nodes' names.
pub fn view(
    networks: &BTreeMap<String, NetworkRecords>,
    node_ip: Ipv4Addr,
    node_name: &str,
) -> ClusterView {
    let mut out = ClusterView::new();
    for (name, records) in networks {
        let Some(config) = records.config.clone() else {
            continue;
        };
        let mut own = None;
        let mut peers = Vec::new();
        for (subnet, attrs, _) in records.leases.values() {
            if attrs.public_ip == node_ip {
                own.get_or_insert(*subnet);
            } else {
                peers.push((*subnet, attrs.clone()));
            }
        }
        let names = records
            .names
            .iter()
            .filter(|((node, _), _)| node != node_name)
            .map(|(_, record)| record.clone())
            .collect();
        out.insert(
            name.clone(),
            NetworkView {
                config,
                own,
                peers,
                names,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_told_apart() {
        let keys = Keys::new("/netd/");
        assert_eq!(keys.config("n"), "/netd/networks/n/config");
        assert_eq!(
            keys.kind("/netd/networks/n/subnets/10.244.1.0-24"),
            Some(KeyKind::Lease {
                network: "n",
                subnet: "10.244.1.0-24"
            })
        );
        assert_eq!(
            keys.kind("/netd/networks/n/names/a/abc"),
            Some(KeyKind::Name {
                network: "n",
                node: "a",
                sandbox: "abc"
            })
        );
        assert_eq!(
            keys.kind("/netd/policies/prod/web"),
            Some(KeyKind::Policy {
                namespace: "prod",
                name: "web"
            })
        );
        assert_eq!(keys.kind("/netd/policies/prod/web/x"), None);
        assert_eq!(keys.kind("/netd/policies/prod"), None);
        assert_eq!(keys.kind("/netd/networks/n/config/x"), None);
        assert_eq!(keys.kind("/netd/networks//config"), None);
        assert_eq!(keys.kind("/other/networks/n/config"), None);
    }

    #[test]
    fn corrupt_records_are_skipped_and_reported() {
        let mut held = Index::new(Keys::new("/netd"));
        let put = |held: &mut Index, k: &str, v: &str| {
            held.put(
                k.to_string(),
                Held {
                    value: v.as_bytes().to_vec(),
                    lease: 7,
                },
            );
        };
        put(
            &mut held,
            "/netd/networks/n/config",
            r#"{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"host-gw"}}"#,
        );
        put(
            &mut held,
            "/netd/networks/n/subnets/10.244.1.0-24",
            r#"{"PublicIP":"192.168.50.1","BackendType":"host-gw","NodeName":"a"}"#,
        );
        put(
            &mut held,
            "/netd/networks/n/subnets/10.244.2.0-24",
            r#"{"PublicIP":"192.168.50.2","BackendType":"host-gw","NodeName":"b"}"#,
        );
        put(
            &mut held,
            "/netd/networks/n/subnets/10.244.3.0-24",
            "{not json",
        );
        put(&mut held, "/netd/networks/m/config", r#"{"Network":"x"}"#);
        put(
            &mut held,
            "/netd/networks/n/names/b/s1",
            r#"{"Id":"s1","Name":"web","IP":"10.244.2.2"}"#,
        );
        let problems: Vec<String> = held.problems().collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        let seen = view(held.networks(), "192.168.50.1".parse().expect("ip"), "a");
        assert_eq!(
            seen.len(),
            1,
            "the corrupt configuration's network is left out"
        );
        let n = &seen["n"];
        assert_eq!(n.own, Some("10.244.1.0/24".parse().expect("net")));
        assert_eq!(n.peers.len(), 1);
        assert_eq!(n.names.len(), 1);
        // One key at a time: a lease replaced, a name and a corrupt lease deleted.
        put(
            &mut held,
            "/netd/networks/n/subnets/10.244.2.0-24",
            r#"{"PublicIP":"192.168.50.9","BackendType":"host-gw","NodeName":"b"}"#,
        );
        held.delete("/netd/networks/n/names/b/s1");
        held.delete("/netd/networks/n/subnets/10.244.3.0-24");
        assert_eq!(held.problems().count(), 1);
        let seen = view(held.networks(), "192.168.50.1".parse().expect("ip"), "a");
        assert_eq!(seen["n"].peers[0].1.public_ip.to_string(), "192.168.50.9");
        assert!(seen["n"].names.is_empty());
        held.delete_prefix("/netd/networks/n/");
        assert!(held.networks().is_empty());
        assert!(held
            .held()
            .keys()
            .all(|k| k.starts_with("/netd/networks/m/")));
    }

    #[test]
    fn policy_records_are_checked_as_files_are_and_named_by_their_key() {
        let text = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: web, namespace: prod}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress: [{from: [{podSelector: {}}], ports: [{port: 80, endPort: 90}]}]\n";
        let policy = parse_policies(text, None).expect("policy").remove(0);
        let stored = serde_json::to_vec(&policy).expect("json");
        let mut index = Index::new(Keys::new("/netd"));
        let put = |index: &mut Index, key: &str, value: &[u8]| {
            index.put(
                key.to_string(),
                Held {
                    value: value.to_vec(),
                    lease: 0,
                },
            )
        };
        put(&mut index, "/netd/policies/prod/web", &stored);
        assert_eq!(index.policies().get("prod/web"), Some(&policy));
        assert_eq!(index.problems().count(), 0);
        // Named otherwise than its key, or not a valid policy: skipped and reported.
        put(&mut index, "/netd/policies/dev/web", &stored);
        let bad = String::from_utf8(stored.clone())
            .expect("text")
            .replace("\"port\":80", "\"port\":99999");
        put(&mut index, "/netd/policies/prod/bad", bad.as_bytes());
        let problems: Vec<String> = index.problems().collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("port")), "{problems:?}");
        assert_eq!(index.policies().len(), 1);
        index.delete("/netd/policies/prod/web");
        assert!(index.policies().is_empty());
    }
}
