//! The records netd keeps (networks, sandboxes and their endpoints) and lookups over them.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use bridge_driver::ipam::Pool;
use bridge_driver::Network;
use serde::{Deserialize, Serialize};

use crate::error::{NetdError, Result};

/// One interface of a sandbox on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub network_id: String,
    pub endpoint_id: String,
    /// N of `ethN` inside the sandbox.
    pub interface: u32,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub aliases: Vec<String>,
    /// Whether the sandbox's default route goes through this endpoint.
    pub default_route: bool,
    /// Whether the user asked for this address (`--ip`).
    pub static_ip: bool,
}

/// What a sandbox's `--network` asked for. Stored and shown as Docker writes it: the
/// network's name, `none`, or `container:<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum NetworkMode {
    /// No network: loopback only.
    None,
    /// The namespace of another sandbox (its id).
    Container(String),
    /// A network, by the name it had when the sandbox was made.
    Network(String),
}

impl From<String> for NetworkMode {
    fn from(text: String) -> Self {
        if text == "none" {
            NetworkMode::None
        } else if let Some(id) = text.strip_prefix("container:") {
            NetworkMode::Container(id.to_string())
        } else {
            NetworkMode::Network(text)
        }
    }
}

impl From<NetworkMode> for String {
    fn from(mode: NetworkMode) -> Self {
        mode.to_string()
    }
}

impl std::fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetworkMode::None => f.write_str("none"),
            NetworkMode::Container(id) => write!(f, "container:{id}"),
            NetworkMode::Network(name) => f.write_str(name),
        }
    }
}

/// A namespace netd did not make (`netctl attach`): its owner keeps it alive; netd keeps
/// no descriptor on it and watches that the path (or pid) still names the same one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attached {
    /// As given: a mount such as `/run/netns/x`, or `/proc/PID/ns/net`.
    pub path: PathBuf,
    pub pid: Option<i32>,
    /// The namespace's identity when attached (device, inode).
    pub dev: u64,
    pub inode: u64,
    /// The OCI container it belongs to (`netd-oci-hook`), found by id at poststop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

impl Attached {
    /// Whether the path still names the namespace that was attached.
    pub fn alive(&self) -> bool {
        linkd::Netns::identity(&self.path).is_ok_and(|id| id == (self.dev, self.inode))
    }
}

/// A sandbox: a network namespace held by a pause process, with endpoints on networks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    pub id: String,
    pub name: String,
    pub created: String,
    /// What `--network` asked for (Docker's `HostConfig.NetworkMode`).
    pub network_mode: NetworkMode,
    /// The sandbox whose namespace this one shares (`--network container:NAME`).
    pub joined: Option<String>,
    pub endpoints: Vec<Endpoint>,
    /// Published ports, one per host port, forwarded to the first endpoint's address.
    #[serde(default)]
    pub ports: Vec<bridge_driver::ports::PortMapping>,
    /// Set for a namespace of another runtime's (`netctl attach`); netd made none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<Attached>,
    /// `--hostname`; the short id when absent, as Docker does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `--label`s (`netctl label` changes them), which policies select sandboxes by;
    /// `netd.namespace` is the sandbox's namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Sandbox {
    pub fn short_id(&self) -> &str {
        &self.id[..self.id.len().min(12)]
    }

    /// The host name its hosts and hostname files (and a netd namespace's UTS) carry.
    pub fn hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or(self.short_id())
    }

    /// The sandbox that owns the namespace (itself unless joined).
    pub fn netns_owner(&self) -> &str {
        self.joined.as_deref().unwrap_or(&self.id)
    }
}

/// Where netd keeps runtime files (`--run-dir`) and state (`--root`).
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    pub run_dir: PathBuf,
    pub pause_binary: PathBuf,
}

impl Paths {
    pub fn netns_dir(&self) -> PathBuf {
        self.run_dir.join("netns")
    }
    pub fn netns(&self, sandbox_id: &str) -> PathBuf {
        self.netns_dir().join(sandbox_id)
    }
    pub fn sandboxes_dir(&self) -> PathBuf {
        self.run_dir.join("sandboxes")
    }
    pub fn sandbox_dir(&self, sandbox_id: &str) -> PathBuf {
        self.sandboxes_dir().join(sandbox_id)
    }
    pub fn sandbox_file(&self, sandbox_id: &str, name: &str) -> PathBuf {
        self.sandbox_dir(sandbox_id).join(name)
    }
    /// An OCI container's hosts and resolv.conf (`netd-oci-hook`).
    pub fn container_dir(&self, container_id: &str) -> PathBuf {
        self.run_dir.join("containers").join(container_id)
    }
    /// host-local's data directory of cluster networks' addresses, shared with the CNI
    /// pods of the node (netd-flannel's delegate IPAM uses it too).
    pub fn cluster_ipam_dir(&self) -> PathBuf {
        self.root.join("cluster-ipam")
    }
    /// Where netd-ipam-style indexes of the daemon's reservations live.
    pub fn cluster_ipam_index(&self) -> PathBuf {
        self.run_dir.join("cni")
    }
    /// A cluster network's flannel-compatible `subnet.env`.
    pub fn subnet_env(&self, network: &str) -> PathBuf {
        self.run_dir
            .join("cluster")
            .join(network)
            .join("subnet.env")
    }
}

