//! Docker's Engine network API on `--docker-socket`, driven by the Docker SDK for Python
//! (Debian's python3-docker) exactly as a user's script drives Docker, and checked against
//! what `netctl` shows and what the kernel has.

// Tests fail by panicking with a reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use netd_tests::{run, TestHost};

const SCRIPT: &str = r#"
import json, sys
import docker
from docker.types import IPAMConfig, IPAMPool
c = docker.DockerClient(base_url="unix://" + sys.argv[1])
out = {}
out["ping"] = c.api.ping()
n = c.networks.create("n1", driver="bridge", labels={"team": "a"},
    ipam=IPAMConfig(pool_configs=[IPAMPool(subnet="10.41.0.0/24", gateway="10.41.0.1")]))
out["id"] = n.id
out["by_name"] = [x.name for x in c.networks.list(names=["n1"])]
out["by_label"] = [x.name for x in c.networks.list(filters={"label": "team=a"})]
# The map form of filters, as the docker CLI sends it, without a version prefix.
raw = c.api._get("unix://localhost/networks".replace("unix://localhost", c.api.base_url),
                 params={"filters": json.dumps({"name": {"n1": True}})})
out["map_form"] = [x["Name"] for x in raw.json()]
n.connect("web", ipv4_address="10.41.0.9", aliases=["w"])
n.reload()
out["containers"] = [v["IPv4Address"] for v in n.attrs["Containers"].values()]
def status(f):
    try:
        f()
        return 0
    except docker.errors.APIError as e:
        return e.status_code
out["rm_busy"] = status(n.remove)
n.disconnect("web")
out["dup"] = status(lambda: c.networks.create("n1"))
out["bad_subnet"] = status(lambda: c.networks.create("bad", ipam=IPAMConfig(pool_configs=[IPAMPool(subnet="10.1.0.0/33")])))
out["unknown_connect"] = status(lambda: n.connect("nosuch"))
out["unsupported"] = status(lambda: c.containers.list())
n.remove()
out["gone"] = status(lambda: c.networks.get("n1"))
c.networks.create("spare")
out["pruned"] = c.networks.prune()["NetworksDeleted"]
print(json.dumps(out))
"#;

#[test]
fn the_docker_sdk_drives_netds_networks() {
    let mut host = TestHost::bare();
    let socket = host.dir.path().join("docker.sock");
    host.set_netd_args(vec!["--docker-socket".into(), socket.display().to_string()]);
    host.start_netd();
    host.netctl_ok(&["run", "--name", "web"]);
    let script = host.dir.path().join("sdk.py");
    std::fs::write(&script, SCRIPT).expect("script");
    // Debian's interpreter and SDK (python3-docker), whatever python3 comes first in PATH.
    let out = run(&mut host.cmd(
        "/usr/bin/python3",
        &[
            script.to_str().expect("utf-8"),
            socket.to_str().expect("utf-8"),
        ],
    ));
    assert!(out.status.success(), "{out:?}");
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("script output");
    assert_eq!(got["ping"], true);
    assert_eq!(got["by_name"], serde_json::json!(["n1"]));
    assert_eq!(got["by_label"], serde_json::json!(["n1"]));
    assert_eq!(got["map_form"], serde_json::json!(["n1"]));
    assert_eq!(got["containers"], serde_json::json!(["10.41.0.9/24"]));
    assert_eq!(got["rm_busy"], 403, "Docker's status for a network in use");
    assert_eq!(got["dup"], 409);
    assert_eq!(got["bad_subnet"], 400);
    assert_eq!(got["unknown_connect"], 404);
    assert_eq!(got["unsupported"], 501);
    assert_eq!(got["gone"], 404);
    assert_eq!(got["pruned"], serde_json::json!(["spare"]));
    // The network was netd's own: netctl saw it, and its bridge is gone with it.
    assert!(!host.netctl_ok(&["network", "ls"]).contains("n1"));
    assert!(!host
        .links()
        .iter()
        .any(|l| l.contains("br-") && l.contains(&got["id"].as_str().expect("id")[..12])));
    let mode = std::fs::metadata(&socket).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    assert_eq!(mode.expect("socket"), 0o660);
}

