//! Sandboxes reach each other and the outside world, observed with real traffic.

// Tests fail by panicking with a reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use netd_tests::{TestHost, HOST_UPLINK_IP, INTERNET_IP};

#[test]
fn two_sandboxes_on_a_user_network_ping_each_other() {
    let host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.1.0.0/24", "mynet"]);
    let id = host.netctl_ok(&["run", "-d", "--name", "a", "--network", "mynet"]);
    assert_eq!(id.len(), 64, "run -d prints the full id: {id:?}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    host.netctl_ok(&["run", "-d", "--name", "b", "--network", "mynet"]);
    let a = host.ip_of("a", "mynet");
    let b = host.ip_of("b", "mynet");
    assert_eq!(a, "10.1.0.2");
    assert_eq!(b, "10.1.0.3");
    assert!(host.can_ping("a", &b));
    assert!(host.can_ping("b", &a));
    // The host reaches them through the bridge's gateway address, too.
    assert!(host
        .cmd("ping", &["-c1", "-W1", &a])
        .output()
        .expect("ping")
        .status
        .success());
    // MAC derived from the address, as Docker does.
    let mac = host.inspect("a")["NetworkSettings"]["Networks"]["mynet"]["MacAddress"].clone();
    assert_eq!(mac, "02:42:0a:01:00:02");
    let link = String::from_utf8_lossy(&host.exec("a", &["ip", "link", "show", "eth0"]).stdout)
        .into_owned();
    assert!(link.contains("02:42:0a:01:00:02"), "{link}");
    // IPv4-only networks: no IPv6 on the interfaces (no link-local multicast chatter that
    // the bridge would flood to every port), and no multicast snooping on the bridge.
    let v6 = String::from_utf8_lossy(
        &host
            .exec("a", &["ip", "-6", "addr", "show", "dev", "eth0"])
            .stdout,
    )
    .into_owned();
    assert!(v6.trim().is_empty(), "{v6}");
    let net: serde_json::Value =
        serde_json::from_str(&host.netctl_ok(&["network", "inspect", "mynet"])).expect("json");
    let bridge = format!("br-{}", &net[0]["Id"].as_str().expect("id")[..12]);
    let details = host.sh_ok("ip", &["-d", "link", "show", &bridge]);
    assert!(details.contains("mcast_snooping 0"), "{details}");
}

#[test]
fn default_network_is_bridge_on_docker0() {
    let host = TestHost::new();
    let nets: serde_json::Value =
        serde_json::from_str(&host.netctl_ok(&["network", "inspect", "bridge"])).expect("json");
    assert_eq!(nets[0]["IPAM"]["Config"][0]["Subnet"], "172.17.0.0/16");
    assert_eq!(nets[0]["IPAM"]["Config"][0]["Gateway"], "172.17.0.1");
    let addr = host.sh_ok("ip", &["-o", "-4", "addr", "show", "docker0"]);
    assert!(addr.contains("172.17.0.1/16"), "{addr}");
    host.netctl_ok(&["run", "-d", "--name", "x"]);
    host.netctl_ok(&["run", "-d", "--name", "y"]);
    assert_eq!(host.ip_of("x", "bridge"), "172.17.0.2");
    assert!(host.can_ping("x", &host.ip_of("y", "bridge")));
    let listed = host.netctl_ok(&["network", "inspect", "bridge"]);
    let nets: serde_json::Value = serde_json::from_str(&listed).expect("json");
    let containers = nets[0]["Containers"].as_object().expect("containers");
    assert_eq!(containers.len(), 2);
    let (id, entry) = containers.iter().next().expect("one");
    assert_eq!(id.len(), 64, "keyed by full id");
    assert!(entry["IPv4Address"]
        .as_str()
        .expect("addr")
        .ends_with("/16"));
}

#[test]
fn sandbox_reaches_the_internet_through_nat() {
    let mut host = TestHost::new();
    host.add_internet();
    host.netctl_ok(&["network", "create", "mynet"]);
    host.netctl_ok(&["run", "-d", "--name", "web", "--network", "mynet"]);
    // The internet has no route to the container subnet: only masquerading gets answers.
    assert!(host.can_ping("web", INTERNET_IP));
    // And the server sees the host's address, not the container's.
    let mut server = host
        .internet_cmd(
            "socat",
            &[
                "-T5",
                "TCP-LISTEN:9000,reuseaddr",
                "SYSTEM:echo $SOCAT_PEERADDR",
            ],
        )
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("server");
    let mut seen = String::new();
    let got = TestHost::eventually(std::time::Duration::from_secs(5), || {
        let out = host.exec(
            "web",
            &["socat", "-T2", "-", &format!("TCP:{INTERNET_IP}:9000")],
        );
        seen = String::from_utf8_lossy(&out.stdout).trim().to_string();
        out.status.success() && !seen.is_empty()
    });
    let _ = server.kill();
    let _ = server.wait();
    assert!(got, "no answer from the internet");
    assert_eq!(seen, HOST_UPLINK_IP, "the source address is masqueraded");
}

#[test]
fn run_command_exit_codes_pass_through() {
    let host = TestHost::new();
    let out = host.netctl(&["run", "--name", "t", "--", "sh", "-c", "echo hi; exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hi\n",
        "only CMD's output"
    );
    // The sandbox stays until rm.
    assert!(host.inspect("t")["State"]["Running"]
        .as_bool()
        .expect("bool"));
    assert_eq!(
        host.exec("t", &["sh", "-c", "exit 5"]).status.code(),
        Some(5)
    );
    assert_eq!(host.exec("t", &["true"]).status.code(), Some(0));
    assert_eq!(
        host.exec("t", &["no-such-program-xyz"]).status.code(),
        Some(127)
    );
    // --rm removes it when CMD exits.
    let out = host.netctl(&["run", "--rm", "--name", "gone", "--", "true"]);
    assert!(out.status.success());
    assert!(!host.netctl(&["inspect", "gone"]).status.success());
}

#[test]
fn processes_see_the_sandbox_files() {
    let host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.7.0.0/24", "n"]);
    let id = host.netctl_ok(&["run", "-d", "--name", "files", "--network", "n"]);
    let hosts =
        String::from_utf8_lossy(&host.exec("files", &["cat", "/etc/hosts"]).stdout).into_owned();
    assert!(
        hosts.contains(&format!("10.7.0.2\t{} files", &id[..12])),
        "{hosts}"
    );
    let hostname = String::from_utf8_lossy(&host.exec("files", &["hostname"]).stdout)
        .trim()
        .to_string();
    assert_eq!(hostname, &id[..12]);
    let resolv = String::from_utf8_lossy(&host.exec("files", &["cat", "/etc/resolv.conf"]).stdout)
        .into_owned();
    assert!(resolv.contains("nameserver"), "{resolv}");
    assert!(
        !resolv.contains("127.0.0."),
        "loopback resolvers are unreachable from a sandbox: {resolv}"
    );
}

#[test]
fn detached_command_runs_and_logs() {
    let host = TestHost::new();
    let id = host.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "d",
        "--",
        "sh",
        "-c",
        "echo started; sleep 60",
    ]);
    assert_eq!(id.len(), 64);
    let log = host.inspect("d")["LogPath"]
        .as_str()
        .expect("log path")
        .to_string();
    assert!(TestHost::eventually(
        std::time::Duration::from_secs(5),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("started")
        }
    ));
    // rm refuses while the command runs; -f stops it.
    let err = host.netctl_err(&["rm", "d"]);
    assert!(err.contains("running processes"), "{err}");
    host.netctl_ok(&["rm", "-f", "d"]);
    assert!(!host.netctl(&["inspect", "d"]).status.success());
}

