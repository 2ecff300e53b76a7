//! netd: the daemon that owns container networking on a host, and the pieces `netctl`
//! shares with it.

pub mod api;
pub mod cluster;
pub mod config;
pub mod dns;
pub mod engine;
pub mod error;
pub mod files;
pub mod pause;
pub mod state;
pub mod store;
