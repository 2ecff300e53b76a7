//! Cluster networks (multi-host, flannel's model): the configuration stored for every
//! node, node leases and the choice of a node's subnet, and what a node programs for each
//! peer. Pure: the daemon's cluster agent reads and writes the store, the engine applies.

pub mod config;
pub mod lease;
pub mod network;
pub mod peers;

pub use config::{Backend, Driver, FlannelConfig};
pub use lease::{
    choose_subnet, parse_lease, parse_subnet_key, subnet_key, vtep_mac, LeaseAttrs, VxlanData,
};
pub use network::{build_cluster_network, cluster_network_id, overlay_plan, ClusterMembership};
pub use peers::{peer_plans, PeerPlan, PeerRoute};
