//! Applying plans to the kernel with linkd, and checking that what a plan says is there.
//! Each function returns the repairs it made, so reconciliation can report them.

use bridge_driver::firewall::{
    self as rules, EntryFixes, NetworkFirewall, SavedTable, StaleChains,
};
use bridge_driver::names::network_of_alias;
use bridge_driver::plan::{BridgePlan, EndpointPlan};
use bridge_driver::policy::PolicyRules;
use ipnet::Ipv4Net;
use linkd::link::{
    create_veth_request, no_ipv6_addresses_request, set_hairpin_by_name_request,
    set_up_by_name_request, set_up_request,
};
use linkd::route::replace_route_request;
use linkd::{address::add_address_request, Firewall, Kernel, Netns, Route, VethSpec};

use crate::error::{NetdError, Result};

/// Makes the bridge exist as planned (see `linkd::ensure_bridge`). Fails when the name
/// belongs to a link netd does not own.
pub fn ensure_bridge(host: &mut impl Kernel, plan: &BridgePlan) -> Result<Vec<String>> {
    match linkd::ensure_bridge(host, plan) {
        Ok((_, repairs)) => Ok(repairs),
        Err(e @ linkd::LinkdError::Foreign(_)) => Err(NetdError::Conflict(e.to_string())),
        Err(e) => Err(e.into()),
    }
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

/// Ports a Linux bridge takes (port numbers 1 to 1023, below the kernel's `BR_MAX_PORTS`):
/// the most sandboxes one network holds on a host.
pub const BRIDGE_MAX_PORTS: usize = 1023;

/// Creates an endpoint: the veth pair (peer born in the sandbox); the host end without
/// IPv6 (for the same reason as [`SANDBOX_SYSCTLS`]) and up; then inside the sandbox the
/// interface up, its address and, if it carries it, the default route, in one batch.
pub fn create_endpoint(
    host: &mut impl Kernel,
    netns: &Netns,
    inner: &mut impl Kernel,
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
    })])
    .map_err(|e| match e.errno() {
        // The kernel's BR_MAX_PORTS: a full network, as a full address pool is.
        Some(libc::EXFULL) => NetdError::Conflict(format!(
            "bridge {} has {BRIDGE_MAX_PORTS} ports, the most a Linux bridge takes: \
             use another network for this sandbox",
            plan.bridge
        )),
        _ => e.into(),
    })?;
    // Best effort: a kernel without IPv6 has no such sysctl, and nothing to disable.
    let _ = host.sysctl_set(
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
        // Before it is up. (netd's own namespaces also have IPv6 off by default; attached
        // ones are their owner's, so this is per interface.)
        no_ipv6_addresses_request(inside.index, &plan.interface),
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

pub fn save_rules(firewall: &mut dyn Firewall) -> Result<SavedRules> {
    Ok(SavedRules {
        filter: SavedTable::parse(&firewall.save("filter")?),
        nat: SavedTable::parse(&firewall.save("nat")?),
    })
}

/// Sets netd's chains to what the networks need, in one transaction. `removed` names
/// networks whose chains must go; `fixes` repairs the entry jumps.
pub fn apply_firewall(
    firewall: &mut dyn Firewall,
    networks: &[NetworkFirewall],
    policy: &PolicyRules,
    stale: &StaleChains,
    fixes: &EntryFixes,
) -> Result<()> {
    let ruleset = rules::desired(networks).with_policy(policy);
    firewall.restore(&rules::restore_text(&ruleset, stale, fixes))?;
    Ok(())
}

/// Compares the live firewall with the desired one and repairs any difference.
pub fn reconcile_firewall(
    firewall: &mut dyn Firewall,
    networks: &[NetworkFirewall],
    policy: &PolicyRules,
) -> Result<Vec<String>> {
    let saved = save_rules(firewall)?;
    let ruleset = rules::desired(networks).with_policy(policy);
    let drifted: Vec<String> = rules::drifted_chains(&ruleset, &saved.filter, &saved.nat)
        .into_iter()
        .map(str::to_string)
        .collect();
    let stale = StaleChains::find(&ruleset, &saved.filter, &saved.nat);
    let fixes = rules::entry_fixes(&saved.filter, &saved.nat);
    if drifted.is_empty() && stale.is_empty() && fixes.is_empty() {
        return Ok(Vec::new());
    }
    firewall.restore(&rules::restore_text(&ruleset, &stale, &fixes))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use linkd::{Link, RecordingKernel};

    fn plan() -> BridgePlan {
        BridgePlan {
            name: "br-test".into(),
            mac: [0x02, 0x42, 0, 0, 0, 1],
            mtu: 1500,
            alias: "netd network abc".into(),
            ownership: linkd::Ownership::Exclusive,
            addresses: vec!["10.1.0.1/24".parse().expect("net")],
            other_addresses: linkd::OtherAddresses::Keep,
            promisc: false,
            sysctls: vec![("net/ipv4/conf/br-test/route_localnet".into(), "1".into())],
        }
    }

    #[test]
    fn a_missing_bridge_is_made_once() {
        let mut host = RecordingKernel::default();
        let repairs = ensure_bridge(&mut host, &plan()).expect("ensure");
        assert_eq!(
            host.log,
            [
                "create bridge br-test",
                "set alias of br-test",
                "add address 10.1.0.1/24 to br-test",
                "sysctl net/ipv4/conf/br-test/route_localnet=1",
            ]
        );
        assert!(
            repairs.contains(&"created bridge br-test".to_string()),
            "{repairs:?}"
        );
        let before = host.log.len();
        assert!(ensure_bridge(&mut host, &plan()).expect("again").is_empty());
        assert_eq!(host.log.len(), before, "nothing sent the second time");
    }

    #[test]
    fn a_drifted_bridge_is_repaired_and_a_foreign_one_refused() {
        let ours = Link {
            index: 7,
            name: "br-test".into(),
            kind: Some("bridge".into()),
            mac: Some(plan().mac),
            mtu: 9000,
            up: false,
            master: None,
            alias: Some(plan().alias),
            hairpin: None,
        };
        let mut host = RecordingKernel::default().with_link(ours.clone());
        host.addresses.insert(7, plan().addresses);
        host.sysctls
            .insert("net/ipv4/conf/br-test/route_localnet".into(), "1".into());
        let repairs = ensure_bridge(&mut host, &plan()).expect("ensure");
        assert_eq!(host.log, ["set mtu 1500 on link 7", "set br-test up"]);
        assert_eq!(repairs.len(), 2, "{repairs:?}");
        let foreign = Link {
            alias: None,
            ..ours
        };
        let mut host = RecordingKernel::default().with_link(foreign);
        let err = ensure_bridge(&mut host, &plan()).expect_err("not ours");
        assert!(err.to_string().contains("not managed by netd"), "{err}");
        assert!(host.log.is_empty(), "nothing touched: {:?}", host.log);
    }

    #[test]
    fn an_endpoint_is_two_host_batches_and_one_inside() {
        let netns = Netns::open("/proc/self/ns/net").expect("own namespace");
        let mut host = RecordingKernel::default();
        let eth0 = Link::new(2, "eth0", Some("veth"));
        let mut inner = RecordingKernel::default().with_link(eth0.clone());
        let endpoint = EndpointPlan {
            host_veth: "nd0123456789e0".into(),
            bridge: "br-test".into(),
            interface: "eth0".into(),
            mac: [0x02, 0x42, 10, 1, 0, 2],
            mtu: 1500,
            address: "10.1.0.2/24".parse().expect("net"),
            default_gateway: Some("10.1.0.1".parse().expect("ip")),
        };
        create_endpoint(&mut host, &netns, &mut inner, 1, &endpoint).expect("create");
        assert_eq!(
            host.log,
            [
                "create veth nd0123456789e0 (peer eth0)",
                "sysctl net/ipv6/conf/nd0123456789e0/disable_ipv6=1",
                "set hairpin mode of nd0123456789e0",
                "set nd0123456789e0 up",
            ]
        );
        assert_eq!(
            inner.log,
            [
                "set no IPv6 addresses on eth0",
                "set eth0 up",
                "add address 10.1.0.2/24 to eth0",
                "add route 0.0.0.0/0 via 10.1.0.1"
            ]
        );
        assert_eq!(inner.addresses.get(&2), Some(&vec![endpoint.address]));
        let mut failing = RecordingKernel::default().with_link(eth0);
        failing.fail_on = Some("add route".into());
        let mut host = RecordingKernel::default();
        let err = create_endpoint(&mut host, &netns, &mut failing, 1, &endpoint)
            .expect_err("route refused");
        assert!(
            err.to_string().contains("add route 0.0.0.0/0 via 10.1.0.1"),
            "{err}"
        );
    }
}
