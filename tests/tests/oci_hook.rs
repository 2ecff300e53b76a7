//! `netd-oci-hook` under runc (Debian's): a busybox container whose config.json calls the
//! hook at createRuntime and poststop reaches a netd sandbox by name, and leaves nothing
//! behind when it exits; bad states, bundles and annotations fail the start clearly.

// Tests fail by panicking with a reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use std::time::Duration;

use netd_tests::{bin_dir, TestHost};
use serde_json::{json, Value};

/// A bundle with a static busybox as its rootfs and runc's default config, changed:
/// `args`, the annotations, CAP_NET_RAW (for ping) and the hook at createRuntime and
/// poststop.
fn bundle(host: &TestHost, args: &[&str], annotations: Value) -> PathBuf {
    let dir = host
        .dir
        .path()
        .join(format!("bundle-{}", annotations.to_string().len()));
    let root = dir.join("rootfs");
    for sub in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(root.join(sub)).expect("rootfs");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox (busybox-static)");
    for tool in ["sh", "ping", "cat", "sleep"] {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(tool));
    }
    let spec = host
        .cmd("runc", &["spec", "--bundle", dir.to_str().expect("utf-8")])
        .output()
        .expect("runc spec");
    assert!(spec.status.success(), "runc spec: {spec:?}");
    let path = dir.join("config.json");
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("config")).expect("json");
    config["process"]["terminal"] = json!(false);
    config["process"]["args"] = json!(args);
    config["root"]["readonly"] = json!(false);
    config["hostname"] = json!("boxhost");
    for set in ["bounding", "effective", "permitted"] {
        config["process"]["capabilities"][set]
            .as_array_mut()
            .expect("capabilities")
            .push(json!("CAP_NET_RAW"));
    }
    config["annotations"] = annotations;
    let hook = bin_dir().join("netd-oci-hook");
    let socket = host.socket();
    let entry = |stage: &str| json!([{ "path": hook, "args": ["netd-oci-hook", stage, "--socket", socket] }]);
    config["hooks"] =
        json!({ "createRuntime": entry("createRuntime"), "poststop": entry("poststop") });
    std::fs::write(&path, serde_json::to_vec_pretty(&config).expect("json")).expect("write");
    dir
}

fn runc_run(host: &TestHost, bundle: &Path, id: &str) -> Output {
    let state = host.dir.path().join("runc");
    let out = host
        .cmd(
            "runc",
            &[
                "--root",
                state.to_str().expect("utf-8"),
                "run",
                "--bundle",
                bundle.to_str().expect("utf-8"),
                id,
            ],
        )
        .stdin(Stdio::null())
        .output()
        .expect("runc");
    // A failed start can leave the container record behind.
    let _ = host
        .cmd(
            "runc",
            &[
                "--root",
                state.to_str().expect("utf-8"),
                "delete",
                "--force",
                id,
            ],
        )
        .output();
    out
}

#[test]
fn a_runc_container_joins_by_annotations_and_leaves_nothing() {
    let host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.38.0.0/24", "mynet"]);
    host.netctl_ok(&["network", "create", "--subnet", "10.39.0.0/24", "other"]);
    host.netctl_ok(&["run", "--name", "web", "--network", "mynet"]);
    let before = (host.links(), host.iptables());
    let dir = bundle(
        &host,
        &[
            "sh",
            "-c",
            "cat /etc/resolv.conf /etc/hosts && ping -c1 -W2 web && ip addr",
        ],
        json!({ "netd.networks": "mynet,other", "netd.name": "box", "netd.aliases": "b1",
                "netd.ports": "8088:80", "netd.colour": "blue" }),
    );
    let out = runc_run(&host, &dir, "c1");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("nameserver 10.38.0.1"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("10.38.0.") && l.ends_with("\tboxhost box")),
        "the hosts file names the config's hostname and the sandbox: {stdout}"
    );
    assert!(stdout.contains("1 packets received"), "{stdout}");
    assert!(
        stdout.contains("10.39.0."),
        "connected to the second network: {stdout}"
    );
    // poststop detached it: no sandbox, no rule, no link, no files.
    assert!(!host
        .netctl_ok(&["ps", "--format", "{{.Names}}"])
        .contains("box"));
    // The veths go a moment after (their deletion is the kernel's slowest part).
    assert!(
        TestHost::eventually(Duration::from_secs(2), || (host.links(), host.iptables())
            == before),
        "{:?}",
        host.links()
    );
    assert!(!host.run_dir().join("containers/c1").exists());
}

fn hook(host: &TestHost, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = host
        .cmd(
            bin_dir().join("netd-oci-hook").to_str().expect("utf-8"),
            args,
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hook");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write");
    child.wait_with_output().expect("output")
}

#[test]
fn bad_states_bundles_and_annotations_fail_the_start_clearly() {
    let host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.40.0.0/24", "mynet"]);
    let socket = host.socket();
    let sock = socket.to_str().expect("utf-8");
    let before = (host.links(), host.iptables(), host.netctl_ok(&["ps", "-q"]));
    let state = |bundle: &str, pid: u32| {
        json!({"ociVersion": "1.0.2", "id": "x1", "status": "creating", "pid": pid, "bundle": bundle}).to_string()
    };
    // The container's process: a sleep in a namespace of its own (never the machine's).
    let netns = host.add_container_netns();
    let sleeper = netd_tests::Server::new(
        TestHost::in_netns(&netns, "sleep", &["60"])
            .stdout(Stdio::null())
            .spawn()
            .expect("sleep"),
    );
    let me = sleeper.pid();
    let out = hook(&host, &["createRuntime", "--socket", sock], b"{not json");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not an OCI state"),
        "{out:?}"
    );
    let out = hook(
        &host,
        &["--socket", sock],
        state("/nonexistent", me).as_bytes(),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("config.json"),
        "{out:?}"
    );
    let bad_port = bundle(
        &host,
        &["true"],
        json!({"netd.networks": "mynet", "netd.ports": "99999:80", "netd.colour": "blue"}),
    );
    let out = hook(
        &host,
        &["createRuntime", "--socket", sock],
        state(bad_port.to_str().expect("utf-8"), me).as_bytes(),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("99999"),
        "{out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning: annotation netd.colour"),
        "unknown annotations are warned about: {out:?}"
    );
    let no_net = bundle(&host, &["true"], json!({"netd.networks": "nonet"}));
    let out = hook(
        &host,
        &["createRuntime", "--socket", sock],
        state(no_net.to_str().expect("utf-8"), me).as_bytes(),
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nonet"),
        "{out:?}"
    );
    // netd down: the message says so.
    let out = hook(
        &host,
        &["createRuntime", "--socket", "/nonexistent/netd.sock"],
        state(no_net.to_str().expect("utf-8"), me).as_bytes(),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach netd"),
        "{out:?}"
    );
    // No annotation: nothing to do. poststop of an unknown container: nothing to do.
    let plain = bundle(&host, &["true"], json!({}));
    assert!(hook(
        &host,
        &["createRuntime", "--socket", sock],
        state(plain.to_str().expect("utf-8"), me).as_bytes()
    )
    .status
    .success());
    assert!(hook(
        &host,
        &["poststop", "--socket", sock],
        state("/nonexistent", 0).as_bytes()
    )
    .status
    .success());
    assert_eq!(
        (host.links(), host.iptables(), host.netctl_ok(&["ps", "-q"])),
        before
    );
}
