//! Port publishing, observed with real connections: TCP and UDP servers in sandboxes,
//! clients in another namespace, on the host, in other sandboxes, in the same sandbox.

// Tests fail by panicking with a reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;
use std::time::Duration;

use netd_tests::{run, TestHost, HOST_UPLINK_IP, INTERNET_IP};

/// A TCP server in a sandbox that answers each connection with "hello <peer address>".
fn tcp_server(host: &TestHost, name: &str, network: &str, publish: &[&str], port: u16) {
    let mut args = vec!["run", "-d", "--name", name, "--network", network];
    for p in publish {
        args.extend_from_slice(&["-p", p]);
    }
    let listen = format!("TCP-LISTEN:{port},fork,reuseaddr");
    args.extend_from_slice(&["--", "socat", &listen, "SYSTEM:echo hello $SOCAT_PEERADDR"]);
    host.netctl_ok(&args);
}

/// What a TCP client run by `cmd` reads (empty when nothing answers), retried briefly
/// while the server starts.
fn tcp_answer(mut make: impl FnMut() -> Command) -> String {
    let mut last = String::new();
    for _ in 0..20 {
        let out = run(&mut make());
        last = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !last.is_empty() {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    last
}

fn client(target: &str) -> Vec<String> {
    vec![
        "socat".into(),
        "-T2".into(),
        "-".into(),
        format!("TCP:{target},connect-timeout=1"),
    ]
}

fn from_host(host: &TestHost, target: &str) -> String {
    let argv = client(target);
    tcp_answer(|| {
        host.cmd(
            &argv[0],
            &argv[1..].iter().map(String::as_str).collect::<Vec<_>>(),
        )
    })
}

fn from_internet(host: &TestHost, target: &str) -> String {
    let argv = client(target);
    tcp_answer(|| {
        host.internet_cmd(
            &argv[0],
            &argv[1..].iter().map(String::as_str).collect::<Vec<_>>(),
        )
    })
}

fn from_sandbox(host: &TestHost, sandbox: &str, target: &str) -> String {
    let argv = client(target);
    let mut args = vec!["exec", sandbox, "--"];
    args.extend(argv.iter().map(String::as_str));
    let netctl = host.bin.join("netctl");
    let socket = host.socket();
    tcp_answer(|| {
        let mut cmd = host.cmd(netctl.to_str().expect("path"), &[]);
        cmd.arg("--socket").arg(&socket).args(&args);
        cmd
    })
}

/// Whether a program in the test host can bind a TCP port (socat waits for a connection
/// when it could bind, so `timeout` ends it with 124; it fails at once when it could not).
fn can_bind(host: &TestHost, port: u16) -> bool {
    let listen = format!("TCP-LISTEN:{port},reuseaddr");
    run(&mut host.cmd("timeout", &["1", "socat", &listen, "-"]))
        .status
        .code()
        == Some(124)
}

/// A published port refuses (nothing answers) within a short time.
fn silent(answer: String) -> bool {
    answer.is_empty()
}

#[test]
fn published_tcp_port_is_reachable_from_everywhere() {
    let mut host = TestHost::new();
    host.add_internet();
    host.netctl_ok(&["network", "create", "--subnet", "10.1.0.0/24", "front"]);
    host.netctl_ok(&["network", "create", "--subnet", "10.2.0.0/24", "other"]);
    tcp_server(&host, "web", "front", &["8080:80"], 80);
    host.netctl_ok(&["run", "-d", "--name", "peer", "--network", "front"]);
    host.netctl_ok(&["run", "-d", "--name", "stranger", "--network", "other"]);
    assert_eq!(host.netctl_ok(&["port", "web"]), "80/tcp -> 0.0.0.0:8080");
    assert_eq!(host.netctl_ok(&["port", "web", "80"]), "0.0.0.0:8080");
    let target = format!("{HOST_UPLINK_IP}:8080");

    // Another host: its own address is kept (no SNAT).
    assert_eq!(
        from_internet(&host, &target),
        format!("hello {INTERNET_IP}")
    );
    // The host itself, through its own address and through 127.0.0.1.
    assert!(from_host(&host, &target).starts_with("hello"));
    assert!(from_host(&host, "127.0.0.1:8080").starts_with("hello"));
    // A sandbox on the same network, one on another network, and the server itself.
    assert!(from_sandbox(&host, "peer", &target).starts_with("hello"));
    assert!(
        from_sandbox(&host, "stranger", &target).starts_with("hello"),
        "publishing makes it public"
    );
    assert!(
        from_sandbox(&host, "web", &target).starts_with("hello"),
        "hairpin"
    );
    // Publishing opens only the published port: the other network still cannot reach
    // the sandbox directly.
    assert!(!host.can_ping("stranger", &host.ip_of("web", "front")));

    let inspect = host.inspect("web");
    assert_eq!(
        inspect["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"],
        "8080"
    );
    assert_eq!(
        inspect["HostConfig"]["PortBindings"]["80/tcp"][0]["HostIp"],
        "0.0.0.0"
    );
    assert!(host.netctl_ok(&["ps"]).contains("80/tcp -> 0.0.0.0:8080"));
}

#[test]
fn mapping_on_a_specific_address_answers_only_there() {
    let mut host = TestHost::new();
    host.add_internet();
    host.sh_ok("ip", &["addr", "add", "198.51.100.3/24", "dev", "uplink"]);
    host.netctl_ok(&["network", "create", "--subnet", "10.3.0.0/24", "n"]);
    tcp_server(
        &host,
        "only",
        "n",
        &[&format!("{HOST_UPLINK_IP}:8081:80")],
        80,
    );
    assert!(from_internet(&host, &format!("{HOST_UPLINK_IP}:8081")).starts_with("hello"));
    assert!(silent(from_internet(&host, "198.51.100.3:8081")));
    assert!(silent(from_host(&host, "127.0.0.1:8081")));
    assert_eq!(
        host.netctl_ok(&["port", "only"]),
        format!("80/tcp -> {HOST_UPLINK_IP}:8081")
    );
    // The same port on another address of the host is a different mapping.
    tcp_server(&host, "second", "n", &["198.51.100.3:8081:80"], 80);
    assert!(from_internet(&host, "198.51.100.3:8081").starts_with("hello"));
}

#[test]
fn port_ranges_and_publish_all() {
    let mut host = TestHost::new();
    host.add_internet();
    host.netctl_ok(&["network", "create", "--subnet", "10.4.0.0/24", "n"]);
    let mut args = vec![
        "run",
        "-d",
        "--name",
        "ranged",
        "--network",
        "n",
        "-p",
        "9000-9001:90-91",
    ];
    args.extend_from_slice(&["--", "sh", "-c", "socat TCP-LISTEN:90,fork,reuseaddr SYSTEM:'echo ninety' & socat TCP-LISTEN:91,fork,reuseaddr SYSTEM:'echo ninety-one'"]);
    host.netctl_ok(&args);
    assert_eq!(
        host.netctl_ok(&["port", "ranged"]),
        "90/tcp -> 0.0.0.0:9000\n91/tcp -> 0.0.0.0:9001"
    );
    assert_eq!(
        from_internet(&host, &format!("{HOST_UPLINK_IP}:9000")),
        "ninety"
    );
    assert_eq!(
        from_internet(&host, &format!("{HOST_UPLINK_IP}:9001")),
        "ninety-one"
    );

    host.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "all",
        "--network",
        "n",
        "-P",
        "--expose",
        "70",
        "--",
        "socat",
        "TCP-LISTEN:70,fork,reuseaddr",
        "SYSTEM:echo seventy",
    ]);
    let mapped = host.netctl_ok(&["port", "all", "70"]);
    let port: u16 = mapped
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    let range = host.sh_ok("cat", &["/proc/sys/net/ipv4/ip_local_port_range"]);
    let bounds: Vec<u16> = range
        .split_whitespace()
        .map(|p| p.parse().expect("num"))
        .collect();
    assert!(
        port >= bounds[0] && port <= bounds[1],
        "{port} from the ephemeral range {range}"
    );
    assert_eq!(
        from_internet(&host, &format!("{HOST_UPLINK_IP}:{port}")),
        "seventy"
    );
}

