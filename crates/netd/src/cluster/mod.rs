//! Cluster networks across hosts: the agent that keeps this node's part of the cluster in
//! etcd (its leases, its sandboxes' names) and follows everyone else's, handing what it
//! learns to the engine, which alone changes the kernel.
//!
//! Keys (flannel's layout under a per-network prefix; `--etcd-prefix` moves the root):
//! - `<prefix>/networks/<name>/config`: flannel's network configuration JSON;
//! - `<prefix>/networks/<name>/subnets/<ip>-<len>`: a node's lease (flannel's LeaseAttrs),
//!   attached to the node's etcd lease, so it goes when the node stops renewing;
//! - `<prefix>/networks/<name>/names/<node>/<sandbox id>`: a sandbox's name, aliases,
//!   address and labels, for every node's DNS and policies (attached to the same etcd
//!   lease);
//! - `<prefix>/policies/<namespace>/<name>`: a network policy (Kubernetes' JSON), which
//!   every node applies.

mod agent;
mod keys;
mod settings;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use bridge_driver::cluster::{FlannelConfig, LeaseAttrs};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

pub use agent::spawn;
pub use keys::Keys;
pub use settings::{parse_duration, parse_store, ClusterSettings, TlsFiles};

use crate::engine::policy::PolicyApplied;
use crate::error::{NetdError, Result};

/// A sandbox's name as published for the DNS of every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecord {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Aliases", default)]
    pub aliases: Vec<String>,
    #[serde(rename = "IP")]
    pub ip: Ipv4Addr,
    /// The sandbox's labels, which policies on every node select it by.
    #[serde(rename = "Labels", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// What the engine is told about one cluster network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkView {
    pub config: FlannelConfig,
    /// This node's lease; `None` until it has one.
    pub own: Option<Ipv4Net>,
    /// Every other node's lease.
    pub peers: Vec<(Ipv4Net, LeaseAttrs)>,
    /// Sandboxes on other nodes.
    pub names: Vec<NameRecord>,
}

/// Every cluster network as the store has it, by name.
pub type ClusterView = BTreeMap<String, NetworkView>;

/// Sandboxes of this node on each cluster network (by network name), for publishing.
pub type LocalNames = BTreeMap<String, Vec<NameRecord>>;

/// This node as its peers know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub node_ip: Ipv4Addr,
    pub node_name: String,
    /// The interface that carries the node IP, and its MTU.
    pub underlay: String,
    pub underlay_mtu: u32,
}

/// One row of `netctl cluster nodes`: a node's lease on one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeLease {
    pub name: String,
    #[serde(rename = "NodeIP")]
    pub node_ip: Ipv4Addr,
    pub network: String,
    pub subnet: Ipv4Net,
    pub backend: String,
    /// Seconds until the lease expires unless renewed; `None` when unknown.
    pub expires_in: Option<i64>,
}

/// How long a cluster request waits for a store that does not answer yet.
const STORE_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// A request from the API to the agent.
#[derive(Debug)]
pub(crate) enum Request {
    Create {
        name: String,
        config: FlannelConfig,
        reply: oneshot::Sender<Result<String>>,
    },
    Remove {
        name: String,
        reply: oneshot::Sender<Result<String>>,
    },
    Nodes {
        reply: oneshot::Sender<Result<Vec<NodeLease>>>,
    },
    RemoveNode {
        name: String,
        reply: oneshot::Sender<Result<Vec<String>>>,
    },
    ApplyPolicies {
        text: String,
        namespace: Option<String>,
        reply: oneshot::Sender<Result<Vec<PolicyApplied>>>,
    },
    RemovePolicy {
        namespace: String,
        name: String,
        reply: oneshot::Sender<Result<String>>,
    },
}

/// The API's way to the agent.
#[derive(Debug, Clone)]
pub struct ClusterHandle {
    requests: mpsc::Sender<Request>,
    /// Whether the store answers now; why not.
    status: watch::Receiver<std::result::Result<(), String>>,
}

impl ClusterHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request) -> Result<T> {
        // A store that is being reached (netd just started, or a member failed over)
        // gets a moment before the request is refused.
        let mut status = self.status.clone();
        let ready = matches!(
            tokio::time::timeout(STORE_GRACE, status.wait_for(|s| s.is_ok())).await,
            Ok(Ok(_))
        );
        if !ready {
            let why = match &*self.status.borrow() {
                Err(why) => why.clone(),
                Ok(()) => "the cluster store stopped answering".to_string(),
            };
            return Err(NetdError::Unavailable(why));
        }
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(make(tx))
            .await
            .map_err(|_| NetdError::Internal("the cluster agent has stopped".into()))?;
        rx.await
            .map_err(|_| NetdError::Unavailable("the cluster store stopped answering".into()))?
    }

    /// Stores a new cluster network; returns its id once this node has its part of it.
    pub async fn create(&self, name: String, config: FlannelConfig) -> Result<String> {
        self.ask(|reply| Request::Create {
            name,
            config,
            reply,
        })
        .await
    }

    /// Removes a cluster network from every node, once no node has sandboxes on it.
    pub async fn remove(&self, name: String) -> Result<String> {
        self.ask(|reply| Request::Remove { name, reply }).await
    }

    pub async fn nodes(&self) -> Result<Vec<NodeLease>> {
        self.ask(|reply| Request::Nodes { reply }).await
    }

    /// `policy apply` on a clustered node: stored for every node in one transaction (all
    /// or none), answered once this node applies them.
    pub async fn apply_policies(
        &self,
        text: String,
        namespace: Option<String>,
    ) -> Result<Vec<PolicyApplied>> {
        self.ask(|reply| Request::ApplyPolicies {
            text,
            namespace,
            reply,
        })
        .await
    }

    /// `policy rm` on a clustered node: removed from the store, so from every node.
    pub async fn remove_policy(&self, namespace: String, name: String) -> Result<String> {
        self.ask(|reply| Request::RemovePolicy {
            namespace,
            name,
            reply,
        })
        .await
    }

    /// Releases a (dead) node's leases and names at once.
    pub async fn remove_node(&self, name: String) -> Result<Vec<String>> {
        self.ask(|reply| Request::RemoveNode { name, reply }).await
    }
}
