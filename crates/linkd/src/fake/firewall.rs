//! A model of iptables for unit tests: tables of chains of rules that `iptables-restore
//! --noflush` text changes as iptables would (declaring a chain creates or flushes it,
//! `-A`, `-I`, `-D`, `-F`, `-N`, `-X`, all or nothing per transaction), printed back as
//! `iptables-save` prints it.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;

use crate::error::{LinkdError, Result};
use crate::firewall::Firewall;
use crate::tagged::Tag;

#[derive(Debug, Clone)]
struct Chain {
    name: String,
    /// Built-in chains have a policy; user chains print `-`.
    policy: Option<String>,
    /// Each rule as it follows `-A CHAIN `.
    rules: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct Table {
    chains: Vec<Chain>,
}

impl Table {
    fn builtin(table: &str) -> Table {
        let names: &[&str] = match table {
            "filter" => &["INPUT", "FORWARD", "OUTPUT"],
            "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
            "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
            "raw" => &["PREROUTING", "OUTPUT"],
            _ => &[],
        };
        Table {
            chains: names
                .iter()
                .map(|n| Chain {
                    name: n.to_string(),
                    policy: Some("ACCEPT".into()),
                    rules: Vec::new(),
                })
                .collect(),
        }
    }

    fn chain(&mut self, name: &str) -> Option<&mut Chain> {
        self.chains.iter_mut().find(|c| c.name == name)
    }
}

/// The fake firewall: see the module's documentation. Every transaction's text is kept in
/// `log`; a transaction containing `fail_on` is refused as a tool failure.
#[derive(Debug, Default)]
pub struct RecordingFirewall {
    tables: BTreeMap<String, Table>,
    pub log: Vec<String>,
    /// Ports whose UDP conntrack entries were flushed, in order.
    pub conntrack_flushes: Vec<u16>,
    pub fail_on: Option<String>,
    /// Kernel sets: name -> (type, members), as `ipset restore` leaves them.
    pub sets: BTreeMap<String, (String, std::collections::BTreeSet<String>)>,
}

fn refused(line: usize, reason: impl Into<String>) -> LinkdError {
    LinkdError::ToolFailed {
        program: "iptables-restore (fake)".into(),
        status: std::process::ExitStatus::from_raw(1 << 8),
        reason: format!("line {line}: {}", reason.into()),
    }
}

/// Splits `CHAIN REST` into the chain and the rest.
fn chain_and_rest(text: &str) -> (&str, &str) {
    match text.split_once(' ') {
        Some((chain, rest)) => (chain, rest.trim()),
        None => (text.trim(), ""),
    }
}

impl RecordingFirewall {
    /// The rules of a chain, each as it follows `-A CHAIN ` in `iptables-save`.
    pub fn rules(&self, table: &str, chain: &str) -> Vec<String> {
        self.tables
            .get(table)
            .and_then(|t| t.chains.iter().find(|c| c.name == chain))
            .map(|c| c.rules.clone())
            .unwrap_or_default()
    }

    /// Whether a chain exists.
    pub fn has_chain(&self, table: &str, chain: &str) -> bool {
        self.tables
            .get(table)
            .is_some_and(|t| t.chains.iter().any(|c| c.name == chain))
    }

