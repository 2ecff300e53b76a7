//! The CNI plugins' nat rules as data: outbound NAT of an attachment (`ipMasq`) and its
//! port mappings (portmap), rendered to `iptables-restore --noflush` text by one function
//! that checks every token, so nothing taken from a plugin's input can end a token, a rule
//! or the transaction.
//!
//! Layout (nat table):
//! - `POSTROUTING` -> `NETD-CNI-POSTROUTING`, one rule per attachment (`-s <ip>/32`) jumping
//!   to the network's `NETD-CNI-<hash>` (`-d <subnet> -j ACCEPT`, then MASQUERADE except
//!   multicast);
//! - `PREROUTING`/`OUTPUT` (local destinations) -> `NETD-CNI-HOSTPORT-DNAT`: per mapping,
//!   hairpin (`-s <subnet>`) and localhost (`-s 127.0.0.1`) clients marked for masquerading
//!   (`NETD-CNI-HOSTPORT-SETMARK`, or an external chain such as kube-proxy's), then DNAT;
//!   `POSTROUTING` -> `NETD-CNI-HOSTPORT-MASQ` masquerades what is marked.
//!
//! Every attachment rule carries the comment `netd-cni name: <net> id: <container>`.

use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;

use crate::error::ModelError;
use crate::ports::Protocol;

pub const CHAIN_POSTROUTING: &str = "NETD-CNI-POSTROUTING";
pub const CHAIN_DNAT: &str = "NETD-CNI-HOSTPORT-DNAT";
pub const CHAIN_SETMARK: &str = "NETD-CNI-HOSTPORT-SETMARK";
pub const CHAIN_MASQ: &str = "NETD-CNI-HOSTPORT-MASQ";
const NETWORK_CHAIN_PREFIX: &str = "NETD-CNI-";

/// The nat chain of a CNI network's masquerading.
pub fn network_chain(network: &str) -> String {
    format!(
        "{NETWORK_CHAIN_PREFIX}{}",
        crate::names::short_hash(network)
    )
}

/// The comment that ties a rule to an attachment.
pub fn comment(network: &str, container_id: &str) -> String {
    format!("netd-cni name: {network} id: {container_id}")
}

/// One line of a restore transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Insert {
        chain: String,
        position: u32,
        args: Vec<String>,
    },
    Append {
        chain: String,
        args: Vec<String>,
    },
}

/// A transaction on one table: chains to declare (only missing ones: declaring flushes),
/// then inserts and appends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    table: &'static str,
    declare: Vec<String>,
    lines: Vec<Line>,
}

fn args(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A token as `iptables-restore` reads it: quoted when it has spaces; refused when it holds
/// what would end it or the line (quotes, backslashes, control characters).
fn token(text: &str) -> Result<String, ModelError> {
    if text.is_empty()
        || text
            .chars()
            .any(|c| c.is_control() || matches!(c, '"' | '\'' | '\\'))
    {
        return Err(ModelError::invalid(
            "rule",
            format!("{text:?} cannot be an iptables argument"),
        ));
    }
    Ok(if text.contains(' ') {
        format!("\"{text}\"")
    } else {
        text.to_string()
    })
}

impl Restore {
    pub fn new(table: &'static str) -> Self {
        Restore {
            table,
            declare: Vec::new(),
            lines: Vec::new(),
        }
    }

    fn declare(&mut self, chain: &str) {
        self.declare.push(chain.to_string());
    }

    fn insert(&mut self, chain: &str, position: u32, args: Vec<String>) {
        self.lines.push(Line::Insert {
            chain: chain.to_string(),
            position,
            args,
        });
    }

    fn append(&mut self, chain: &str, args: Vec<String>) {
        self.lines.push(Line::Append {
            chain: chain.to_string(),
            args,
        });
    }

    /// How many rules are appended to `chain`.
    pub fn appended_to(&self, chain: &str) -> usize {
        self.lines
            .iter()
            .filter(|l| matches!(l, Line::Append { chain: c, .. } if c == chain))
            .count()
    }

    /// The `iptables-restore --noflush` text, every token checked.
    pub fn render(&self) -> Result<String, ModelError> {
        let mut out = format!("*{}\n", self.table);
        for chain in &self.declare {
            out.push_str(&format!(":{} - [0:0]\n", token(chain)?));
        }
        for line in &self.lines {
            let (head, args) = match line {
                Line::Insert {
                    chain,
                    position,
                    args,
                } => (format!("-I {} {position}", token(chain)?), args),
                Line::Append { chain, args } => (format!("-A {}", token(chain)?), args),
            };
            out.push_str(&head);
            for arg in args {
                out.push(' ');
                out.push_str(&token(arg)?);
            }
            out.push('\n');
        }
        out.push_str("COMMIT\n");
        Ok(out)
    }
}

/// One attachment's outbound NAT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masquerade {
    pub network: String,
    pub container_id: String,
    pub ip: Ipv4Addr,
    pub subnet: Ipv4Net,
}

/// Which shared chains are missing on the host and must be declared with the rules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Missing {
    pub shared: bool,
    pub network: bool,
}

