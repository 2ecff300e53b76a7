//! host-local's on-disk layout, kept exactly so that either plugin can take over a node the
//! other ran, and so that operators who count and read those files see what they expect:
//! `<dataDir>/<network>/<ip>` holding `<containerID>\r\n<ifname>` per reserved address,
//! `last_reserved_ip.<set>` per range set, and a `lock` file (flock) held for every
//! operation. Nothing else is written there.
//!
//! netd-ipam's index of who holds what, which keeps ADD and DEL from reading every
//! reservation, lives outside the data directory, under the plugins' run directory
//! (`/run/netd-cni/ipam/<hash of the network directory>/`, see [`crate::run_dir`]): one
//! file per attachment, `<containerID>@<ifname>`, listing its addresses, and a `stamp`
//! naming the network directory (device, inode, modification time) as netd-ipam last left
//! it. The index is trusted only while the directory still carries that stamp; anything
//! else that changed the directory (host-local, an operator, a crash half-way, a reboot
//! that emptied /run) makes the next operation rebuild it from the reservation files.
//! After its own changes netd-ipam sets the directory's mtime one nanosecond back and
//! stamps that value, so that a change made later in the same clock tick still differs.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use nix::fcntl::{Flock, FlockArg};

use crate::spec::{CniError, Code, Result};

const LINE_BREAK: &str = "\r\n";
const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
const STAMP: &str = "stamp";
/// A runtime gives up on a plugin after a while; so does the wait for the lock.
const LOCK_WAIT: Duration = Duration::from_secs(20);

/// The store of one network, locked while this lives.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    index: PathBuf,
    /// Whether the index's stamp was removed for a change not yet stamped again.
    dirty: std::cell::Cell<bool>,
    _lock: Flock<File>,
}

/// Who holds an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub container_id: String,
    /// Empty in files written by old host-local versions (id only).
    pub ifname: String,
}

impl Holder {
    /// The reservation file's content.
    fn content(&self) -> String {
        format!("{}{LINE_BREAK}{}", self.container_id, self.ifname)
    }

    /// The index entry's file name; `None` for holders whose id could not name a file
    /// (written by another program; such attachments are found by a scan).
    fn key(&self) -> Option<String> {
        let id_ok = crate::spec::valid_identifier(&self.container_id);
        let ifname_ok = !self.ifname.contains(['/', '\0']) && self.ifname != "..";
        (id_ok && ifname_ok).then(|| format!("{}@{}", self.container_id, self.ifname))
    }
}

fn io_error(what: &str, path: &Path, e: impl std::fmt::Display) -> CniError {
    CniError::io(format!("{what} {}: {e}", path.display()))
}

/// What identifies the state of a network directory: any file created or removed in it
/// changes the modification time.
fn stamp_of(dir: &Path) -> Result<String> {
    let meta = fs::metadata(dir).map_err(|e| io_error("cannot stat", dir, e))?;
    Ok(format!(
        "{} {} {} {}",
        meta.dev(),
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec()
    ))
}

impl Store {
    /// Opens (creating) `<data_dir>/<network>`, takes its lock, and makes sure the index
    /// (under the plugins' run directory) agrees with the reservation files.
    pub fn open(data_dir: &Path, network: &str) -> Result<Store> {
        Self::open_in(data_dir, network, &crate::run_dir())
    }

    /// [`Store::open`] with the index under `run_dir`.
    pub fn open_in(data_dir: &Path, network: &str, run_dir: &Path) -> Result<Store> {
        crate::spec::validate_name(network)?;
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
        let index = run_dir
            .join("ipam")
            .join(bridge_driver::names::short_hash(&dir.to_string_lossy()));
        let store = Store {
            dir,
            index,
            dirty: std::cell::Cell::new(false),
            _lock: lock,
        };
        if !store.index_agrees()? {
            store.rebuild_index()?;
        }
        Ok(store)
    }

    /// The directory of the index (for tests and operators).
    pub fn index_dir(&self) -> &Path {
        &self.index
    }

