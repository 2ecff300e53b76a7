//! The key layout under the prefix, and what the keys held say: the agent keeps every key
//! of `<prefix>/networks/` as etcd has it (kept up to date by the watch) and reads views
//! from that copy. Records that do not parse are skipped and reported, never fatal.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use bridge_driver::cluster::{parse_lease, FlannelConfig, LeaseAttrs};
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
    /// `<prefix>/networks/`
    pub networks: String,
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
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            networks: format!("{}/networks/", prefix.trim_end_matches('/')),
        }
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

    pub fn names_of(&self, name: &str, node: &str) -> String {
        format!("{}{name}/names/{node}/", self.networks)
    }

    pub fn name(&self, name: &str, node: &str, sandbox: &str) -> String {
        format!("{}{name}/names/{node}/{sandbox}", self.networks)
    }

    /// What a key under the prefix is; `None` for keys netd does not write.
    pub fn kind<'a>(&self, key: &'a str) -> Option<KeyKind<'a>> {
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

/// Every network's records from the held keys; problems (corrupt records) are returned
/// to be logged.
pub fn parse(
    keys: &Keys,
    held: &BTreeMap<String, Held>,
) -> (BTreeMap<String, NetworkRecords>, Vec<String>) {
    let mut networks: BTreeMap<String, NetworkRecords> = BTreeMap::new();
    let mut problems = Vec::new();
    for (key, held) in held {
        match keys.kind(key) {
            Some(KeyKind::Config { network }) => {
                match serde_json::from_slice::<FlannelConfig>(&held.value)
                    .map_err(|e| e.to_string())
                    .and_then(|c| c.check().map(|()| c).map_err(|e| e.to_string()))
                {
                    Ok(config) => {
                        networks.entry(network.to_string()).or_default().config = Some(config)
                    }
                    Err(e) => {
                        problems.push(format!("{key}: skipped, not a network configuration: {e}"))
                    }
                }
            }
            Some(KeyKind::Lease { network, subnet }) => match parse_lease(subnet, &held.value) {
                Ok((net, attrs)) => {
                    networks
                        .entry(network.to_string())
                        .or_default()
                        .leases
                        .insert(key.clone(), (net, attrs, held.lease));
                }
                Err(e) => problems.push(format!("{key}: skipped: {e}")),
            },
            Some(KeyKind::Name {
                network,
                node,
                sandbox,
            }) => match serde_json::from_slice::<NameRecord>(&held.value) {
                Ok(record) => {
                    networks
                        .entry(network.to_string())
                        .or_default()
                        .names
                        .insert((node.to_string(), sandbox.to_string()), record);
                }
                Err(e) => problems.push(format!("{key}: skipped, not a name record: {e}")),
            },
            None => {}
        }
    }
    (networks, problems)
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
        assert_eq!(keys.kind("/netd/networks/n/config/x"), None);
        assert_eq!(keys.kind("/netd/networks//config"), None);
        assert_eq!(keys.kind("/other/networks/n/config"), None);
    }

    #[test]
    fn corrupt_records_are_skipped_and_reported() {
        let keys = Keys::new("/netd");
        let mut held = BTreeMap::new();
        let put = |held: &mut BTreeMap<String, Held>, k: &str, v: &str| {
            held.insert(
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
        let (networks, problems) = parse(&keys, &held);
        assert_eq!(problems.len(), 2, "{problems:?}");
        let view = view(&networks, "192.168.50.1".parse().expect("ip"), "a");
        assert_eq!(
            view.len(),
            1,
            "the corrupt configuration's network is left out"
        );
        let n = &view["n"];
        assert_eq!(n.own, Some("10.244.1.0/24".parse().expect("net")));
        assert_eq!(n.peers.len(), 1);
        assert_eq!(n.names.len(), 1);
    }
}
