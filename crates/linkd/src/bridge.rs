//! A bridge as it should be, and the one applier that makes a bridge so: used by both
//! front ends (the daemon's networks and netd-bridge's bridge), which differ only in what
//! their plan says (whose the bridge is, which addresses, which sysctls).

use ipnet::Ipv4Net;

use crate::address::{add_address_request, delete_address_request};
use crate::error::{LinkdError, Result};
use crate::kernel::Kernel;
use crate::link::{
    create_bridge_request, set_alias_request, set_mac_request, set_mtu_request,
    set_promisc_request, set_up_request, BridgeSpec, Link, Mac,
};

/// Whose a bridge of the planned name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Only netd's own: a link of that name without the planned alias is refused, and the
    /// planned MTU and MAC are restored if they drifted (the daemon's networks).
    Exclusive,
    /// Any bridge of that name is used as it is, as the reference CNI plugin does.
    Shared,
}

/// What to do with another address of a planned address's subnet on the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtherAddresses {
    Keep,
    /// Replace it (CNI's `forceAddress`).
    Replace,
    /// Fail with [`LinkdError::AddressTaken`].
    Refuse,
}

/// A bridge as a plan wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeState {
    pub name: String,
    /// Pinned, so the bridge's MAC does not change as ports come and go.
    pub mac: Mac,
    pub mtu: u32,
    /// Marks the bridge as made by netd (and for what), so leaks can be found.
    pub alias: String,
    pub ownership: Ownership,
    /// Addresses it carries (others may be there too, see `other_addresses`).
    pub addresses: Vec<Ipv4Net>,
    pub other_addresses: OtherAddresses,
    pub promisc: bool,
    /// Sysctls (`/proc/sys` paths) and their values.
    pub sysctls: Vec<(String, String)>,
}

