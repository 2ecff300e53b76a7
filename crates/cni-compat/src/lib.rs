//! CNI plugins built on netd's kernel layer (`linkd`) and bridge model: `netd-bridge`,
//! `netd-ipam` (host-local compatible) and `netd-portmap`, drop-in replacements for the
//! reference plugins that runtimes (containerd, CRI-O, Podman) exec.

pub mod bridge;
pub mod delegate;
pub mod ipam;
pub mod masq;
pub mod portmap;
pub mod rules;
pub mod spec;