#[test]
fn udp_port_works_and_stale_flows_are_not_blackholed() {
    let mut host = TestHost::new();
    host.add_internet();
    host.netctl_ok(&["network", "create", "--subnet", "10.5.0.0/24", "n"]);
    let target = format!("UDP:{HOST_UPLINK_IP}:5353,sourceport=40000,reuseaddr");
    let ask = |host: &TestHost| {
        let out = run(
            &mut host.internet_cmd("sh", &["-c", &format!("echo ping | socat -T1 - {target}")])
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // A client talks to the port before anything is published there: its flow gets a
    // conntrack entry towards the host itself.
    assert_eq!(ask(&host), "");
    host.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "dns",
        "--network",
        "n",
        "-p",
        "5353:53/udp",
        "--",
        "socat",
        "UDP-RECVFROM:53,fork",
        "SYSTEM:echo pong",
    ]);
    // The same flow (same source port) now reaches the sandbox: the stale entry was flushed.
    assert!(TestHost::eventually(Duration::from_secs(5), || ask(&host) == "pong"));
}

#[test]
fn removal_closes_the_port_and_removes_the_rules() {
    let mut host = TestHost::new();
    host.add_internet();
    host.netctl_ok(&["network", "create", "--subnet", "10.6.0.0/24", "n"]);
    let rules_before = host.iptables();
    tcp_server(&host, "web", "n", &["8082:80", "8083:80/udp"], 80);
    let target = format!("{HOST_UPLINK_IP}:8082");
    assert!(from_internet(&host, &target).starts_with("hello"));
    let id = host.inspect("web")["Id"].as_str().expect("id").to_string();
    assert!(host
        .sh_ok("iptables-save", &["-t", "nat"])
        .contains(&format!("sandbox {}", &id[..12])));
    // netd holds the port: another program cannot take it.
    assert!(!can_bind(&host, 8082), "port 8082 is held while published");

    host.netctl_ok(&["rm", "-f", "web"]);
    assert!(silent(from_internet(&host, &target)));
    assert_eq!(
        host.iptables(),
        rules_before,
        "exactly the sandbox's rules are gone"
    );
    // And the port is free again.
    let mut listener = host
        .cmd(
            "socat",
            &["-T3", "TCP-LISTEN:8082,reuseaddr", "SYSTEM:echo mine"],
        )
        .spawn()
        .expect("listen");
    assert_eq!(from_host(&host, "127.0.0.1:8082"), "mine");
    let _ = listener.kill();
    let _ = listener.wait();
}

