//! The CNI plugins under containerd's CRI, the way the kubelet runs a bridge plugin today:
//! containerd (Debian's 1.6) started in a test host with its own root, state and socket,
//! its CRI plugin configured with netd-bridge + netd-ipam + netd-portmap, and driven with
//! a small CRI client (`tests/tools/cri.py`). A pod sandbox with a hostPort is run,
//! reached from outside, stopped and removed, and nothing of it is left.

// Tests fail by panicking with a reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netd_tests::{bin_dir, run, serve_hello, tcp_answer, TestHost, HOST_UPLINK_IP};
use serde_json::{json, Value};

const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.6";
const NETWORK: &str = "k8s-pod-network";
/// The interpreter that has Debian's python3-grpcio (not whatever python3 is first on PATH).
const PYTHON: &str = "/usr/bin/python3";

fn tool(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tools")
        .join(name)
}

/// containerd running in a test host; stopped (with the shims it started) when dropped.
struct Containerd {
    dir: PathBuf,
    child: Option<Child>,
}

impl Containerd {
    fn socket(&self) -> PathBuf {
        self.dir.join("state").join("containerd.sock")
    }

    /// The directory containerd finds the plugins in: ours, containerd's loopback from
    /// the reference plugins, and netd-bridge behind a wrapper that logs each call's verb,
    /// namespace and exit status to `calls.log`.
    fn plugin_dir(&self) -> PathBuf {
        let dir = self.dir.join("bin");
        std::fs::create_dir_all(&dir).unwrap();
        for plugin in ["netd-ipam", "netd-portmap"] {
            std::os::unix::fs::symlink(bin_dir().join(plugin), dir.join(plugin)).unwrap();
        }
        std::os::unix::fs::symlink("/usr/lib/cni/loopback", dir.join("loopback")).unwrap();
        let wrapper = format!(
            "#!/bin/sh\nout=$({real}); rc=$?\n\
             echo \"$CNI_COMMAND netns=$CNI_NETNS rc=$rc\" >> {log}\n\
             printf '%s' \"$out\"\nexit $rc\n",
            real = bin_dir().join("netd-bridge").display(),
            log = self.dir.join("calls.log").display(),
        );
        let path = dir.join("netd-bridge");
        std::fs::write(&path, wrapper).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    fn start(host: &TestHost, conflist: &Value) -> Self {
        let dir = host.dir.path().join("containerd");
        let mut ctd = Containerd {
            dir: dir.clone(),
            child: None,
        };
        let bin = ctd.plugin_dir();
        let conf_dir = dir.join("net.d");
        std::fs::create_dir_all(&conf_dir).unwrap();
        std::fs::write(conf_dir.join("10-netd.conflist"), conflist.to_string()).unwrap();
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{state}/ttrpc.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
    Root = "{root}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin}"
    conf_dir = "{conf}"
"#,
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            socket = ctd.socket().display(),
            bin = bin.display(),
            conf = conf_dir.display(),
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = host
            .cmd(
                "containerd",
                &["--config", dir.join("config.toml").to_str().unwrap()],
            )
            // The plugins keep their lock, rule handles and IPAM index with the test host.
            .env("NETD_CNI_RUN_DIR", host.dir.path().join("netd-cni"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        ctd.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ctd.cri(&["version"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "containerd did not come up: {}",
                ctd.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        ctd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn cri(&self, args: &[&str]) -> std::process::Output {
        run(Command::new(PYTHON)
            .arg(tool("cri.py"))
            .arg("--socket")
            .arg(self.socket())
            .args(args))
    }

    /// A CRI call that must succeed; its JSON answer.
    fn cri_ok(&self, args: &[&str]) -> Value {
        let out = self.cri(args);
        assert!(
            out.status.success(),
            "cri {args:?}: {}\ncontainerd log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout).expect("CRI answer JSON")
    }

    /// Imports the pause image (nothing can be pulled here).
    fn import_pause_image(&self) {
        let tar = self.dir.join("pause.tar");
        let out = run(Command::new(PYTHON)
            .arg(tool("pause_image.py"))
            .arg(&tar)
            .arg(PAUSE_IMAGE));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let socket = self.socket();
        let out = run(Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["-n", "k8s.io", "images", "import"])
            .arg(&tar));
        assert!(
            out.status.success(),
            "ctr import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The shims this containerd started (they outlive it), by the socket they serve.
    fn shims(&self) -> Vec<i32> {
        let needle = self.socket().display().to_string();
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                    let text = String::from_utf8_lossy(&c);
                    text.starts_with("/usr/bin/containerd-shim") && text.contains(&needle)
                })
            })
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        for pid in self.shims() {
            // SAFETY: kill on a shim verified to serve this test's containerd.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// The pod's network namespace, from the runtime spec containerd reports.
fn pod_netns(status: &Value) -> String {
    let info: Value =
        serde_json::from_str(status["info"]["info"].as_str().expect("verbose info")).unwrap();
    info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["type"] == "network")
        .and_then(|n| n["path"].as_str())
        .expect("network namespace path")
        .to_string()
}

#[test]
fn a_pod_with_a_host_port_under_containerd() {
    let mut host = TestHost::bare();
    host.add_internet();
    let data = host.dir.path().join("ipam");
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "plugins": [
            {"type": "netd-bridge", "bridge": "cni0", "isGateway": true, "ipMasq": true,
             "hairpinMode": true,
             "ipam": {"type": "netd-ipam", "ranges": [[{"subnet": "10.88.0.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": data}},
            {"type": "netd-portmap", "capabilities": {"portMappings": true}, "snat": true}
        ]
    });
    let ctd = Containerd::start(&host, &conflist);
    ctd.import_pause_image();
    let pod = ctd.dir.join("pod.json");
    std::fs::write(
        &pod,
        json!({
            "metadata": {"name": "web-0", "uid": "9f1c2e7a", "namespace": "default", "attempt": 0},
            "hostname": "web-0",
            "port_mappings": [{"protocol": "TCP", "container_port": 80, "host_port": 18090}],
            "linux": {}
        })
        .to_string(),
    )
    .unwrap();
    let id = ctd.cri_ok(&["runp", pod.to_str().unwrap()]);
    let id = id["pod_sandbox_id"]
        .as_str()
        .expect("sandbox id")
        .to_string();
    let status = ctd.cri_ok(&["inspectp", &id]);
    assert_eq!(status["status"]["state"], "SANDBOX_READY", "{status}");
    assert_eq!(status["status"]["network"]["ip"], "10.88.0.2", "{status}");
    let netns = pod_netns(&status);

    // The published port answers from outside, through netd-portmap's DNAT.
    let server = serve_hello(&netns, 80);
    let target = format!("TCP:{HOST_UPLINK_IP}:18090,connect-timeout=1");
    let answer = tcp_answer(|| host.internet_cmd("socat", &["-T2", "-", &target]));
    drop(server);
    assert_eq!(answer, "hello", "the pod's host port from outside");

    ctd.cri_ok(&["stopp", &id]);
    ctd.cri_ok(&["rmp", &id]);
    let pods = ctd.cri_ok(&["pods"]);
    assert!(
        pods["items"].as_array().is_none_or(|p| p.is_empty()),
        "{pods}"
    );

    // containerd ran ADD, then DEL with the namespace and DEL again without it; all passed.
    let calls = ctd.calls();
    let netns_del = format!("DEL netns={netns} rc=0");
    assert!(
        calls.contains(&format!("ADD netns={netns} rc=0")),
        "{calls:?}"
    );
    assert!(calls.contains(&netns_del), "{calls:?}");
    assert!(calls.contains(&"DEL netns= rc=0".to_string()), "{calls:?}");
    assert!(calls.iter().all(|c| c.ends_with("rc=0")), "{calls:?}");
    assert!(
        !ctd.log().contains("Failed to destroy network"),
        "{}",
        ctd.log()
    );

    // Nothing of the pod is left: no veth, rule, reservation or index entry.
    let links = host.links();
    assert!(links.iter().all(|l| !l.starts_with("veth")), "{links:?}");
    let nat = host.sh_ok("iptables-save", &["-t", "nat"]);
    assert!(!nat.contains("netd-cni name:"), "{nat}");
    let files: Vec<String> = std::fs::read_dir(data.join(NETWORK))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lock" && !n.starts_with("last_reserved_ip."))
        .collect();
    assert!(files.is_empty(), "reservations left: {files:?}");
    let index: Vec<String> = std::fs::read_dir(host.dir.path().join("netd-cni/ipam"))
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "stamp")
        .collect();
    assert!(index.is_empty(), "index entries left: {index:?}");
    assert!(!Path::new(&netns).exists(), "{netns} is still there");
}
