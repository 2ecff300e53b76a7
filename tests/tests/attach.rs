//! `netctl attach`: namespaces netd did not make (`ip netns add`, `unshare`) joined to
//! netd's networks by path and by pid, observed by traffic, names and `ip`; netd cleans up
//! by itself when their owner removes them.

// Tests fail by panicking with a reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Command, Stdio};
use std::time::Duration;

use netd_tests::{run, serve_hello, tcp_answer, Server, TestHost, HOST_UPLINK_IP};

fn in_ns(path: &str, program: &str, args: &[&str]) -> std::process::Output {
    run(&mut TestHost::in_netns(path, program, args))
}

fn pings(path: &str, ip: &str) -> bool {
    in_ns(path, "ping", &["-c1", "-W1", ip]).status.success()
}

fn listed(host: &TestHost) -> String {
    host.netctl_ok(&["ps", "--format", "{{.Names}}"])
}

#[test]
fn namespaces_of_other_runtimes_join_by_path_and_by_pid() {
    let mut host = TestHost::new();
    host.add_internet();
    host.netctl_ok(&["network", "create", "--subnet", "10.34.0.0/24", "mynet"]);
    host.netctl_ok(&["run", "--name", "web", "--network", "mynet"]);
    let web = host.ip_of("web", "mynet");

    // By path: a namespace made with `ip netns add`, with a published port.
    let ns = host.add_container_netns();
    let veths_before = host.sandbox_veths();
    host.netctl_ok(&[
        "attach",
        "--netns",
        &ns,
        "--name",
        "c1",
        "--network",
        "mynet",
        "--alias",
        "one",
        "-p",
        "8080:80",
    ]);
    let c1_veth: Vec<String> = host
        .sandbox_veths()
        .into_iter()
        .filter(|v| !veths_before.contains(v))
        .collect();
    assert_eq!(c1_veth.len(), 1, "{c1_veth:?}");
    let c1 = host.inspect("c1");
    assert_eq!(c1["Managed"], false);
    assert_eq!(c1["NetworkSettings"]["SandboxKey"], ns);
    assert_eq!(c1["State"]["Running"], true);
    let c1_ip = host.ip_of("c1", "mynet");
    assert!(pings(&ns, &web), "attached namespace reaches a sandbox");
    assert!(host.can_ping("web", &c1_ip), "and is reached");
    let gateway = "10.34.0.1";
    let dig = in_ns(&ns, "dig", &["+short", &format!("@{gateway}"), "web"]);
    assert_eq!(String::from_utf8_lossy(&dig.stdout).trim(), web);
    for name in ["c1", "one"] {
        let dig = host.exec("web", &["dig", "+short", name]);
        assert_eq!(String::from_utf8_lossy(&dig.stdout).trim(), c1_ip, "{name}");
    }
    let _server = serve_hello(&ns, 80);
    let answer = tcp_answer(|| {
        host.internet_cmd(
            "socat",
            &[
                "-T2",
                "-",
                &format!("TCP:{HOST_UPLINK_IP}:8080,connect-timeout=2"),
            ],
        )
    });
    assert_eq!(
        answer, "hello",
        "the published port answers from the attached namespace"
    );

    // By pid: a process in a namespace of its own (`unshare -n`).
    // (nsenter and unshare exec, so the child's pid ends up being sleep's)
    let child = host
        .cmd("unshare", &["-n", "sleep", "60"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("unshare");
    let pid = child.id() as i32;
    let owner = Server::new(child);
    let host_ns =
        std::fs::read_link(format!("/proc/{}/ns/net", host.netd_pid().expect("netd"))).ok();
    assert!(TestHost::eventually(Duration::from_secs(3), || {
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
        ns.is_some()
            && ns != host_ns
            && std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "sleep")
    }));
    host.netctl_ok(&[
        "attach",
        "--pid",
        &pid.to_string(),
        "--name",
        "c2",
        "--network",
        "mynet",
    ]);
    let c2 = host.inspect("c2");
    assert_eq!(c2["State"]["Pid"], pid);
    let proc_ns = format!("/proc/{pid}/ns/net");
    assert!(pings(&proc_ns, &web));

    // connect/disconnect work on it.
    host.netctl_ok(&["network", "create", "--subnet", "10.35.0.0/24", "other"]);
    host.netctl_ok(&["connect", "other", "c2"]);
    let eth1 = in_ns(&proc_ns, "ip", &["-br", "addr", "show", "eth1"]);
    assert!(
        String::from_utf8_lossy(&eth1.stdout).contains("10.35.0."),
        "{eth1:?}"
    );
    host.netctl_ok(&["disconnect", "other", "c2"]);
    // At once again: the new eth1 waits for the old one's deletion, and works.
    host.netctl_ok(&["connect", "other", "c2"]);
    let eth1 = in_ns(&proc_ns, "ip", &["-br", "addr", "show", "eth1"]);
    assert!(
        String::from_utf8_lossy(&eth1.stdout).contains("10.35.0."),
        "{eth1:?}"
    );
    host.netctl_ok(&["disconnect", "other", "c2"]);

    // detach takes netd's objects out and leaves the namespace and its processes. It
    // returns once the veth carries nothing; the kernel's deletion (some 20 ms) follows.
    host.netctl_ok(&["detach", "c2"]);
    let gone = TestHost::eventually(Duration::from_secs(2), || {
        let links = in_ns(&proc_ns, "ip", &["-br", "link"]);
        !String::from_utf8_lossy(&links.stdout).contains("eth0")
    });
    assert!(gone, "{:?}", in_ns(&proc_ns, "ip", &["-br", "link"]));
    assert!(
        std::path::Path::new(&proc_ns).exists(),
        "the owner still runs"
    );
    let err = host.netctl_err(&["detach", "web"]);
    assert!(err.contains("netctl rm"), "{err}");
    // The owner exits: its namespace goes, and so does the record.
    host.netctl_ok(&[
        "attach",
        "--pid",
        &pid.to_string(),
        "--name",
        "c3",
        "--network",
        "mynet",
    ]);
    drop(owner);
    assert!(
        TestHost::eventually(Duration::from_secs(8), || !listed(&host).contains("c3")),
        "c3 still listed: {}",
        listed(&host)
    );

    // The owner removes its namespace: netd notices and releases the address and name.
    let _ = run(Command::new("ip").args(["netns", "del", ns.trim_start_matches("/run/netns/")]));
    assert!(
        TestHost::eventually(Duration::from_secs(8), || !listed(&host).contains("c1")),
        "c1 still listed: {}",
        listed(&host)
    );
    // Both releases are events, as Docker tells of a container that died.
    let died = host.kept_events(&["--filter", "event=die"]);
    let names: Vec<&str> = died
        .iter()
        .map(|e| e["objects"]["sandbox"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["c3", "c1"], "{died:?}");
    assert_eq!(died[1]["objects"]["network"], "mynet");
    assert_eq!(died[1]["api"], "internal");
    assert_eq!(died[1]["type"], "sandbox");
    assert!(died[1]["uid"].is_null());
    let dig = host.exec("web", &["dig", "+short", "c1"]);
    assert!(String::from_utf8_lossy(&dig.stdout).trim().is_empty());
    host.netctl_ok(&[
        "run",
        "--name",
        "reuse",
        "--network",
        "mynet",
        "--ip",
        &c1_ip,
    ]);
    assert!(!host.sandbox_veths().contains(&c1_veth[0]));
}

#[test]
fn bad_attachments_change_nothing() {
    let host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.36.0.0/24", "mynet"]);
    host.netctl_ok(&["run", "--name", "web", "--network", "mynet"]);
    let ns = host.add_container_netns();
    host.netctl_ok(&[
        "attach",
        "--netns",
        &ns,
        "--name",
        "c1",
        "--network",
        "mynet",
    ]);
    let before = (listed(&host), host.links(), host.iptables());
    let not_ns = host.resolv_conf();
    let netd_pid = host.netd_pid().expect("netd").to_string();
    let web_ns = host.inspect("web")["NetworkSettings"]["SandboxKey"]
        .as_str()
        .expect("key")
        .to_string();
    let other = host.add_container_netns();
    for (args, says) in [
        (
            vec!["--netns", not_ns.to_str().expect("utf-8"), "--name", "x"],
            "not a network namespace",
        ),
        (vec!["--pid", "999999999", "--name", "x"], "no process"),
        (vec!["--netns", &ns, "--name", "x"], "already"),
        (vec!["--netns", &web_ns, "--name", "x"], "already"),
        (vec!["--pid", &netd_pid, "--name", "x"], "own namespace"),
        (vec!["--netns", &other, "--name", "web"], "in use"),
        (
            vec!["--netns", &other, "--name", "x", "--network", "none"],
            "--network",
        ),
        (
            vec!["--netns", &other, "--name", "x", "--network", "nonet"],
            "nonet",
        ),
        (
            vec![
                "--netns",
                &other,
                "--name",
                "x",
                "--network",
                "mynet",
                "--ip",
                "10.99.0.2",
            ],
            "--ip",
        ),
        (
            vec![
                "--netns",
                &other,
                "--name",
                "x",
                "--network",
                "mynet",
                "-p",
                "99999:80",
            ],
            "99999",
        ),
        (
            vec![
                "--netns",
                &other,
                "--name",
                "x",
                "--network",
                "mynet",
                "--network",
                "nonet",
            ],
            "nonet",
        ),
        (
            vec![
                "--netns",
                &other,
                "--name",
                "x",
                "--network",
                "mynet",
                "--network",
                "mynet",
            ],
            "given twice",
        ),
        (
            vec!["--netns", &other, "--name", "x", "--hostname", "a..b"],
            "--hostname",
        ),
    ] {
        let mut all = vec!["attach"];
        all.extend_from_slice(&args);
        all.extend_from_slice(if args.contains(&"--network") {
            &[]
        } else {
            &["--network", "mynet"][..]
        });
        let err = host.netctl_err(&all);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    assert_eq!((listed(&host), host.links(), host.iptables()), before);
    let links = in_ns(&other, "ip", &["-br", "link"]);
    assert!(!String::from_utf8_lossy(&links.stdout).contains("eth0"));
}

#[test]
fn several_networks_and_a_hostname_at_once() {
    let host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.37.0.0/24", "front"]);
    host.netctl_ok(&["network", "create", "--subnet", "10.37.1.0/24", "back"]);
    host.netctl_ok(&["network", "create", "--subnet", "10.37.2.0/30", "full"]);
    host.netctl_ok(&["run", "--name", "f", "--network", "front"]);
    host.netctl_ok(&["run", "--name", "b", "--network", "back"]);
    let ns = host.add_container_netns();
    host.netctl_ok(&[
        "attach",
        "--netns",
        &ns,
        "--name",
        "both",
        "--network",
        "front",
        "--network",
        "back",
        "--alias",
        "api",
        "--hostname",
        "box.example",
    ]);
    let front = host.ip_of("both", "front");
    let back = host.ip_of("both", "back");
    let addresses = in_ns(&ns, "ip", &["-br", "-4", "addr"]);
    let addresses = String::from_utf8_lossy(&addresses.stdout);
    assert!(
        addresses.contains(&format!("{front}/24")) && addresses.contains(&format!("{back}/24")),
        "{addresses}"
    );
    // Its name and alias answer on each network, with that network's address.
    for (peer, ip) in [("f", &front), ("b", &back)] {
        for name in ["both", "api"] {
            let dig = host.exec(peer, &["dig", "+short", name]);
            assert_eq!(
                String::from_utf8_lossy(&dig.stdout).trim(),
                ip,
                "{peer}: {name}"
            );
        }
    }
    assert!(pings(&ns, &host.ip_of("f", "front")));
    assert!(pings(&ns, &host.ip_of("b", "back")));
    // The host name is in its hosts and hostname files.
    let info = host.inspect("both");
    assert_eq!(info["Config"]["Hostname"], "box.example");
    let hosts = std::fs::read_to_string(info["HostsPath"].as_str().expect("path")).expect("hosts");
    assert!(
        hosts
            .lines()
            .any(|l| l.starts_with(&format!("{front}\t")) && l.contains("box.example")),
        "{hosts}"
    );
    let hostname =
        std::fs::read_to_string(info["HostnamePath"].as_str().expect("path")).expect("hostname");
    assert_eq!(hostname.trim(), "box.example");

    // A network that cannot take it (its one address is taken) undoes the whole attach:
    // nothing of it stays.
    host.netctl_ok(&["run", "--name", "taken", "--network", "full"]);
    let before = (listed(&host), host.links(), host.iptables());
    let other = host.add_container_netns();
    let err = host.netctl_err(&[
        "attach",
        "--netns",
        &other,
        "--name",
        "x",
        "--network",
        "front",
        "--network",
        "full",
    ]);
    assert!(
        err.contains("full") || err.contains("10.37.2.0/30"),
        "{err}"
    );
    assert_eq!((listed(&host), host.links(), host.iptables()), before);
    let links = in_ns(&other, "ip", &["-br", "link"]);
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains("eth0"),
        "{links:?}"
    );

    // run takes them too; its UTS namespace carries the host name.
    host.netctl_ok(&[
        "run",
        "--name",
        "r",
        "--network",
        "front",
        "--network",
        "back",
        "--hostname",
        "rbox",
    ]);
    let uname = host.exec("r", &["uname", "-n"]);
    assert_eq!(String::from_utf8_lossy(&uname.stdout).trim(), "rbox");
    let eth1 = host.exec("r", &["ip", "-br", "-4", "addr", "show", "eth1"]);
    assert!(
        String::from_utf8_lossy(&eth1.stdout).contains("10.37.1."),
        "{eth1:?}"
    );
}

/// A detach returns before the kernel has deleted the veth; nothing sees it half done: the
/// same namespace attached again at once gets its `eth0` (after the old one is gone) and
/// the address, a reconcile finds nothing to repair, and a stop at once still deletes it.
#[test]
fn a_detached_veth_is_deleted_behind_the_answer_and_never_counted_a_leak() {
    let mut host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.37.0.0/30", "pair"]);
    let ns = host.add_container_netns();
    for round in 0..3 {
        host.netctl_ok(&["attach", "--netns", &ns, "--name", "a", "--network", "pair"]);
        // The /30 has one address for sandboxes: it must be free again after each detach.
        assert_eq!(host.ip_of("a", "pair"), "10.37.0.2", "round {round}");
        host.netctl_ok(&["detach", "a"]);
        if round == 2 {
            assert_eq!(
                host.netctl_ok(&["system", "reconcile"]).trim(),
                "nothing to repair"
            );
        }
    }
    host.netctl_ok(&["attach", "--netns", &ns, "--name", "b", "--network", "pair"]);
    host.netctl_ok(&["detach", "b"]);
    host.stop_netd();
    assert!(
        host.sandbox_veths().is_empty(),
        "{:?}",
        host.sandbox_veths()
    );
    let links = in_ns(&ns, "ip", &["-br", "link"]);
    assert!(
        !String::from_utf8_lossy(&links.stdout).contains("eth0"),
        "{links:?}"
    );
}