#[test]
fn rules_come_back_after_a_flush_without_being_asked() {
    let mut host = TestHost::new();
    host.add_internet();
    host.netctl_ok(&["network", "create", "--subnet", "10.7.0.0/24", "n"]);
    tcp_server(&host, "web", "n", &["8084:80"], 80);
    let target = format!("{HOST_UPLINK_IP}:8084");
    assert!(from_internet(&host, &target).starts_with("hello"));
    let rules = host.iptables();
    host.sh_ok("iptables", &["-t", "nat", "-F"]);
    assert!(silent(from_internet(&host, &target)));
    // The periodic check restores them within a few seconds.
    assert!(TestHost::eventually(Duration::from_secs(10), || host
        .iptables()
        == rules));
    assert!(from_internet(&host, &target).starts_with("hello"));
    assert_eq!(
        host.netctl_ok(&["system", "reconcile"]),
        "nothing to repair"
    );
}

#[test]
fn ports_survive_a_restart_of_netd() {
    let mut host = TestHost::new();
    host.add_internet();
    host.netctl_ok(&["network", "create", "--subnet", "10.8.0.0/24", "n"]);
    tcp_server(&host, "web", "n", &["8085:80"], 80);
    let rules = host.iptables();
    host.stop_netd();
    assert!(from_internet(&host, &format!("{HOST_UPLINK_IP}:8085")).starts_with("hello"));
    host.start_netd();
    assert_eq!(host.iptables(), rules);
    let err = host.netctl_err(&["run", "-d", "--network", "n", "-p", "8085:80"]);
    assert!(
        err.contains("web"),
        "the holder is still known after a restart: {err}"
    );
}

