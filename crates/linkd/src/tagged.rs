//! Rules that belong to one owner (a sandbox, a CNI attachment), told apart from everyone
//! else's in a shared chain by a comment, on whichever backend iptables writes to.
//!
//! Appending is one `iptables-restore` transaction. Removing is where the backends differ:
//! - nf_tables (`iptables-nft`): the rules' handles are learned when they are added (from
//!   the kernel's announcements) or found by the comment, and deleted in one nf_tables
//!   transaction, without the full-table fetch `iptables-nft` itself would make;
//! - legacy (`iptables-legacy`, the x_tables kernel API): there are no handles, so the
//!   owner's rules are read from `iptables-save` and deleted with one `iptables-restore`.
//!
//! Where the nf_tables path fails (no socket, a kernel error), the `iptables-save` path is
//! used on nf_tables too, so removal never silently finds nothing.

use crate::error::Result;
use crate::firewall::{Backend, Firewall, Iptables};
use crate::nftables::Nftables;

/// Which rules: the owner's, by comment, in one chain of one table.
#[derive(Debug, Clone, Copy)]
pub struct Tag<'a> {
    pub table: &'a str,
    pub chain: &'a str,
    pub comment: &'a str,
}

impl Tag<'_> {
    /// The comment as the kernel stores it in a rule (NUL-terminated), so that one owner's
    /// comment never matches a longer one.
    fn marker(&self) -> Vec<u8> {
        let mut bytes = self.comment.as_bytes().to_vec();
        bytes.push(0);
        bytes
    }

    /// Whether an `iptables-save` line is one of the owner's rules.
    pub(crate) fn owns(&self, line: &str) -> bool {
        let Some(rest) = line.strip_prefix("-A ") else {
            return false;
        };
        rest.starts_with(&format!("{} ", self.chain))
            && (rest.contains(&format!("--comment \"{}\" ", self.comment))
                || rest.ends_with(&format!("--comment \"{}\"", self.comment))
                || rest.contains(&format!("--comment {} ", self.comment))
                || rest.ends_with(&format!("--comment {}", self.comment)))
    }
}

/// Tagged rules on one host (the calling thread's network namespace).
#[derive(Debug)]
pub struct TaggedRules {
    iptables: Iptables,
    backend: Backend,
    nft: Option<Nftables>,
    /// Hears the kernel's announcements of new rules. Kept open: closing a netfilter
    /// socket right after a commit waits for the commit's RCU grace period (1-2 ms).
    listener: Option<Nftables>,
}

