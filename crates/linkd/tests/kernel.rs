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
        assert_eq!(
            without_comments(&linkd::Iptables::default().save("nat").expect("save")),
            without_comments(&saved)
        );
    });
}

/// iptables-save's output without its `#` lines, which carry the time of the dump.
fn without_comments(saved: &str) -> Vec<&str> {
    saved.lines().filter(|l| !l.starts_with('#')).collect()
}

fn ip_says(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn vxlan_device_with_permanent_neighbour_fdb_and_onlink_route() {
    use linkd::vxlan::{
        create_vxlan_request, delete_fdb_request, delete_neighbour_request, fdb_request,
        neighbour_request, onlink_route_request, FdbEntry, Neighbour, VxlanSpec,
    };
    in_test_host(|| {
        let mut nl = Netlink::open().expect("netlink");
        // The underlay: a bridge carrying the node IP.
        nl.create_bridge(&BridgeSpec {
            name: "under0",
            mac: [0x02, 0x42, 0, 0, 0, 9],
            mtu: 1500,
            alias: "netd-test",
        })
        .expect("underlay");
        let under = nl.require_link("under0").expect("underlay");
        nl.add_address(under.index, net("192.168.77.1/24"), "under0")
            .expect("node ip");
        let vtep = [0x06, 1, 2, 3, 4, 5];
        nl.batch(vec![create_vxlan_request(&VxlanSpec {
            name: "netd.42",
            vni: 42,
            local: Ipv4Addr::new(192, 168, 77, 1),
            underlay: under.index,
            port: 8472,
            mtu: 1450,
            mac: vtep,
        })])
        .expect("vxlan");
        let vx = nl.require_link("netd.42").expect("vxlan exists");
        assert_eq!(vx.kind.as_deref(), Some("vxlan"));
        assert_eq!((vx.mtu, vx.mac), (1450, Some(vtep)));
        let details = ip_says(&["-d", "link", "show", "netd.42"]);
        for says in [
            "vxlan id 42",
            "local 192.168.77.1",
            "dev under0",
            "dstport 8472",
            "nolearning",
        ] {
            assert!(details.contains(says), "{says}: {details}");
        }
        nl.set_up(vx.index, "netd.42").expect("up");

        let peer_mac = [0x06, 9, 9, 9, 9, 9];
        let gateway = Ipv4Addr::new(10, 244, 2, 0);
        let neighbour = Neighbour {
            index: vx.index,
            ip: gateway,
            mac: peer_mac,
        };
        let fdb = FdbEntry {
            index: vx.index,
            mac: peer_mac,
            remote: Ipv4Addr::new(192, 168, 77, 2),
        };
        let program = || {
            vec![
                neighbour_request(&neighbour),
                fdb_request(&fdb),
                onlink_route_request(net("10.244.2.0/24"), gateway, vx.index),
            ]
        };
        nl.batch(program()).expect("peer entries");
        nl.batch(program()).expect("programming again replaces");
        assert_eq!(nl.neighbours(vx.index).expect("neighbours"), [neighbour]);
        assert_eq!(nl.fdb_entries(vx.index).expect("fdb"), [fdb]);
        assert!(ip_says(&["neigh", "show", "dev", "netd.42"])
            .contains("10.244.2.0 lladdr 06:09:09:09:09:09 PERMANENT"));
        let fdb_text = Command::new("bridge")
            .args(["fdb", "show", "dev", "netd.42"])
            .output()
            .expect("bridge");
        assert!(
            String::from_utf8_lossy(&fdb_text.stdout)
                .contains("06:09:09:09:09:09 dst 192.168.77.2 self permanent"),
            "{fdb_text:?}"
        );
        let routes = ip_says(&["route", "show", "10.244.2.0/24"]);
        assert!(
            routes.contains("10.244.2.0/24 via 10.244.2.0 dev netd.42 onlink"),
            "{routes}"
        );

        // Removed in reverse: route, FDB, neighbour.
        nl.delete_route(&Route {
            destination: net("10.244.2.0/24"),
            gateway: Some(gateway),
            oif: Some(vx.index),
        })
        .expect("route gone");
        nl.batch(vec![
            delete_fdb_request(&fdb),
            delete_neighbour_request(&neighbour),
        ])
        .expect("entries gone");
        assert!(nl.neighbours(vx.index).expect("neighbours").is_empty());
        assert!(nl.fdb_entries(vx.index).expect("fdb").is_empty());
        assert!(ip_says(&["route", "show", "10.244.2.0/24"])
            .trim()
            .is_empty());
    });
}