    fn index_agrees(&self) -> Result<bool> {
        let recorded = fs::read_to_string(self.index.join(STAMP)).unwrap_or_default();
        Ok(recorded.lines().next() == Some(stamp_of(&self.dir)?.as_str()))
    }

    /// Writes the index anew from the reservation files.
    fn rebuild_index(&self) -> Result<()> {
        let mut held: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
        for (ip, holder) in self.reservations()? {
            if let Some(key) = holder.key() {
                held.entry(key).or_default().push(ip);
            }
        }
        match fs::remove_dir_all(&self.index) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_error("cannot remove", &self.index, e));
            }
            _ => {}
        }
        fs::create_dir_all(&self.index).map_err(|e| io_error("cannot create", &self.index, e))?;
        for (key, ips) in &held {
            write_entry(&self.index.join(key), ips)?;
        }
        self.dirty.set(true);
        self.stamp()
    }

    /// Removes the stamp before the first change, so that a crash before [`Store::stamp`]
    /// leaves an index that the next operation rebuilds.
    fn changing(&self) -> Result<()> {
        if !self.dirty.replace(true) {
            let path = self.index.join(STAMP);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_error("cannot remove", &path, e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Records that the index agrees with the directory as it is now: the directory's
    /// mtime is set one nanosecond back, so that any later change (even within the same
    /// clock tick) gives it a time that differs from the stamp.
    pub fn stamp(&self) -> Result<()> {
        if !self.dirty.get() {
            return Ok(());
        }
        let modified = fs::metadata(&self.dir)
            .and_then(|m| m.modified())
            .map_err(|e| io_error("cannot stat", &self.dir, e))?;
        let back = modified
            .checked_sub(Duration::from_nanos(1))
            .unwrap_or(SystemTime::UNIX_EPOCH);
        File::open(&self.dir)
            .and_then(|d| d.set_times(fs::FileTimes::new().set_modified(back)))
            .map_err(|e| io_error("cannot set the time of", &self.dir, e))?;
        let text = format!("{}\n{}\n", stamp_of(&self.dir)?, self.dir.display());
        let path = self.index.join(STAMP);
        fs::write(&path, text).map_err(|e| io_error("cannot write", &path, e))?;
        self.dirty.set(false);
        Ok(())
    }

    /// Reserves `ip` for the holder; false if someone has it.
    pub fn reserve(&self, ip: IpAddr, holder: &Holder, set: usize) -> Result<bool> {
        self.changing()?;
        let path = self.dir.join(ip.to_string());
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
        {
            Ok(mut file) => {
                if let Err(e) = file.write_all(holder.content().as_bytes()) {
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

    /// The reserved addresses, from the file names alone (no file is read).
    pub fn reserved(&self) -> Result<std::collections::HashSet<IpAddr>> {
        let entries = fs::read_dir(&self.dir).map_err(|e| io_error("cannot read", &self.dir, e))?;
        Ok(entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect())
    }

    /// Every reservation: (address, holder), read from the files.
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

    /// Records what an attachment holds in the index.
    pub fn record(&self, holder: &Holder, ips: &[IpAddr]) -> Result<()> {
        let Some(key) = holder.key() else {
            return Ok(());
        };
        self.changing()?;
        write_entry(&self.index.join(key), ips)
    }

    /// Drops an attachment's index entries (also the id-only one of old host-local files).
    pub fn forget(&self, holder: &Holder) -> Result<()> {
        for key in self.keys(holder) {
            self.changing()?;
            let path = self.index.join(key);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_error("cannot remove", &path, e));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The index entries that can name a holder's addresses: its own, and the id-only one.
    fn keys(&self, holder: &Holder) -> Vec<String> {
        let id_only = Holder {
            container_id: holder.container_id.clone(),
            ifname: String::new(),
        };
        let mut keys: Vec<String> = [holder.key(), id_only.key()]
            .into_iter()
            .flatten()
            .collect();
        keys.dedup();
        keys
    }

    /// The addresses a container's interface holds (those of old host-local files that
    /// name only the container included), from the index, each checked against its
    /// reservation file.
    pub fn held_by(&self, container_id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
        let holder = Holder {
            container_id: container_id.to_string(),
            ifname: ifname.to_string(),
        };
        let expected = [holder.content(), container_id.to_string()];
        let mut out = Vec::new();
        for key in self.keys(&holder) {
            let Ok(text) = fs::read_to_string(self.index.join(key)) else {
                continue;
            };
            for ip in text.lines().filter_map(|l| l.trim().parse::<IpAddr>().ok()) {
                let owner = fs::read_to_string(self.dir.join(ip.to_string())).unwrap_or_default();
                if expected.contains(&owner.trim().to_string()) && !out.contains(&ip) {
                    out.push(ip);
                }
            }
        }
        Ok(out)
    }

    pub fn release(&self, ip: IpAddr) -> Result<()> {
        self.changing()?;
        let path = self.dir.join(ip.to_string());
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("cannot remove", &path, e)),
        }
    }
}

fn write_entry(path: &Path, ips: &[IpAddr]) -> Result<()> {
    let text: String = ips.iter().map(|ip| format!("{ip}\n")).collect();
    fs::write(path, text).map_err(|e| io_error("cannot write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(id: &str) -> Holder {
        Holder {
            container_id: id.into(),
            ifname: "eth0".into(),
        }
    }

    /// A data directory and a run directory.
    fn setup() -> (tempfile::TempDir, tempfile::TempDir) {
        (
            tempfile::tempdir().expect("tempdir"),
            tempfile::tempdir().expect("tempdir"),
        )
    }

    #[test]
    fn only_host_local_files_in_the_network_directory() {
        let (data, run) = setup();
        let store = Store::open_in(data.path(), "net", run.path()).expect("open");
        let ip: IpAddr = "10.1.0.2".parse().expect("ip");
        assert!(store.reserve(ip, &holder("a"), 0).expect("reserve"));
        store.record(&holder("a"), &[ip]).expect("record");
        store.stamp().expect("stamp");
        let mut names: Vec<String> = fs::read_dir(data.path().join("net"))
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["10.1.0.2", "last_reserved_ip.0", "lock"]);
        assert!(!store.index_dir().starts_with(data.path()));
        assert_eq!(store.held_by("a", "eth0").expect("held"), [ip]);
    }

    #[test]
    fn an_index_that_disagrees_is_rebuilt() {
        let (data, run) = setup();
        let ip: IpAddr = "10.1.0.2".parse().expect("ip");
        let index = {
            let store = Store::open_in(data.path(), "net", run.path()).expect("open");
            store.reserve(ip, &holder("a"), 0).expect("reserve");
            store.record(&holder("a"), &[ip]).expect("record");
            store.stamp().expect("stamp");
            store.index_dir().to_path_buf()
        };
        // Another program reserves an address right away (host-local does not know the
        // index): the stamp no longer matches, and the next open learns of it.
        fs::write(data.path().join("net/10.1.0.3"), "b\r\neth0").expect("write");
        let store = Store::open_in(data.path(), "net", run.path()).expect("open");
        assert_eq!(
            store.held_by("b", "eth0").expect("held"),
            ["10.1.0.3".parse::<IpAddr>().expect("ip")]
        );
        drop(store);
        fs::remove_dir_all(&index).expect("rm index");
        let store = Store::open_in(data.path(), "net", run.path()).expect("open");
        assert_eq!(store.held_by("a", "eth0").expect("held"), [ip]);
        assert!(index.join("a@eth0").exists() && index.join("stamp").exists());
    }

    #[test]
    fn an_unstamped_change_is_not_trusted() {
        let (data, run) = setup();
        {
            let store = Store::open_in(data.path(), "net", run.path()).expect("open");
            let ip: IpAddr = "10.1.0.2".parse().expect("ip");
            store.reserve(ip, &holder("a"), 0).expect("reserve");
            // A crash before record/stamp: the index does not know of the reservation.
        }
        let store = Store::open_in(data.path(), "net", run.path()).expect("open");
        assert_eq!(store.held_by("a", "eth0").expect("held").len(), 1);
    }
}