impl TaggedRules {
    /// For the iptables tools given, on the backend they write to.
    pub fn new(iptables: Iptables) -> Self {
        let backend = iptables.backend();
        TaggedRules {
            iptables,
            backend,
            nft: None,
            listener: None,
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The nf_tables socket, opened on first use and kept: closing one after a deletion
    /// waits for an RCU grace period, while a transaction takes microseconds.
    fn nft(&mut self) -> Result<&mut Nftables> {
        let nft = match self.nft.take() {
            Some(nft) => nft,
            None => Nftables::open()?,
        };
        Ok(self.nft.insert(nft))
    }

    /// Whether `table`/`chain` exists (declaring an existing chain in a restore would flush
    /// it).
    pub fn chain_exists(&mut self, table: &str, chain: &str) -> Result<bool> {
        if self.backend == Backend::Nft {
            if let Ok(exists) = self.nft().and_then(|nft| nft.chain_exists(table, chain)) {
                return Ok(exists);
            }
            self.nft = None;
        }
        let saved = self.iptables.save(table)?;
        let declaration = format!(":{chain} ");
        Ok(saved.lines().any(|l| l.starts_with(&declaration)))
    }

    /// Applies `ruleset` (restore text that only appends), which adds `expected` rules
    /// tagged `tag`. Returns their handles when the kernel announced exactly those
    /// (nf_tables only), for a later [`TaggedRules::delete`].
    pub fn append(
        &mut self,
        ruleset: &str,
        tag: &Tag<'_>,
        expected: usize,
    ) -> Result<Option<Vec<u64>>> {
        if self.backend == Backend::Nft {
            match self.listener.as_mut() {
                Some(listener) => listener.discard_announcements(),
                None => self.listener = Nftables::listen().ok(),
            }
        }
        self.iptables.restore(ruleset)?;
        let announced = self
            .listener
            .as_mut()
            .and_then(|l| l.announced_rules(tag.table, tag.chain, &tag.marker()));
        Ok(announced.filter(|handles| handles.len() == expected))
    }

    /// Deletes every rule tagged `tag` (none is fine) and returns how many there were.
    /// `remembered` handles are used when each still carries the tag.
    pub fn delete(&mut self, tag: &Tag<'_>, remembered: Option<&[u64]>) -> Result<usize> {
        if self.backend == Backend::Nft {
            match self.delete_by_handle(tag, remembered) {
                Ok(count) => return Ok(count),
                // A socket left mid-conversation is not reused.
                Err(_) => self.nft = None,
            }
        }
        let saved = self.iptables.save(tag.table)?;
        let deletions: Vec<String> = saved
            .lines()
            .filter(|l| tag.owns(l))
            .map(|l| format!("-D {}", &l[3..]))
            .collect();
        if deletions.is_empty() {
            return Ok(0);
        }
        let mut text = format!("*{}\n", tag.table);
        for line in &deletions {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str("COMMIT\n");
        self.iptables.restore(&text)?;
        Ok(deletions.len())
    }

    fn delete_by_handle(&mut self, tag: &Tag<'_>, remembered: Option<&[u64]>) -> Result<usize> {
        let marker = tag.marker();
        let nft = self.nft()?;
        let mut handles = Vec::new();
        if let Some(list) = remembered {
            for handle in list {
                if nft.rule_has(tag.table, tag.chain, *handle, &marker)? {
                    handles.push(*handle);
                }
            }
            if handles.len() != list.len() {
                handles.clear();
            }
        }
        if handles.is_empty() {
            handles = nft.rules_containing(tag.table, tag.chain, &marker)?;
        }
        nft.delete_rules(tag.table, tag.chain, &handles)?;
        Ok(handles.len())
    }

    /// How many rules carry `tag`.
    pub fn count(&mut self, tag: &Tag<'_>) -> Result<usize> {
        if self.backend == Backend::Nft {
            let marker = tag.marker();
            if let Ok(found) = self
                .nft()
                .and_then(|nft| nft.rules_containing(tag.table, tag.chain, &marker))
            {
                return Ok(found.len());
            }
            self.nft = None;
        }
        let saved = self.iptables.save(tag.table)?;
        Ok(saved.lines().filter(|l| tag.owns(l)).count())
    }

    /// Lets go of the nf_tables socket without waiting for the grace period of the rules
    /// it deleted (see [`Nftables::close_detached`]; single-threaded processes only).
    pub fn close_detached(self) {
        drop(self.listener);
        if let Some(nft) = self.nft {
            nft.close_detached();
        }
    }
}

impl Firewall for TaggedRules {
    fn restore(&mut self, ruleset: &str) -> Result<()> {
        self.iptables.restore(ruleset)
    }

    fn save(&mut self, table: &str) -> Result<String> {
        self.iptables.save(table)
    }

    fn chain_exists(&mut self, table: &str, chain: &str) -> Result<bool> {
        TaggedRules::chain_exists(self, table, chain)
    }

    fn append_tagged(
        &mut self,
        ruleset: &str,
        tag: &Tag<'_>,
        expected: usize,
    ) -> Result<Option<Vec<u64>>> {
        self.append(ruleset, tag, expected)
    }

    fn delete_tagged(&mut self, tag: &Tag<'_>, remembered: Option<&[u64]>) -> Result<usize> {
        self.delete(tag, remembered)
    }

    fn count_tagged(&mut self, tag: &Tag<'_>) -> Result<usize> {
        self.count(tag)
    }

    fn sets_restore(&mut self, text: &str) -> Result<()> {
        crate::Ipset::default().restore(text)
    }

    fn sets_change(&mut self, changes: &[crate::ipset::MemberChange]) -> Result<()> {
        crate::ipset::change_members(changes)
    }

    fn sets_save(&mut self) -> Result<String> {
        crate::Ipset::default().save()
    }

    fn flush_udp_conntrack(&mut self, port: u16) {
        crate::conntrack::flush_udp_to_port(port);
    }

    fn release(self: Box<Self>) {
        (*self).close_detached();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owners_lines_are_told_by_chain_and_whole_comment() {
        let tag = Tag {
            table: "nat",
            chain: "NETD-CNI-HOSTPORT-DNAT",
            comment: "netd-cni name: n id: c1",
        };
        let ours = "-A NETD-CNI-HOSTPORT-DNAT -p tcp -m tcp --dport 80 -m comment --comment \"netd-cni name: n id: c1\" -j DNAT --to-destination 10.1.0.2:80";
        assert!(tag.owns(ours));
        assert!(!tag.owns(&ours.replace("id: c1", "id: c10")));
        assert!(!tag.owns(&ours.replace("-A NETD-CNI-HOSTPORT-DNAT", "-A OTHER")));
        let bare = Tag {
            comment: "netd:abc",
            ..tag
        };
        assert!(bare.owns("-A NETD-CNI-HOSTPORT-DNAT -m comment --comment netd:abc -j ACCEPT"));
        assert!(!bare.owns("-A NETD-CNI-HOSTPORT-DNAT -m comment --comment netd:abcd -j ACCEPT"));
    }
}
