//! host-local's on-disk layout, kept exactly so that either plugin can take over a node the
//! other ran: `<dataDir>/<network>/<ip>` holding `<containerID>\r\n<ifname>` per reserved
//! address, `last_reserved_ip.<set>` per range set, and a `lock` file (flock) held for
//! every operation.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use crate::spec::{CniError, Code, Result};

const LINE_BREAK: &str = "\r\n";
const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
/// netd-ipam's own index, `<dir>/netd-index/<containerID>@<ifname>` listing the addresses
/// an attachment holds, so that ADD and DEL do not read every reservation. host-local
/// ignores it (its walks read the files but never match them); entries are checked against
/// the reservation files before use, so one left stale by host-local is harmless.
const INDEX_DIR: &str = "netd-index";
/// A runtime gives up on a plugin after a while; so does the wait for the lock.
const LOCK_WAIT: Duration = Duration::from_secs(20);

/// The store of one network, locked while this lives.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub container_id: String,
    /// Empty in files written by old host-local versions (id only).
    pub ifname: String,
}

fn io_error(what: &str, path: &Path, e: impl std::fmt::Display) -> CniError {
    CniError::io(format!("{what} {}: {e}", path.display()))
}

impl Store {
    /// Opens (creating) `<data_dir>/<network>` and takes its lock.
    pub fn open(data_dir: &Path, network: &str) -> Result<Store> {
        if network.is_empty() || network.contains('/') || network == "." || network == ".." {
            return Err(CniError::config(format!(
                "name: {network:?} cannot name a directory"
            )));
        }
        let dir = data_dir.join(network);
        fs::create_dir_all(&dir).map_err(|e| io_error("cannot create", &dir, e))?;
        let lock_path = dir.join("lock");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .open(&lock_path)
            .map_err(|e| io_error("cannot open", &lock_path, e))?;
        let deadline = Instant::now() + LOCK_WAIT;
        let lock = loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => break lock,
                Err((back, nix::errno::Errno::EWOULDBLOCK | nix::errno::Errno::EINTR)) => {
                    if Instant::now() > deadline {
                        return Err(CniError::new(
                            Code::TryAgainLater,
                            format!("{} is locked by another operation", lock_path.display()),
                        ));
                    }
                    file = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err((_, e)) => return Err(io_error("cannot lock", &lock_path, e)),
            }
        };
        Ok(Store { dir, _lock: lock })
    }

    /// Reserves `ip` for the holder; false if someone has it.
    pub fn reserve(&self, ip: IpAddr, holder: &Holder, set: usize) -> Result<bool> {
        let path = self.dir.join(ip.to_string());
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
        {
            Ok(mut file) => {
                let content = format!("{}{LINE_BREAK}{}", holder.container_id, holder.ifname);
                if let Err(e) = file.write_all(content.as_bytes()) {
                    let _ = fs::remove_file(&path);
                    return Err(io_error("cannot write", &path, e));
                }
                let last = self.dir.join(format!("{LAST_RESERVED_PREFIX}{set}"));
                fs::write(&last, ip.to_string()).map_err(|e| io_error("cannot write", &last, e))?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(io_error("cannot create", &path, e)),
        }
    }

    /// The address reserved last in a range set, where the next search starts.
    pub fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        fs::read_to_string(self.dir.join(format!("{LAST_RESERVED_PREFIX}{set}")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Every reservation: (address, holder).
    pub fn reservations(&self) -> Result<Vec<(IpAddr, Holder)>> {
        let entries = fs::read_dir(&self.dir).map_err(|e| io_error("cannot read", &self.dir, e))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(ip) = name.to_str().and_then(|n| n.parse::<IpAddr>().ok()) else {
                continue;
            };
            let Ok(text) = fs::read_to_string(entry.path()) else {
                continue;
            };
            let text = text.trim();
            let (container_id, ifname) = match text.split_once(LINE_BREAK) {
                Some((id, ifname)) => (id.trim(), ifname.trim()),
                None => (text, ""),
            };
            out.push((
                ip,
                Holder {
                    container_id: container_id.to_string(),
                    ifname: ifname.to_string(),
                },
            ));
        }
        Ok(out)
    }

    fn index_path(&self, holder: &Holder) -> PathBuf {
        self.dir
            .join(INDEX_DIR)
            .join(format!("{}@{}", holder.container_id, holder.ifname))
    }

    /// Records what an attachment holds in the index.
    pub fn record(&self, holder: &Holder, ips: &[IpAddr]) -> Result<()> {
        let path = self.index_path(holder);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
        }
        let text: String = ips.iter().map(|ip| format!("{ip}\n")).collect();
        fs::write(&path, text).map_err(|e| io_error("cannot write", &path, e))
    }

    /// Drops an attachment's index entry.
    pub fn forget(&self, holder: &Holder) -> Result<()> {
        let path = self.index_path(holder);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_error("cannot remove", &path, e))
            }
            _ => Ok(()),
        }
    }

    /// What the index says an attachment holds, each checked against its reservation
    /// file; `None` without an index entry.
    pub fn indexed(&self, holder: &Holder) -> Option<Vec<IpAddr>> {
        let text = fs::read_to_string(self.index_path(holder)).ok()?;
        let expected = format!("{}{LINE_BREAK}{}", holder.container_id, holder.ifname);
        Some(
            text.lines()
                .filter_map(|l| l.trim().parse::<IpAddr>().ok())
                .filter(|ip| {
                    fs::read_to_string(self.dir.join(ip.to_string()))
                        .is_ok_and(|owner| owner.trim() == expected)
                })
                .collect(),
        )
    }

    /// The addresses a container's interface holds: from the index, or by reading every
    /// reservation (attachments made by host-local).
    pub fn held_by(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
        let holder = Holder {
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
        };
        if let Some(ips) = self.indexed(&holder) {
            return Ok(ips);
        }
        self.scan_held_by(container_id, ifname)
    }

    fn scan_held_by(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
        Ok(self
            .reservations()?
            .into_iter()
            .filter(|(_, h)| {
                h.container_id == container_id && (h.ifname == ifname || h.ifname.is_empty())
            })
            .map(|(ip, _)| ip)
            .collect())
    }

    pub fn release(&self, ip: IpAddr) -> Result<()> {
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("cannot remove", &path, e)),
        }
    }
}
