//! Network namespaces held by bind mounts (the `ip netns` convention, under a directory of
//! the caller's choice), and scoped entry into them.
//!
//! `setns(2)` changes the namespace of the calling thread only. Everything here that
//! switches namespaces restores the original before returning, and must only be called on
//! a thread the caller owns (never on an async runtime's worker).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{LinkdError, Result};
use crate::kernel::Kernel;
use crate::netlink::Netlink;

const THREAD_NETNS: &str = "/proc/thread-self/ns/net";

/// An open network namespace.
#[derive(Debug)]
pub struct Netns {
    file: File,
    path: PathBuf,
}

fn netns_error(path: &Path, source: io::Error) -> LinkdError {
    LinkdError::Netns {
        path: path.display().to_string(),
        source,
    }
}

fn nix_error(path: &Path, errno: nix::errno::Errno) -> LinkdError {
    netns_error(path, io::Error::from_raw_os_error(errno as i32))
}

impl Netns {
    /// Opens the namespace behind a path (a bind mount or `/proc/PID/ns/net`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| netns_error(path, e))?;
        Ok(Netns {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The namespace the calling thread is in now.
    pub fn current() -> Result<Self> {
        Self::open(THREAD_NETNS)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The namespace's inode number, which identifies it (as in `/proc/PID/ns/net`).
    pub fn inode(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|m| m.ino())
            .map_err(|e| netns_error(&self.path, e))
    }

    /// Switches the calling thread into this namespace until the guard is dropped.
    pub fn enter(&self) -> Result<NetnsGuard> {
        let original = Netns::current()?;
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| nix_error(&self.path, e))?;
        Ok(NetnsGuard { original })
    }

    /// Moves the calling thread into this namespace for good, for a process that is to live
    /// there (a pause process, before it forks).
    pub fn join(&self) -> Result<()> {
        setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| nix_error(&self.path, e))
    }

    /// Deletes link `name` in this namespace from a detached process, and returns once the
    /// name is gone. The kernel frees the name at once; the wait that follows (some 20 ms
    /// of RCU grace periods and references, for a veth) is the detached process's. For a
    /// short-lived program (a CNI plugin's DEL) that must neither pay that wait nor leave
    /// the name taken for the next ADD. `watch` is a kernel inside this namespace. The
    /// caller must be single-threaded (this forks).
    pub fn delete_link_detached(&self, name: &str, watch: &mut dyn Kernel) -> Result<()> {
        use nix::unistd::{fork, ForkResult};
        let Some(link) = watch.link_by_name(name)? else {
            return Ok(());
        };
        // SAFETY: single-threaded caller; the children only join the namespace, send one
        // request and exit.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                // Whoever reads this process's output must not wait for the children.
                for fd in 0..3 {
                    // SAFETY: closing the standard descriptors of a child about to exit.
                    unsafe { libc::close(fd) };
                }
                // SAFETY: as above.
                if let Ok(ForkResult::Child) = unsafe { fork() } {
                    if self.join().is_ok() {
                        if let Ok(mut netlink) = Netlink::open() {
                            let _ = netlink.delete_link(link.index, name);
                        }
                    }
                }
                // SAFETY: _exit skips destructors and atexit handlers, as a forked child of
                // a Rust program should.
                unsafe { libc::_exit(0) }
            }
            Ok(ForkResult::Parent { child }) => {
                let _ = nix::sys::wait::waitpid(child, None);
            }
            Err(_) => return watch.delete_link(link.index, name),
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            match watch.link_by_name(name)? {
                Some(l) if l.index == link.index => {}
                _ => return Ok(()),
            }
            if std::time::Instant::now() >= deadline {
                // The detached process did not get to it: delete it here.
                return watch.delete_link(link.index, name);
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    /// Opens a netlink socket bound to this namespace (usable from any thread afterwards).
    pub fn netlink(&self) -> Result<Netlink> {
        let _guard = self.enter()?;
        Netlink::open()
    }

    /// Creates a new namespace held by a bind mount at `path`, with loopback up and the
    /// given sysctls (`/proc/sys` paths) written inside it, and returns it with a netlink
    /// socket opened inside it.
    pub fn create(path: impl AsRef<Path>, sysctls: &[(&str, &str)]) -> Result<(Netns, Netlink)> {
        let path = path.as_ref();
        prepare_mount_point(path)?;
        let original = Netns::current()?;
        if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
            let _ = fs::remove_file(path);
            return Err(nix_error(path, e));
        }
        let guard = NetnsGuard { original };
        let made = (|| {
            mount(
                Some(THREAD_NETNS),
                path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| nix_error(path, e))?;
            for (key, value) in sysctls {
                crate::sysctl::set(key, value)?;
            }
            let mut netlink = Netlink::open()?;
            netlink.set_up(1, "lo")?;
            let netns = Netns::open(path)?;
            Ok((netns, netlink))
        })();
        drop(guard);
        if made.is_err() {
            let _ = Netns::remove(path);
        }
        made
    }

    /// Unmounts and removes a namespace's bind mount. The kernel frees the namespace (and
    /// the veth pairs in it) once its last user is gone. Missing paths are fine.
    pub fn remove(path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(nix_error(path, e)),
        }
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(netns_error(path, e)),
        }
    }

    /// Whether `path` is a live namespace mount (not just a leftover empty file).
    /// The identity (device, inode) of the namespace at `path` (a mount or
    /// `/proc/PID/ns/net`), without keeping it open; an error when `path` is not a
    /// network namespace.
    pub fn identity(path: impl AsRef<Path>) -> Result<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let path = path.as_ref();
        if !Netns::is_mounted(path) {
            return Err(netns_error(
                path,
                io::Error::new(io::ErrorKind::InvalidInput, "not a network namespace"),
            ));
        }
        let meta = fs::metadata(path).map_err(|e| netns_error(path, e))?;
        Ok((meta.dev(), meta.ino()))
    }

    pub fn is_mounted(path: impl AsRef<Path>) -> bool {
        const NSFS_MAGIC: i64 = 0x6e73_6673;
        match nix::sys::statfs::statfs(path.as_ref()) {
            Ok(st) => st.filesystem_type().0 == NSFS_MAGIC,
            Err(_) => false,
        }
    }
}

fn prepare_mount_point(path: &Path) -> Result<()> {
    if Netns::is_mounted(path) {
        return Err(netns_error(
            path,
            io::Error::from_raw_os_error(libc::EEXIST),
        ));
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| netns_error(path, e))?;
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o444)
        .open(path)
        .map_err(|e| netns_error(path, e))?;
    Ok(())
}

/// Restores the thread's original namespace when dropped.
#[derive(Debug)]
pub struct NetnsGuard {
    original: Netns,
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(self.original.file.as_fd(), CloneFlags::CLONE_NEWNET) {
            // A thread left in the wrong namespace would silently configure the wrong
            // host: stopping is the only safe answer.
            eprintln!("fatal: cannot return to the original network namespace: {e}");
            std::process::abort();
        }
    }
}
