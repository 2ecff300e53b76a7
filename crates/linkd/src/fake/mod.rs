//! Fakes of the kernel traits for unit tests that run as a normal user (youki's fake
//! netlink client is the model): [`RecordingKernel`] (one namespace), [`RecordingFirewall`]
//! (iptables), and [`FakeHost`], which joins a host's kernel, its namespaces and its
//! firewall into one world, so a veth made on the host has its peer appear in the
//! namespace it was born in and deleting either end deletes the pair, as in the kernel.
//!
//! A fake namespace is a plain file at its path (so it can be opened, and a veth request
//! carries a real descriptor of it); the world tells namespaces apart by that file's inode.

mod firewall;
mod kernel;

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

pub use firewall::RecordingFirewall;
pub(crate) use kernel::Effect;
pub use kernel::RecordingKernel;

use crate::address::Address;
use crate::error::{LinkdError, Result};
use crate::firewall::Firewall;
use crate::kernel::{Kernel, Namespaces};
use crate::link::Link;
use crate::netlink::Request;
use crate::netns::Netns;
use crate::route::Route;
use crate::tagged::Tag;
use crate::vxlan::{FdbEntry, Neighbour};

/// Where a link is: the host (`None`) or a namespace's path.
type Place = (Option<PathBuf>, String);

/// Everything the fakes of one host share; tests read and change it directly.
#[derive(Debug, Default)]
pub struct World {
    pub host: RecordingKernel,
    pub namespaces: BTreeMap<PathBuf, RecordingKernel>,
    pub firewall: RecordingFirewall,
    /// (device, inode) of each namespace's file, to find the namespace of a descriptor.
    identities: BTreeMap<(u64, u64), PathBuf>,
    /// The two ends of each veth pair.
    pairs: Vec<(Place, Place)>,
}

impl World {
    fn kernel(&mut self, at: &Option<PathBuf>) -> Result<&mut RecordingKernel> {
        match at {
            None => Ok(&mut self.host),
            Some(path) => self
                .namespaces
                .get_mut(path)
                .ok_or_else(|| netns_error(path, libc::ENOENT)),
        }
    }

    /// Deletes the other end of the pair a deleted link belonged to.
    fn unpair(&mut self, gone: &Place) {
        let Some(position) = self.pairs.iter().position(|(a, b)| a == gone || b == gone) else {
            return;
        };
        let (a, b) = self.pairs.remove(position);
        let (other_at, other_name) = if &a == gone { b } else { a };
        if let Ok(kernel) = self.kernel(&other_at) {
            kernel.forget(&other_name);
        }
    }

    fn send(&mut self, at: &Option<PathBuf>, request: &Request) -> Result<()> {
        match self.kernel(at)?.send(request)? {
            Effect::None => {}
            Effect::Deleted(name) => self.unpair(&(at.clone(), name)),
            Effect::PeerBorn { local, netns, peer } => {
                let target = std::fs::metadata(format!("/proc/self/fd/{netns}"))
                    .ok()
                    .and_then(|m| self.identities.get(&(m.dev(), m.ino())).cloned());
                let Some(target) = target else {
                    self.host_or(at).forget(&local);
                    return Err(crate::netlink::kernel_error(
                        &request.what,
                        io::Error::from_raw_os_error(libc::EINVAL),
                    ));
                };
                let peer_name = peer.name.clone();
                if let Some(kernel) = self.namespaces.get_mut(&target) {
                    kernel.adopt(peer);
                }
                self.pairs
                    .push(((at.clone(), local), (Some(target), peer_name)));
            }
        }
        Ok(())
    }

    fn host_or(&mut self, at: &Option<PathBuf>) -> &mut RecordingKernel {
        match at.as_ref().and_then(|p| self.namespaces.get_mut(p)) {
            Some(kernel) => kernel,
            None => &mut self.host,
        }
    }
}

fn netns_error(path: &Path, errno: i32) -> LinkdError {
    LinkdError::Netns {
        path: path.display().to_string(),
        source: io::Error::from_raw_os_error(errno),
    }
}

/// One fake host: hands out kernels, namespaces and a firewall that share a [`World`].
#[derive(Debug, Clone, Default)]
pub struct FakeHost {
    world: Arc<Mutex<World>>,
}

impl FakeHost {
    pub fn new() -> Self {
        Self::default()
    }

    /// The world, to look at or to change behind the appliers' backs.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The host namespace's kernel.
    pub fn kernel(&self) -> FakeKernel {
        FakeKernel {
            host: self.clone(),
            at: None,
        }
    }

    pub fn namespaces(&self) -> FakeNamespaces {
        FakeNamespaces { host: self.clone() }
    }

    pub fn firewall(&self) -> FakeFirewall {
        FakeFirewall { host: self.clone() }
    }
}

