//! The rendered ruleset for every combination of internal / icc / masquerade, compared
//! with checked-in golden files (`tests/golden/`). Set `UPDATE_GOLDEN=1` to rewrite them
//! after an intended change, and review the diff.

// Tests fail by panicking with a reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;

use bridge_driver::firewall::{
    desired, entry_fixes, restore_text, NetworkFirewall, SavedTable, StaleChains,
};

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

fn check(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "missing golden file {}: {e} (run with UPDATE_GOLDEN=1)",
            path.display()
        )
    });
    assert_eq!(
        actual,
        expected,
        "rendered rules differ from {}",
        path.display()
    );
}

fn network(internal: bool, icc: bool, masquerade: bool) -> NetworkFirewall {
    NetworkFirewall {
        id: "5f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff".into(),
        bridge: "br-5f1e2d3c4b5a".into(),
        subnet: "172.18.0.0/16".parse().expect("subnet"),
        internal,
        icc,
        masquerade,
        dns: Some("172.18.0.1".parse().expect("gateway")),
        ports: Vec::new(),
    }
}

#[test]
fn every_option_combination() {
    for internal in [false, true] {
        for icc in [false, true] {
            for masquerade in [false, true] {
                let ruleset = desired(&[network(internal, icc, masquerade)]);
                let text = restore_text(&ruleset, &StaleChains::default(), &Default::default());
                check(
                    &format!("internal={internal},icc={icc},masquerade={masquerade}.rules"),
                    &text,
                );
            }
        }
    }
}

#[test]
fn two_networks_on_an_empty_host_with_a_stale_chain() {
    let mut second = network(false, true, true);
    second.id = "00aa".repeat(16);
    second.bridge = "mybr".into();
    second.subnet = "10.1.0.0/24".parse().expect("subnet");
    second.dns = None;
    let ruleset = desired(&[network(false, true, true), second]);
    let saved = SavedTable::parse(":FORWARD ACCEPT [0:0]\n:NETD-FWD-deadbeef0000 - [0:0]\n");
    let stale = StaleChains::find(&ruleset, &saved, &SavedTable::default());
    let fixes = entry_fixes(&saved, &SavedTable::default());
    check(
        "two-networks-fresh-host.rules",
        &restore_text(&ruleset, &stale, &fixes),
    );
}

#[test]
fn published_ports() {
    use bridge_driver::firewall::PublishedPort;
    use bridge_driver::ports::{PortMapping, Protocol};
    let mut net = network(false, true, true);
    let sandbox = "0123456789abcdef".repeat(4);
    let mapping = |ip: &str, host, container, protocol| PublishedPort {
        sandbox_id: sandbox.clone(),
        container_ip: "172.18.0.2".parse().expect("ip"),
        mapping: PortMapping {
            host_ip: ip.parse().expect("ip"),
            host_port: host,
            container_port: container,
            protocol,
        },
    };
    net.ports = vec![
        mapping("0.0.0.0", 8080, 80, Protocol::Tcp),
        mapping("198.51.100.2", 5353, 53, Protocol::Udp),
    ];
    let ruleset = desired(&[net]);
    check(
        "published-ports.rules",
        &restore_text(&ruleset, &StaleChains::default(), &Default::default()),
    );
}
