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
        cluster: None,
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

/// A cluster network (this node's 10.244.1.0/24 of 10.244.0.0/16) beside a local one:
/// no NAT within the cluster subnet, other nodes' sandboxes let in, the local network
/// kept out of it.
#[test]
fn cluster_network_beside_a_local_one() {
    let local = network(false, true, true);
    let mut cluster = network(false, true, true);
    cluster.id = "c1".repeat(32);
    cluster.bridge = "br-c1c1c1c1c1c1".into();
    cluster.subnet = "10.244.1.0/24".parse().expect("subnet");
    cluster.dns = Some("10.244.1.1".parse().expect("gateway"));
    cluster.cluster = Some("10.244.0.0/16".parse().expect("cluster"));
    let ruleset = desired(&[local, cluster]);
    check(
        "cluster-network.rules",
        &restore_text(&ruleset, &StaleChains::default(), &Default::default()),
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

/// The CNI plugins' masquerading, for the first attachment on a host (shared and network
/// chains declared) and for a later one (appends only).
#[test]
fn cni_masquerade() {
    use bridge_driver::cni_rules::{masquerade_rules, Masquerade, Missing};
    let m = Masquerade {
        network: "cbr0".into(),
        container_id: "4f3c2b1a09e8d7c6".into(),
        ip: "10.88.0.7".parse().unwrap(),
        subnet: "10.88.0.0/16".parse().unwrap(),
    };
    for (name, missing) in [
        (
            "first",
            Missing {
                shared: true,
                network: true,
            },
        ),
        ("later", Missing::default()),
    ] {
        let text = masquerade_rules(&m, missing).render().expect("renders");
        check(&format!("cni/masquerade,{name}.rules"), &text);
    }
}

/// The CNI portmap rules for every combination of snat, the marking chain (markMasqBit's
/// default, another bit, externalSetMarkChain) and conditionsV4, with a TCP mapping on any
/// host address and a UDP one on a given address; hairpin and localhost clients are marked
/// when snat is on.
#[test]
fn cni_port_mappings() {
    use bridge_driver::cni_rules::{port_mapping_rules, HostPort, PortMappings, CHAIN_SETMARK};
    use bridge_driver::ports::Protocol;
    for snat in [true, false] {
        for (marking, chain, bit) in [
            ("markMasqBit=13", CHAIN_SETMARK, 13),
            ("markMasqBit=5", CHAIN_SETMARK, 5),
            ("externalSetMarkChain", "KUBE-MARK-MASQ", 13),
        ] {
            for conditions in [vec![], vec!["-s".to_string(), "10.0.0.0/8".to_string()]] {
                let p = PortMappings {
                    network: "cbr0".into(),
                    container_id: "4f3c2b1a09e8d7c6".into(),
                    container_ip: "10.88.0.7".parse().unwrap(),
                    subnet: "10.88.0.0/16".parse().unwrap(),
                    ports: vec![
                        HostPort {
                            host_port: 8080,
                            container_port: 80,
                            protocol: Protocol::Tcp,
                            host_ip: None,
                        },
                        HostPort {
                            host_port: 5353,
                            container_port: 53,
                            protocol: Protocol::Udp,
                            host_ip: Some("192.0.2.1".parse().unwrap()),
                        },
                    ],
                    snat,
                    setmark_chain: chain.into(),
                    mark: 1 << bit,
                    conditions: conditions.clone(),
                };
                let text = port_mapping_rules(&p, true).render().expect("renders");
                let name = format!(
                    "cni/portmap,snat={snat},{marking},conditionsV4={}.rules",
                    !conditions.is_empty()
                );
                check(&name, &text);
            }
        }
    }
}

/// A whole ruleset with network policy: the jump to `NETD-POLICY` right after the
/// isolation chains in `NETD-FORWARD`, the policy chains beside the networks' own.
#[test]
fn a_network_with_policies() {
    use bridge_driver::policy::{parse_policies, policy_rules, PolicyEndpoint};
    let policies = parse_policies(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: api, namespace: prod}\nspec:\n  podSelector: {matchLabels: {app: api}}\n  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 8080}]}]\n  egress: [{to: [{ipBlock: {cidr: 0.0.0.0/0, except: [172.18.0.0/16]}}]}]\n",
        None,
    )
    .expect("policy");
    let endpoint = |app: &str, ip: &str| PolicyEndpoint {
        labels: [
            ("app".to_string(), app.to_string()),
            ("netd.namespace".to_string(), "prod".to_string()),
        ]
        .into(),
        ips: vec![ip.parse().expect("ip")],
    };
    let rules = policy_rules(
        &policies,
        &[endpoint("api", "172.18.0.2"), endpoint("web", "172.18.0.3")],
    );
    let ruleset = desired(&[network(false, true, true)]).with_policy(&rules);
    check(
        "network-with-policies.rules",
        &restore_text(&ruleset, &StaleChains::default(), &Default::default()),
    );
}
