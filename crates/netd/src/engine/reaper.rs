//! Deleting veths off the request path.
//!
//! The kernel takes about 20 ms to delete a veth: it waits for RCU grace periods and for
//! the device's last references after unregistering it. That was most of a `detach` or a
//! `network disconnect`. So the engine first takes the host end off its bridge and down,
//! which takes a fraction of a millisecond. From then on the pair carries nothing, and its
//! address may go to another sandbox at once. The reaper then deletes the pair on its own
//! thread, with its own netlink socket.
//!
//! Until the deletion is done, the pair's name inside the namespace (`eth0`) is still
//! taken. So a new interface in that namespace first waits for the deletions pending
//! there ([`Reaper::wait`]). Reconcile leaves pending links alone. At stop, every
//! deletion is finished ([`Reaper::drain`]). A crash in between leaves a veth that the
//! start-up reconcile removes as a leak.

use std::collections::{HashMap, HashSet};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};

use linkd::{Kernel, Netlink};

use crate::error::{NetdError, Result};

/// A network namespace by identity (device and inode of its file).
pub type NetnsKey = (u64, u64);

/// Where a released veth goes to be deleted.
pub trait Reaper: Send + std::fmt::Debug {
    /// Deletes host link `name` (a veth, its peer in `netns` with it), now or later.
    /// `host` is the engine's own kernel, for reapers that delete at once.
    fn delete(&mut self, host: &mut dyn Kernel, netns: Option<NetnsKey>, name: &str);
    /// Returns once no deletion is pending in `netns`.
    fn wait(&self, netns: NetnsKey);
    /// Whether `name` is waiting to be deleted.
    fn pending(&self, name: &str) -> bool;
    /// Returns once every deletion is done.
    fn drain(&self);
}

/// Deletes at once, on the engine's kernel (the fakes of the unit tests).
#[derive(Debug, Default)]
pub struct InlineReaper;

impl Reaper for InlineReaper {
    fn delete(&mut self, host: &mut dyn Kernel, _netns: Option<NetnsKey>, name: &str) {
        if let Err(e) = host.delete_link_by_name(name) {
            tracing::warn!("cannot delete {name}: {e}");
        }
    }

    fn wait(&self, _netns: NetnsKey) {}

    fn pending(&self, _name: &str) -> bool {
        false
    }

    fn drain(&self) {}
}

#[derive(Debug, Default)]
struct Pending {
    by_netns: HashMap<NetnsKey, usize>,
    names: HashSet<String>,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Deletes on a thread of its own, in netd's namespace.
#[derive(Debug)]
pub struct ThreadReaper {
    jobs: mpsc::Sender<(Option<NetnsKey>, String)>,
    shared: Arc<Shared>,
}

impl ThreadReaper {
    /// Starts the thread, with a netlink socket opened in the calling thread's namespace.
    pub fn start() -> Result<ThreadReaper> {
        let mut netlink = Netlink::open()?;
        let (jobs, rx) = mpsc::channel::<(Option<NetnsKey>, String)>();
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        std::thread::Builder::new()
            .name("netd-reaper".into())
            .spawn(move || {
                for (netns, name) in rx {
                    if let Err(e) = netlink.delete_link_by_name(&name) {
                        tracing::warn!("cannot delete {name}: {e}");
                    }
                    let mut pending = theirs.lock();
                    pending.names.remove(&name);
                    if let Some(key) = netns {
                        if let Some(count) = pending.by_netns.get_mut(&key) {
                            *count -= 1;
                            if *count == 0 {
                                pending.by_netns.remove(&key);
                            }
                        }
                    }
                    theirs.done.notify_all();
                }
            })
            .map_err(|e| NetdError::io("cannot start the link reaper", e))?;
        Ok(ThreadReaper { jobs, shared })
    }
}

impl Reaper for ThreadReaper {
    fn delete(&mut self, host: &mut dyn Kernel, netns: Option<NetnsKey>, name: &str) {
        {
            let mut pending = self.shared.lock();
            pending.names.insert(name.to_string());
            if let Some(key) = netns {
                *pending.by_netns.entry(key).or_insert(0) += 1;
            }
        }
        if self.jobs.send((netns, name.to_string())).is_err() {
            // The thread is gone (it never panics on its own): delete here instead.
            let mut pending = self.shared.lock();
            pending.names.remove(name);
            if let Some(key) = netns {
                pending.by_netns.remove(&key);
            }
            drop(pending);
            if let Err(e) = host.delete_link_by_name(name) {
                tracing::warn!("cannot delete {name}: {e}");
            }
        }
    }

    fn wait(&self, netns: NetnsKey) {
        let mut pending = self.shared.lock();
        while pending.by_netns.contains_key(&netns) {
            pending = self
                .shared
                .done
                .wait(pending)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    fn pending(&self, name: &str) -> bool {
        self.shared.lock().names.contains(name)
    }

    fn drain(&self) {
        let mut pending = self.shared.lock();
        while !pending.names.is_empty() {
            pending = self
                .shared
                .done
                .wait(pending)
                .unwrap_or_else(|e| e.into_inner());
        }
    }
}