/// The kernel of the fake host or of one of its namespaces.
#[derive(Debug, Clone)]
pub struct FakeKernel {
    host: FakeHost,
    at: Option<PathBuf>,
}

impl FakeKernel {
    fn with<T>(&self, f: impl FnOnce(&mut RecordingKernel) -> Result<T>) -> Result<T> {
        let mut world = self.host.world();
        f(world.kernel(&self.at)?)
    }
}

impl Kernel for FakeKernel {
    fn batch(&mut self, requests: Vec<Request>) -> Result<()> {
        let mut world = self.host.world();
        for request in &requests {
            world.send(&self.at, request)?;
        }
        Ok(())
    }

    fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        self.with(|k| k.link_by_name(name))
    }

    fn links(&mut self) -> Result<Vec<Link>> {
        self.with(|k| k.links())
    }

    fn addresses(&mut self) -> Result<Vec<Address>> {
        self.with(|k| k.addresses())
    }

    fn routes(&mut self) -> Result<Vec<Route>> {
        self.with(|k| k.routes())
    }

    fn neighbours(&mut self, index: u32) -> Result<Vec<Neighbour>> {
        self.with(|k| k.neighbours(index))
    }

    fn fdb_entries(&mut self, index: u32) -> Result<Vec<FdbEntry>> {
        self.with(|k| k.fdb_entries(index))
    }

    fn sysctl_get(&mut self, key: &str) -> Result<String> {
        self.with(|k| k.sysctl_get(key))
    }

    fn sysctl_set(&mut self, key: &str, value: &str) -> Result<()> {
        self.with(|k| k.sysctl_set(key, value))
    }
}

/// Namespaces of the fake host.
#[derive(Debug, Clone)]
pub struct FakeNamespaces {
    host: FakeHost,
}

