//! netd: the daemon that owns container networking on a host, and the pieces `netctl`
//! shares with it.

/// `--version` of every binary: the crate version and the git commit built from.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("NETD_GIT_COMMIT"),
    ")"
);

pub mod api;
pub mod cluster;
pub mod config;
pub mod dns;
pub mod engine;
pub mod error;
pub mod events;
pub mod files;
pub mod metrics;
pub mod pause;
pub mod state;
pub mod store;
