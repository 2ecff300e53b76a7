//! Applying plans to the kernel with linkd, and checking that what a plan says is there.
//! Each function returns the repairs it made, so reconciliation can report them.

use bridge_driver::firewall::{self, EntryFixes, NetworkFirewall, SavedTable, StaleChains};
use bridge_driver::names::network_of_alias;
use bridge_driver::plan::{BridgePlan, EndpointPlan};
use ipnet::Ipv4Net;
use linkd::link::{
    create_veth_request, set_hairpin_by_name_request, set_up_by_name_request, set_up_request,
};
use linkd::route::replace_route_request;
use linkd::{address::add_address_request, Iptables, Netlink, Netns, Route, VethSpec};

use crate::error::{NetdError, Result};

/// Makes the bridge exist as planned. Fails when the name belongs to a link netd does not
/// own.
pub fn ensure_bridge(host: &mut Netlink, plan: &BridgePlan) -> Result<Vec<String>> {
    let mut repairs = Vec::new();
    let link = match host.link_by_name(&plan.name)? {
        Some(link) => link,
        None => {
            host.create_bridge(&linkd::BridgeSpec {
                name: &plan.name,
                mac: plan.mac,
                mtu: plan.mtu,
                alias: &plan.alias,
            })?;
            repairs.push(format!("created bridge {}", plan.name));
            host.require_link(&plan.name)?
        }
    };
    let ours = link.alias.as_deref() == Some(plan.alias.as_str());
    if !ours {
        return Err(NetdError::Conflict(format!(
            "interface {} already exists and is not managed by netd",
            plan.name
        )));
    }
    if link.mtu != plan.mtu {
        host.set_mtu(link.index, plan.mtu)?;
        repairs.push(format!("set mtu {} on bridge {}", plan.mtu, plan.name));
    }
    if link.mac != Some(plan.mac) {
        host.set_mac(link.index, plan.mac)?;
        repairs.push(format!("restored the MAC of bridge {}", plan.name));
    }
    let addresses = host.addresses_of(link.index)?;
    if !addresses.contains(&plan.address) {
        host.add_address(link.index, plan.address, &plan.name)?;
        repairs.push(format!(
            "added address {} to bridge {}",
            plan.address, plan.name
        ));
    }
    if !link.up {
        host.set_up(link.index, &plan.name)?;
        repairs.push(format!("set bridge {} up", plan.name));
    }
    // Published ports answer on 127.0.0.1: DNATed loopback traffic must be routable here.
    let localnet = format!("net/ipv4/conf/{}/route_localnet", plan.name);
    if linkd::sysctl::get(&localnet)? != "1" {
        linkd::sysctl::set(&localnet, "1")?;
        repairs.push(format!("set route_localnet on bridge {}", plan.name));
    }
    Ok(repairs)
}

/// Whether a link is a bridge netd made for some network.
pub fn owned_bridge_network(link: &linkd::Link) -> Option<&str> {
    if link.kind.as_deref() != Some("bridge") {
        return None;
    }
    link.alias.as_deref().and_then(network_of_alias)
}

/// Sysctls of a new sandbox namespace: its interfaces get no IPv6 (the networks are
/// IPv4-only), as Docker does. Without this, every new interface's link-local address,
/// DAD and router solicitations are multicast that the bridge floods to every port, so the
/// cost of a new sandbox grows with the number of sandboxes.
pub const SANDBOX_SYSCTLS: &[(&str, &str)] = &[("net/ipv6/conf/default/disable_ipv6", "1")];

/// Creates an endpoint: the veth pair (peer born in the sandbox); the host end without
/// IPv6 (for the same reason as [`SANDBOX_SYSCTLS`]) and up; then inside the sandbox the
/// interface up, its address and, if it carries it, the default route, in one batch.
pub fn create_endpoint(
    host: &mut Netlink,
    netns: &Netns,
    inner: &mut Netlink,
    bridge_index: u32,
    plan: &EndpointPlan,
) -> Result<()> {
    host.batch(vec![create_veth_request(&VethSpec {
        host_name: &plan.host_veth,
        master: bridge_index,
        mtu: plan.mtu,
        peer_name: &plan.interface,
        peer_mac: plan.mac,
        peer_netns: netns.fd(),
    })])?;
    // Best effort: a kernel without IPv6 has no such sysctl, and nothing to disable.
    let _ = linkd::sysctl::set(
        &format!("net/ipv6/conf/{}/disable_ipv6", plan.host_veth),
        "1",
    );
    // Hairpin: a sandbox reaching its own published port through the host comes back
    // through the port it left by.
    host.batch(vec![
        set_hairpin_by_name_request(&plan.host_veth, true),
        set_up_by_name_request(&plan.host_veth),
    ])?;
    let inside = inner.require_link(&plan.interface)?;
    let mut requests = vec![
        set_up_request(inside.index, &plan.interface),
        add_address_request(inside.index, plan.address, &plan.interface),
    ];
    if let Some(gateway) = plan.default_gateway {
        requests.push(replace_route_request(&default_route(gateway, inside.index)));
    }
    inner.batch(requests)?;
    Ok(())
}

pub fn default_route(gateway: std::net::Ipv4Addr, oif: u32) -> Route {
    Route {
        destination: Ipv4Net::default(),
        gateway: Some(gateway),
        oif: Some(oif),
    }
}

/// The firewall's current state in netd's namespace.
#[derive(Debug)]
pub struct SavedRules {
    pub filter: SavedTable,
    pub nat: SavedTable,
}

pub fn save_rules(iptables: &Iptables) -> Result<SavedRules> {
    Ok(SavedRules {
        filter: SavedTable::parse(&iptables.save("filter")?),
        nat: SavedTable::parse(&iptables.save("nat")?),
    })
}

/// Sets netd's chains to what the networks need, in one transaction. `removed` names
/// networks whose chains must go; `fixes` repairs the entry jumps.
pub fn apply_firewall(
    iptables: &Iptables,
    networks: &[NetworkFirewall],
    stale: &StaleChains,
    fixes: &EntryFixes,
) -> Result<()> {
    let ruleset = firewall::desired(networks);
    iptables.restore(&firewall::restore_text(&ruleset, stale, fixes))?;
    Ok(())
}

/// Compares the live firewall with the desired one and repairs any difference.
pub fn reconcile_firewall(
    iptables: &Iptables,
    networks: &[NetworkFirewall],
) -> Result<Vec<String>> {
    let saved = save_rules(iptables)?;
    let ruleset = firewall::desired(networks);
    let drifted: Vec<String> = firewall::drifted_chains(&ruleset, &saved.filter, &saved.nat)
        .into_iter()
        .map(str::to_string)
        .collect();
    let stale = StaleChains::find(&ruleset, &saved.filter, &saved.nat);
    let fixes = firewall::entry_fixes(&saved.filter, &saved.nat);
    if drifted.is_empty() && stale.is_empty() && fixes.is_empty() {
        return Ok(Vec::new());
    }
    iptables.restore(&firewall::restore_text(&ruleset, &stale, &fixes))?;
    let mut repairs = Vec::new();
    for chain in drifted {
        repairs.push(format!("restored firewall chain {chain}"));
    }
    for chain in stale.filter.iter().chain(stale.nat.iter()) {
        repairs.push(format!("removed stale firewall chain {chain}"));
    }
    for fix in fixes.filter.iter().chain(fixes.nat.iter()) {
        if fix.restores() {
            repairs.push(format!("restored firewall jump: {}", fix.line()));
        }
    }
    Ok(repairs)
}
