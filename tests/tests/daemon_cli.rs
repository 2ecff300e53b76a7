//! The daemon's flags and netctl's output contract.

// Tests fail by panicking with a reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use netd_tests::{run, TestHost};

#[test]
fn socket_is_mode_0660_wherever_it_is() {
    use std::os::unix::fs::PermissionsExt;
    let host = TestHost::new();
    assert_eq!(host.socket_mode(), 0o660);
    let mut other = TestHost::bare();
    let custom = other.dir.path().join("elsewhere").join("api.sock");
    other.start_netd_with(&["--socket", custom.to_str().expect("utf-8")]);
    let mode = std::fs::metadata(&custom)
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
}

#[test]
fn a_foreign_default_bridge_is_refused_with_the_flag_to_change() {
    let mut host = TestHost::bare();
    host.sh_ok("ip", &["link", "add", "docker0", "type", "bridge"]);
    host.sh_ok("ip", &["addr", "add", "10.99.0.1/24", "dev", "docker0"]);
    let out = run(&mut host.netd_command(&[]));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("docker0") && stderr.contains("--default-bridge"),
        "{stderr}"
    );
    assert!(stderr.contains("10.99.0.1/24"), "{stderr}");
    // With another name it starts, and leaves the foreign bridge alone.
    host.start_netd_with(&["--default-bridge", "netd0"]);
    let addr = host.sh_ok("ip", &["-o", "-4", "addr", "show", "netd0"]);
    assert!(addr.contains("172.17.0.1/16"), "{addr}");
    let foreign = host.sh_ok("ip", &["-o", "-4", "addr", "show", "docker0"]);
    assert!(foreign.contains("10.99.0.1/24"), "{foreign}");
}

#[test]
fn config_file_and_no_default_network() {
    let mut host = TestHost::bare();
    let config = host.dir.path().join("netd.toml");
    std::fs::write(&config, "no-default-network = true\n").expect("config");
    host.start_netd_with(&["--config", config.to_str().expect("utf-8")]);
    let ls = host.netctl_ok(&["network", "ls", "-q"]);
    assert!(ls.is_empty(), "no default network: {ls}");
    assert!(!host.links().iter().any(|l| l == "docker0"));
    let err = host.netctl_err(&["run", "-d"]);
    assert!(err.contains("--network"), "{err}");
}

#[test]
fn tables_inspect_and_prune() {
    let host = TestHost::new();
    host.netctl_ok(&[
        "network",
        "create",
        "--subnet",
        "10.8.0.0/24",
        "--label",
        "team=web",
        "--opt",
        "mtu=1400",
        "used",
    ]);
    host.netctl_ok(&["network", "create", "unused"]);
    host.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "w",
        "--network",
        "used",
        "--alias",
        "www",
    ]);
    let table = host.netctl_ok(&["network", "ls"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().expect("header").split_whitespace().collect();
    assert_eq!(header, ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]);
    assert!(table.contains("used") && table.contains("unused") && table.contains("bridge"));
    let nets: serde_json::Value =
        serde_json::from_str(&host.netctl_ok(&["network", "inspect", "used"])).expect("json");
    let net = &nets[0];
    assert_eq!(net["Name"], "used");
    assert_eq!(net["Driver"], "bridge");
    assert_eq!(net["Labels"]["team"], "web");
    assert_eq!(net["Options"]["mtu"], "1400");
    assert_eq!(net["Internal"], false);
    assert_eq!(net["Id"].as_str().expect("id").len(), 64);
    // An automatically chosen subnet comes from Docker's pools (172.17 is the default network).
    let auto: serde_json::Value =
        serde_json::from_str(&host.netctl_ok(&["network", "inspect", "unused"])).expect("json");
    assert_eq!(auto[0]["IPAM"]["Config"][0]["Subnet"], "172.18.0.0/16");
    let bridge = auto[0]["Id"].as_str().expect("id")[..12].to_string();
    assert!(host.links().contains(&format!("br-{bridge}")));
    // The MTU option reaches the kernel.
    let link = String::from_utf8_lossy(&host.exec("w", &["ip", "link", "show", "eth0"]).stdout)
        .into_owned();
    assert!(link.contains("mtu 1400"), "{link}");
    let ctr = host.inspect("w");
    assert_eq!(ctr["Name"], "/w");
    assert_eq!(
        ctr["NetworkSettings"]["Networks"]["used"]["Aliases"][0],
        "www"
    );
    assert_eq!(
        ctr["NetworkSettings"]["Networks"]["used"]["IPPrefixLen"],
        24
    );
    assert_eq!(
        ctr["NetworkSettings"]["Networks"]["used"]["Gateway"],
        "10.8.0.1"
    );
    let pid = ctr["State"]["Pid"].as_i64().expect("pid");
    use std::os::unix::fs::MetadataExt;
    let key = ctr["NetworkSettings"]["SandboxKey"].as_str().expect("key");
    assert_eq!(
        std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .expect("pid ns")
            .ino(),
        std::fs::metadata(key).expect("sandbox key").ino(),
        "State.Pid is in the sandbox's namespace"
    );
    let ps = host.netctl_ok(&["ps"]);
    assert!(ps.starts_with("CONTAINER ID"), "{ps}");
    assert!(ps.contains(" w\n") || ps.ends_with(" w"), "{ps}");
    // prune removes only unused user networks, without asking.
    let pruned = host.netctl_ok(&["network", "prune", "-f"]);
    assert!(pruned.contains("unused"), "{pruned}");
    assert!(!host.links().contains(&format!("br-{bridge}")));
    let names = host.netctl_ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert_eq!(names.lines().collect::<Vec<_>>(), ["bridge", "used"]);
}

#[test]
fn removal_takes_everything_away() {
    let host = TestHost::new();
    let links = host.links();
    let rules = host.iptables();
    host.netctl_ok(&["network", "create", "--subnet", "10.9.0.0/24", "tmp"]);
    host.netctl_ok(&["run", "-d", "--name", "a", "--network", "tmp"]);
    host.netctl_ok(&["connect", "bridge", "a"]);
    assert_eq!(host.sandbox_veths().len(), 2);
    host.netctl_ok(&["rm", "a"]);
    host.netctl_ok(&["network", "rm", "tmp"]);
    assert!(TestHost::eventually(
        std::time::Duration::from_secs(5),
        || host.links() == links
    ));
    assert_eq!(host.iptables(), rules);
    assert!(host.netns_mounts().is_empty());
    assert!(host.pause_pids().is_empty());
    assert!(TestHost::eventually(
        std::time::Duration::from_secs(5),
        || host.live_pauses().is_empty()
    ));
}
