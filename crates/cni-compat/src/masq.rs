//! Outbound NAT for CNI attachments (`ipMasq`): one nat chain per network,
//! `NETD-CNI-<hash of the network name>` (`-d <subnet> -j ACCEPT`, then MASQUERADE except
//! multicast), and one rule per attachment in `NETD-CNI-POSTROUTING`, tagged with the
//! network and container so DEL and GC find it. Each ADD is one `iptables-restore`
//! transaction that appends (no table fetch); DEL goes through `rules::delete`.

use std::net::Ipv4Addr;
use std::path::Path;

use bridge_driver::cni_rules::{self, Masquerade, Missing};
use ipnet::Ipv4Net;
use linkd::Firewall;

use crate::rules;
use crate::spec::{CniError, Result};

pub use cni_rules::{network_chain, CHAIN_POSTROUTING};

/// Adds an attachment's masquerading: one `iptables-restore` that appends (the shared and
/// the network's chains declared only when missing, since declaring flushes).
pub fn add(
    firewall: &mut dyn Firewall,
    run_dir: &Path,
    network: &str,
    container_id: &str,
    ip: Ipv4Addr,
    subnet: Ipv4Net,
) -> Result<()> {
    let masquerade = Masquerade {
        network: network.to_string(),
        container_id: container_id.to_string(),
        ip,
        subnet,
    };
    rules::append(
        firewall,
        run_dir,
        CHAIN_POSTROUTING,
        network,
        container_id,
        1,
        |rules| {
            let missing = Missing {
                shared: !rules.chain_exists("nat", CHAIN_POSTROUTING)?,
                network: !rules.chain_exists("nat", &network_chain(network))?,
            };
            cni_rules::masquerade_rules(&masquerade, missing)
                .render()
                .map_err(|e| CniError::config(e.to_string()))
        },
    )
}

/// Removes an attachment's rules (none is fine). Closing the firewall afterwards waits
/// for the deleted rules' RCU grace period, so callers close it last.
pub fn remove(
    firewall: &mut dyn Firewall,
    run_dir: &Path,
    network: &str,
    container_id: &str,
) -> Result<()> {
    rules::delete(firewall, run_dir, CHAIN_POSTROUTING, network, container_id)
}

/// Whether an attachment's rule is in place.
pub fn present(firewall: &mut dyn Firewall, network: &str, container_id: &str) -> Result<bool> {
    Ok(rules::present(firewall, CHAIN_POSTROUTING, network, container_id)? > 0)
}
