//! The kernel operations that applying a plan needs, behind traits, so that the daemon's
//! verbs and the CNI plugins run against a fake ([`crate::fake`]) in unit tests:
//! - [`Kernel`]: one network namespace's links, addresses, routes and sysctls (netlink
//!   batches and lookups); [`Netlink`] is the real one;
//! - [`Namespaces`]: creating, opening and removing namespaces held by bind mounts;
//!   [`MountedNamespaces`] is the real one;
//! - [`crate::Firewall`] (in `firewall`): iptables transactions and tagged rules.

use std::path::Path;

use ipnet::Ipv4Net;

use crate::address::Address;
use crate::error::{LinkdError, Result};
use crate::link::{delete_link_request, set_alias_request, set_hairpin_request, Link};
use crate::netlink::{Netlink, Request};
use crate::netns::Netns;
use crate::route::{replace_route_request, Route};
use crate::vxlan::{FdbEntry, Neighbour};

/// What an applier asks of the kernel of one network namespace.
pub trait Kernel: std::fmt::Debug {
    /// Sends requests in order; the first failure is returned.
    fn batch(&mut self, requests: Vec<Request>) -> Result<()>;
    /// A link by name; `None` when there is none.
    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>>;
    /// Every link.
    fn links(&mut self) -> Result<Vec<Link>>;
    /// Every IPv4 address.
    fn addresses(&mut self) -> Result<Vec<Address>>;
    /// The IPv4 routes of the main table.
    fn routes(&mut self) -> Result<Vec<Route>>;
    /// The permanent IPv4 neighbour entries of a link.
    fn neighbours(&mut self, index: u32) -> Result<Vec<Neighbour>>;
    /// The FDB entries (with a remote) of a vxlan device.
    fn fdb_entries(&mut self, index: u32) -> Result<Vec<FdbEntry>>;
    /// A sysctl (`/proc/sys` path) of this namespace.
    fn sysctl_get(&mut self, key: &str) -> Result<String>;
    fn sysctl_set(&mut self, key: &str, value: &str) -> Result<()>;

    /// The IPv4 addresses of a link.
    fn addresses_of(&mut self, index: u32) -> Result<Vec<Ipv4Net>> {
        Ok(self
            .addresses()?
            .into_iter()
            .filter(|a| a.index == index)
            .map(|a| a.net)
            .collect())
    }

    /// A link by name, or [`LinkdError::NoSuchLink`].
    fn require_link(&mut self, name: &str) -> Result<Link> {
        self.link_by_name(name)?
            .ok_or_else(|| LinkdError::NoSuchLink(name.to_string()))
    }

    /// Deletes a link; one that is already gone is not an error.
    fn delete_link(&mut self, index: u32, what: &str) -> Result<()> {
        match self.batch(vec![delete_link_request(index, what)]) {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// Deletes a link by name; a missing one is not an error.
    fn delete_link_by_name(&mut self, name: &str) -> Result<()> {
        match self.link_by_name(name)? {
            Some(link) => self.delete_link(link.index, name),
            None => Ok(()),
        }
    }

    fn set_alias(&mut self, name: &str, alias: &str) -> Result<()> {
        self.batch(vec![set_alias_request(name, alias)])
    }

    fn set_hairpin(&mut self, index: u32, on: bool) -> Result<()> {
        self.batch(vec![set_hairpin_request(index, on)])
    }

    fn replace_route(&mut self, route: &Route) -> Result<()> {
        self.batch(vec![replace_route_request(route)])
    }
}

/// A boxed kernel (as the daemon holds its kernels) is a kernel.
impl<K: Kernel + ?Sized> Kernel for Box<K> {
    fn batch(&mut self, requests: Vec<Request>) -> Result<()> {
        (**self).batch(requests)
    }

    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        (**self).link_by_name(name)
    }

    fn links(&mut self) -> Result<Vec<Link>> {
        (**self).links()
    }

    fn addresses(&mut self) -> Result<Vec<Address>> {
        (**self).addresses()
    }

    fn routes(&mut self) -> Result<Vec<Route>> {
        (**self).routes()
    }

    fn neighbours(&mut self, index: u32) -> Result<Vec<Neighbour>> {
        (**self).neighbours(index)
    }

    fn fdb_entries(&mut self, index: u32) -> Result<Vec<FdbEntry>> {
        (**self).fdb_entries(index)
    }

    fn sysctl_get(&mut self, key: &str) -> Result<String> {
        (**self).sysctl_get(key)
    }

    fn sysctl_set(&mut self, key: &str, value: &str) -> Result<()> {
        (**self).sysctl_set(key, value)
    }

    fn addresses_of(&mut self, index: u32) -> Result<Vec<Ipv4Net>> {
        (**self).addresses_of(index)
    }
}

impl Kernel for Netlink {
    fn batch(&mut self, requests: Vec<Request>) -> Result<()> {
        Netlink::batch(self, requests)
    }

    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        Netlink::link_by_name(self, name)
    }