/// Whether an OCI container id can name a directory.
pub fn valid_container_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Reads a pid from a file written by netd.
pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Everything netd knows, in memory, mirrored in the store.
#[derive(Debug, Default)]
pub struct State {
    pub networks: BTreeMap<String, Network>,
    pub sandboxes: BTreeMap<String, Sandbox>,
    pub pools: HashMap<String, Pool>,
    /// Sandboxes of other nodes on cluster networks (by network id), for DNS; from the
    /// cluster store, not recorded.
    pub remote_names: HashMap<String, Vec<crate::cluster::NameRecord>>,
    /// Network policies by `namespace/name`.
    pub policies: BTreeMap<String, bridge_driver::policy::NetworkPolicy>,
}

/// Resolves a reference the way Docker does: exact name, then full id, then a unique id
/// prefix.
fn resolve<'a, T>(
    items: &'a BTreeMap<String, T>,
    name_of: impl Fn(&T) -> &str,
    reference: &str,
) -> Option<&'a T> {
    if let Some(item) = items.values().find(|i| name_of(i) == reference) {
        return Some(item);
    }
    if let Some(item) = items.get(reference) {
        return Some(item);
    }
    if reference.is_empty() {
        return None;
    }
    let mut matches = items
        .range(reference.to_string()..)
        .take_while(|(k, _)| k.starts_with(reference));
    match (matches.next(), matches.next()) {
        (Some((_, item)), None) => Some(item),
        _ => None,
    }
}

impl State {
    pub fn network(&self, reference: &str) -> Result<&Network> {
        resolve(&self.networks, |n| n.name.as_str(), reference)
            .ok_or_else(|| NetdError::NotFound(format!("network {reference} not found")))
    }

    pub fn sandbox(&self, reference: &str) -> Result<&Sandbox> {
        resolve(&self.sandboxes, |s| s.name.as_str(), reference)
            .ok_or_else(|| NetdError::NotFound(format!("no such sandbox: {reference}")))
    }

    /// Sandboxes with an endpoint on the network.
    pub fn attached(&self, network_id: &str) -> impl Iterator<Item = &Sandbox> {
        let id = network_id.to_string();
        self.sandboxes
            .values()
            .filter(move |s| s.endpoints.iter().any(|e| e.network_id == id))
    }

    /// Sandboxes that share the namespace of `owner`.
    pub fn joined_to(&self, owner: &str) -> Vec<&Sandbox> {
        self.sandboxes
            .values()
            .filter(|s| s.joined.as_deref() == Some(owner))
            .collect()
    }

    /// Builds the address pools from the recorded endpoints.
    pub fn rebuild_pools(&mut self) -> Result<()> {
        self.pools.clear();
        for net in self.networks.values() {
            self.pools.insert(
                net.id.clone(),
                Pool::new(net.subnet, net.gateway, net.ip_range),
            );
        }
        for sandbox in self.sandboxes.values() {
            for ep in &sandbox.endpoints {
                let pool = self.pools.get_mut(&ep.network_id).ok_or_else(|| {
                    NetdError::Internal(format!(
                        "state store: sandbox {} has an endpoint on unknown network {}",
                        sandbox.id, ep.network_id
                    ))
                })?;
                pool.reserve(ep.ip)?;
            }
        }
        Ok(())
    }
}

/// A new random 64-hex identifier.
pub fn new_id() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| NetdError::Internal(format!("random id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The current time in RFC 3339 form.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod network_mode_tests {
    use super::NetworkMode;

    #[test]
    fn stored_as_docker_writes_it_and_read_back() {
        for (mode, text) in [
            (NetworkMode::None, "\"none\""),
            (NetworkMode::Container("abc".into()), "\"container:abc\""),
            (NetworkMode::Network("mynet".into()), "\"mynet\""),
        ] {
            assert_eq!(serde_json::to_string(&mode).expect("json"), text);
            assert_eq!(
                serde_json::from_str::<NetworkMode>(text).expect("json"),
                mode
            );
        }
    }
}
