//! Outbound NAT for CNI attachments (`ipMasq`): one nat chain per network,
//! `NETD-CNI-<hash of the network name>` (`-d <subnet> -j ACCEPT`, then MASQUERADE except
//! multicast), and one rule per attachment in `NETD-CNI-POSTROUTING`, tagged with the
//! network and container so DEL and GC find it. Each ADD is one `iptables-restore`
//! transaction that appends (no table fetch); each DEL deletes by handle over nf_tables.

use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use nix::fcntl::{Flock, FlockArg};

use crate::spec::{CniError, Result};

pub const CHAIN_POSTROUTING: &str = "NETD-CNI-POSTROUTING";
const NETWORK_CHAIN_PREFIX: &str = "NETD-CNI-";
/// Serialises the check-then-create of the shared chain between concurrent plugins.
const LOCK_FILE: &str = "/run/netd-cni.lock";

/// The nat chain of a network.
pub fn network_chain(network: &str) -> String {
    format!(
        "{NETWORK_CHAIN_PREFIX}{}",
        bridge_driver::names::short_hash(network)
    )
}

/// The comment that ties a rule to an attachment.
pub fn comment(network: &str, container_id: &str) -> String {
    format!("netd-cni name: {network} id: {container_id}")
}

/// The comment as the kernel stores it (NUL-terminated), so one id never matches a longer
/// one.
fn marker(network: &str, container_id: &str) -> Vec<u8> {
    let mut bytes = comment(network, container_id).into_bytes();
    bytes.push(0);
    bytes
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
        comment(network, container_id)
    ));
    out.push_str("COMMIT\n");
    out
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

/// Held while rules are checked and changed.
#[derive(Debug)]
pub struct Lock(#[allow(dead_code)] Flock<File>);

pub fn lock() -> Result<Lock> {
    let path = Path::new(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| CniError::io(format!("cannot open {}: {e}", path.display())))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map(Lock)
        .map_err(|(_, e)| CniError::io(format!("cannot lock {}: {e}", path.display())))
}

/// Adds an attachment's masquerading.
pub fn add(network: &str, container_id: &str, ip: Ipv4Addr, subnet: Ipv4Net) -> Result<()> {
    let _lock = lock()?;
    let mut nft = linkd::nftables::Nftables::open()?;
    let shared = nft.chain_exists("nat", CHAIN_POSTROUTING)?;
    let own = nft.chain_exists("nat", &network_chain(network))?;
    let text = add_text(network, container_id, ip, subnet.trunc(), !shared, !own);
    linkd::Iptables::default().restore(&text)?;
    Ok(())
}

/// Removes an attachment's rules (none is fine). Returns the socket it used: closing it
/// waits for the deleted rules' RCU grace period, so callers close it last.
pub fn remove(network: &str, container_id: &str) -> Result<linkd::nftables::Nftables> {
    let mut nft = linkd::nftables::Nftables::open()?;
    let handles = nft.rules_containing("nat", CHAIN_POSTROUTING, &marker(network, container_id))?;
    nft.delete_rules("nat", CHAIN_POSTROUTING, &handles)?;
    Ok(nft)
}

/// Whether an attachment's rule is in place.
pub fn present(network: &str, container_id: &str) -> Result<bool> {
    let mut nft = linkd::nftables::Nftables::open()?;
    Ok(!nft
        .rules_containing("nat", CHAIN_POSTROUTING, &marker(network, container_id))?
        .is_empty())
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
