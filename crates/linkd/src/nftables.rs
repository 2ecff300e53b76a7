//! Removing iptables rules through nf_tables netlink, without a full-table fetch.
//!
//! `iptables-nft` (and `nft`) read the whole table before deleting anything, which costs
//! time proportional to every rule on the host (~20 ms at a thousand rules). The kernel
//! itself deletes a rule by handle in microseconds. This module finds the rules of one
//! chain that carry a marker (netd tags each rule with its sandbox's id in a comment, which
//! iptables-nft stores inside the rule's `comment` match) and deletes them by handle, in
//! one nf_tables transaction. Adding rules stays with `iptables-restore`, which is cheap
//! for appends and writes what `iptables-save` reads back.

use std::io;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::error::{LinkdError, Result};
use crate::netlink::kernel_error;
use crate::nfnetlink::{
    error_code, message, messages, put_attr, put_str, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK,
    NLM_F_REQUEST,
};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWRULE: u16 = 6;
/// The multicast group nf_tables announces changes to.
const NFNLGRP_NFTABLES: u32 = 7;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFPROTO_IPV4: u8 = 2;
const NLM_F_DUMP: u16 = 0x300;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// An nf_tables netlink socket (in the calling thread's namespace).
#[derive(Debug)]
pub struct Nftables {
    socket: Socket,
    seq: u32,
    /// Whether this socket deleted rules (then its last close waits, see
    /// [`Nftables::close_detached`]).
    deleted: bool,
}

/// Handles of the rules announced in one datagram (NFT_MSG_NEWRULE, IPv4) in
/// `table`/`chain` whose encoding contains `marker`.
fn new_rules_in(buf: &[u8], table: &str, chain: &str, marker: &[u8]) -> Vec<u64> {
    let nul_terminated = |s: &str| {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        b
    };
    let (table_attr, chain_attr) = (nul_terminated(table), nul_terminated(chain));
    let contains = |msg: &[u8], needle: &[u8]| msg.windows(needle.len()).any(|w| w == needle);
    messages(buf)
        .filter(|(kind, _, msg)| {
            *kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE
                && msg.get(16) == Some(&NFPROTO_IPV4)
                && contains(msg, &table_attr)
                && contains(msg, &chain_attr)
                && contains(msg, marker)
        })
        .filter_map(|(_, _, msg)| rule_handle(msg))
        .collect()
}

