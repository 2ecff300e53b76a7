//! Kernel sets (ipset), which network policy matches addresses against: changed with one
//! `ipset restore` per operation, read back with `ipset save`.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Result;
use crate::firewall::{run_for_output, run_with_input};

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
