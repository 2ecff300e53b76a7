//! Every invalid request gets a clear one-line error, a non-zero exit, and changes nothing:
//! networks, sandboxes, links and firewall rules are compared before and after.

// Tests fail by panicking with a reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use netd_tests::TestHost;

/// Everything a bad request could have changed.
fn snapshot(host: &TestHost) -> (String, String, Vec<String>, String, Vec<String>) {
    let networks = host.netctl_ok(&["network", "inspect", "bridge", "net1", "net2"]);
    let sandboxes = host.netctl_ok(&["inspect", "s1", "s2"]);
    (
        networks,
        sandboxes,
        host.links(),
        host.iptables(),
        host.netns_mounts(),
    )
}

fn setup() -> TestHost {
    let host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.1.0.0/24", "net1"]);
    host.netctl_ok(&[
        "network",
        "create",
        "--subnet",
        "10.2.0.0/24",
        "--opt",
        "bridge-name=br-two",
        "net2",
    ]);
    host.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "s1",
        "--network",
        "net1",
        "--ip",
        "10.1.0.10",
    ]);
    host.netctl_ok(&["run", "-d", "--name", "s2", "--network", "net2"]);
    host
}

fn assert_refused(host: &TestHost, args: &[&str], needle: &str) {
    let before = snapshot(host);
    let err = host.netctl_err(args);
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "netctl {args:?}: {err:?} should mention {needle:?}"
    );
    let after = snapshot(host);
    assert_eq!(before.0, after.0, "networks changed after {args:?}");
    assert_eq!(before.1, after.1, "sandboxes changed after {args:?}");
    assert_eq!(before.2, after.2, "links changed after {args:?}");
    assert_eq!(before.3, after.3, "firewall changed after {args:?}");
    assert_eq!(before.4, after.4, "namespaces changed after {args:?}");
}

#[test]
fn bad_network_requests() {
    let host = setup();
    fn create<'a>(rest: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec!["network", "create"];
        args.extend_from_slice(rest);
        args
    }
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (create(&["--subnet", "10.9.0.0/33", "x"]), "--subnet"),
        (create(&["--subnet", "banana", "x"]), "--subnet"),
        (create(&["--subnet", "10.9.0.1/24", "x"]), "host bits"),
        (
            create(&["--subnet", "10.1.0.0/16", "x"]),
            "overlaps network net1",
        ),
        (
            create(&["--subnet", "10.1.0.128/25", "x"]),
            "overlaps network net1",
        ),
        (
            create(&["--subnet", "10.9.0.0/24", "--gateway", "10.8.0.1", "x"]),
            "--gateway",
        ),
        (
            create(&["--subnet", "10.9.0.0/24", "--gateway", "10.9.0.255", "x"]),
            "--gateway",
        ),
        (
            create(&["--subnet", "10.9.0.0/24", "--gateway", "pear", "x"]),
            "--gateway",
        ),
        (create(&["--gateway", "10.9.0.1", "x"]), "requires --subnet"),
        (create(&["--subnet", "10.9.0.0/31", "x"]), "too small"),
        (create(&["--subnet", "10.9.0.0/32", "x"]), "too small"),
        (
            create(&["--subnet", "10.9.0.0/24", "--ip-range", "10.8.0.0/25", "x"]),
            "--ip-range",
        ),
        (
            create(&["--subnet", "10.9.0.0/24", "net1"]),
            "already exists",
        ),
        (create(&["--opt", "colour=blue", "x"]), "--opt colour"),
        (create(&["--opt", "icc=maybe", "x"]), "--opt icc"),
        (create(&["--opt", "mtu=huge", "x"]), "--opt mtu"),
        (create(&["--opt", "mtu=20", "x"]), "--opt mtu"),
        (create(&["--opt", "novalue", "x"]), "KEY=VALUE"),
        (create(&["--opt", "bridge-name=br-two", "x"]), "bridge-name"),
        (create(&["--opt", "bridge-name=lo", "x"]), "bridge-name"),
        (
            create(&["--opt", "bridge-name=this-name-is-too-long", "x"]),
            "bridge-name",
        ),
        (create(&["--driver", "overlay", "x"]), "--driver"),
        (create(&["bad name!"]), "name"),
        (vec!["network", "rm", "nosuchnet"], "not found"),
        (vec!["network", "rm", "net1"], "active endpoints"),
        (vec!["network", "rm", "bridge"], "pre-defined"),
        (vec!["network", "inspect", "nosuchnet"], "not found"),
    ];
    for (args, needle) in cases {
        assert_refused(&host, &args, needle);
    }
}