#[test]
fn bad_port_requests_change_nothing() {
    let host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.9.0.0/24", "n"]);
    host.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "holder",
        "--network",
        "n",
        "-p",
        "8086:80",
    ]);
    // Another program on the host listens on 8087.
    let mut other = host
        .cmd("socat", &["-T30", "TCP-LISTEN:8087", "-"])
        .spawn()
        .expect("listener");
    assert!(TestHost::eventually(Duration::from_secs(5), || {
        host.sh_ok("ss", &["-Hltn", "sport = :8087"])
            .contains("8087")
    }));
    let before = (host.netctl_ok(&["ps", "-q"]), host.iptables(), host.links());
    for (spec, needle) in [
        ("0:80", "1-65535"),
        ("8090:0", "1-65535"),
        ("70000:80", "1-65535"),
        ("8091-8090:81-80", "reversed"),
        ("8090-8092:80-81", "differ in length"),
        ("8090:80/icmp", "unknown protocol"),
        ("203.0.113.9:8090:80", "not an address of this host"),
        ("8086:80", "already published by sandbox holder"),
        ("0.0.0.0:8086:81", "holder"),
        ("8087:80", "in use by another program"),
    ] {
        let err = host.netctl_err(&["run", "-d", "--network", "n", "-p", spec]);
        assert!(err.contains(needle), "-p {spec}: {err}");
        assert!(err.contains("-p"), "the error names the flag: {err}");
        let after = (host.netctl_ok(&["ps", "-q"]), host.iptables(), host.links());
        assert_eq!(before, after, "-p {spec} changed something");
    }
    let err = host.netctl_err(&[
        "run",
        "-d",
        "--network",
        "n",
        "-p",
        "8095:80",
        "-p",
        "8095:81",
    ]);
    assert!(err.contains("twice"), "{err}");
    let err = host.netctl_err(&["run", "-d", "--network", "none", "-p", "8096:80"]);
    assert!(err.contains("-p"), "{err}");
    host.netctl_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.10.0.0/24",
        "vault",
    ]);
    let before = (host.netctl_ok(&["ps", "-q"]), host.iptables(), host.links());
    let err = host.netctl_err(&["run", "-d", "--network", "vault", "-p", "8097:80"]);
    assert!(err.contains("internal"), "{err}");
    assert_eq!(
        before,
        (host.netctl_ok(&["ps", "-q"]), host.iptables(), host.links())
    );
    // Nothing of the failed requests is held.
    assert!(can_bind(&host, 8095));
    assert!(can_bind(&host, 8090));
    let _ = other.kill();
    let _ = other.wait();
}

/// The rules are where the backend under test keeps them (`NETD_TEST_IPTABLES`), and
/// removing a sandbox removes them there.
#[test]
fn rules_live_on_the_backend_under_test() {
    let mut host = TestHost::new();
    host.add_internet();
    host.netctl_ok(&["network", "create", "--subnet", "10.7.9.0/24", "n"]);
    tcp_server(&host, "web", "n", &["8089:80"], 80);
    let backend = netd_tests::iptables_backend();
    let other = if backend == "legacy" { "nft" } else { "legacy" };
    let save =
        |which: &str| host.sh_ok(&format!("/usr/sbin/iptables-{which}-save"), &["-t", "nat"]);
    assert!(save(backend).contains("--dport 8089"), "{}", save(backend));
    assert!(!save(other).contains("NETD-"), "{}", save(other));
    host.netctl_ok(&["rm", "-f", "web"]);
    assert!(!save(backend).contains("--dport 8089"), "{}", save(backend));
}
