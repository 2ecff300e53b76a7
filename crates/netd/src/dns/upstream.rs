//! The host's resolvers, from its resolv.conf, re-read when the file changes.
//!
//! The file is checked by its identity and times (`stat`, which follows a symlink), so an
//! edit in place, a replacement by rename and a symlink pointed elsewhere are all seen.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;

/// The host resolv.conf's nameservers, kept current by `refresh`.
#[derive(Debug)]
pub struct HostResolvers {
    path: PathBuf,
    servers: ArcSwap<Vec<SocketAddr>>,
    seen: std::sync::Mutex<Option<FileStamp>>,
}

/// What tells one version of a file from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

impl HostResolvers {
    pub fn new(path: PathBuf) -> HostResolvers {
        let resolvers = HostResolvers {
            path,
            servers: ArcSwap::from_pointee(Vec::new()),
            seen: std::sync::Mutex::new(None),
        };
        resolvers.refresh();
        resolvers
    }

    /// The current list (empty when the file is missing or names none).
    pub fn servers(&self) -> Arc<Vec<SocketAddr>> {
        self.servers.load_full()
    }

    /// Re-reads the file if it changed since the last look. Returns whether it did.
    pub fn refresh(&self) -> bool {
        let now = stamp(&self.path);
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        if *seen == now && now.is_some() {
            return false;
        }
        *seen = now;
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        let servers = nameservers(&text);
        let changed = **self.servers.load() != servers;
        if changed {
            tracing::info!(
                "upstream resolvers from {}: {}",
                self.path.display(),
                if servers.is_empty() {
                    "none".to_string()
                } else {
                    servers
                        .iter()
                        .map(|s| s.ip().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            );
            self.servers.store(Arc::new(servers));
        }
        changed
    }
}

/// The `nameserver` addresses of a resolv.conf, in order, on port 53. Zone ids
/// (`fe80::1%eth0`) are dropped with the address: a link-local resolver of the host's
/// cannot be told apart without them.
pub fn nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|word| word.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Leaves out resolvers that are netd's own listeners: forwarding to one would loop.
pub fn without_own(servers: &[SocketAddr], own: impl Fn(Ipv4Addr) -> bool) -> Vec<SocketAddr> {
    servers
        .iter()
        .filter(|s| match s.ip() {
            IpAddr::V4(ip) => !(own(ip) && s.port() == 53),
            IpAddr::V6(_) => true,
        })
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_in_order_skipping_junk() {
        let text = "# c\nnameserver 10.0.0.2\nsearch x\nnameserver fe80::1%eth0\n\
                    nameserver bogus\nnameserver  2001:db8::53 \noptions ndots:2\n";
        let got = nameservers(text);
        let want: Vec<SocketAddr> = vec![
            "10.0.0.2:53".parse().expect("addr"),
            "[2001:db8::53]:53".parse().expect("addr"),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn edits_in_place_and_replacements_are_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 10.0.0.1\n").expect("write");
        let r = HostResolvers::new(path.clone());
        assert_eq!(r.servers()[0].ip().to_string(), "10.0.0.1");
        assert!(!r.refresh());
        // In place, same size: the times change.
        std::fs::write(&path, "nameserver 10.0.0.9\n").expect("write");
        assert!(r.refresh());
        assert_eq!(r.servers()[0].ip().to_string(), "10.0.0.9");
        // Replaced by rename.
        let tmp = dir.path().join("new");
        std::fs::write(&tmp, "nameserver 10.0.0.3\n").expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        assert!(r.refresh());
        assert_eq!(r.servers()[0].ip().to_string(), "10.0.0.3");
        std::fs::remove_file(&path).expect("rm");
        assert!(r.refresh());
        assert!(r.servers().is_empty());
    }
}