#[test]
fn container_network_mode_shares_the_namespace() {
    let host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.3.0.0/24", "pod"]);
    host.netctl_ok(&["run", "-d", "--name", "infra", "--network", "pod"]);
    host.netctl_ok(&["run", "-d", "--name", "app", "--network", "container:infra"]);
    host.netctl_ok(&["run", "-d", "--name", "other", "--network", "pod"]);
    let app = host.inspect("app");
    assert_eq!(
        app["NetworkSettings"]["SandboxKey"],
        host.inspect("infra")["NetworkSettings"]["SandboxKey"]
    );
    assert!(app["State"]["Pid"].as_i64().expect("pid") > 0);
    // Same interfaces: app sees infra's address and reaches the network through it.
    let addr =
        String::from_utf8_lossy(&host.exec("app", &["ip", "-4", "-o", "addr"]).stdout).into_owned();
    assert!(addr.contains("10.3.0.2/24"), "{addr}");
    assert!(host.can_ping("app", &host.ip_of("other", "pod")));
    // A listener in one is reachable on localhost from the other.
    let mut server = host
        .netctl_cmd(&[
            "exec",
            "infra",
            "--",
            "socat",
            "-T5",
            "TCP-LISTEN:7000,bind=127.0.0.1",
            "SYSTEM:echo pod",
        ])
        .spawn()
        .expect("server");
    let got = TestHost::eventually(std::time::Duration::from_secs(5), || {
        let out = host.exec("app", &["socat", "-T2", "-", "TCP:127.0.0.1:7000"]);
        String::from_utf8_lossy(&out.stdout).trim() == "pod"
    });
    let _ = server.kill();
    let _ = server.wait();
    assert!(got, "localhost is shared inside the pod");
    // The owner cannot go while another sandbox shares it, unless forced.
    let err = host.netctl_err(&["rm", "infra"]);
    assert!(err.contains("app"), "{err}");
    host.netctl_ok(&["rm", "-f", "infra"]);
    assert!(!host.netctl(&["inspect", "app"]).status.success());
}

#[test]
fn connect_and_disconnect_move_interfaces_and_routes() {
    let host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.4.0.0/24", "front"]);
    host.netctl_ok(&["network", "create", "--subnet", "10.5.0.0/24", "back"]);
    host.netctl_ok(&["run", "-d", "--name", "app", "--network", "front"]);
    host.netctl_ok(&["run", "-d", "--name", "db", "--network", "back"]);
    assert!(
        !host.can_ping("app", &host.ip_of("db", "back")),
        "isolated before connect"
    );
    host.netctl_ok(&[
        "connect",
        "--ip",
        "10.5.0.50",
        "--alias",
        "api",
        "back",
        "app",
    ]);
    assert_eq!(host.ip_of("app", "back"), "10.5.0.50");
    let links =
        String::from_utf8_lossy(&host.exec("app", &["ip", "-o", "link"]).stdout).into_owned();
    assert!(links.contains("eth1"), "{links}");
    assert!(host.can_ping("app", &host.ip_of("db", "back")));
    // Disconnecting the network that carries the default route moves it to the other one.
    host.netctl_ok(&["disconnect", "front", "app"]);
    let routes = String::from_utf8_lossy(&host.exec("app", &["ip", "route"]).stdout).into_owned();
    assert!(routes.contains("default via 10.5.0.1"), "{routes}");
    assert!(!routes.contains("10.4.0."), "{routes}");
    host.netctl_err(&["disconnect", "front", "app"]);
    host.netctl_err(&["connect", "back", "app"]);
}
