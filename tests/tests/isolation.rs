//! Isolation between networks, icc=false, and internal networks, observed with traffic.

// Tests fail by panicking with a reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Stdio;

use netd_tests::{run, tcp_answer, TestHost, HOST_UPLINK_IP, INTERNET_IP};

#[test]
fn networks_cannot_reach_each_other() {
    let host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.10.0.0/24", "red"]);
    host.netctl_ok(&["network", "create", "--subnet", "10.20.0.0/24", "blue"]);
    host.netctl_ok(&["run", "-d", "--name", "r", "--network", "red"]);
    host.netctl_ok(&["run", "-d", "--name", "b", "--network", "blue"]);
    host.netctl_ok(&["run", "-d", "--name", "d"]);
    let r = host.ip_of("r", "red");
    let b = host.ip_of("b", "blue");
    let d = host.ip_of("d", "bridge");
    assert!(!host.can_ping("r", &b));
    assert!(!host.can_ping("b", &r));
    assert!(!host.can_ping("d", &r));
    assert!(!host.can_ping("r", &d));
    // Not a routing problem: both still reach their own gateway.
    assert!(host.can_ping("r", "10.10.0.1"));
    assert!(host.can_ping("b", "10.20.0.1"));
}

#[test]
fn icc_false_blocks_traffic_within_a_network() {
    let host = TestHost::new();
    host.netctl_ok(&[
        "network",
        "create",
        "--subnet",
        "10.30.0.0/24",
        "--opt",
        "icc=false",
        "quiet",
    ]);
    host.netctl_ok(&["network", "create", "--subnet", "10.31.0.0/24", "chatty"]);
    for (name, net) in [
        ("q1", "quiet"),
        ("q2", "quiet"),
        ("c1", "chatty"),
        ("c2", "chatty"),
    ] {
        host.netctl_ok(&["run", "-d", "--name", name, "--network", net]);
    }
    assert!(!host.can_ping("q1", &host.ip_of("q2", "quiet")));
    assert!(
        host.can_ping("q1", "10.30.0.1"),
        "the gateway stays reachable"
    );
    assert!(
        host.can_ping("c1", &host.ip_of("c2", "chatty")),
        "icc=true networks are unaffected"
    );
}

#[test]
fn internal_network_has_no_way_out() {
    let mut host = TestHost::new();
    host.add_internet();
    host.netctl_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.40.0.0/24",
        "vault",
    ]);
    host.netctl_ok(&["network", "create", "--subnet", "10.41.0.0/24", "open"]);
    host.netctl_ok(&["run", "-d", "--name", "v1", "--network", "vault"]);
    host.netctl_ok(&["run", "-d", "--name", "v2", "--network", "vault"]);
    host.netctl_ok(&["run", "-d", "--name", "o", "--network", "open"]);
    let routes = String::from_utf8_lossy(&host.exec("v1", &["ip", "route"]).stdout).into_owned();
    assert!(
        !routes.contains("default"),
        "no default route on an internal network: {routes}"
    );
    assert!(!host.can_ping("v1", INTERNET_IP));
    assert!(
        host.can_ping("v1", &host.ip_of("v2", "vault")),
        "members still talk to each other"
    );
    assert!(
        host.can_ping("o", INTERNET_IP),
        "other networks still get out"
    );
    // Even with a route added by hand inside the sandbox, the firewall stops it.
    assert!(host
        .exec("v1", &["ip", "route", "add", "default", "via", "10.40.0.1"])
        .status
        .success());
    assert!(!host.can_ping("v1", INTERNET_IP));
    let nat = host.sh_ok("iptables-save", &["-t", "nat"]);
    assert!(
        !nat.contains("10.40.0.0/24"),
        "no masquerading for an internal network: {nat}"
    );
}

#[test]
fn masquerade_false_means_no_nat() {
    let mut host = TestHost::new();
    host.add_internet();
    host.netctl_ok(&[
        "network",
        "create",
        "--subnet",
        "10.50.0.0/24",
        "--opt",
        "masquerade=false",
        "routed",
    ]);
    host.netctl_ok(&["run", "-d", "--name", "m", "--network", "routed"]);
    // The internet has no route back to 10.50.0.0/24, so without NAT there is no answer.
    assert!(!host.can_ping("m", INTERNET_IP));
    // With a route back, packets arrive from the sandbox's own address, not the host's.
    let route = run(&mut host.internet_cmd(
        "ip",
        &["route", "add", "10.50.0.0/24", "via", HOST_UPLINK_IP],
    ));
    assert!(route.status.success(), "{route:?}");
    let server = host
        .internet_cmd(
            "timeout",
            &[
                "30",
                "socat",
                "TCP-LISTEN:7100,reuseaddr",
                "SYSTEM:echo $SOCAT_PEERADDR",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server");
    let target = format!("TCP:{INTERNET_IP}:7100,connect-timeout=1");
    let netctl = host.bin.join("netctl");
    let socket = host.socket();
    let seen = tcp_answer(|| {
        let mut cmd = host.cmd(netctl.to_str().unwrap(), &["--socket"]);
        cmd.arg(&socket)
            .args(["exec", "m", "--", "socat", "-T2", "-", &target]);
        cmd
    });
    let mut server = server;
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(seen, host.ip_of("m", "routed"), "the internet saw {seen:?}");
}

#[test]
fn user_chain_is_jumped_to_first() {
    let host = TestHost::new();
    let filter = host.sh_ok("iptables-save", &["-t", "filter"]);
    let forward: Vec<&str> = filter
        .lines()
        .filter(|l| l.starts_with("-A FORWARD"))
        .collect();
    assert_eq!(
        forward.first(),
        Some(&"-A FORWARD -j NETD-USER"),
        "{filter}"
    );
    assert!(forward.contains(&"-A FORWARD -j NETD-FORWARD"));
    // An administrator's rule there wins over netd's: block one sandbox by hand.
    host.netctl_ok(&["network", "create", "--subnet", "10.60.0.0/24", "n"]);
    host.netctl_ok(&["run", "-d", "--name", "a", "--network", "n"]);
    host.netctl_ok(&["run", "-d", "--name", "b", "--network", "n"]);
    let b = host.ip_of("b", "n");
    assert!(host.can_ping("a", &b));
    host.sh_ok("iptables", &["-A", "NETD-USER", "-d", &b, "-j", "DROP"]);
    assert!(!host.can_ping("a", &b));
    // netd never flushes the admin chain, not even on reconcile.
    host.netctl_ok(&["system", "reconcile"]);
    assert!(host
        .sh_ok("iptables-save", &["-t", "filter"])
        .contains(&format!("-A NETD-USER -d {b}/32 -j DROP")));
}
