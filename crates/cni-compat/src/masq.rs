//! Outbound NAT for CNI attachments (`ipMasq`): one nat chain per network,
//! `NETD-CNI-<hash of the network name>` (`-d <subnet> -j ACCEPT`, then MASQUERADE except
//! multicast), and one rule per attachment in `NETD-CNI-POSTROUTING`, tagged with the
//! network and container so DEL and GC find it. Each ADD is one `iptables-restore`
//! transaction that appends (no table fetch); DEL goes through `rules::delete`.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::rules;
use crate::spec::Result;

pub const CHAIN_POSTROUTING: &str = "NETD-CNI-POSTROUTING";
const NETWORK_CHAIN_PREFIX: &str = "NETD-CNI-";

/// The nat chain of a network.
pub fn network_chain(network: &str) -> String {
    format!(
        "{NETWORK_CHAIN_PREFIX}{}",
        bridge_driver::names::short_hash(network)
    )
}

/// The restore text for one attachment; `declare_shared` when the shared chain and its
/// jump from POSTROUTING do not exist yet, `declare_network` when the network's chain does
/// not. Declaring an existing chain would flush it, and a transaction that removes rules
/// makes the process wait an RCU grace period (~10 ms) when it closes its socket; appends
/// do not.
pub fn add_text(
    network: &str,
    container_id: &str,
    ip: Ipv4Addr,
    subnet: Ipv4Net,
    declare_shared: bool,
    declare_network: bool,
) -> String {
    let chain = network_chain(network);
    let mut out = String::from("*nat\n");
    if declare_shared {
        out.push_str(&format!(":{CHAIN_POSTROUTING} - [0:0]\n"));
    }
    if declare_network {
        out.push_str(&format!(":{chain} - [0:0]\n"));
        out.push_str(&format!("-A {chain} -d {subnet} -j ACCEPT\n"));
        out.push_str(&format!("-A {chain} ! -d 224.0.0.0/4 -j MASQUERADE\n"));
    }
    if declare_shared {
        out.push_str(&format!("-I POSTROUTING 1 -j {CHAIN_POSTROUTING}\n"));
    }
    out.push_str(&format!(
        "-A {CHAIN_POSTROUTING} -s {ip}/32 -m comment --comment \"{}\" -j {chain}\n",
        rules::comment(network, container_id)
    ));
    out.push_str("COMMIT\n");
    out
}

/// Adds an attachment's masquerading.
pub fn add(network: &str, container_id: &str, ip: Ipv4Addr, subnet: Ipv4Net) -> Result<()> {
    rules::append(CHAIN_POSTROUTING, network, container_id, 1, |rules| {
        let shared = rules.chain_exists("nat", CHAIN_POSTROUTING)?;
        let own = rules.chain_exists("nat", &network_chain(network))?;
        Ok(add_text(
            network,
            container_id,
            ip,
            subnet.trunc(),
            !shared,
            !own,
        ))
    })
}

/// Removes an attachment's rules (none is fine). Returns the socket it used: closing it
/// waits for the deleted rules' RCU grace period, so callers close it last.
pub fn remove(network: &str, container_id: &str) -> Result<linkd::TaggedRules> {
    rules::delete(CHAIN_POSTROUTING, network, container_id)
}

/// Whether an attachment's rule is in place.
pub fn present(network: &str, container_id: &str) -> Result<bool> {
    Ok(rules::present(CHAIN_POSTROUTING, network, container_id)? > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_text_appends_and_declares_only_when_needed() {
        let text = add_text(
            "mynet",
            "abc",
            "10.1.0.2".parse().expect("ip"),
            "10.1.0.0/24".parse().expect("net"),
            false,
            false,
        );
        let chain = network_chain("mynet");
        assert!(!text.contains(":NETD-CNI-"), "{text}");
        assert!(text.contains(&format!(
            "-A NETD-CNI-POSTROUTING -s 10.1.0.2/32 -m comment --comment \"netd-cni name: mynet id: abc\" -j {chain}\n"
        )));
        let first = add_text(
            "mynet",
            "abc",
            "10.1.0.2".parse().expect("ip"),
            "10.1.0.0/24".parse().expect("net"),
            true,
            true,
        );
        assert!(first.contains(":NETD-CNI-POSTROUTING - [0:0]\n"));
        assert!(first.contains("-I POSTROUTING 1 -j NETD-CNI-POSTROUTING\n"));
        assert!(first.contains(&format!("-A {chain} ! -d 224.0.0.0/4 -j MASQUERADE\n")));
    }
}
