//! Firewall rules of attachments, shared by ipMasq and portmap: appended with one
//! `iptables-restore` per ADD, tagged with a comment naming the network and container,
//! and deleted by handle with one nf_tables transaction per DEL.
//!
//! ADD learns the new rules' handles from nf_tables' announcements and remembers them
//! under `/run/netd-cni/handles/<netns inode>/` (`$NETD_CNI_RUN_DIR` instead of
//! `/run/netd-cni` if set), so DEL needs no dump of a chain that
//! holds every attachment's rules; each remembered handle is checked to still carry the
//! attachment's comment before it is deleted, and a dump is the fallback.

use std::fs::{self, File, OpenOptions};
use std::path::PathBuf;

use linkd::nftables::Nftables;
use nix::fcntl::{Flock, FlockArg};

use crate::spec::{CniError, Result};

/// The comment that ties a rule to an attachment. Both parts are checked identifiers
/// (letters, digits, `_ . -`), so the text needs no escaping inside its quotes.
pub fn comment(network: &str, container_id: &str) -> String {
    format!("netd-cni name: {network} id: {container_id}")
}

/// The kernel keeps at most this many bytes of a rule comment.
const COMMENT_MAX: usize = 255;

/// Refuses, before anything is changed, an attachment whose comment iptables would refuse.
pub fn check_comment(network: &str, container_id: &str) -> Result<()> {
    let len = comment(network, container_id).len();
    if len > COMMENT_MAX {
        return Err(CniError::config(format!(
            "name and CNI_CONTAINERID are too long together for a rule comment ({len} > {COMMENT_MAX} bytes)"
        )));
    }
    Ok(())
}

/// The comment as the kernel stores it (NUL-terminated), so one id never matches a longer
/// one.
pub fn marker(network: &str, container_id: &str) -> Vec<u8> {
    let mut bytes = comment(network, container_id).into_bytes();
    bytes.push(0);
    bytes
}

/// Held while rules are checked and changed.
#[derive(Debug)]
pub struct Lock(#[allow(dead_code)] Flock<File>);

/// Serialises the check-then-create of shared chains between concurrent plugins.
fn lock() -> Result<Lock> {
    let dir = crate::run_dir();
    fs::create_dir_all(&dir)
        .map_err(|e| CniError::io(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join("lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| CniError::io(format!("cannot open {}: {e}", path.display())))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map(Lock)
        .map_err(|(_, e)| CniError::io(format!("cannot lock {}: {e}", path.display())))
}

/// Where an attachment's handles in `chain` are remembered (per network namespace: the
/// handles are those of its tables).
fn handles_path(chain: &str, network: &str, container_id: &str) -> Option<PathBuf> {
    let inode = linkd::Netns::current().ok()?.inode().ok()?;
    Some(
        crate::run_dir()
            .join("handles")
            .join(inode.to_string())
            .join(format!(
                "{chain}-{}-{container_id}",
                bridge_driver::names::short_hash(network)
            )),
    )
}

/// Appends an attachment's rules: under the lock, `render` gets a socket to ask which
/// shared chains exist (declaring an existing chain would flush it) and returns the restore
/// text, which must only append. The handles of the `expected` rules it adds to `chain` are
/// remembered for DEL.
pub fn append(
    chain: &str,
    network: &str,
    container_id: &str,
    expected: usize,
    render: impl FnOnce(&mut Nftables) -> Result<String>,
) -> Result<()> {
    let _lock = lock()?;
    let text = render(&mut Nftables::open()?)?;
    let mut listener = Nftables::listen().ok();
    linkd::Iptables::default().restore(&text)?;
    let marker = marker(network, container_id);
    let announced = listener
        .as_mut()
        .and_then(|l| l.announced_rules("nat", chain, &marker));
    if let (Some(handles), Some(path)) = (announced, handles_path(chain, network, container_id)) {
        if handles.len() == expected {
            // Best effort: without it, DEL dumps the chain.
            let text: String = handles.iter().map(|h| format!("{h}\n")).collect();
            let _ = path
                .parent()
                .map(fs::create_dir_all)
                .and_then(|r| r.ok())
                .map(|()| fs::write(&path, text));
        }
    }
    Ok(())
}

/// Deletes an attachment's rules in `chain` (none is fine). Returns the socket: closing it
/// waits for the deleted rules' RCU grace period, so the caller decides when.
pub fn delete(chain: &str, network: &str, container_id: &str) -> Result<Nftables> {
    let mut nft = Nftables::open()?;
    let marker = marker(network, container_id);
    let remembered: Option<Vec<u64>> = handles_path(chain, network, container_id).and_then(|p| {
        let text = fs::read_to_string(&p).ok();
        let _ = fs::remove_file(&p);
        text.map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
    });
    let mut handles = Vec::new();
    if let Some(list) = remembered {
        for handle in &list {
            if nft.rule_has("nat", chain, *handle, &marker)? {
                handles.push(*handle);
            }
        }
        if handles.len() != list.len() {
            handles.clear();
        }
    }
    if handles.is_empty() {
        handles = nft.rules_containing("nat", chain, &marker)?;
    }
    nft.delete_rules("nat", chain, &handles)?;
    Ok(nft)
}

/// Whether an attachment has rules in `chain`.
pub fn present(chain: &str, network: &str, container_id: &str) -> Result<usize> {
    let mut nft = Nftables::open()?;
    Ok(nft
        .rules_containing("nat", chain, &marker(network, container_id))?
        .len())
}

/// The container ids of a network's attachments that have rules in `chain`, read from
/// `iptables-save` output (for GC, which is rare enough for a table fetch).
pub fn attachments_in(saved: &str, chain: &str, network: &str) -> Vec<String> {
    let prefix = format!("\"netd-cni name: {network} id: ");
    let mut ids: Vec<String> = saved
        .lines()
        .filter(|l| l.starts_with(&format!("-A {chain} ")))
        .filter_map(|l| l.split(&prefix).nth(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect();
    ids.sort();
    ids.dedup();
    ids
}