/// The docker CLI (Debian's, client only) runs every network verb against netd's socket;
/// what it shows is what netctl shows.
#[test]
fn the_docker_cli_runs_every_network_verb() {
    let mut host = TestHost::bare();
    let socket = host.dir.path().join("docker.sock");
    host.set_netd_args(vec!["--docker-socket".into(), socket.display().to_string()]);
    host.start_netd();
    host.netctl_ok(&["run", "--name", "web"]);
    let docker = netd_tests::bin_dir()
        .parent()
        .expect("target")
        .join("test-tools/docker");
    assert!(
        docker.exists(),
        "{} is missing: scripts/install-test-deps.sh extracts it",
        docker.display()
    );
    let cli = |args: &[&str]| {
        let mut cmd = host.cmd(docker.to_str().expect("utf-8"), args);
        cmd.env("DOCKER_HOST", format!("unix://{}", socket.display()))
            .env("DOCKER_CONFIG", host.dir.path().join("docker-config"));
        run(&mut cmd)
    };
    let ok = |args: &[&str]| {
        let out = cli(args);
        assert!(out.status.success(), "docker {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let id = ok(&[
        "network",
        "create",
        "--subnet",
        "10.42.0.0/24",
        "--label",
        "k=v",
        "cli1",
    ]);
    assert_eq!(id.len(), 64, "{id}");
    let names = ok(&[
        "network",
        "ls",
        "--format",
        "{{.Name}} {{.Driver}} {{.Scope}}",
    ]);
    let ours = host.netctl_ok(&[
        "network",
        "ls",
        "--format",
        "{{.Name}} {{.Driver}} {{.Scope}}",
    ]);
    assert_eq!(
        names,
        ours.trim(),
        "docker and netctl list the same networks"
    );
    assert_eq!(
        ok(&["network", "ls", "-q", "--filter", "label=k=v"]),
        &id[..12]
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&["network", "inspect", "cli1"])).expect("inspect JSON");
    assert_eq!(inspect[0]["IPAM"]["Config"][0]["Subnet"], "10.42.0.0/24");
    ok(&[
        "network",
        "connect",
        "--ip",
        "10.42.0.7",
        "--alias",
        "w",
        "cli1",
        "web",
    ]);
    assert_eq!(host.ip_of("web", "cli1"), "10.42.0.7");
    let busy = cli(&["network", "rm", "cli1"]);
    assert!(!busy.status.success());
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("active endpoints"),
        "{busy:?}"
    );
    ok(&["network", "disconnect", "cli1", "web"]);
    ok(&["network", "rm", "cli1"]);
    assert!(!host.netctl_ok(&["network", "ls"]).contains("cli1"));
    let missing = cli(&["network", "inspect", "nosuch"]);
    assert!(!missing.status.success());
    ok(&["network", "create", "spare"]);
    let pruned = ok(&["network", "prune", "-f"]);
    assert!(pruned.contains("spare"), "{pruned}");
    // Each change through Docker's API is an event, named as Docker names it.
    let events = host.kept_events_text(&[
        "--filter",
        "api=docker",
        "--filter",
        "result=ok",
        "--format",
        "text",
    ]);
    let seen: Vec<String> = events
        .lines()
        // "TIME TYPE ACTION OBJECTS (RESULT, ...)": what is between the time and the result.
        .map(|l| {
            let head = l.split(" (").next().unwrap_or("");
            head.split_once(' ')
                .map_or("", |(_, rest)| rest)
                .to_string()
        })
        .collect();
    assert_eq!(
        seen,
        [
            "network create network=cli1",
            "network connect network=cli1 sandbox=web",
            "network disconnect network=cli1 sandbox=web",
            "network destroy network=cli1",
            "network create network=spare",
            "network prune",
        ],
        "{events}"
    );
}
