//! bridge-driver: netd's network model, IPAM and the bridge driver. Everything here is
//! plain data and pure functions (what the kernel should look like), so it is tested
//! without root; `linkd` applies it.

pub mod cluster;
pub mod cni_rules;
pub mod error;
pub mod firewall;
pub mod ipam;
pub mod mac;
pub mod model;
pub mod names;
pub mod plan;
pub mod policy;
pub mod pools;
pub mod ports;

pub use error::{IpamError, ModelError};
pub use model::{BridgeOptions, Network, NetworkRequest};
