//! The per-sandbox `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` that processes run
//! with `netctl run`/`exec` see at the usual paths.

use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::error::{NetdError, Result};

/// `/etc/hosts` for a sandbox: loopback entries and one line per address it has.
pub fn hosts(hostname: &str, name: &str, addresses: &[Ipv4Addr]) -> String {
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for ip in addresses {
        if hostname == name {
            out.push_str(&format!("{ip}\t{hostname}\n"));
        } else {
            out.push_str(&format!("{ip}\t{hostname} {name}\n"));
        }
    }
    out
}

/// `/etc/resolv.conf` for a sandbox, from the host's: nameservers on loopback cannot be
/// reached from a sandbox, so they are dropped, and Docker's public defaults stand in
/// when none is left.
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let trimmed = line.trim();
        if let Some(server) = trimmed.strip_prefix("nameserver") {
            let server = server.trim();
            let loopback = server
                .parse::<std::net::IpAddr>()
                .map(|ip| ip.is_loopback())
                .unwrap_or(false);
            if loopback {
                continue;
            }
            servers += 1;
        }
        if trimmed.starts_with("nameserver")
            || trimmed.starts_with("search")
            || trimmed.starts_with("domain")
            || trimmed.starts_with("options")
        {
            out.push_str(trimmed);
            out.push('\n');
        }
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

/// `/etc/resolv.conf` for a sandbox on networks with netd's DNS: their gateways as the
/// nameservers, netd's search domain before the host's, and `ndots:0` so that a name is
/// first asked as it is.
pub fn resolv_conf_with_dns(nameservers: &[Ipv4Addr], host: &str) -> String {
    let mut search = vec![crate::dns::SEARCH_DOMAIN.to_string()];
    let mut options = vec!["ndots:0".to_string()];
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("search" | "domain") => search.extend(
                words
                    .filter(|w| *w != crate::dns::SEARCH_DOMAIN && !search.iter().any(|s| s == w))
                    .map(String::from)
                    .collect::<Vec<_>>(),
            ),
            Some("options") => {
                options.extend(words.filter(|w| !w.starts_with("ndots:")).map(String::from))
            }
            _ => {}
        }
    }
    let mut out = String::new();
    for server in nameservers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    out.push_str(&format!(
        "search {}\noptions {}\n",
        search.join(" "),
        options.join(" ")
    ));
    out
}

/// Replaces a file's content but keeps the file, so bind mounts of it (in sandboxes that
/// are running) see the new content; a new file is written through a temporary name.
pub fn rewrite(path: &Path, content: &str) -> Result<()> {
    if !path.exists() {
        return write_atomic(path, content);
    }
    if fs::read_to_string(path).is_ok_and(|old| old == content) {
        return Ok(());
    }
    fs::write(path, content)
        .map_err(|e| NetdError::io(format!("cannot write {}", path.display()), e))
}

/// Writes a file through a temporary name, so readers never see half of it.
pub fn write_atomic(path: &Path, content: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, content)
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|e| NetdError::io(format!("cannot write {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_nameservers_are_dropped() {
        let r =
            resolv_conf("# comment\nnameserver 127.0.0.53\noptions edns0\nsearch example.com\n");
        assert_eq!(
            r,
            "options edns0\nsearch example.com\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        let r = resolv_conf("nameserver 10.0.0.2\n");
        assert_eq!(r, "nameserver 10.0.0.2\n");
    }

    #[test]
    fn resolv_conf_with_dns_keeps_host_search_and_options() {
        let r = resolv_conf_with_dns(
            &[
                "10.1.0.1".parse().expect("ip"),
                "10.2.0.1".parse().expect("ip"),
            ],
            "nameserver 8.8.8.8\nsearch corp.example netd.internal\noptions ndots:3 edns0\n",
        );
        assert_eq!(
            r,
            "nameserver 10.1.0.1\nnameserver 10.2.0.1\nsearch netd.internal corp.example\n\
             options ndots:0 edns0\n"
        );
    }

    #[test]
    fn hosts_lists_every_address() {
        let h = hosts("abc", "web", &["10.0.0.2".parse().expect("ip")]);
        assert!(h.contains("10.0.0.2\tabc web\n"));
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
    }
}
