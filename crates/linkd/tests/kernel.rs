//! linkd against the real kernel. Each test runs on its own thread inside a fresh network
//! namespace (the thread's private "test host"), so the machine's namespace is untouched.
//! Needs root.

// Tests fail by panicking with a reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::process::Command;

use ipnet::Ipv4Net;
use linkd::{BridgeSpec, Netlink, Netns, Route, VethSpec};

fn in_test_host<F: FnOnce() + Send + 'static>(f: F) {
    let handle = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns (root?)");
        f();
    });
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("test literal")
}

#[test]
fn bridge_veth_in_place_address_and_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ns_path = dir.path().join("ns1");
    let ns_path2 = ns_path.clone();
    in_test_host(move || {
        let mut nl = Netlink::open().expect("netlink");
        nl.create_bridge(&BridgeSpec {
            name: "tbr0",
            mac: [0x02, 0x42, 0, 0, 0, 1],
            mtu: 1400,
            alias: "netd-test",
        })
        .expect("bridge");
        let br = nl.require_link("tbr0").expect("bridge exists");
        assert!(br.up);
        assert_eq!(br.mtu, 1400);
        assert_eq!(br.alias.as_deref(), Some("netd-test"));
        assert_eq!(br.kind.as_deref(), Some("bridge"));
        nl.add_address(br.index, net("10.9.0.1/24"), "tbr0")
            .expect("addr");
        // Applying twice is harmless (replace semantics).
        nl.add_address(br.index, net("10.9.0.1/24"), "tbr0")
            .expect("addr again");

        let (ns, mut inner) = Netns::create(&ns_path, &[]).expect("netns");
        nl.create_veth(&VethSpec {
            host_name: "ndtest0",
            master: br.index,
            mtu: 1400,
            peer_name: "eth0",
            peer_mac: [0x02, 0x42, 10, 9, 0, 2],
            peer_netns: ns.fd(),
        })
        .expect("veth");
        let host = nl.require_link("ndtest0").expect("host end");
        assert!(!host.up, "host end created down, to be configured first");
        assert_eq!(host.master, Some(br.index), "host end enslaved at creation");
        nl.set_hairpin(host.index, true).expect("hairpin");
        nl.set_up(host.index, "ndtest0").expect("up");
        assert_eq!(
            nl.require_link("ndtest0").expect("host end").hairpin,
            Some(true)
        );
        assert!(nl.require_link("ndtest0").expect("host end").up);
        let eth0 = inner.require_link("eth0").expect("peer born inside");
        inner.set_up(eth0.index, "eth0").expect("up");
        assert_eq!(eth0.mac, Some([0x02, 0x42, 10, 9, 0, 2]));
        inner
            .add_address(eth0.index, net("10.9.0.2/24"), "eth0")
            .expect("addr");
        inner
            .replace_route(&Route {
                destination: net("0.0.0.0/0"),
                gateway: Some(Ipv4Addr::new(10, 9, 0, 1)),
                oif: Some(eth0.index),
            })
            .expect("default route");
        let routes = inner.routes().expect("routes");
        assert!(routes
            .iter()
            .any(|r| r.destination.prefix_len() == 0
                && r.gateway == Some(Ipv4Addr::new(10, 9, 0, 1))));
        assert!(
            nl.link_by_name("eth0").expect("lookup").is_none(),
            "peer not in host ns"
        );

        // Real traffic from the namespace to the bridge (ping is a separate process, so
        // it enters the namespace by path).
        let ok = Command::new("nsenter")
            .arg(format!("--net={}", ns_path.display()))
            .args(["ping", "-c1", "-W2", "10.9.0.1"])
            .output()
            .expect("nsenter");
        assert!(
            ok.status.success(),
            "ping from the namespace to the bridge: {ok:?}"
        );
        drop(ns);
        drop(inner);
        Netns::remove(&ns_path).expect("remove");
        assert!(!ns_path.exists());
    });
    assert!(!ns_path2.exists());
}

#[test]
fn rules_found_by_marker_are_deleted_by_handle() {
    in_test_host(|| {
        let rules = "*nat\n:NETD-HP-test - [0:0]\n\
            -A NETD-HP-test -p tcp -m tcp --dport 80 -m comment --comment \"sandbox aaa\" -j DNAT --to-destination 10.0.0.2:80\n\
            -A NETD-HP-test -p tcp -m tcp --dport 81 -m comment --comment \"sandbox bbb\" -j DNAT --to-destination 10.0.0.3:80\n\
            -A NETD-HP-test -p udp -m udp --dport 82 -m comment --comment \"sandbox aaa\" -j DNAT --to-destination 10.0.0.2:82\n\
            COMMIT\n";
        linkd::Iptables::default().restore(rules).expect("restore");
        let mut nft = linkd::nftables::Nftables::open().expect("nftables socket");
        assert!(nft.chain_exists("nat", "NETD-HP-test").expect("get chain"));
        assert!(!nft.chain_exists("nat", "NETD-HP-none").expect("get chain"));
        let handles = nft
            .rules_containing("nat", "NETD-HP-test", b"sandbox aaa\0")
            .expect("dump");
        assert_eq!(handles.len(), 2, "{handles:?}");
        assert!(
            nft.rules_containing("nat", "NETD-HP-test", b"sandbox aa\0")
                .expect("dump")
                .is_empty(),
            "the marker must match whole"
        );
        nft.delete_rules("nat", "NETD-HP-test", &handles)
            .expect("delete");
        let saved = linkd::Iptables::default().save("nat").expect("save");
        let left: Vec<&str> = saved
            .lines()
            .filter(|l| l.starts_with("-A NETD-HP-test"))
            .collect();
        assert_eq!(left.len(), 1, "{saved}");
        assert!(left[0].contains("sandbox bbb"));
        // Deleting what is gone fails cleanly, and nothing else changes.
        assert!(nft.delete_rules("nat", "NETD-HP-test", &handles).is_err());
        assert_eq!(linkd::Iptables::default().save("nat").expect("save"), saved);
    });
}
