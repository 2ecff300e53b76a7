//! Kernel sets (ipset), which network policy matches addresses against. Sets are made,
//! filled and destroyed with one `ipset restore` per operation and read back with `ipset
//! save`; a sandbox's own memberships, which change with every sandbox that starts or
//! stops, go over netlink in one send (no process: measured 1.5-2 ms a process).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::Ipv4Addr;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::error::{LinkdError, Result};
use crate::firewall::{run_for_output, run_with_input};
use crate::netlink::kernel_error;
use crate::nfnetlink::{
    error_code, message, messages, put_attr, put_str, NLA_F_NESTED, NLA_F_NET_BYTEORDER,
    NLMSG_ERROR, NLM_F_ACK, NLM_F_REQUEST,
};

const NFNL_SUBSYS_IPSET: u16 = 6;
const IPSET_CMD_ADD: u16 = 9;
const IPSET_CMD_DEL: u16 = 10;
/// The oldest protocol the kernel takes for add and delete (every kernel with ipset 7+).
const IPSET_PROTOCOL: u8 = 6;
const IPSET_ATTR_PROTOCOL: u16 = 1;
const IPSET_ATTR_SETNAME: u16 = 2;
const IPSET_ATTR_DATA: u16 = 7;
const IPSET_ATTR_IP: u16 = 1;
const IPSET_ATTR_IPADDR_IPV4: u16 = 1;
const AF_INET: u8 = 2;
/// ipset's own error numbers (after `IPSET_ERR_PRIVATE`; the hash types' after 4352).
const IPSET_ERR_PRIVATE: i32 = 4096;
const IPSET_ERR_PROTOCOL: i32 = 4097;
const IPSET_ERR_TYPE_MISMATCH: i32 = 4102;
const IPSET_ERR_HASH_FULL: i32 = 4353;

/// One address put into or taken out of a set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemberChange {
    pub set: String,
    pub member: Ipv4Addr,
    pub add: bool,
}

impl MemberChange {
    /// The change as an `ipset restore` line (adding what is there, or deleting what is
    /// not, is no error).
    pub fn restore_line(&self) -> String {
        let verb = if self.add { "add" } else { "del" };
        format!("{verb} {} {} -exist\n", self.set, self.member)
    }
}

/// Applies member changes in order, over one netfilter netlink socket and one send. As
/// with `-exist`, adding a member that is there or deleting one that is not succeeds; a
/// missing set is an error naming it.
pub fn change_members(changes: &[MemberChange]) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(LinkdError::Socket)?;
    socket.bind_auto().map_err(LinkdError::Socket)?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(LinkdError::Socket)?;
    let request = member_requests(changes);
    socket
        .send(&request, 0)
        .map_err(|e| kernel_error("ipset add/del", e))?;
    // One acknowledgement per change, in order; the first failure is reported.
    let mut acked = 0usize;
    let mut failure: Option<LinkdError> = None;
    let mut buf = Vec::with_capacity(64 * 1024);
    while acked < changes.len() {
        buf.clear();
        match socket.recv(&mut buf, 0) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(kernel_error("ipset add/del", e)),
        }
        for (kind, seq, msg) in messages(&buf) {
            if kind != NLMSG_ERROR {
                continue;
            }
            acked += 1;
            let errno = -error_code(msg);
            if errno == 0 || failure.is_some() {
                continue;
            }
            let change = usize::try_from(seq)
                .ok()
                .and_then(|i| changes.get(i.wrapping_sub(1)));
            let what = change.map_or_else(
                || "ipset add/del".to_string(),
                |c| c.restore_line().trim_end().to_string(),
            );
            failure = Some(LinkdError::Kernel {
                op: what,
                source: ipset_error(errno),
            });
        }
    }
    failure.map_or(Ok(()), Err)
}

/// The requests for `changes`, numbered from 1, each asking for an acknowledgement.
fn member_requests(changes: &[MemberChange]) -> Vec<u8> {
    let mut out = Vec::with_capacity(changes.len() * 64);
    for (i, change) in changes.iter().enumerate() {
        let mut address = Vec::new();
        put_attr(
            &mut address,
            IPSET_ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER,
            &change.member.octets(),
        );
        let mut data = Vec::new();
        put_attr(&mut data, IPSET_ATTR_IP | NLA_F_NESTED, &address);
        let mut attrs = Vec::new();
        put_attr(&mut attrs, IPSET_ATTR_PROTOCOL, &[IPSET_PROTOCOL]);
        put_str(&mut attrs, IPSET_ATTR_SETNAME, &change.set);
        put_attr(&mut attrs, IPSET_ATTR_DATA | NLA_F_NESTED, &data);
        let command = if change.add {
            IPSET_CMD_ADD
        } else {
            IPSET_CMD_DEL
        };
        let seq = u32::try_from(i + 1).unwrap_or(u32::MAX);
        out.extend(message(
            (NFNL_SUBSYS_IPSET << 8) | command,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            AF_INET,
            0,
            &attrs,
        ));
    }
    out
}

