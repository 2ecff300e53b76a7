//! Cluster networks across test hosts: hosts on an underlay bridge (and one behind a
//! router), each running its own netd, with a real 3-member etcd. Observed by traffic
//! between sandboxes on different hosts, names that resolve, `ip`/`bridge` output and the
//! keys in etcd.

// Tests fail by panicking with a reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use netd_tests::cluster::{
    cluster_host, create_cluster_network, remote_host, wait_for_network, Etcd, Underlay, REMOTE,
    UNDERLAY,
};
use netd_tests::{tcp_answer, Server, TestHost, HOST_UPLINK_IP, INTERNET_IP};

const ETCD_IPS: [&str; 3] = ["192.168.60.101", "192.168.60.102", "192.168.60.103"];

/// A TCP server in a namespace that answers with the address the connection came from.
fn serve_peer_address(netns: &str, port: u16) -> Server {
    netd_tests::serve_tcp(netns, port, "SYSTEM:echo $SOCAT_PEERADDR")
}

fn sandbox_netns(host: &TestHost, name: &str) -> String {
    host.inspect(name)["NetworkSettings"]["SandboxKey"]
        .as_str()
        .expect("SandboxKey")
        .to_string()
}

/// What a TCP connection from a sandbox to `ip:port` is told.
fn tcp_from(host: &TestHost, sandbox: &str, ip: &str, port: u16) -> String {
    let netns = sandbox_netns(host, sandbox);
    tcp_answer(|| {
        TestHost::in_netns(
            &netns,
            "socat",
            &["-T2", "-", &format!("TCP:{ip}:{port},connect-timeout=2")],
        )
    })
}

