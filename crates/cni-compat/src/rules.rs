//! Firewall rules of attachments, shared by ipMasq and portmap: appended with one
//! `iptables-restore` per ADD, tagged with a comment naming the network and container,
//! and deleted with [`linkd::TaggedRules`] (by handle in one nf_tables transaction, or
//! from `iptables-save` where iptables is the legacy backend).
//!
//! On nf_tables, ADD learns the new rules' handles from the kernel's announcements and
//! remembers them under `/run/netd-cni/handles/<netns inode>/` (see [`crate::run_dir`]),
//! so DEL needs no dump of a chain that holds every attachment's rules; each remembered
//! handle is checked to still carry the attachment's comment before it is deleted, and a
//! dump is the fallback.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use linkd::{Firewall, Tag};
use nix::fcntl::{Flock, FlockArg};

use crate::spec::{CniError, Result};

/// The comment that ties a rule to an attachment.
pub use bridge_driver::cni_rules::comment;

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

/// Held while rules are checked and changed.
#[derive(Debug)]
pub struct Lock(#[allow(dead_code)] Flock<File>);

/// Serialises the check-then-create of shared chains between concurrent plugins.
fn lock(dir: &Path) -> Result<Lock> {
    fs::create_dir_all(dir)
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
fn handles_path(run_dir: &Path, chain: &str, network: &str, container_id: &str) -> Option<PathBuf> {
    let inode = linkd::Netns::current().ok()?.inode().ok()?;
    Some(
        run_dir
            .join("handles")
            .join(inode.to_string())
            .join(format!(
                "{chain}-{}-{container_id}",
                bridge_driver::names::short_hash(network)
            )),
    )
}

/// Appends an attachment's rules: under the lock, `render` gets the rules to ask which
/// shared chains exist (declaring an existing chain would flush it) and returns the restore
/// text, which must only append. The handles of the `expected` rules it adds to `chain` are
/// remembered for DEL.
pub fn append(
    rules: &mut dyn Firewall,
    run_dir: &Path,
    chain: &str,
    network: &str,
    container_id: &str,
    expected: usize,
    render: impl FnOnce(&mut dyn Firewall) -> Result<String>,
) -> Result<()> {
    let _lock = lock(run_dir)?;
    let text = render(rules)?;
    let comment = comment(network, container_id);
    let tag = Tag {
        table: "nat",
        chain,
        comment: &comment,
    };
    let handles = rules.append_tagged(&text, &tag, expected)?;
    if let (Some(handles), Some(path)) =
        (handles, handles_path(run_dir, chain, network, container_id))
    {
        // Best effort: without it, DEL finds the rules by their comment.
        let text: String = handles.iter().map(|h| format!("{h}\n")).collect();
        let _ = path
            .parent()
            .map(fs::create_dir_all)
            .and_then(|r| r.ok())
            .map(|()| fs::write(&path, text));
    }
    Ok(())
}

/// Deletes an attachment's rules in `chain` (none is fine). Closing the firewall's socket
/// afterwards waits for the deleted rules' RCU grace period, so the caller decides when.
pub fn delete(
    rules: &mut dyn Firewall,
    run_dir: &Path,
    chain: &str,
    network: &str,
    container_id: &str,
) -> Result<()> {
    let remembered: Option<Vec<u64>> = handles_path(run_dir, chain, network, container_id)
        .and_then(|p| {
            let text = fs::read_to_string(&p).ok();
            let _ = fs::remove_file(&p);
            text.map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        });
    let comment = comment(network, container_id);
    let tag = Tag {
        table: "nat",
        chain,
        comment: &comment,
    };
    rules.delete_tagged(&tag, remembered.as_deref())?;
    Ok(())
}

/// How many rules an attachment has in `chain`.
pub fn present(
    rules: &mut dyn Firewall,
    chain: &str,
    network: &str,
    container_id: &str,
) -> Result<usize> {
    let comment = comment(network, container_id);
    let tag = Tag {
        table: "nat",
        chain,
        comment: &comment,
    };
    Ok(rules.count_tagged(&tag)?)
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