/// An errno from the ipset subsystem, in words (its own numbers are not errnos).
fn ipset_error(errno: i32) -> io::Error {
    let text = match errno {
        libc::ENOENT => "the set does not exist",
        IPSET_ERR_PROTOCOL => "the kernel does not speak this ipset protocol",
        IPSET_ERR_TYPE_MISMATCH => "the set is of another type",
        IPSET_ERR_HASH_FULL => "the set is full",
        _ if errno < IPSET_ERR_PRIVATE => return io::Error::from_raw_os_error(errno),
        _ => "refused by the kernel",
    };
    io::Error::other(format!("{text} (ipset error {errno})"))
}

/// The ipset tool to run; overridable so tests can point elsewhere.
#[derive(Debug, Clone)]
pub struct Ipset {
    pub program: String,
}

impl Default for Ipset {
    fn default() -> Self {
        Ipset {
            program: "ipset".into(),
        }
    }
}

impl Ipset {
    /// Applies `text` (`ipset restore` commands) in one process.
    pub fn restore(&self, text: &str) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        run_with_input(&self.program, &["restore"], text)
    }

    /// Every set of this namespace, as `ipset save` prints them.
    pub fn save(&self) -> Result<String> {
        run_for_output(&self.program, &["save"])
    }
}

/// A set as `ipset save` shows it: its type and its members (`10.0.0.2`,
/// `192.0.2.0/25 nomatch`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SavedSet {
    pub kind: String,
    pub members: BTreeSet<String>,
}

/// The sets of `ipset save` output, by name.
pub fn parse_save(text: &str) -> BTreeMap<String, SavedSet> {
    let mut sets: BTreeMap<String, SavedSet> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("create"), Some(name)) => {
                sets.entry(name.to_string()).or_default().kind =
                    words.next().unwrap_or_default().to_string();
            }
            (Some("add"), Some(name)) => {
                let member: Vec<&str> = words.collect();
                sets.entry(name.to_string())
                    .or_default()
                    .members
                    .insert(member.join(" "));
            }
            _ => {}
        }
    }
    sets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_request_is_what_the_ipset_tool_sends() {
        // `ipset add NETD-POL-INGRESS 10.90.0.23` as strace decodes the tool's request
        // (which also sends a line number, and protocol 7), attribute by attribute.
        let request = member_requests(&[MemberChange {
            set: "NETD-POL-INGRESS".into(),
            member: "10.90.0.23".parse().expect("ip"),
            add: true,
        }]);
        let kind = u16::from_ne_bytes([request[4], request[5]]);
        assert_eq!(kind, (6 << 8) | 9, "NFNL_SUBSYS_IPSET<<8|IPSET_CMD_ADD");
        assert_eq!(u16::from_ne_bytes([request[6], request[7]]), 1 | 4);
        assert_eq!(request[16], 2, "AF_INET");
        let attrs = &request[20..];
        let mut expected = Vec::new();
        expected.extend_from_slice(&[5, 0, 1, 0, 6, 0, 0, 0]);
        expected.extend_from_slice(&21u16.to_ne_bytes());
        expected.extend_from_slice(&2u16.to_ne_bytes());
        expected.extend_from_slice(b"NETD-POL-INGRESS\0\0\0\0");
        expected.extend_from_slice(&16u16.to_ne_bytes());
        expected.extend_from_slice(&(7u16 | 0x8000).to_ne_bytes());
        expected.extend_from_slice(&12u16.to_ne_bytes());
        expected.extend_from_slice(&(1u16 | 0x8000).to_ne_bytes());
        expected.extend_from_slice(&8u16.to_ne_bytes());
        expected.extend_from_slice(&(1u16 | 0x4000).to_ne_bytes());
        expected.extend_from_slice(&[10, 90, 0, 23]);
        assert_eq!(attrs, expected.as_slice());
        assert_eq!(
            u32::from_ne_bytes([request[0], request[1], request[2], request[3]]) as usize,
            request.len()
        );
    }

    #[test]
    fn save_output_reads_as_sets() {
        let text = "create NETD-A hash:ip family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x5e3a\n\
                    add NETD-A 10.1.0.2\nadd NETD-A 10.1.0.3\n\
                    create NETD-B hash:net family inet hashsize 1024 maxelem 65536\n\
                    add NETD-B 192.0.2.0/24\nadd NETD-B 192.0.2.128/25 nomatch\ncreate EMPTY hash:ip family inet\n";
        let sets = parse_save(text);
        assert_eq!(sets["NETD-A"].kind, "hash:ip");
        assert_eq!(sets["NETD-A"].members.len(), 2);
        assert!(sets["NETD-B"].members.contains("192.0.2.128/25 nomatch"));
        assert!(sets["EMPTY"].members.is_empty());
    }
}