fn resolves(host: &TestHost, sandbox: &str, name: &str) -> Option<String> {
    let out = host.exec(sandbox, &["getent", "hosts", name]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace().next().map(str::to_string)
}

/// Lines of a command's output in a test host.
fn lines(host: &TestHost, program: &str, args: &[&str]) -> Vec<String> {
    host.sh_ok(program, args)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The overlay entries of a vxlan network on a host: routes through the device, its
/// permanent neighbours and its FDB entries with a remote.
fn vxlan_entries(host: &TestHost, device: &str) -> (Vec<String>, Vec<String>, Vec<String>) {
    (
        lines(host, "ip", &["route", "show", "dev", device]),
        lines(
            host,
            "ip",
            &["neigh", "show", "dev", device, "nud", "permanent"],
        ),
        lines(host, "bridge", &["fdb", "show", "dev", device])
            .into_iter()
            .filter(|l| l.contains(" dst "))
            .collect(),
    )
}

fn vtep_mac(host: &TestHost) -> String {
    let line = host.sh_ok("ip", &["-br", "link", "show", "netd.1"]);
    line.split_whitespace().nth(2).expect("MAC").to_string()
}

fn network_json(host: &TestHost, name: &str) -> serde_json::Value {
    let text = host.netctl_ok(&["network", "inspect", name]);
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("inspect JSON");
    v[0].take()
}

/// Three hosts on the underlay started at once, one behind the router.
struct Bed {
    hosts: Vec<TestHost>,
    etcd: Etcd,
    underlay: Underlay,
}

fn bed(extra: &[&str], remote: bool) -> Bed {
    let mut underlay = Underlay::new();
    let router = underlay.add_router();
    let etcd = Etcd::start(&mut underlay, &ETCD_IPS);
    etcd.route_remote();
    let mut hosts: Vec<TestHost> = std::thread::scope(|s| {
        let joins: Vec<_> = (1..=3u8)
            .map(|n| {
                let (underlay, etcd) = (&underlay, &etcd);
                s.spawn(move || cluster_host(underlay, etcd, n, &format!("node{n}"), extra))
            })
            .collect();
        joins.into_iter().map(|j| j.join().expect("host")).collect()
    });
    for host in &hosts {
        Underlay::route_remote(&host.netns_path());
    }
    if remote {
        hosts.push(remote_host(&underlay, &router, &etcd, 4, "node4", extra));
    }
    Bed {
        hosts,
        etcd,
        underlay,
    }
}

#[test]
fn vxlan_hosts_reach_each_other_with_their_own_addresses_and_names() {
    let Bed {
        mut hosts,
        etcd,
        underlay: _underlay,
    } = bed(&[], true);
    let inet = hosts[0].add_internet();
    create_cluster_network(&hosts[0], "vxlan", "10.244.0.0/16", "ov");
    let all: Vec<&TestHost> = hosts.iter().collect();
    wait_for_network(&all, "ov", 4);

    // Every node leased its own subnet, and netd's keys are flannel's.
    let net = network_json(&hosts[0], "ov");
    assert_eq!(net["Scope"], "global");
    assert_eq!(net["Driver"], "vxlan");
    assert_eq!(net["ClusterSubnet"], "10.244.0.0/16");
    let nodes = net["Nodes"].as_array().expect("nodes");
    let mut subnets: Vec<&str> = nodes
        .iter()
        .map(|n| n["Subnet"].as_str().expect("subnet"))
        .collect();
    subnets.sort();
    subnets.dedup();
    assert_eq!(subnets.len(), 4, "distinct subnets: {nodes:?}");
    assert!(nodes.iter().all(|n| n["Reachable"] == true), "{nodes:?}");
    let node4 = nodes.iter().find(|n| n["Name"] == "node4").expect("node4");
    assert_eq!(
        node4["NodeIP"],
        format!("{REMOTE}.4"),
        "node IP from the default route"
    );
    let keys = etcd.dump("/netd/networks/ov/");
    assert!(
        keys.contains(r#""Backend":{"Type":"vxlan","VNI":1,"Port":8472"#),
        "{keys}"
    );
    assert_eq!(
        keys.matches("/netd/networks/ov/subnets/10.244.").count(),
        4,
        "{keys}"
    );
    assert!(
        keys.contains(r#""BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":""#),
        "{keys}"
    );

    for (i, host) in hosts.iter().enumerate() {
        host.netctl_ok(&["run", "--name", &format!("s{}", i + 1), "--network", "ov"]);
    }
    // A name resolves on another node within a second of run returning.
    hosts[3].netctl_ok(&["run", "--name", "late", "--network", "ov"]);
    let late_ip = hosts[3].ip_of("late", "ov");
    let started = Instant::now();
    let seen = TestHost::eventually(Duration::from_secs(1), || {
        resolves(&hosts[0], "s1", "late").as_deref() == Some(late_ip.as_str())
    });
    assert!(seen, "late did not resolve on node1 within 1 s");
    eprintln!("name visible on another node after {:?}", started.elapsed());

    let ips: Vec<String> = (0..4)
        .map(|i| hosts[i].ip_of(&format!("s{}", i + 1), "ov"))
        .collect();
    for (i, host) in hosts.iter().enumerate() {
        for (j, ip) in ips.iter().enumerate() {
            let target = format!("s{}", j + 1);
            assert_eq!(
                resolves(host, &format!("s{}", i + 1), &target).as_deref(),
                Some(ip.as_str()),
                "s{} resolves {target}",
                i + 1
            );
            assert!(
                host.can_ping(&format!("s{}", i + 1), &target),
                "s{} pings {target}",
                i + 1
            );
        }
    }
    // TCP across hosts keeps the sandbox's own source address.
    let _server = serve_peer_address(&sandbox_netns(&hosts[1], "s2"), 7000);
    assert_eq!(tcp_from(&hosts[0], "s1", &ips[1], 7000), ips[0]);
    let _remote = serve_peer_address(&sandbox_netns(&hosts[3], "s4"), 7000);
    assert_eq!(tcp_from(&hosts[2], "s3", &ips[3], 7000), ips[2]);
    // Out of the cluster network, the host's address.
    let _internet = serve_peer_address(&format!("/run/netns/{inet}"), 7001);
    assert_eq!(tcp_from(&hosts[0], "s1", INTERNET_IP, 7001), HOST_UPLINK_IP);

    // Exactly one route, neighbour and FDB entry per peer.
    for host in &hosts {
        let (routes, neighbours, fdb) = vxlan_entries(host, "netd.1");
        assert_eq!(routes.len(), 3, "{}: {routes:?}", host.name);
        assert!(routes.iter().all(|r| r.contains("onlink")), "{routes:?}");
        assert_eq!(neighbours.len(), 3, "{}: {neighbours:?}", host.name);
        assert_eq!(fdb.len(), 3, "{}: {fdb:?}", host.name);
    }
    let link = hosts[0].sh_ok("ip", &["-d", "link", "show", "netd.1"]);
    assert!(link.contains("vxlan id 1"), "{link}");
    assert!(link.contains(&format!("local {UNDERLAY}.1")), "{link}");
    assert!(link.contains("dstport 8472"), "{link}");
    assert!(link.contains("nolearning"), "{link}");
    assert!(link.contains("mtu 1450"), "{link}");

    // Aliases, short ids and reverse names across hosts.
    hosts[1].netctl_ok(&[
        "run",
        "--name",
        "api",
        "--network",
        "ov",
        "--alias",
        "backend",
    ]);
    let api = hosts[1].inspect("api");
    let api_ip = api["NetworkSettings"]["Networks"]["ov"]["IPAddress"]
        .as_str()
        .expect("ip")
        .to_string();
    let short = api["Id"].as_str().expect("id")[..12].to_string();
    // (dig, not getent: the C library reads an all-digit short id as an address)
    for name in ["backend", short.as_str()] {
        assert!(
            TestHost::eventually(Duration::from_secs(1), || {
                let out = hosts[0].exec("s1", &["dig", "+short", "+tries=1", "+time=1", name]);
                String::from_utf8_lossy(&out.stdout).trim() == api_ip
            }),
            "{name} resolves on node1"
        );
    }
    let reverse = hosts[0].exec("s1", &["getent", "hosts", &api_ip]);
    assert!(
        String::from_utf8_lossy(&reverse.stdout).contains("api"),
        "PTR of {api_ip}: {reverse:?}"
    );

    // network rm: refused while any node has a sandbox on it, naming the node; then
    // gone from every node, etcd and the kernel.
    let err = hosts[2].netctl_err(&["network", "rm", "ov"]);
    assert!(err.contains("api on node node2"), "{err}");
    for (i, host) in hosts.iter().enumerate() {
        host.netctl_ok(&["rm", "-f", &format!("s{}", i + 1)]);
    }
    hosts[1].netctl_ok(&["rm", "-f", "api"]);
    hosts[3].netctl_ok(&["rm", "-f", "late"]);
    assert!(TestHost::eventually(Duration::from_secs(2), || {
        hosts[2].netctl(&["network", "rm", "ov"]).status.success()
    }));
    for host in &hosts {
        assert!(
            TestHost::eventually(Duration::from_secs(3), || {
                !host.netctl_ok(&["network", "ls"]).contains(" ov ")
                    && !host.links().iter().any(|l| l.contains("netd.1"))
            }),
            "{} still has ov",
            host.name
        );
    }
    assert_eq!(etcd.dump("/netd/networks/ov/"), "");
}

#[test]
fn host_gw_routes_directly_and_reports_the_node_it_cannot_reach() {
    let Bed {
        hosts,
        etcd: _etcd,
        underlay: _underlay,
    } = bed(&[], true);
    hosts[1].netctl_ok(&[
        "network",
        "create",
        "--driver",
        "host-gw",
        "--subnet",
        "10.50.0.0/16",
        "--opt",
        "node-subnet-len=24",
        "hg",
    ]);
    let all: Vec<&TestHost> = hosts.iter().collect();
    wait_for_network(&all, "hg", 4);
    let net = network_json(&hosts[0], "hg");
    let node4 = net["Nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["Name"] == "node4")
        .expect("node4")
        .clone();
    assert_eq!(node4["Reachable"], false, "{node4}");
    assert!(
        node4["Reason"]
            .as_str()
            .unwrap_or("")
            .contains("directly connected"),
        "{node4}"
    );
    for (i, host) in hosts.iter().enumerate() {
        host.netctl_ok(&["run", "--name", &format!("g{}", i + 1), "--network", "hg"]);
    }
    let ip2 = hosts[1].ip_of("g2", "hg");
    let _server = serve_peer_address(&sandbox_netns(&hosts[1], "g2"), 7000);
    let ip1 = hosts[0].ip_of("g1", "hg");
    assert_eq!(tcp_from(&hosts[0], "g1", &ip2, 7000), ip1);
    assert!(hosts[2].can_ping("g3", "g1"));
    // One plain route per reachable peer, via its node IP; none for node4.
    let routes: Vec<String> = lines(&hosts[0], "ip", &["route"])
        .into_iter()
        .filter(|r| r.starts_with("10.50."))
        .collect();
    let via: Vec<&String> = routes.iter().filter(|r| r.contains(" via ")).collect();
    assert_eq!(via.len(), 2, "{routes:?}");
    for r in &via {
        assert!(r.contains(&format!("via {UNDERLAY}.")), "{r}");
    }
    assert!(!hosts[0].can_ping("g1", &hosts[3].ip_of("g4", "hg")));
}

#[test]
fn direct_routing_takes_plain_routes_to_adjacent_nodes_and_vxlan_to_the_others() {
    let Bed {
        hosts,
        etcd: _etcd,
        underlay: _underlay,
    } = bed(&[], true);
    hosts[0].netctl_ok(&[
        "network",
        "create",
        "--driver",
        "vxlan",
        "--subnet",
        "10.60.0.0/16",
        "--opt",
        "vni=42",
        "--opt",
        "port=4789",
        "--opt",
        "direct-routing=true",
        "dr",
    ]);
    let all: Vec<&TestHost> = hosts.iter().collect();
    wait_for_network(&all, "dr", 4);
    for (i, host) in hosts.iter().enumerate() {
        host.netctl_ok(&["run", "--name", &format!("d{}", i + 1), "--network", "dr"]);
    }
    for target in ["d2", "d3", "d4"] {
        assert!(hosts[0].can_ping("d1", target), "d1 pings {target}");
    }
    let (routes, neighbours, fdb) = vxlan_entries(&hosts[0], "netd.42");
    assert_eq!(routes.len(), 1, "only node4 through vxlan: {routes:?}");
    assert_eq!((neighbours.len(), fdb.len()), (1, 1));
    let direct: Vec<String> = lines(&hosts[0], "ip", &["route"])
        .into_iter()
        .filter(|r| r.starts_with("10.60.") && r.contains(&format!("via {UNDERLAY}.")))
        .collect();
    assert_eq!(direct.len(), 2, "{direct:?}");
    let link = hosts[0].sh_ok("ip", &["-d", "link", "show", "netd.42"]);
    assert!(link.contains("dstport 4789"), "{link}");
}

/// A restart keeps the node's subnet and VTEP MAC, and a TCP connection open across it
/// keeps working; a route deleted by hand comes back; a node killed with kill -9 is
/// removed everywhere once its lease expires; `cluster node rm` releases a node at once.
#[test]
fn restarts_repairs_expiry_and_node_removal() {
    let Bed {
        mut hosts,
        etcd,
        underlay: _underlay,
    } = bed(&["--lease-ttl", "6s"], false);
    create_cluster_network(&hosts[0], "vxlan", "10.70.0.0/16", "ov");
    let all: Vec<&TestHost> = hosts.iter().collect();
    wait_for_network(&all, "ov", 3);
    for (i, host) in hosts.iter().enumerate() {
        host.netctl_ok(&["run", "--name", &format!("r{}", i + 1), "--network", "ov"]);
    }
    let ip2 = hosts[1].ip_of("r2", "ov");
    let subnet_before = network_json(&hosts[1], "ov")["IPAM"]["Config"][0]["Subnet"].clone();
    let mac_before = vtep_mac(&hosts[1]);

    // A long TCP connection from r1 to r2, open while node2's netd restarts.
    let netns2 = sandbox_netns(&hosts[1], "r2");
    let _echo = Server::new(
        TestHost::in_netns(
            &netns2,
            "timeout",
            &["60", "socat", "TCP-LISTEN:7100,reuseaddr", "EXEC:cat"],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("echo server"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let netns1 = sandbox_netns(&hosts[0], "r1");
    let mut client =
        TestHost::in_netns(&netns1, "socat", &["-T10", "-", &format!("TCP:{ip2}:7100")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("client");
    use std::io::{BufRead, Write};
    let mut to = client.stdin.take().expect("stdin");
    let mut from = std::io::BufReader::new(client.stdout.take().expect("stdout"));
    let mut line = String::new();
    writeln!(to, "before").expect("write");
    from.read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "before");
    hosts[1].stop_netd();
    hosts[1].start_netd();
    line.clear();
    writeln!(to, "after").expect("write");
    from.read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "after", "the connection survived the restart");
    drop(to);
    let _ = client.wait();
    assert_eq!(
        network_json(&hosts[1], "ov")["IPAM"]["Config"][0]["Subnet"],
        subnet_before
    );
    assert_eq!(vtep_mac(&hosts[1]), mac_before);

    // A route deleted by hand is put back by the periodic check.
    let route = lines(&hosts[0], "ip", &["route", "show", "dev", "netd.1"])[0].clone();
    let dest = route
        .split_whitespace()
        .next()
        .expect("destination")
        .to_string();
    hosts[0].sh_ok("ip", &["route", "del", &dest]);
    assert!(TestHost::eventually(Duration::from_secs(8), || {
        lines(&hosts[0], "ip", &["route", "show", "dev", "netd.1"]).len() == 2
    }));

    // kill -9: the lease expires (6 s) and node3 leaves every node's kernel and DNS.
    let ip3 = hosts[2].ip_of("r3", "ov");
    hosts[2].kill_netd();
    let gone = TestHost::eventually(Duration::from_secs(15), || {
        let (routes, neighbours, fdb) = vxlan_entries(&hosts[0], "netd.1");
        routes.len() == 1 && neighbours.len() == 1 && fdb.len() == 1
    });
    assert!(
        gone,
        "node3 was not removed: {:?}",
        vxlan_entries(&hosts[0], "netd.1")
    );
    assert_eq!(resolves(&hosts[0], "r1", "r3"), None);
    assert!(!etcd.dump("/netd/networks/ov/").contains("node3"));
    assert!(!hosts[0].can_ping("r1", &ip3));

    // cluster node rm: node2's leases go at once (its netd is stopped first, or it
    // would lease again).
    hosts[1].kill_netd();
    let out = hosts[0].netctl_ok(&["cluster", "node", "rm", "node2"]);
    assert!(out.contains("released ov 10.70."), "{out}");
    assert!(TestHost::eventually(Duration::from_secs(3), || {
        vxlan_entries(&hosts[0], "netd.1").0.is_empty()
    }));
    let nodes = hosts[0].netctl_ok(&["cluster", "nodes"]);
    assert!(
        nodes.contains("node1") && !nodes.contains("node2"),
        "{nodes}"
    );
    let err = hosts[0].netctl_err(&["cluster", "node", "rm", "node1"]);
    assert!(err.contains("this node"), "{err}");
}

/// With one etcd member down everything works; with all down, cluster operations fail
/// clearly while local ones and established cross-host traffic go on; when etcd is back
/// the nodes resync without a restart.
#[test]
fn etcd_faults() {
    let Bed {
        hosts,
        mut etcd,
        underlay: _underlay,
    } = bed(&["--metrics-addr", netd_tests::metrics::ADDR], false);
    let metric = |host: &TestHost, key: &str| {
        netd_tests::metrics::scrape(host)
            .get(key)
            .copied()
            .unwrap_or(-1.0)
    };
    etcd.kill_member(0);
    create_cluster_network(&hosts[0], "vxlan", "10.80.0.0/16", "ov");
    let all: Vec<&TestHost> = hosts.iter().collect();
    wait_for_network(&all, "ov", 3);
    hosts[0].netctl_ok(&["run", "--name", "f1", "--network", "ov"]);
    hosts[1].netctl_ok(&["run", "--name", "f2", "--network", "ov"]);
    assert!(TestHost::eventually(Duration::from_secs(3), || {
        resolves(&hosts[0], "f1", "f2").is_some()
    }));
    // The metrics tell the store's state: up, the watch delivering, a revision seen.
    assert_eq!(metric(&hosts[1], "netd_cluster_store_up{}"), 1.0);
    assert!(metric(&hosts[1], "netd_cluster_watch_events_total{}") > 0.0);
    assert!(metric(&hosts[1], "netd_cluster_store_revision{}") > 0.0);
    let lost = metric(&hosts[1], "netd_cluster_store_sessions_lost_total{}");

    etcd.kill_all();
    assert!(
        TestHost::eventually(Duration::from_secs(15), || metric(
            &hosts[1],
            "netd_cluster_store_up{}"
        ) == 0.0),
        "the store is gone and the metrics do not say so"
    );
    assert!(metric(&hosts[1], "netd_cluster_store_sessions_lost_total{}") > lost);
    let err = hosts[0].netctl_err(&[
        "network",
        "create",
        "--driver",
        "host-gw",
        "--subnet",
        "10.81.0.0/16",
        "other",
    ]);
    assert!(err.contains("cluster store"), "{err}");
    assert!(
        hosts[0].can_ping("f1", &hosts[1].ip_of("f2", "ov")),
        "traffic keeps flowing"
    );
    hosts[0].netctl_ok(&["run", "--name", "f3", "--network", "ov"]);
    hosts[0].netctl_ok(&["network", "create", "local"]);
    hosts[0].netctl_ok(&["run", "--name", "l1", "--network", "local"]);
    assert!(hosts[0].can_ping("f3", "f1"));

    etcd.start_all();
    // Back: f3 (run while etcd was away) gets published, new cluster networks work.
    assert!(
        TestHost::eventually(Duration::from_secs(15), || resolves(&hosts[1], "f2", "f3")
            .is_some()),
        "node1 did not resync: {}",
        hosts[0].netd_log()
    );
    create_cluster_network(&hosts[2], "host-gw", "10.81.0.0/16", "other");
    wait_for_network(&all, "other", 3);
    assert_eq!(metric(&hosts[1], "netd_cluster_store_up{}"), 1.0);
}

/// Bad input changes nothing in etcd or the kernel, and netd keeps running.
#[test]
fn bad_input_leaves_etcd_and_the_kernel_as_they_were() {
    let Bed {
        hosts,
        etcd,
        underlay: _underlay,
    } = bed(&[], false);
    create_cluster_network(&hosts[0], "vxlan", "10.90.0.0/16", "ok");
    let all: Vec<&TestHost> = hosts.iter().collect();
    wait_for_network(&all, "ok", 3);
    hosts[0].netctl_ok(&["network", "create", "--subnet", "10.200.0.0/24", "localnet"]);
    let keys = etcd.dump("/netd");
    let links = hosts[0].links();
    let routes = hosts[0].sh_ok("ip", &["route"]);
    let create = |args: &[&str]| {
        let mut all = vec!["network", "create"];
        all.extend_from_slice(args);
        hosts[0].netctl_err(&all)
    };
    for (args, field) in [
        (
            vec![
                "--driver",
                "vxlan",
                "--subnet",
                "10.91.0.0/24",
                "--opt",
                "node-subnet-len=24",
                "n",
            ],
            "node-subnet-len",
        ),
        (
            vec![
                "--driver",
                "vxlan",
                "--subnet",
                "10.91.0.0/16",
                "--opt",
                "node-subnet-len=31",
                "n",
            ],
            "node-subnet-len",
        ),
        (
            vec![
                "--driver",
                "vxlan",
                "--subnet",
                "10.91.0.0/16",
                "--opt",
                "node-subnet-len=7",
                "n",
            ],
            "node-subnet-len",
        ),
        (
            vec![
                "--driver",
                "vxlan",
                "--subnet",
                "10.91.0.0/16",
                "--opt",
                "vni=0",
                "n",
            ],
            "vni",
        ),
        (
            vec![
                "--driver",
                "vxlan",
                "--subnet",
                "10.91.0.0/16",
                "--opt",
                "vni=16777216",
                "n",
            ],
            "vni",
        ),
        (
            vec![
                "--driver",
                "vxlan",
                "--subnet",
                "10.91.0.0/16",
                "--opt",
                "port=0",
                "n",
            ],
            "port",
        ),
        (
            vec![
                "--driver",
                "vxlan",
                "--subnet",
                "10.91.0.0/16",
                "--opt",
                "colour=blue",
                "n",
            ],
            "colour",
        ),
        (
            vec!["--driver", "geneve", "--subnet", "10.91.0.0/16", "n"],
            "--driver",
        ),
        (
            vec![
                "--driver",
                "vxlan",
                "--subnet",
                "10.200.0.0/16",
                "--opt",
                "vni=7",
                "n",
            ],
            "--subnet",
        ),
        (
            vec![
                "--driver",
                "vxlan",
                "--subnet",
                &format!("{UNDERLAY}.0/24"),
                "--opt",
                "vni=7",
                "n",
            ],
            "--subnet",
        ),
        (
            vec!["--driver", "vxlan", "--subnet", "10.92.0.0/16", "ok"],
            "ok",
        ),
        (
            vec!["--driver", "vxlan", "--subnet", "10.92.0.0/16", "n"],
            "vni",
        ),
        (vec!["--driver", "vxlan", "n"], "--subnet"),
        (
            vec![
                "--driver",
                "host-gw",
                "--subnet",
                "10.93.0.0/16",
                "--opt",
                "vni=5",
                "n",
            ],
            "vni",
        ),
        (
            vec![
                "--driver",
                "vxlan",
                "--subnet",
                "10.93.0.0/16",
                "--gateway",
                "10.93.0.1",
                "n",
            ],
            "--gateway",
        ),
    ] {
        let err = create(&args);
        assert!(err.contains(field), "{args:?}: {err}");
    }
    // Corrupt records written by hand are skipped, not fatal.
    etcd.put("/netd/networks/ok/subnets/10.90.99.0-24", "{not json");
    etcd.put("/netd/networks/broken/config", r#"{"Network":"nonsense"}"#);
    etcd.put("/netd/networks/ok/names/ghost/x", "[]");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(hosts[0].links(), links, "no link added or removed");
    assert_eq!(hosts[0].sh_ok("ip", &["route"]), routes);
    hosts[0].netctl_ok(&["run", "--name", "still", "--network", "ok"]);
    assert!(
        hosts[0].netd_log().contains("skipped"),
        "{}",
        hosts[0].netd_log()
    );
    for (key, _) in [
        ("/netd/networks/ok/subnets/10.90.99.0-24", ()),
        ("/netd/networks/broken/config", ()),
        ("/netd/networks/ok/names/ghost/x", ()),
    ] {
        assert!(etcd.etcdctl(&["del", key]).status.success());
    }
    let now = etcd.dump("/netd");
    let without_names: Vec<&str> = now.lines().filter(|l| !l.contains("/names/")).collect();
    let before: Vec<&str> = keys.lines().filter(|l| !l.contains("/names/")).collect();
    assert_eq!(without_names, before, "etcd unchanged by the bad requests");

    // A store that does not answer, or is no etcd: netd starts, local networks work,
    // cluster operations are refused with the reason.
    for store in ["etcd://127.0.0.1:1", "etcd://127.0.0.1:7002"] {
        let mut host = TestHost::bare();
        let _not_etcd = serve_peer_address(&host.netns_path(), 7002);
        host.set_netd_args(vec![
            "--cluster-store".into(),
            store.into(),
            "--node-ip".into(),
            "127.0.0.1".into(),
        ]);
        host.start_netd();
        host.netctl_ok(&["network", "create", "--subnet", "10.201.0.0/24", "mine"]);
        let err = host.netctl_err(&[
            "network",
            "create",
            "--driver",
            "vxlan",
            "--subnet",
            "10.95.0.0/16",
            "n",
        ]);
        assert!(err.contains("cluster store"), "{store}: {err}");
        let err = host.netctl_err(&["cluster", "nodes"]);
        assert!(err.contains("cluster store"), "{store}: {err}");
    }
    let bad = TestHost::bare();
    for args in [
        vec!["--cluster-store", "http://127.0.0.1:2379"],
        vec!["--cluster-store", "etcd://127.0.0.1"],
        vec![
            "--cluster-store",
            "etcd://127.0.0.1:2379",
            "--node-ip",
            "10.0.0.300",
        ],
        vec![
            "--cluster-store",
            "etcd://127.0.0.1:2379",
            "--lease-ttl",
            "soon",
        ],
        vec!["--node-ip", "127.0.0.1"],
    ] {
        let extra: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let mut child = bad
            .netd_command(&extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("netd");
        let exited = TestHost::eventually(Duration::from_secs(5), || {
            child.try_wait().ok().flatten().is_some()
        });
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
            panic!("netd {args:?} started instead of refusing");
        }
        let out = child.wait_with_output().expect("netd output");
        assert!(!out.status.success(), "{args:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(args[args.len() - 2]), "{args:?}: {err}");
    }

    // A netd without a cluster store refuses cluster drivers.
    let local = TestHost::new();
    let err = local.netctl_err(&[
        "network",
        "create",
        "--driver",
        "vxlan",
        "--subnet",
        "10.94.0.0/16",
        "n",
    ]);
    assert!(err.contains("--cluster-store"), "{err}");
}

/// Runs `netd-flannel` in a test host as a runtime does.
fn flannel(
    host: &TestHost,
    command: &str,
    id: &str,
    netns: &str,
    conf: &serde_json::Value,
) -> (bool, serde_json::Value) {
    use std::io::Write;
    let bin = netd_tests::bin_dir();
    let mut cmd = host.cmd(bin.join("netd-flannel").to_str().expect("utf-8"), &[]);
    cmd.env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &bin)
        .env("NETD_CNI_RUN_DIR", host.dir.path().join("netd-cni"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("netd-flannel");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.to_string().as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("output");
    let text = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (out.status.success(), json)
}

/// The kubelet's path: netd-flannel under a CNI runtime on two nodes. Pods get addresses
/// from the node's lease, reach pods and netd sandboxes on the other node, and share the
/// node's address store with netd's own sandboxes.
#[test]
fn netd_flannel_pods_across_hosts_share_the_nodes_subnet_with_sandboxes() {
    let Bed {
        hosts,
        etcd: _etcd,
        underlay: _underlay,
    } = bed(&[], false);
    let subnet_file = hosts[0].dir.path().join("flannel-subnet.env");
    let opt = format!("subnet-file={}", subnet_file.display());
    hosts[0].netctl_ok(&[
        "network",
        "create",
        "--driver",
        "vxlan",
        "--subnet",
        "10.100.0.0/16",
        "--opt",
        &opt,
        "ov",
    ]);

    let all: Vec<&TestHost> = hosts.iter().collect();
    wait_for_network(&all, "ov", 3);
    let conf = |host: &TestHost| {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "cbr0",
            "type": "netd-flannel",
            "subnetFile": host.run_dir().join("cluster/ov/subnet.env"),
            "dataDir": host.dir.path().join("flannel"),
        })
    };
    let env = hosts[0].sh_ok(
        "cat",
        &[hosts[0]
            .run_dir()
            .join("cluster/ov/subnet.env")
            .to_str()
            .expect("utf-8")],
    );
    assert!(env.contains("FLANNEL_NETWORK=10.100.0.0/16"), "{env}");
    assert!(env.contains("FLANNEL_MTU=1450"), "{env}");
    // Every node writes it (on one machine, the same file): one node's lease.
    let also = std::fs::read_to_string(&subnet_file).expect("--opt subnet-file");
    assert!(
        also.contains("FLANNEL_NETWORK=10.100.0.0/16\nFLANNEL_SUBNET=10.100."),
        "{also}"
    );

    // A netd sandbox first, then a pod on the same node: different addresses.
    hosts[0].netctl_ok(&["run", "--name", "s1", "--network", "ov"]);
    let s1 = hosts[0].ip_of("s1", "ov");
    let pod1 = hosts[0].add_container_netns();
    let (ok, result) = flannel(&hosts[0], "ADD", "pod1", &pod1, &conf(&hosts[0]));
    assert!(ok, "{result}");
    let pod1_ip = result["ips"][0]["address"]
        .as_str()
        .expect("address")
        .split('/')
        .next()
        .expect("ip")
        .to_string();
    assert_ne!(pod1_ip, s1);
    let subnet = network_json(&hosts[0], "ov")["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .expect("subnet")
        .to_string();
    let prefix = subnet.rsplit_once('.').expect("subnet").0.to_string();
    assert!(pod1_ip.starts_with(&prefix), "{pod1_ip} in {subnet}");
    // ... and a sandbox after the pod does not take the pod's address.
    hosts[0].netctl_ok(&["run", "--name", "s1b", "--network", "ov"]);
    assert_ne!(hosts[0].ip_of("s1b", "ov"), pod1_ip);

    let pod2 = hosts[1].add_container_netns();
    let (ok, result) = flannel(&hosts[1], "ADD", "pod2", &pod2, &conf(&hosts[1]));
    assert!(ok, "{result}");
    let pod2_ip = result["ips"][0]["address"]
        .as_str()
        .expect("address")
        .split('/')
        .next()
        .expect("ip")
        .to_string();
    hosts[1].netctl_ok(&["run", "--name", "s2", "--network", "ov"]);
    let s2 = hosts[1].ip_of("s2", "ov");
    let ping = |netns: &str, ip: &str| {
        netd_tests::run(&mut TestHost::in_netns(netns, "ping", &["-c1", "-W2", ip]))
            .status
            .success()
    };
    assert!(ping(&pod1, &pod2_ip), "pod to pod across hosts");
    assert!(ping(&pod1, &s2), "pod to a netd sandbox on another host");
    assert!(
        hosts[1].can_ping("s2", &pod1_ip),
        "sandbox to a pod on another host"
    );

    // DEL replays the saved configuration and frees the address.
    let (ok, result) = flannel(&hosts[0], "DEL", "pod1", &pod1, &conf(&hosts[0]));
    assert!(ok, "{result}");
    assert!(!hosts[0].dir.path().join("flannel/pod1").exists());
    let reserved: Vec<String> = std::fs::read_dir(hosts[0].root().join("cluster-ipam/ov"))
        .expect("reservations")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("10."))
        .collect();
    assert!(!reserved.contains(&pod1_ip), "{reserved:?}");
    assert!(reserved.contains(&s1), "{reserved:?}");
}

/// An etcd that wants TLS and client certificates: nodes given `--etcd-cafile`,
/// `--etcd-certfile` and `--etcd-keyfile` join; a node without a client certificate is
/// refused with the reason.
#[test]
fn an_etcd_over_tls_with_client_certificates() {
    let mut underlay = Underlay::new();
    let etcd = Etcd::start_tls(&mut underlay, &ETCD_IPS[..1]);
    let [ca, cert, key] = etcd.tls_files();
    let tls = [
        "--etcd-cafile",
        ca.to_str().expect("utf-8"),
        "--etcd-certfile",
        cert.to_str().expect("utf-8"),
        "--etcd-keyfile",
        key.to_str().expect("utf-8"),
    ];
    let a = cluster_host(&underlay, &etcd, 1, "node1", &tls);
    let b = cluster_host(&underlay, &etcd, 2, "node2", &tls);
    a.netctl_ok(&[
        "network",
        "create",
        "--driver",
        "host-gw",
        "--subnet",
        "10.110.0.0/16",
        "t",
    ]);
    wait_for_network(&[&a, &b], "t", 2);
    a.netctl_ok(&["run", "--name", "x", "--network", "t"]);
    b.netctl_ok(&["run", "--name", "y", "--network", "t"]);
    assert!(a.can_ping("x", "y"));
    assert!(etcd.dump("/netd/networks/t/").contains("subnets/10.110."));
    let no_cert = cluster_host(&underlay, &etcd, 3, "node3", &tls[..2]);
    let err = no_cert.netctl_err(&["cluster", "nodes"]);
    assert!(err.contains("cluster store"), "{err}");
}