/// The rules an ADD appends for an attachment's masquerading.
pub fn masquerade_rules(m: &Masquerade, missing: Missing) -> Restore {
    let chain = network_chain(&m.network);
    let mut r = Restore::new("nat");
    if missing.shared {
        r.declare(CHAIN_POSTROUTING);
    }
    if missing.network {
        r.declare(&chain);
        r.append(
            &chain,
            args(&["-d", &m.subnet.trunc().to_string(), "-j", "ACCEPT"]),
        );
        r.append(
            &chain,
            args(&["!", "-d", "224.0.0.0/4", "-j", "MASQUERADE"]),
        );
    }
    if missing.shared {
        r.insert("POSTROUTING", 1, args(&["-j", CHAIN_POSTROUTING]));
    }
    r.append(
        CHAIN_POSTROUTING,
        args(&[
            "-s",
            &format!("{}/32", m.ip),
            "-m",
            "comment",
            "--comment",
            &comment(&m.network, &m.container_id),
            "-j",
            &chain,
        ]),
    );
    r
}

/// One published port of an attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
    /// Only traffic to this host address (`None`: any).
    pub host_ip: Option<Ipv4Addr>,
}

/// An attachment's port mappings and how they are masqueraded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMappings {
    pub network: String,
    pub container_id: String,
    pub container_ip: Ipv4Addr,
    pub subnet: Ipv4Net,
    pub ports: Vec<HostPort>,
    /// Masquerade hairpin and localhost clients (`snat`).
    pub snat: bool,
    /// The chain that marks packets for masquerading (`externalSetMarkChain`, or ours).
    pub setmark_chain: String,
    /// The mark (`1 << markMasqBit`).
    pub mark: u32,
    /// `conditionsV4`: extra match arguments, one iptables argument each.
    pub conditions: Vec<String>,
}

impl HostPort {
    /// A mapping read from a runtime's `hostIP` (empty or `0.0.0.0`: any address).
    pub fn host_ip_of(text: &str) -> Option<Ipv4Addr> {
        match text.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) if !ip.is_unspecified() => Some(ip),
            _ => None,
        }
    }
}

/// The rules an ADD appends for an attachment's port mappings; `missing_chains` when
/// portmap's chains are not on the host yet.
pub fn port_mapping_rules(p: &PortMappings, missing_chains: bool) -> Restore {
    let mut r = Restore::new("nat");
    if missing_chains {
        for chain in [CHAIN_DNAT, CHAIN_SETMARK, CHAIN_MASQ] {
            r.declare(chain);
        }
        for hook in ["PREROUTING", "OUTPUT"] {
            r.insert(
                hook,
                1,
                args(&["-m", "addrtype", "--dst-type", "LOCAL", "-j", CHAIN_DNAT]),
            );
        }
        r.insert("POSTROUTING", 1, args(&["-j", CHAIN_MASQ]));
        let mark = format!("{:#x}/{:#x}", p.mark, p.mark);
        r.append(CHAIN_SETMARK, args(&["-j", "MARK", "--set-xmark", &mark]));
        r.append(
            CHAIN_MASQ,
            args(&["-m", "mark", "--mark", &mark, "-j", "MASQUERADE"]),
        );
    }
    let comment = comment(&p.network, &p.container_id);
    // With conditions, the rules' own address matches use the iprange match, so that they
    // never collide with a `-s` or `-d` among the conditions (iptables allows one of each).
    let conditioned = !p.conditions.is_empty();
    let source = |net: Ipv4Net| -> Vec<String> {
        if conditioned {
            let range = format!("{}-{}", net.network(), net.broadcast());
            args(&["-m", "iprange", "--src-range", &range])
        } else {
            args(&["-s", &net.to_string()])
        }
    };
    for port in &p.ports {
        let proto = port.protocol.to_string();
        let mut matches: Vec<String> = p.conditions.clone();
        if let Some(ip) = port.host_ip {
            if conditioned {
                matches.extend(args(&[
                    "-m",
                    "iprange",
                    "--dst-range",
                    &format!("{ip}-{ip}"),
                ]));
            } else {
                matches.extend(args(&["-d", &format!("{ip}/32")]));
            }
        }
        matches.extend(args(&[
            "-p",
            &proto,
            "-m",
            &proto,
            "--dport",
            &port.host_port.to_string(),
            "-m",
            "comment",
            "--comment",
            &comment,
        ]));
        if p.snat {
            // Hairpin (a container of the network to a mapped port) and localhost clients
            // must be masqueraded to get their answers.
            let localhost = Ipv4Net::new(Ipv4Addr::LOCALHOST, 32).unwrap_or_default();
            for from in [p.subnet.trunc(), localhost] {
                let mut rule = source(from);
                rule.extend(matches.iter().cloned());
                rule.extend(args(&["-j", &p.setmark_chain]));
                r.append(CHAIN_DNAT, rule);
            }
        }
        let mut rule = matches.clone();
        let to = format!("{}:{}", p.container_ip, port.container_port);
        rule.extend(args(&["-j", "DNAT", "--to-destination", &to]));
        r.append(CHAIN_DNAT, rule);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_that_would_break_the_transaction_are_refused() {
        let mut r = Restore::new("nat");
        r.append("X", args(&["-s", "10.0.0.0/8\nCOMMIT"]));
        assert!(r.render().is_err());
        let mut r = Restore::new("nat");
        r.append("X", args(&["--comment", "a \"b\""]));
        assert!(r.render().is_err());
        let mut r = Restore::new("nat");
        r.append("X", args(&["--comment", "a b", "-j", "ACCEPT"]));
        assert_eq!(
            r.render().expect("renders"),
            "*nat\n-A X --comment \"a b\" -j ACCEPT\nCOMMIT\n"
        );
    }
}