/// The rule handle among a rule message's top-level attributes.
fn rule_handle(msg: &[u8]) -> Option<u64> {
    let mut offset = 20; // nlmsghdr + nfgenmsg
    while offset + 4 <= msg.len() {
        let len = u16::from_ne_bytes(msg[offset..offset + 2].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(msg[offset + 2..offset + 4].try_into().ok()?) & NLA_TYPE_MASK;
        if len < 4 || offset + len > msg.len() {
            return None;
        }
        if kind == NFTA_RULE_HANDLE && len == 12 {
            return Some(u64::from_be_bytes(
                msg[offset + 4..offset + 12].try_into().ok()?,
            ));
        }
        offset += (len + 3) & !3;
    }
    None
}

impl Nftables {
    pub fn open() -> Result<Self> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(LinkdError::Socket)?;
        socket.bind_auto().map_err(LinkdError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(LinkdError::Socket)?;
        Ok(Nftables {
            socket,
            seq: 0,
            deleted: false,
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends one nf_tables request (IPv4) for `table`/`name`; returns its sequence number.
    fn send_request(&mut self, msg_type: u16, flags: u16, attrs: &[u8], what: &str) -> Result<u32> {
        let seq = self.next_seq();
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | msg_type;
        let request = message(kind, flags, seq, NFPROTO_IPV4, 0, attrs);
        self.socket
            .send(&request, 0)
            .map_err(|e| kernel_error(what, e))?;
        Ok(seq)
    }

    fn receive(&self, buf: &mut Vec<u8>) -> Result<()> {
        buf.clear();
        buf.reserve(256 * 1024);
        loop {
            match self.socket.recv(buf, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(kernel_error("nftables receive", e)),
            }
        }
    }

    /// A socket that hears about rule changes (the nf_tables multicast group), to learn
    /// the handles of rules another program (`iptables-restore`) adds, without a dump.
    pub fn listen() -> Result<Self> {
        let nft = Self::open()?;
        nft.socket
            .add_membership(NFNLGRP_NFTABLES)
            .map_err(|e| kernel_error("join the nf_tables group", e))?;
        Ok(nft)
    }

    /// Drops the announcements queued so far (a listener kept open between operations
    /// hears everybody's changes).
    pub fn discard_announcements(&mut self) {
        if self.socket.set_non_blocking(true).is_err() {
            return;
        }
        let mut buf = Vec::with_capacity(64 * 1024);
        loop {
            buf.clear();
            match self.socket.recv(&mut buf, 0) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock: nothing left; ENOBUFS: the overflow is over too.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {}
            }
        }
        let _ = self.socket.set_non_blocking(false);
    }

    /// Handles of the rules added to `table`/`chain` (IPv4) since [`Self::listen`] that
    /// contain `marker`, from the announcements queued on this socket. `None` if some were
    /// lost (the socket's buffer overflowed): the caller must then dump the chain.
    pub fn announced_rules(&mut self, table: &str, chain: &str, marker: &[u8]) -> Option<Vec<u64>> {
        self.socket.set_non_blocking(true).ok()?;
        let mut found = Vec::new();
        let mut buf = Vec::new();
        loop {
            buf.clear();
            buf.reserve(256 * 1024);
            match self.socket.recv(&mut buf, 0) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // ENOBUFS: announcements were dropped.
                Err(_) => return None,
            }
            found.extend(new_rules_in(&buf, table, chain, marker));
        }
        let _ = self.socket.set_non_blocking(false);
        Some(found)
    }

    /// Closes the socket without waiting. The kernel makes the last close of a netfilter
    /// socket wait until rules deleted through any socket are freed (an RCU grace period,
    /// ~10 ms); a short-lived process (a CNI plugin) would pay that at exit. Here a
    /// detached grandchild holds the last reference, closes it once this process has let
    /// go, and nobody waits for it.
    ///
    /// Only for single-threaded processes (it forks). If forking fails, the socket is
    /// closed here, waiting.
    pub fn close_detached(self) {
        use nix::unistd::{fork, pipe, read, ForkResult};
        if !self.deleted {
            // Nothing to wait for.
            return;
        }
        let Ok((release_read, release_write)) = pipe() else {
            return;
        };
        // SAFETY: the callers are single-threaded; the children only read, close and
        // exit.
        match unsafe { fork() } {
            Ok(ForkResult::Child) => {
                drop(release_write);
                // Whoever reads this process's output must not wait for the children.
                for fd in 0..3 {
                    // SAFETY: closing the standard descriptors of a child about to exit.
                    unsafe { libc::close(fd) };
                }
                // SAFETY: as above.
                if let Ok(ForkResult::Child) = unsafe { fork() } {
                    // Holds `self.socket` until the original process has closed its copy
                    // (the pipe's write end goes with it), then exits, paying the wait.
                    let mut byte = [0u8; 1];
                    let _ = read(&release_read, &mut byte);
                }
                // SAFETY: _exit skips destructors and atexit handlers, as a forked child
                // of a Rust program should.
                unsafe { libc::_exit(0) }
            }
            Ok(ForkResult::Parent { child }) => {
                let _ = nix::sys::wait::waitpid(child, None);
                drop(release_read);
                drop(self);
                drop(release_write);
            }
            Err(_) => drop(self),
        }
    }

    /// Whether `table`/`chain` (IPv4) exists.
    pub fn chain_exists(&mut self, table: &str, chain: &str) -> Result<bool> {
        let mut attrs = Vec::new();
        put_str(&mut attrs, NFTA_CHAIN_TABLE, table);
        put_str(&mut attrs, NFTA_CHAIN_NAME, chain);
        let what = format!("get chain {table}/{chain}");
        let seq = self.send_request(NFT_MSG_GETCHAIN, NLM_F_REQUEST, &attrs, &what)?;
        let mut buf = Vec::new();
        loop {
            self.receive(&mut buf)?;
            for (kind, got_seq, msg) in messages(&buf) {
                if got_seq != seq {
                    continue;
                }
                if kind != NLMSG_ERROR {
                    return Ok(true);
                }
                return match -error_code(msg) {
                    0 => Ok(true),
                    libc::ENOENT => Ok(false),
                    errno => Err(kernel_error(&what, io::Error::from_raw_os_error(errno))),
                };
            }
        }
    }

    /// Handles of the rules of `table`/`chain` (IPv4) whose encoding contains `marker`.
    pub fn rules_containing(
        &mut self,
        table: &str,
        chain: &str,
        marker: &[u8],
    ) -> Result<Vec<u64>> {
        self.query_rules(table, chain, None, marker)
    }

    /// Whether the rule with `handle` in `table`/`chain` exists and contains `marker`.
    pub fn rule_has(
        &mut self,
        table: &str,
        chain: &str,
        handle: u64,
        marker: &[u8],
    ) -> Result<bool> {
        Ok(!self
            .query_rules(table, chain, Some(handle), marker)?
            .is_empty())
    }

    /// Dumps a chain (or gets one rule of it by handle) and returns the handles of the rules
    /// that contain `marker`. A rule that does not exist is no match, not an error.
    fn query_rules(
        &mut self,
        table: &str,
        chain: &str,
        handle: Option<u64>,
        marker: &[u8],
    ) -> Result<Vec<u64>> {
        let mut attrs = Vec::new();
        put_str(&mut attrs, NFTA_RULE_TABLE, table);
        put_str(&mut attrs, NFTA_RULE_CHAIN, chain);
        let mut flags = NLM_F_REQUEST | NLM_F_DUMP;
        if let Some(handle) = handle {
            put_attr(&mut attrs, NFTA_RULE_HANDLE, &handle.to_be_bytes());
            flags = NLM_F_REQUEST;
        }
        let what = format!("list rules of {table}/{chain}");
        let seq = self.send_request(NFT_MSG_GETRULE, flags, &attrs, &what)?;
        let mut handles = Vec::new();
        let mut buf = Vec::new();
        loop {
            self.receive(&mut buf)?;
            for (kind, got_seq, msg) in messages(&buf) {
                if got_seq != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => return Ok(handles),
                    NLMSG_ERROR => {
                        return match -error_code(msg) {
                            0 | libc::ENOENT => Ok(handles),
                            errno => Err(kernel_error(&what, io::Error::from_raw_os_error(errno))),
                        };
                    }
                    _ => {
                        if msg.windows(marker.len()).any(|w| w == marker) {
                            if let Some(found) = rule_handle(msg) {
                                handles.push(found);
                            }
                        }
                        // A single-rule get answers with just that rule.
                        if handle.is_some() {
                            return Ok(handles);
                        }
                    }
                }
            }
        }
    }

    /// Deletes rules of `table`/`chain` (IPv4) by handle, all in one transaction.
    pub fn delete_rules(&mut self, table: &str, chain: &str, handles: &[u64]) -> Result<()> {
        if handles.is_empty() {
            return Ok(());
        }
        let subsystem_batch = NFNL_SUBSYS_NFTABLES;
        let mut batch = message(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            self.next_seq(),
            0,
            subsystem_batch,
            &[],
        );
        let mut pending = Vec::new();
        for handle in handles {
            let seq = self.next_seq();
            let mut attrs = Vec::new();
            put_str(&mut attrs, NFTA_RULE_TABLE, table);
            put_str(&mut attrs, NFTA_RULE_CHAIN, chain);
            put_attr(&mut attrs, NFTA_RULE_HANDLE, &handle.to_be_bytes());
            let kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELRULE;
            batch.extend(message(
                kind,
                NLM_F_REQUEST | NLM_F_ACK,
                seq,
                NFPROTO_IPV4,
                0,
                &attrs,
            ));
            pending.push(seq);
        }
        batch.extend(message(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            self.next_seq(),
            0,
            subsystem_batch,
            &[],
        ));
        self.socket
            .send(&batch, 0)
            .map_err(|e| kernel_error("nftables delete", e))?;
        self.deleted = true;
        let mut buf = Vec::new();
        while !pending.is_empty() {
            self.receive(&mut buf)?;
            for (kind, seq, msg) in messages(&buf) {
                if kind != NLMSG_ERROR {
                    continue;
                }
                let code = error_code(msg);
                if code != 0 {
                    return Err(kernel_error(
                        &format!("delete rules of {table}/{chain}"),
                        io::Error::from_raw_os_error(-code),
                    ));
                }
                pending.retain(|s| *s != seq);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the kernel announced to the nf_tables group when `iptables-nft -t nat -A
    /// NETD-HP-test -p tcp --dport 8080 -m comment --comment "netd sandbox aaa" -j DNAT
    /// --to-destination 10.1.0.2:80` added the chain's first rule (handle 2), captured in a
    /// test namespace.
    const ANNOUNCEMENT: &[u8] = include_bytes!("../tests/fixtures/nft-newrule-announcement.bin");

    #[test]
    fn a_captured_announcement_parses() {
        let parsed: Vec<(u16, u32, usize)> = messages(ANNOUNCEMENT)
            .map(|(kind, seq, msg)| (kind, seq, msg.len()))
            .collect();
        assert!(!parsed.is_empty());
        assert_eq!(parsed[0].0, (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE);
        let total: usize = parsed.iter().map(|(_, _, len)| (len + 3) & !3).sum();
        assert_eq!(total, ANNOUNCEMENT.len(), "every byte belongs to a message");
        let first = messages(ANNOUNCEMENT)
            .next()
            .map(|(_, _, m)| m)
            .unwrap_or_default();
        assert_eq!(rule_handle(first), Some(2));
    }

    #[test]
    fn announced_rules_are_told_by_table_chain_and_whole_marker() {
        let rules = |table, chain, marker: &[u8]| new_rules_in(ANNOUNCEMENT, table, chain, marker);
        assert_eq!(rules("nat", "NETD-HP-test", b"netd sandbox aaa\0"), [2]);
        assert!(rules("nat", "NETD-HP-test", b"netd sandbox aa\0").is_empty());
        assert!(rules("nat", "NETD-HP-other", b"netd sandbox aaa\0").is_empty());
        assert!(rules("filter", "NETD-HP-test", b"netd sandbox aaa\0").is_empty());
    }

    #[test]
    fn truncated_datagrams_end_the_walk() {
        for cut in [0, 3, 15, 16, 100, ANNOUNCEMENT.len() - 1] {
            let parsed: Vec<_> = messages(&ANNOUNCEMENT[..cut]).collect();
            assert!(parsed.iter().all(|(_, _, m)| m.len() <= cut), "cut {cut}");
        }
        assert_eq!(rule_handle(&ANNOUNCEMENT[..20]), None);
        assert_eq!(error_code(&[0u8; 10]), -libc::EIO);
    }
}
