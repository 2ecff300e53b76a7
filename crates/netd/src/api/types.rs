//! The API's answers, in Docker's JSON shapes (`docker network inspect`, `docker inspect`),
//! shared by the server, the engine's views and `netctl`, so that a renamed field fails to
//! compile rather than print an empty column.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::engine::{AttachRequest, ConnectRequest, RunRequest};
pub use bridge_driver::NetworkRequest;

/// Body of `POST /networks/{name}/disconnect`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DisconnectRequest {
    pub container: String,
}

/// Body of `POST /sandboxes/{name}/processes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessRequest {
    pub pid: i32,
}

/// `GET /networks`, `GET /networks/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkInfo {
    pub name: String,
    pub id: String,
    pub created: String,
    pub scope: String,
    pub driver: String,
    #[serde(rename = "EnableIPv4")]
    pub enable_ipv4: bool,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    #[serde(rename = "IPAM")]
    pub ipam: Ipam,
    pub internal: bool,
    pub attachable: bool,
    pub ingress: bool,
    pub config_from: ConfigFrom,
    pub config_only: bool,
    /// Sandbox id -> its endpoint on this network.
    pub containers: BTreeMap<String, NetworkContainer>,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// A cluster network's whole subnet (IPAM shows this node's part of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_subnet: Option<String>,
    /// A cluster network's nodes, this one first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<ClusterNode>,
}

/// A node of a cluster network, as `network inspect` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClusterNode {
    pub name: String,
    #[serde(rename = "NodeIP")]
    pub node_ip: String,
    pub subnet: String,
    /// Whether this node can reach the node's subnet; why not.
    pub reachable: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Ipam {
    pub driver: String,
    pub options: BTreeMap<String, String>,
    pub config: Vec<IpamConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamConfig {
    pub subnet: String,
    pub gateway: String,
    #[serde(rename = "IPRange", default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ConfigFrom {
    pub network: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkContainer {
    pub name: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub mac_address: String,
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
}

/// `GET /sandboxes`, `GET /sandboxes/{name}`, `POST /sandboxes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SandboxInfo {
    pub id: String,
    /// Whether netd made the namespace (`false`: attached, another runtime's).
    #[serde(default = "managed_default")]
    pub managed: bool,
    pub created: String,
    /// `/name`, as Docker writes it.
    pub name: String,
    pub state: SandboxState,
    pub hostname_path: String,
    pub hosts_path: String,
    pub resolv_conf_path: String,
    pub log_path: String,
    pub config: SandboxConfig,
    pub host_config: HostConfig,
    pub network_settings: NetworkSettings,
}

fn managed_default() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SandboxState {
    /// `running` or `dead`.
    pub status: String,
    pub running: bool,
    pub pid: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SandboxConfig {
    pub hostname: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `"80/tcp"` -> where it is published.
pub type PortMap = BTreeMap<String, Vec<PortBinding>>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    pub network_mode: String,
    pub port_bindings: PortMap,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    pub host_ip: String,
    pub host_port: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSettings {
    #[serde(rename = "SandboxID")]
    pub sandbox_id: String,
    /// The namespace's path.
    pub sandbox_key: String,
    pub ports: PortMap,
    /// Network name -> the sandbox's endpoint on it.
    pub networks: BTreeMap<String, EndpointSettings>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointSettings {
    /// Set when the address was asked for (`--ip`).
    #[serde(rename = "IPAMConfig")]
    pub ipam_config: Option<EndpointIpamConfig>,
    pub aliases: Vec<String>,
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    pub gateway: String,
    #[serde(rename = "IPAddress")]
    pub ip_address: String,
    #[serde(rename = "IPPrefixLen")]
    pub ip_prefix_len: u8,
    pub mac_address: String,
    pub interface_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointIpamConfig {
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
}

/// `POST /networks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkCreated {
    pub id: String,
    pub warning: String,
}

/// `DELETE /networks/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkRemoved {
    pub name: String,
}

/// `DELETE /cluster/nodes/{name}`: the leases released (`<network> <subnet>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeRemoved {
    pub released: Vec<String>,
}

/// `POST /networks/prune`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworksPruned {
    pub networks_deleted: Vec<String>,
}

/// `POST /networks/{name}/connect|disconnect`, `DELETE /sandboxes/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SandboxId {
    pub id: String,
}

/// `POST /system/reconcile`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Reconciled {
    pub repairs: Vec<String>,
}

/// `GET /system/info`: what an operator asks first (`netctl system info`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SystemInfo {
    /// The version and the git commit netd was built from.
    pub version: String,
    /// `nft` or `legacy`: where the iptables tools write.
    pub firewall_backend: String,
    pub networks: usize,
    pub sandboxes: usize,
    pub published_ports: usize,
    pub policies: usize,
    /// The state directory (`--root`).
    pub root: std::path::PathBuf,
    pub run_dir: std::path::PathBuf,
    /// The etcd members, when clustered.
    pub cluster_store: Option<String>,
    pub uptime_seconds: u64,
}

/// Every error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorMessage {
    pub message: String,
}

/// An answer with nothing in it (`POST /sandboxes/{name}/processes`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {}

/// Body of `POST /policies`: policy objects as YAML or JSON text, and the namespace given
/// on the command line (objects without one get it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyApplyRequest {
    pub text: String,
    #[serde(default)]
    pub namespace: Option<String>,
}

/// What `POST /policies` did, one line per policy (`prod/web created`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoliciesApplied {
    pub applied: Vec<PolicyApplied>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyApplied {
    pub policy: String,
    pub action: String,
}

/// Query of `GET /policies`: one namespace, or all of them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PolicyQuery {
    #[serde(default)]
    pub namespace: Option<String>,
}

/// Body of `POST /sandboxes/{name}/labels`: `KEY=VALUE` to set, `KEY-` to remove.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabelRequest {
    pub changes: Vec<String>,
}

pub use bridge_driver::policy::NetworkPolicy;

pub use super::operations::Objects;

/// One line of `GET /system/events` (`netctl system events`): a change made through an
/// API, named as Docker names its events (type, action), with the objects it touched, its
/// result and who asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339, UTC, to the millisecond.
    pub time: String,
    pub time_nano: u64,
    /// `network`, `sandbox`, `policy`, `node`, `system`.
    #[serde(rename = "type")]
    pub object: String,
    /// `create`, `connect`, `destroy`, ... (`--filter event=`).
    pub action: String,
    /// The metrics' name of the operation (`network_create`).
    pub operation: String,
    /// `netd` or `docker`: which API it came through; `internal` for what netd did by
    /// itself (a sandbox whose namespace its owner removed is released: `sandbox` `die`).
    pub api: String,
    /// `ok`, `rejected` (the caller's error) or `failed` (netd's).
    pub result: String,
    /// The HTTP status and how long the request took; none for internal events.
    pub status: Option<u16>,
    pub duration_ms: Option<f64>,
    pub uid: Option<u32>,
    pub pid: Option<i32>,
    pub objects: Objects,
    /// netd's message, when the operation did not succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Query of `GET /system/events`: from when (ns since the epoch; without it, only what
/// follows), until when (without it, for as long as the caller reads), and Docker's
/// `filters` as JSON (`{"type":["network"]}`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventsQuery {
    #[serde(default)]
    pub since: Option<u64>,
    #[serde(default)]
    pub until: Option<u64>,
    #[serde(default)]
    pub filters: Option<String>,
}