/// Makes the bridge exist and match `plan`, in as few requests as it can (nothing is sent
/// when all is in place). Returns the link as it was found or made, and the repairs made.
pub fn ensure_bridge<K: Kernel + ?Sized>(
    kernel: &mut K,
    plan: &BridgeState,
) -> Result<(Link, Vec<String>)> {
    let mut repairs = Vec::new();
    let link = match kernel.link_by_name(&plan.name)? {
        Some(link) => link,
        None => {
            let spec = BridgeSpec {
                name: &plan.name,
                mac: plan.mac,
                mtu: plan.mtu,
                alias: &plan.alias,
            };
            match kernel.batch(vec![
                create_bridge_request(&spec),
                set_alias_request(&plan.name, &plan.alias),
            ]) {
                Ok(()) => repairs.push(format!("created bridge {}", plan.name)),
                // Another plugin made it in the meantime.
                Err(e) if e.is_exists() && plan.ownership == Ownership::Shared => {}
                Err(e) => return Err(e),
            }
            kernel.require_link(&plan.name)?
        }
    };
    let mut requests = Vec::new();
    match plan.ownership {
        Ownership::Exclusive => {
            if link.alias.as_deref() != Some(plan.alias.as_str()) {
                return Err(LinkdError::Foreign(plan.name.clone()));
            }
            if link.mtu != plan.mtu {
                requests.push(set_mtu_request(link.index, plan.mtu));
                repairs.push(format!("set mtu {} on bridge {}", plan.mtu, plan.name));
            }
            if link.mac != Some(plan.mac) {
                requests.push(set_mac_request(link.index, plan.mac));
                repairs.push(format!("restored the MAC of bridge {}", plan.name));
            }
        }
        Ownership::Shared => {
            if link.kind.as_deref() != Some("bridge") {
                return Err(LinkdError::NotABridge(plan.name.clone()));
            }
        }
    }
    if !plan.addresses.is_empty() {
        let present = kernel.addresses_of(link.index)?;
        for wanted in plan.addresses.iter().filter(|a| !present.contains(a)) {
            for other in present.iter().filter(|a| a.trunc() == wanted.trunc()) {
                match plan.other_addresses {
                    OtherAddresses::Keep => {}
                    OtherAddresses::Replace => {
                        requests.push(delete_address_request(link.index, *other));
                    }
                    OtherAddresses::Refuse => {
                        return Err(LinkdError::AddressTaken {
                            link: plan.name.clone(),
                            have: *other,
                            want: *wanted,
                        })
                    }
                }
            }
            requests.push(add_address_request(link.index, *wanted, &plan.name));
            repairs.push(format!("added address {wanted} to bridge {}", plan.name));
        }
    }
    if !link.up {
        requests.push(set_up_request(link.index, &plan.name));
        repairs.push(format!("set bridge {} up", plan.name));
    }
    if plan.promisc {
        requests.push(set_promisc_request(link.index));
    }
    kernel.batch(requests)?;
    for (key, value) in &plan.sysctls {
        if kernel.sysctl_get(key)? != *value {
            kernel.sysctl_set(key, value)?;
            repairs.push(format!("set {key} to {value}"));
        }
    }
    Ok((link, repairs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::RecordingKernel;

    fn plan(ownership: Ownership, other_addresses: OtherAddresses) -> BridgeState {
        BridgeState {
            name: "br-test".into(),
            mac: [0x02, 0x42, 0, 0, 0, 1],
            mtu: 1500,
            alias: "netd network abc".into(),
            ownership,
            addresses: vec!["10.1.0.1/24".parse().expect("net")],
            other_addresses,
            promisc: false,
            sysctls: vec![("net/ipv4/conf/br-test/route_localnet".into(), "1".into())],
        }
    }

    #[test]
    fn a_missing_bridge_is_made_in_two_batches_and_then_left_alone() {
        let mut kernel = RecordingKernel::default();
        let plan = plan(Ownership::Exclusive, OtherAddresses::Keep);
        let (link, repairs) = ensure_bridge(&mut kernel, &plan).expect("ensure");
        assert_eq!(link.name, "br-test");
        assert_eq!(
            kernel.log,
            [
                "create bridge br-test",
                "set alias of br-test",
                "add address 10.1.0.1/24 to br-test",
                "sysctl net/ipv4/conf/br-test/route_localnet=1",
            ]
        );
        assert_eq!(repairs.len(), 3, "{repairs:?}");
        let before = kernel.log.len();
        let (_, again) = ensure_bridge(&mut kernel, &plan).expect("again");
        assert!(again.is_empty(), "{again:?}");
        assert_eq!(kernel.log.len(), before, "nothing sent the second time");
    }

    #[test]
    fn whose_the_bridge_is_decides_what_is_refused() {
        let foreign = Link {
            up: true,
            ..Link::new(7, "br-test", Some("bridge"))
        };
        let mut kernel = RecordingKernel::default().with_link(foreign.clone());
        let err = ensure_bridge(
            &mut kernel,
            &plan(Ownership::Exclusive, OtherAddresses::Keep),
        )
        .expect_err("not ours");
        assert!(err.to_string().contains("not managed by netd"), "{err}");
        assert!(kernel.log.is_empty());
        // Shared: used as it is, MTU and MAC untouched.
        let (_, repairs) =
            ensure_bridge(&mut kernel, &plan(Ownership::Shared, OtherAddresses::Keep))
                .expect("adopted");
        assert!(!kernel
            .log
            .iter()
            .any(|l| l.contains("mtu") || l.contains("mac")));
        assert_eq!(repairs.len(), 2, "address and sysctl: {repairs:?}");
        let mut dummy =
            RecordingKernel::default().with_link(Link::new(7, "br-test", Some("dummy")));
        let err = ensure_bridge(&mut dummy, &plan(Ownership::Shared, OtherAddresses::Keep))
            .expect_err("not a bridge");
        assert!(matches!(err, LinkdError::NotABridge(_)), "{err}");
    }

    #[test]
    fn another_address_of_the_subnet_is_kept_replaced_or_refused() {
        let bridge = Link {
            up: true,
            ..Link::new(7, "br-test", Some("bridge"))
        };
        let other: Ipv4Net = "10.1.0.254/24".parse().expect("net");
        let with_other = || {
            let mut kernel = RecordingKernel::default().with_link(bridge.clone());
            kernel.addresses.insert(7, vec![other]);
            kernel
        };
        let mut kernel = with_other();
        let err = ensure_bridge(
            &mut kernel,
            &plan(Ownership::Shared, OtherAddresses::Refuse),
        )
        .expect_err("taken");
        assert!(matches!(err, LinkdError::AddressTaken { have, .. } if have == other));
        let mut kernel = with_other();
        ensure_bridge(
            &mut kernel,
            &plan(Ownership::Shared, OtherAddresses::Replace),
        )
        .expect("replaced");
        assert_eq!(
            kernel.addresses.get(&7),
            Some(&vec!["10.1.0.1/24".parse().expect("net")])
        );
        let mut kernel = with_other();
        ensure_bridge(&mut kernel, &plan(Ownership::Shared, OtherAddresses::Keep)).expect("kept");
        assert_eq!(kernel.addresses.get(&7).map(Vec::len), Some(2));
    }
}