    /// Every rule of a table, as `-A CHAIN RULE` lines.
    pub fn all_rules(&self, table: &str) -> Vec<String> {
        self.tables
            .get(table)
            .map(|t| {
                t.chains
                    .iter()
                    .flat_map(|c| c.rules.iter().map(move |r| format!("-A {} {r}", c.name)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What another program's `iptables -t TABLE -F` does: every chain emptied.
    pub fn flush_table(&mut self, table: &str) {
        if let Some(t) = self.tables.get_mut(table) {
            for chain in &mut t.chains {
                chain.rules.clear();
            }
        }
    }

    fn table(&self, name: &str) -> Table {
        self.tables
            .get(name)
            .cloned()
            .unwrap_or_else(|| Table::builtin(name))
    }

    fn apply(&mut self, ruleset: &str) -> Result<()> {
        let mut pending: BTreeMap<String, Table> = BTreeMap::new();
        let mut current: Option<(String, Table)> = None;
        for (number, raw) in ruleset.lines().enumerate() {
            let line_no = number + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix('*') {
                let table = pending.remove(name).unwrap_or_else(|| self.table(name));
                current = Some((name.to_string(), table));
                continue;
            }
            if line == "COMMIT" {
                let (name, table) = current
                    .take()
                    .ok_or_else(|| refused(line_no, "COMMIT outside a table"))?;
                pending.insert(name, table);
                continue;
            }
            let Some((_, table)) = current.as_mut() else {
                return Err(refused(line_no, "a rule outside a table"));
            };
            Self::line(table, line, line_no)?;
        }
        if current.is_some() {
            return Err(refused(ruleset.lines().count(), "no COMMIT"));
        }
        self.tables.extend(pending);
        Ok(())
    }

    fn line(table: &mut Table, line: &str, line_no: usize) -> Result<()> {
        let missing = |chain: &str| refused(line_no, format!("chain {chain} does not exist"));
        if let Some(decl) = line.strip_prefix(':') {
            let mut parts = decl.split_whitespace();
            let name = parts.next().unwrap_or_default().to_string();
            let policy = parts.next().filter(|p| *p != "-").map(str::to_string);
            match table.chain(&name) {
                Some(chain) => {
                    chain.rules.clear();
                    if policy.is_some() {
                        chain.policy = policy;
                    }
                }
                None => table.chains.push(Chain {
                    name,
                    policy,
                    rules: Vec::new(),
                }),
            }
            return Ok(());
        }
        let (op, rest) = line.split_at(line.find(' ').unwrap_or(line.len()));
        let (chain_name, spec) = chain_and_rest(rest.trim());
        match op {
            "-A" => table
                .chain(chain_name)
                .ok_or_else(|| missing(chain_name))?
                .rules
                .push(spec.to_string()),
            "-I" => {
                let chain = table.chain(chain_name).ok_or_else(|| missing(chain_name))?;
                let (position, spec) = match spec.split_once(' ') {
                    Some((n, rule)) if n.parse::<usize>().is_ok() => {
                        (n.parse::<usize>().unwrap_or(1), rule)
                    }
                    _ => (1, spec),
                };
                if position == 0 || position > chain.rules.len() + 1 {
                    return Err(refused(line_no, "index of insertion too big"));
                }
                chain.rules.insert(position - 1, spec.to_string());
            }
            "-D" => {
                let chain = table.chain(chain_name).ok_or_else(|| missing(chain_name))?;
                let position = match spec.parse::<usize>() {
                    Ok(n) if n >= 1 && n <= chain.rules.len() => Some(n - 1),
                    Ok(_) => None,
                    Err(_) => chain.rules.iter().position(|r| r == spec),
                };
                let position = position.ok_or_else(|| {
                    refused(line_no, format!("no such rule in {chain_name}: {spec}"))
                })?;
                chain.rules.remove(position);
            }
            "-F" if chain_name.is_empty() => {
                for chain in &mut table.chains {
                    chain.rules.clear();
                }
            }
            "-F" => table
                .chain(chain_name)
                .ok_or_else(|| missing(chain_name))?
                .rules
                .clear(),
            "-N" => {
                if table.chain(chain_name).is_some() {
                    return Err(refused(
                        line_no,
                        format!("chain {chain_name} already exists"),
                    ));
                }
                table.chains.push(Chain {
                    name: chain_name.to_string(),
                    policy: None,
                    rules: Vec::new(),
                });
            }
            "-X" => {
                let position = table
                    .chains
                    .iter()
                    .position(|c| c.name == chain_name && c.policy.is_none())
                    .ok_or_else(|| missing(chain_name))?;
                let target = format!("-j {chain_name}");
                let referenced = table.chains.iter().any(|c| {
                    c.rules
                        .iter()
                        .any(|r| r.ends_with(&target) || r.contains(&format!("{target} ")))
                });
                if referenced {
                    return Err(refused(line_no, format!("chain {chain_name} is in use")));
                }
                table.chains.remove(position);
            }
            other => return Err(refused(line_no, format!("unknown command {other}"))),
        }
        Ok(())
    }
}

impl RecordingFirewall {
    /// Applies `ipset restore` lines to the model, as the tool would.
    fn apply_set_lines(&mut self, text: &str) -> Result<()> {
        for (n, line) in text.lines().enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let exist = words.contains(&"-exist");
            let words: Vec<&str> = words.into_iter().filter(|w| *w != "-exist").collect();
            match words.as_slice() {
                [] => {}
                ["create", name, kind, ..] => {
                    if self.sets.contains_key(*name) && !exist {
                        return Err(refused(n + 1, format!("set {name} exists")));
                    }
                    self.sets
                        .entry(name.to_string())
                        .or_insert_with(|| (kind.to_string(), Default::default()));
                }
                ["flush", name] => match self.sets.get_mut(*name) {
                    Some((_, members)) => members.clear(),
                    None => return Err(refused(n + 1, format!("no set {name}"))),
                },
                ["add", name, member @ ..] | ["del", name, member @ ..] => {
                    let Some((_, members)) = self.sets.get_mut(*name) else {
                        return Err(refused(n + 1, format!("no set {name}")));
                    };
                    let member = member.join(" ");
                    if words[0] == "add" {
                        members.insert(member);
                    } else {
                        let bare = member.trim_end_matches(" nomatch").to_string();
                        members.retain(|m| m.trim_end_matches(" nomatch") != bare);
                    }
                }
                ["destroy", name] => {
                    if self.sets.remove(*name).is_none() && !exist {
                        return Err(refused(n + 1, format!("no set {name}")));
                    }
                }
                _ => return Err(refused(n + 1, format!("unknown ipset command {line:?}"))),
            }
        }
        Ok(())
    }
}

impl Firewall for RecordingFirewall {
    fn restore(&mut self, ruleset: &str) -> Result<()> {
        self.log.push(ruleset.to_string());
        if let Some(fail) = self.fail_on.as_deref() {
            if ruleset.contains(fail) {
                return Err(refused(0, format!("refused (fail_on {fail})")));
            }
        }
        self.apply(ruleset)
    }

    fn save(&mut self, table: &str) -> Result<String> {
        let t = self.table(table);
        let mut text = format!("*{table}\n");
        for chain in &t.chains {
            let policy = chain.policy.as_deref().unwrap_or("-");
            text.push_str(&format!(":{} {policy} [0:0]\n", chain.name));
        }
        for chain in &t.chains {
            for rule in &chain.rules {
                text.push_str(&format!("-A {} {rule}\n", chain.name));
            }
        }
        text.push_str("COMMIT\n");
        Ok(text)
    }

    fn chain_exists(&mut self, table: &str, chain: &str) -> Result<bool> {
        Ok(self.table(table).chains.iter().any(|c| c.name == chain))
    }

    fn append_tagged(
        &mut self,
        ruleset: &str,
        _tag: &Tag<'_>,
        _expected: usize,
    ) -> Result<Option<Vec<u64>>> {
        // Like the legacy backend: no handles, deletion finds the rules by their comment.
        self.restore(ruleset)?;
        Ok(None)
    }

    fn delete_tagged(&mut self, tag: &Tag<'_>, _remembered: Option<&[u64]>) -> Result<usize> {
        let saved = self.save(tag.table)?;
        let deletions: Vec<String> = saved
            .lines()
            .filter(|l| tag.owns(l))
            .map(|l| format!("-D {}\n", &l[3..]))
            .collect();
        if deletions.is_empty() {
            return Ok(0);
        }
        let text = format!("*{}\n{}COMMIT\n", tag.table, deletions.concat());
        self.restore(&text)?;
        Ok(deletions.len())
    }

    fn count_tagged(&mut self, tag: &Tag<'_>) -> Result<usize> {
        Ok(self
            .save(tag.table)?
            .lines()
            .filter(|l| tag.owns(l))
            .count())
    }

    fn sets_restore(&mut self, text: &str) -> Result<()> {
        self.log.push(format!("ipset restore\n{text}"));
        self.apply_set_lines(text)
    }

    fn sets_change(&mut self, changes: &[crate::ipset::MemberChange]) -> Result<()> {
        let text: String = changes.iter().map(|c| c.restore_line()).collect();
        self.log.push(format!("ipset members\n{text}"));
        self.apply_set_lines(&text)
    }

    fn sets_save(&mut self) -> Result<String> {
        let mut text = String::new();
        for (name, (kind, members)) in &self.sets {
            text.push_str(&format!(
                "create {name} {kind} family inet hashsize 1024 maxelem 65536\n"
            ));
            for member in members {
                text.push_str(&format!("add {name} {member}\n"));
            }
        }
        Ok(text)
    }

    fn flush_udp_conntrack(&mut self, port: u16) {
        self.conntrack_flushes.push(port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_text_changes_tables_as_iptables_does() {
        let mut fw = RecordingFirewall::default();
        fw.restore(
            "*filter\n:NETD-A - [0:0]\n-A NETD-A -j ACCEPT\n-I FORWARD 1 -j NETD-A\nCOMMIT\n",
        )
        .expect("first");
        assert_eq!(fw.rules("filter", "FORWARD"), ["-j NETD-A"]);
        // Declaring an existing chain flushes it; everything else stays.
        fw.restore("*filter\n:NETD-A - [0:0]\n-A NETD-A -j DROP\nCOMMIT\n")
            .expect("second");
        assert_eq!(fw.rules("filter", "NETD-A"), ["-j DROP"]);
        assert_eq!(fw.rules("filter", "FORWARD"), ["-j NETD-A"]);
        // A failing line makes the whole transaction change nothing.
        let err = fw
            .restore("*filter\n-A NETD-A -j ACCEPT\n-A NETD-NONE -j ACCEPT\nCOMMIT\n")
            .expect_err("missing chain");
        assert!(err.to_string().contains("NETD-NONE"), "{err}");
        assert_eq!(fw.rules("filter", "NETD-A"), ["-j DROP"]);
        // A referenced chain cannot go; unreferenced, it can.
        assert!(fw.restore("*filter\n-X NETD-A\nCOMMIT\n").is_err());
        fw.restore("*filter\n-D FORWARD -j NETD-A\n-X NETD-A\nCOMMIT\n")
            .expect("delete");
        assert!(!fw.has_chain("filter", "NETD-A"));
        let saved = fw.save("filter").expect("save");
        assert_eq!(
            saved,
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
        );
    }

    #[test]
    fn tagged_rules_are_found_by_their_whole_comment() {
        let mut fw = RecordingFirewall::default();
        let tag = Tag {
            table: "nat",
            chain: "NETD-DNAT",
            comment: "netd:c1",
        };
        let text = "*nat\n:NETD-DNAT - [0:0]\n-A NETD-DNAT -p tcp -m comment --comment netd:c1 -j ACCEPT\n-A NETD-DNAT -p tcp -m comment --comment netd:c10 -j ACCEPT\nCOMMIT\n";
        fw.append_tagged(text, &tag, 1).expect("append");
        assert_eq!(fw.count_tagged(&tag).expect("count"), 1);
        assert_eq!(fw.delete_tagged(&tag, None).expect("delete"), 1);
        assert_eq!(
            fw.rules("nat", "NETD-DNAT"),
            ["-p tcp -m comment --comment netd:c10 -j ACCEPT"]
        );
        assert_eq!(fw.delete_tagged(&tag, None).expect("again"), 0);
    }
}
