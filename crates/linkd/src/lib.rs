//! linkd: the only crate of netd that talks to the kernel's network stack. It applies
//! plans (links, addresses, routes, sysctls, firewall rulesets); it decides nothing.

pub mod address;
pub mod bridge;
pub mod conntrack;
pub mod enter;
pub mod error;
pub mod fake;
pub mod firewall;
pub mod ipset;
pub mod kernel;
pub mod link;
pub mod netlink;
pub mod netns;
mod nfnetlink;
pub mod nftables;
pub mod overlay;
pub mod sysctl;
pub mod tagged;
pub mod vxlan;

pub use address::Address;
pub use bridge::{ensure_bridge, BridgeState, OtherAddresses, Ownership};
pub use enter::SandboxEntry;
pub use error::{LinkdError, Result};
pub use fake::{FakeHost, RecordingFirewall, RecordingKernel};
pub use firewall::{Backend, Firewall, Iptables};
pub use ipset::Ipset;
pub use kernel::{Kernel, MountedNamespaces, Namespaces};
pub use link::{format_mac, parse_mac, BridgeSpec, Link, Mac, VethSpec};
pub use netlink::{Netlink, Request};
pub use netns::{Netns, NetnsGuard};
pub use overlay::{ensure_overlay, remove_overlay, OverlayState, PeerEntry, VxlanState};
pub use route::Route;
pub use tagged::{Tag, TaggedRules};

pub mod route;