impl Namespaces for FakeNamespaces {
    fn create(
        &mut self,
        path: &Path,
        sysctls: &[(&str, &str)],
    ) -> Result<(Netns, Box<dyn Kernel>)> {
        let mut world = self.host.world();
        if world.namespaces.contains_key(path) {
            return Err(netns_error(path, libc::EEXIST));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| LinkdError::Netns {
                path: path.display().to_string(),
                source: e,
            })?;
        }
        std::fs::write(path, b"").map_err(|e| LinkdError::Netns {
            path: path.display().to_string(),
            source: e,
        })?;
        let netns = Netns::open(path)?;
        let meta = std::fs::metadata(path).map_err(|e| LinkdError::Netns {
            path: path.display().to_string(),
            source: e,
        })?;
        world
            .identities
            .insert((meta.dev(), meta.ino()), path.to_path_buf());
        let mut kernel = RecordingKernel::new_namespace();
        for (key, value) in sysctls {
            kernel.sysctl_set(key, value)?;
        }
        kernel.batch(vec![crate::link::set_up_request(1, "lo")])?;
        world.namespaces.insert(path.to_path_buf(), kernel);
        Ok((
            netns,
            Box::new(FakeKernel {
                host: self.host.clone(),
                at: Some(path.to_path_buf()),
            }),
        ))
    }

    fn open(&mut self, path: &Path) -> Result<(Netns, Box<dyn Kernel>)> {
        if !self.host.world().namespaces.contains_key(path) {
            return Err(netns_error(path, libc::ENOENT));
        }
        let netns = Netns::open(path)?;
        Ok((
            netns,
            Box::new(FakeKernel {
                host: self.host.clone(),
                at: Some(path.to_path_buf()),
            }),
        ))
    }

    fn remove(&mut self, path: &Path) -> Result<()> {
        let mut world = self.host.world();
        if let Some(kernel) = world.namespaces.remove(path) {
            let at = Some(path.to_path_buf());
            for link in &kernel.links {
                world.unpair(&(at.clone(), link.name.clone()));
            }
            world.identities.retain(|_, p| p != path);
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(LinkdError::Netns {
                path: path.display().to_string(),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn is_mounted(&mut self, path: &Path) -> bool {
        self.host.world().namespaces.contains_key(path)
    }
}

/// The fake host's firewall.
#[derive(Debug, Clone)]
pub struct FakeFirewall {
    host: FakeHost,
}

impl Firewall for FakeFirewall {
    fn restore(&mut self, ruleset: &str) -> Result<()> {
        self.host.world().firewall.restore(ruleset)
    }

    fn save(&mut self, table: &str) -> Result<String> {
        self.host.world().firewall.save(table)
    }

    fn chain_exists(&mut self, table: &str, chain: &str) -> Result<bool> {
        self.host.world().firewall.chain_exists(table, chain)
    }

    fn append_tagged(
        &mut self,
        ruleset: &str,
        tag: &Tag<'_>,
        expected: usize,
    ) -> Result<Option<Vec<u64>>> {
        self.host
            .world()
            .firewall
            .append_tagged(ruleset, tag, expected)
    }

    fn delete_tagged(&mut self, tag: &Tag<'_>, remembered: Option<&[u64]>) -> Result<usize> {
        self.host.world().firewall.delete_tagged(tag, remembered)
    }

    fn count_tagged(&mut self, tag: &Tag<'_>) -> Result<usize> {
        self.host.world().firewall.count_tagged(tag)
    }

    fn sets_restore(&mut self, text: &str) -> Result<()> {
        self.host.world().firewall.sets_restore(text)
    }

    fn sets_change(&mut self, changes: &[crate::ipset::MemberChange]) -> Result<()> {
        self.host.world().firewall.sets_change(changes)
    }

    fn sets_save(&mut self) -> Result<String> {
        self.host.world().firewall.sets_save()
    }

    fn flush_udp_conntrack(&mut self, port: u16) {
        self.host.world().firewall.flush_udp_conntrack(port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::link::{create_veth_request, VethSpec};

    #[test]
    fn a_veth_peer_is_born_in_its_namespace_and_dies_with_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = FakeHost::new();
        let mut host = fake.kernel();
        let path = dir.path().join("ns1");
        let (netns, mut inner) = fake.namespaces().create(&path, &[]).expect("create");
        host.batch(vec![create_veth_request(&VethSpec {
            host_name: "vethA",
            master: 0,
            mtu: 1400,
            peer_name: "eth0",
            peer_mac: [2, 0, 0, 0, 0, 1],
            peer_netns: netns.fd(),
        })])
        .expect("veth");
        let eth0 = inner.require_link("eth0").expect("peer inside");
        assert_eq!((eth0.mtu, eth0.mac), (1400, Some([2, 0, 0, 0, 0, 1])));
        assert!(host.link_by_name("eth0").expect("lookup").is_none());
        // Deleting the inside end deletes the host end.
        inner.delete_link(eth0.index, "eth0").expect("delete");
        assert!(host.link_by_name("vethA").expect("lookup").is_none());
        // Removing a namespace takes its ends of pairs away on the host too.
        host.batch(vec![create_veth_request(&VethSpec {
            host_name: "vethB",
            master: 0,
            mtu: 1500,
            peer_name: "eth0",
            peer_mac: [2, 0, 0, 0, 0, 2],
            peer_netns: netns.fd(),
        })])
        .expect("veth again");
        fake.namespaces().remove(&path).expect("remove");
        assert!(host.link_by_name("vethB").expect("lookup").is_none());
        assert!(!fake.namespaces().is_mounted(&path));
        assert!(inner.links().is_err(), "the namespace is gone");
    }

    #[test]
    fn neighbour_and_fdb_entries_are_kept_replaced_and_go_with_their_link() {
        use crate::vxlan::{
            create_vxlan_request, delete_neighbour_request, fdb_request, neighbour_request,
            FdbEntry, Neighbour, VxlanSpec,
        };
        let mut kernel = RecordingKernel::default();
        kernel
            .batch(vec![create_vxlan_request(&VxlanSpec {
                name: "netd.1",
                vni: 1,
                local: "192.168.1.10".parse().expect("ip"),
                underlay: 0,
                port: 8472,
                mtu: 1450,
                mac: [6, 0, 0, 0, 0, 1],
            })])
            .expect("vxlan");
        let vx = kernel.require_link("netd.1").expect("made");
        assert_eq!(vx.kind.as_deref(), Some("vxlan"));
        let neighbour = Neighbour {
            index: vx.index,
            ip: "10.244.2.0".parse().expect("ip"),
            mac: [6, 0, 0, 0, 0, 2],
        };
        let fdb = FdbEntry {
            index: vx.index,
            mac: [6, 0, 0, 0, 0, 2],
            remote: "192.168.1.11".parse().expect("ip"),
        };
        kernel
            .batch(vec![neighbour_request(&neighbour), fdb_request(&fdb)])
            .expect("entries");
        let moved = FdbEntry {
            remote: "192.168.1.12".parse().expect("ip"),
            ..fdb
        };
        kernel.batch(vec![fdb_request(&moved)]).expect("replaced");
        assert_eq!(kernel.neighbours(vx.index).expect("list"), [neighbour]);
        assert_eq!(kernel.fdb_entries(vx.index).expect("list"), [moved]);
        kernel
            .batch(vec![delete_neighbour_request(&neighbour)])
            .expect("deleted");
        assert!(
            kernel
                .batch(vec![delete_neighbour_request(&neighbour)])
                .is_err(),
            "a missing entry cannot be deleted"
        );
        kernel.delete_link(vx.index, "netd.1").expect("link gone");
        assert!(kernel.fdb.is_empty());
    }
}