    fn links(&mut self) -> Result<Vec<Link>> {
        Netlink::links(self)
    }

    fn addresses(&mut self) -> Result<Vec<Address>> {
        Netlink::addresses(self)
    }

    fn routes(&mut self) -> Result<Vec<Route>> {
        Netlink::routes(self)
    }

    fn neighbours(&mut self, index: u32) -> Result<Vec<Neighbour>> {
        Netlink::neighbours(self, index)
    }

    fn fdb_entries(&mut self, index: u32) -> Result<Vec<FdbEntry>> {
        Netlink::fdb_entries(self, index)
    }

    fn sysctl_get(&mut self, key: &str) -> Result<String> {
        crate::sysctl::get(key)
    }

    fn sysctl_set(&mut self, key: &str, value: &str) -> Result<()> {
        crate::sysctl::set(key, value)
    }
}

/// Network namespaces held at paths: what a sandbox's namespace is to its creator.
pub trait Namespaces: std::fmt::Debug {
    /// A new namespace held at `path`, loopback up, `sysctls` written inside; with its
    /// kernel.
    fn create(&mut self, path: &Path, sysctls: &[(&str, &str)])
        -> Result<(Netns, Box<dyn Kernel>)>;
    /// The namespace held at `path` (or `/proc/PID/ns/net`), with its kernel.
    fn open(&mut self, path: &Path) -> Result<(Netns, Box<dyn Kernel>)>;
    /// Lets go of the namespace at `path` (its links go with it); missing is fine.
    fn remove(&mut self, path: &Path) -> Result<()>;
    /// Whether a live namespace is held at `path`.
    fn is_mounted(&mut self, path: &Path) -> bool;
    /// Deletes link `name` in `netns` (`inner` is its kernel), returning once the name is
    /// free; the real namespaces leave the kernel's slow part of it to a detached process
    /// (see [`Netns::delete_link_detached`]).
    fn delete_link_soon(
        &mut self,
        netns: &Netns,
        inner: &mut dyn Kernel,
        name: &str,
    ) -> Result<()> {
        let _ = netns;
        inner.delete_link_by_name(name)
    }
}

/// The real namespaces: bind mounts of `nsfs` (see [`Netns`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct MountedNamespaces;

impl Namespaces for MountedNamespaces {
    fn create(
        &mut self,
        path: &Path,
        sysctls: &[(&str, &str)],
    ) -> Result<(Netns, Box<dyn Kernel>)> {
        let (netns, netlink) = Netns::create(path, sysctls)?;
        Ok((netns, Box::new(netlink)))
    }

    fn open(&mut self, path: &Path) -> Result<(Netns, Box<dyn Kernel>)> {
        let netns = Netns::open(path)?;
        let netlink = netns.netlink()?;
        Ok((netns, Box::new(netlink)))
    }

    fn remove(&mut self, path: &Path) -> Result<()> {
        Netns::remove(path)
    }

    fn is_mounted(&mut self, path: &Path) -> bool {
        Netns::is_mounted(path)
    }

    fn delete_link_soon(
        &mut self,
        netns: &Netns,
        inner: &mut dyn Kernel,
        name: &str,
    ) -> Result<()> {
        netns.delete_link_detached(name, inner)
    }
}