#[test]
fn bad_sandbox_requests() {
    let host = setup();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["run", "-d", "--network", "net1", "--ip", "10.2.0.5"],
            "not in subnet",
        ),
        (
            vec!["run", "-d", "--network", "net1", "--ip", "10.1.0.10"],
            "already in use",
        ),
        (
            vec!["run", "-d", "--network", "net1", "--ip", "10.1.0.1"],
            "gateway",
        ),
        (
            vec!["run", "-d", "--network", "net1", "--ip", "10.1.0.255"],
            "broadcast",
        ),
        (
            vec!["run", "-d", "--network", "net1", "--ip", "ten"],
            "--ip",
        ),
        (vec!["run", "-d", "--network", "nosuchnet"], "not found"),
        (vec!["run", "-d", "--name", "s1"], "already in use"),
        (vec!["run", "-d", "--name", "-bad"], "--name"),
        (
            vec!["run", "-d", "--network", "container:ghost"],
            "no such sandbox",
        ),
        (
            vec!["run", "-d", "--network", "none", "--ip", "10.1.0.7"],
            "--ip",
        ),
        (
            vec!["run", "-d", "--network", "net1", "--alias", "no good"],
            "--alias",
        ),
        (vec!["rm", "ghost"], "no such sandbox"),
        (vec!["inspect", "ghost"], "no such sandbox"),
        (vec!["exec", "ghost", "--", "true"], "no such sandbox"),
        (vec!["connect", "nosuchnet", "s1"], "not found"),
        (vec!["connect", "net2", "ghost"], "no such sandbox"),
        (vec!["connect", "net1", "s1"], "already connected"),
        (
            vec!["connect", "--ip", "10.2.0.2", "net2", "s1"],
            "already in use",
        ),
        (
            vec!["connect", "--ip", "10.1.0.20", "net2", "s1"],
            "not in subnet",
        ),
        (vec!["disconnect", "net2", "s1"], "not connected"),
    ];
    for (args, needle) in cases {
        assert_refused(&host, &args, needle);
    }
}

#[test]
fn exhausted_subnet_is_refused_cleanly() {
    let host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.70.0.0/30", "tiny"]);
    host.netctl_ok(&["run", "-d", "--name", "only", "--network", "tiny"]);
    let links = host.links();
    let err = host.netctl_err(&["run", "-d", "--network", "tiny"]);
    assert!(err.contains("no free address"), "{err}");
    assert_eq!(host.links(), links);
    assert_eq!(host.netctl_ok(&["ps", "-q"]).lines().count(), 1);
}

/// A bridge takes 1023 ports (port numbers below the kernel's BR_MAX_PORTS, 0 unused): a sandbox beyond them is refused
/// by name and nothing is left behind.
#[test]
fn a_full_bridge_is_refused_cleanly() {
    let host = TestHost::new();
    host.netctl_ok(&[
        "network",
        "create",
        "--subnet",
        "10.71.0.0/16",
        "--opt",
        "bridge-name=brfull",
        "full",
    ]);
    // Filled with bare veth pairs, which cost far less than sandboxes (this kernel has no
    // dummy links).
    let batch = host.dir.path().join("ports.batch");
    let lines: String = (0..1023)
        .map(|i| format!("link add fp{i} master brfull type veth peer name fq{i}\n"))
        .collect();
    std::fs::write(&batch, lines).unwrap();
    host.sh_ok("ip", &["-batch", batch.to_str().unwrap()]);
    let links = host.links();
    let mounts = host.netns_mounts();
    let err = host.netctl_err(&["run", "-d", "--name", "over", "--network", "full"]);
    assert!(
        err.contains("bridge brfull has 1023 ports, the most a Linux bridge takes"),
        "{err}"
    );
    assert_eq!(host.links(), links);
    assert_eq!(host.netns_mounts(), mounts);
    assert!(host.netctl_ok(&["ps", "-q"]).is_empty());
    // A port freed, the same request works (the name was not left taken).
    host.sh_ok("ip", &["link", "del", "fp0"]);
    host.netctl_ok(&["run", "-d", "--name", "over", "--network", "full"]);
    assert_eq!(host.netctl_ok(&["ps", "-q"]).lines().count(), 1);
}

#[test]
fn unreachable_daemon_is_a_clear_error() {
    let mut host = TestHost::new();
    host.stop_netd();
    let err = host.netctl_err(&["network", "ls"]);
    assert!(err.contains("cannot reach netd"), "{err}");
}
