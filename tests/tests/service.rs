//! netd as a system service: the install tree and the README's list of it, the systemd
//! units (`systemd-analyze verify` in a private mount namespace), the Debian package
//! (built, listed, installed into a throwaway root), socket access by group (users made
//! here), socket activation and READY, JSON logs with the caller of every request, usage
//! errors, versions and completions.

// Tests fail by panicking with a reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netd_tests::{bin_dir, run, TestHost};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn must_run(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> BTreeSet<String> {
    fn walk(dir: &Path, base: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, base, out);
            } else {
                out.insert(format!("/{}", path.strip_prefix(base).unwrap().display()));
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// The README's install list, for one prefix, CNI directory and unit directory.
fn readme_list(prefix: &str, cni: &str, units: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let block = readme
        .split("<!-- install-files")
        .nth(1)
        .and_then(|rest| rest.split("```").nth(1))
        .expect("the install list in README.md");
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.replace("UNITS", units)
                .replace("PREFIX", prefix)
                .replace("CNI", cni)
        })
        .collect()
}

/// Every file matches a line of the list and every line matches a file (`*` is a glob).
fn assert_matches_list(files: &BTreeSet<String>, list: &[String]) {
    let matches = |pattern: &str, file: &str| match pattern.split_once('*') {
        Some((head, tail)) => {
            file.len() > head.len() + tail.len() && file.starts_with(head) && file.ends_with(tail)
        }
        None => pattern == file,
    };
    let stray: Vec<&String> = files
        .iter()
        .filter(|f| !list.iter().any(|p| matches(p, f)))
        .collect();
    let absent: Vec<&String> = list
        .iter()
        .filter(|p| !files.iter().any(|f| matches(p, f)))
        .collect();
    assert!(
        stray.is_empty() && absent.is_empty(),
        "not in the README's list: {stray:?}; listed but not installed: {absent:?}"
    );
}

#[test]
fn install_tree_is_the_readmes_and_its_units_verify() {
    let stage = tempfile::tempdir().unwrap();
    must_run(
        Command::new(repo().join("scripts/install.sh"))
            .arg("--destdir")
            .arg(stage.path())
            .arg("--from")
            .arg(bin_dir()),
    );
    let files = files_under(stage.path());
    assert_matches_list(
        &files,
        &readme_list(
            "/usr/local",
            "/opt/cni/bin",
            "/usr/local/lib/systemd/system",
        ),
    );
    assert!(files.contains("/usr/local/share/man/man1/netctl-network-create.1.gz"));
    let unit = std::fs::read_to_string(
        stage
            .path()
            .join("usr/local/lib/systemd/system/netd.service"),
    )
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/netd\n"), "{unit}");
    // The units as systemd reads them, with the tree where they point: /usr/local and
    // /opt of a private mount namespace only.
    let script = format!(
        "mount --bind {s}/usr/local /usr/local && mkdir -p /opt && mount --bind {s}/opt /opt && \
         systemd-analyze verify /usr/local/lib/systemd/system/netd.service \
         /usr/local/lib/systemd/system/netd.socket",
        s = stage.path().display()
    );
    let out = run(Command::new("unshare").args([
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
    ]));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Completions load in bash.
    let bash = format!(
        "source {}/usr/local/share/bash-completion/completions/netctl && complete -p netctl",
        stage.path().display()
    );
    let said = must_run(Command::new("bash").args(["-c", &bash]));
    assert!(said.contains("-F _netctl netctl"), "{said}");
}

#[test]
fn the_debian_package_builds_lists_its_files_and_installs_into_a_root() {
    let out_dir = tempfile::tempdir().unwrap();
    let deb = must_run(
        Command::new(repo().join("scripts/package-deb.sh"))
            .arg("--from")
            .arg(bin_dir())
            .arg("--out")
            .arg(out_dir.path())
            .env("NETD_DEB_COMPRESSION", "gzip"),
    );
    let deb = PathBuf::from(deb.trim());
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("netd_") && name.ends_with(".deb"),
        "{name}"
    );
    let listing = must_run(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let files: BTreeSet<String> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').to_string())
        .collect();
    assert_matches_list(
        &files,
        &readme_list("/usr", "/opt/cni/bin", "/lib/systemd/system"),
    );
    // Installed into a throwaway root: its maintainer scripts make the group there, and
    // nothing of this host's.
    let root = tempfile::tempdir().unwrap();
    for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"] {
        std::fs::create_dir_all(root.path().join(dir)).unwrap();
    }
    for file in [
        "var/lib/dpkg/status",
        "etc/group",
        "etc/gshadow",
        "etc/passwd",
        "etc/shadow",
    ] {
        std::fs::write(root.path().join(file), "").unwrap();
    }
    let host_group = std::fs::read_to_string("/etc/group").unwrap();
    must_run(
        Command::new("dpkg")
            .arg(format!("--root={}", root.path().display()))
            .args(["--force-depends", "--force-script-chrootless", "-i"])
            .arg(&deb),
    );
    let status = must_run(
        Command::new("dpkg")
            .arg(format!("--root={}", root.path().display()))
            .args(["-s", "netd"]),
    );
    assert!(status.contains("Status: install ok installed"), "{status}");
    assert!(root.path().join("usr/bin/netctl").exists());
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    assert!(group.starts_with("netd:"), "{group}");
    assert_eq!(std::fs::read_to_string("/etc/group").unwrap(), host_group);
}

/// A group and two users made for one test, removed when it ends.
struct Accounts {
    group: String,
    users: Vec<String>,
}

impl Accounts {
    fn new() -> Accounts {
        let tag = std::process::id();
        let group = format!("ndt{tag}g");
        must_run(Command::new("groupadd").arg(&group));
        let accounts = Accounts {
            group: group.clone(),
            users: vec![format!("ndt{tag}in"), format!("ndt{tag}out")],
        };
        must_run(Command::new("useradd").args([
            "-M",
            "-s",
            "/usr/sbin/nologin",
            "-G",
            &group,
            &accounts.users[0],
        ]));
        must_run(Command::new("useradd").args([
            "-M",
            "-s",
            "/usr/sbin/nologin",
            &accounts.users[1],
        ]));
        accounts
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        for user in &self.users {
            let _ = Command::new("userdel").arg(user).status();
        }
        let _ = Command::new("groupdel").arg(&self.group).status();
    }
}

#[test]
fn members_of_the_socket_group_use_netctl_and_others_are_refused() {
    let accounts = Accounts::new();
    let mut host = TestHost::bare();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("netd.sock");
    let socket_arg = socket.to_str().unwrap().to_string();
    host.start_netd_with(&["--socket", &socket_arg, "--socket-group", &accounts.group]);
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!(meta.uid(), 0);
    let gid = must_run(Command::new("getent").args(["group", &accounts.group]));
    assert_eq!(
        meta.gid().to_string(),
        gid.split(':').nth(2).unwrap().trim()
    );
    let netctl_as = |user: &str| {
        run(Command::new("setpriv")
            .args(["--reuid", user, "--regid", user, "--init-groups", "--"])
            .arg(bin_dir().join("netctl"))
            .args(["--socket", &socket_arg, "network", "create", "--subnet"])
            .arg(format!("10.62.{}.0/24", user.len() % 200))
            .arg(user))
    };
    let member = netctl_as(&accounts.users[0]);
    assert!(member.status.success(), "{member:?}");
    let ls = |host: &TestHost| {
        must_run(&mut host.cmd(
            bin_dir().join("netctl").to_str().unwrap(),
            &["--socket", &socket_arg, "network", "ls"],
        ))
    };
    let listed = ls(&host);
    assert!(listed.contains(&accounts.users[0]), "{listed}");
    let outsider = netctl_as(&accounts.users[1]);
    assert!(!outsider.status.success());
    let err = String::from_utf8_lossy(&outsider.stderr).to_lowercase();
    assert!(err.contains("permission denied"), "{err}");
    assert!(!ls(&host).contains(&accounts.users[1]));
    // The member's request is in the log with its uid.
    let uid = must_run(Command::new("id").args(["-u", &accounts.users[0]]));
    host.stop_netd();
    let log = host.netd_log();
    assert!(
        log.lines()
            .any(|l| l.contains("request") && l.contains(&format!("uid={}", uid.trim()))),
        "{log}"
    );
}

#[test]
fn json_logs_name_each_request_with_its_caller_and_duration() {
    let mut host = TestHost::with_args(&["--log-format", "json"]);
    host.netctl_ok(&["network", "create", "--subnet", "10.61.0.0/24", "logged"]);
    host.sh_ok("iptables", &["-F"]);
    host.netctl_ok(&["system", "reconcile"]);
    host.stop_netd();
    let log = host.netd_log();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    let create = events
        .iter()
        .find(|e| e["message"] == "request" && e["method"] == "POST" && e["path"] == "/networks")
        .unwrap_or_else(|| panic!("no request event: {log}"));
    assert_eq!(create["status"], 200, "{create}");
    assert_eq!(create["uid"], 0);
    assert!(create["pid"].as_i64().unwrap() > 0);
    assert!(create["duration_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(create["level"], "INFO");
    // The operation and the object it touched.
    assert_eq!(create["operation"], "network_create");
    assert_eq!(create["network"], "logged");
    assert_eq!(create["result"], "ok");
    // Repairs are warnings.
    assert!(
        events.iter().any(|e| e["level"] == "WARN"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("reconcile repair: "))),
        "{log}"
    );
}

#[test]
fn usage_errors_exit_2_and_leave_no_socket() {
    let host = TestHost::bare();
    for (args, says) in [
        (
            vec!["--socket-group", "no-such-group-xyz"],
            "--socket-group",
        ),
        (vec!["--log-format", "xml"], "--log-format"),
        (vec!["--metrics-addr", "localhost"], "--metrics-addr"),
        (vec!["--no-such-flag"], "--no-such-flag"),
    ] {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = run(&mut host.netd_command(&args));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{args:?}: {out:?}"
        );
        assert!(!host.socket().exists(), "{args:?} left a socket");
    }
}

#[test]
fn started_by_socket_activation_it_says_ready_and_serves_the_passed_socket() {
    let host = TestHost::bare();
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let socket = host.socket();
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let netd = host.netd_command(&[]);
    let program = netd
        .get_args()
        .map(|a| a.to_os_string())
        .collect::<Vec<_>>();
    // nsenter --net=NS netd ARGS -> nsenter --net=NS systemd-socket-activate -l SOCK netd ARGS
    let mut cmd = Command::new("nsenter");
    cmd.arg(&program[0])
        .arg("systemd-socket-activate")
        // It passes on only the variables it is told to.
        .args(["-E", "NOTIFY_SOCKET", "-l"])
        .arg(&socket)
        .args(&program[1..])
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = netd_tests::Server::new(cmd.spawn().unwrap());
    // The activator starts netd at the first connection, as systemd does; that request
    // waits in the socket's queue and is answered.
    assert!(TestHost::eventually(Duration::from_secs(5), || socket.exists()));
    let started = Instant::now();
    let out = host.netctl(&["network", "ls"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("bridge"));
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("READY from netd");
    let said = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(said.contains("READY=1"), "{said}");
    eprintln!(
        "first request answered and READY within {:?}",
        started.elapsed()
    );
    let pid = child.pid();
    // SAFETY: kill on our own child's pid.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    assert!(
        TestHost::eventually(Duration::from_secs(5), || {
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        }),
        "netd stops on SIGTERM"
    );
    // The socket stays the activator's: netd did not remove it.
    assert!(socket.exists());
}

#[test]
fn versions_name_the_commit() {
    for bin in ["netd", "netctl"] {
        let out = must_run(Command::new(bin_dir().join(bin)).arg("--version"));
        assert!(
            out.starts_with(&format!("{bin} {}", env!("CARGO_PKG_VERSION")))
                && out.contains("(commit "),
            "{out}"
        );
    }
}

/// `network connect` / `network disconnect` as Docker users type them.
#[test]
fn network_connect_and_disconnect_as_in_docker() {
    let host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.63.0.0/24", "front"]);
    host.netctl_ok(&["network", "create", "--subnet", "10.64.0.0/24", "back"]);
    host.netctl_ok(&["run", "--name", "web", "--network", "front"]);
    host.netctl_ok(&["run", "--name", "db", "--network", "back"]);
    let db = host.ip_of("db", "back");
    assert!(!host.can_ping("web", &db), "networks are isolated");
    host.netctl_ok(&[
        "network",
        "connect",
        "--alias",
        "site",
        "--ip",
        "10.64.0.50",
        "back",
        "web",
    ]);
    assert_eq!(host.ip_of("web", "back"), "10.64.0.50");
    assert!(host.can_ping("web", &db));
    assert!(host.can_ping("db", "10.64.0.50"));
    host.netctl_ok(&["network", "disconnect", "back", "web"]);
    assert!(!host.can_ping("web", &db));
    let out = host.netctl(&["network", "conect", "back", "web"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("similar subcommands exist") && err.contains("'connect'"),
        "a mistyped command suggests the right one: {err}"
    );
}

/// `system info` counts what is there and says where and what netd is.
#[test]
fn system_info_tells_version_backend_counts_and_directories() {
    let host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.65.0.0/24", "counted"]);
    host.netctl_ok(&[
        "run",
        "--name",
        "one",
        "--network",
        "counted",
        "-p",
        "8080:80",
    ]);
    host.netctl_ok(&["run", "--name", "two", "--network", "counted"]);
    let info: serde_json::Value =
        serde_json::from_str(&host.netctl_ok(&["system", "info", "--format", "json"])).unwrap();
    let version = must_run(Command::new(bin_dir().join("netd")).arg("--version"));
    assert_eq!(
        format!("netd {}", info["Version"].as_str().unwrap()),
        version.trim()
    );
    assert_eq!(info["FirewallBackend"], netd_tests::iptables_backend());
    // The default network and the one made here.
    assert_eq!(info["Networks"], 2);
    assert_eq!(info["Sandboxes"], 2);
    assert_eq!(info["PublishedPorts"], 1);
    assert_eq!(info["Policies"], 0);
    assert_eq!(info["Root"], host.root().to_str().unwrap());
    assert_eq!(info["RunDir"], host.run_dir().to_str().unwrap());
    assert!(info["ClusterStore"].is_null());
    let text = host.netctl_ok(&["system", "info"]);
    assert!(
        text.contains("Sandboxes: 2\n") && text.contains("Uptime: "),
        "{text}"
    );
}

const METRICS_ADDR: &str = netd_tests::metrics::ADDR;

fn scrape(host: &TestHost) -> std::collections::BTreeMap<String, f64> {
    netd_tests::metrics::scrape(host)
}

/// How much a sample grew between two scrapes (absent counts as 0).
fn grew(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
    key: &str,
) -> f64 {
    after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
}

fn op(operation: &str, result: &str) -> String {
    format!("netd_operations_total{{api=\"netd\",operation=\"{operation}\",result=\"{result}\"}}")
}

fn repairs(after: &std::collections::BTreeMap<String, f64>, trigger: &str) -> f64 {
    after
        .iter()
        .filter(|(k, _)| {
            k.starts_with("netd_reconcile_repairs_total{")
                && k.contains(&format!("trigger=\"{trigger}\""))
        })
        .map(|(_, v)| v)
        .sum()
}

/// `/metrics` parses with the Prometheus project's parser, and its counters move by
/// exactly what was done: operations by result, DNS answers by kind, repairs by what
/// found them; the gauges say what is there.
#[test]
fn metrics_parse_and_move_by_exactly_the_operations_made() {
    let mut host = TestHost::with_args(&[
        "--metrics-addr",
        METRICS_ADDR,
        "--firewall-check-interval",
        "1",
    ]);
    host.add_internet();
    let _upstream = netd_tests::upstream::Upstream::start(
        &host,
        netd_tests::INTERNET_IP,
        &[netd_tests::upstream::record(
            "host",
            "up.example,203.0.113.7",
        )],
    );
    let before = scrape(&host);
    assert_eq!(before["netd_networks{}"], 1.0, "the default network");
    let build = before
        .keys()
        .find(|k| k.starts_with("netd_build_info{"))
        .unwrap();
    assert!(build.contains("commit=\""), "{build}");

    host.netctl_ok(&[
        "network",
        "create",
        "--subnet",
        "10.66.0.0/24",
        "--opt",
        "bridge-name=brm",
        "m",
    ]);
    host.netctl_err(&["network", "create", "--subnet", "10.67.0.0/24", "m"]);
    host.netctl_err(&["network", "create", "--subnet", "10.68.0.0/33", "bad"]);
    host.netctl_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "m",
        "-p",
        "8080:80",
    ]);
    host.netctl_ok(&["run", "-d", "--name", "client", "--network", "m"]);
    host.netctl_ok(&["rm", "client"]);
    host.netctl_err(&["network", "inspect", "nosuch"]);
    host.netctl_ok(&["network", "ls"]);
    let dig = |name: &str| {
        let out = host.exec("web", &["dig", "+time=2", "+tries=1", name]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(dig("web").contains("status: NOERROR"));
    assert!(dig("nosuch.netd.internal").contains("status: NXDOMAIN"));
    assert!(dig("up.example").contains("203.0.113.7"));
    let after = scrape(&host);

    for (key, by) in [
        (op("network_create", "ok"), 1.0),
        (op("network_create", "rejected"), 2.0),
        (op("sandbox_run", "ok"), 2.0),
        (op("sandbox_remove", "ok"), 1.0),
        (op("network_inspect", "rejected"), 1.0),
        (op("network_list", "ok"), 1.0),
        (op("network_create", "failed"), 0.0),
        (
            "netd_operation_duration_seconds_count{api=\"netd\",operation=\"network_create\"}"
                .into(),
            3.0,
        ),
        ("netd_dns_queries_total{answer=\"local\"}".into(), 1.0),
        ("netd_dns_queries_total{answer=\"nxdomain\"}".into(), 1.0),
        ("netd_dns_queries_total{answer=\"forwarded\"}".into(), 1.0),
        ("netd_dns_forward_duration_seconds_count{}".into(), 1.0),
        ("netd_dns_forward_failures_total{}".into(), 0.0),
    ] {
        assert_eq!(grew(&before, &after, &key), by, "{key}");
    }
    // Operations as they were made, every one of them within the histogram's range.
    let slowest = "netd_operation_duration_seconds_bucket{api=\"netd\",le=\"+Inf\",operation=\"sandbox_run\"}";
    assert_eq!(grew(&before, &after, slowest), 2.0);
    assert_eq!(after["netd_networks{}"], 2.0);
    assert_eq!(after["netd_sandboxes{}"], 1.0);
    assert_eq!(after["netd_published_ports{}"], 1.0);
    assert_eq!(after["netd_policies{}"], 0.0);
    assert!(
        !after.keys().any(|k| k.contains("cluster_store")),
        "not clustered"
    );

    // The periodic check runs every second and counts what it repairs; the log says each.
    let checks = after["netd_firewall_checks_total{}"];
    host.sh_ok("iptables", &["-F"]);
    let repaired = TestHost::eventually(Duration::from_secs(5), || {
        repairs(&scrape(&host), "periodic") > repairs(&after, "periodic")
    });
    assert!(repaired, "{}", host.netd_log());
    let later = scrape(&host);
    assert!(later["netd_firewall_checks_total{}"] > checks);
    let logged = host.netd_log().matches("firewall check: ").count() as f64;
    assert_eq!(repairs(&later, "periodic"), logged, "{}", host.netd_log());

    // On demand: what `system reconcile` prints is what is counted.
    host.sh_ok("ip", &["addr", "flush", "dev", "brm"]);
    let printed = host.netctl_ok(&["system", "reconcile"]);
    let printed = printed
        .lines()
        .filter(|l| *l != "nothing to repair")
        .count() as f64;
    let last = scrape(&host);
    assert!(printed >= 1.0);
    assert_eq!(
        repairs(&last, "on_demand") - repairs(&later, "on_demand"),
        printed
    );
    assert!(
        grew(
            &later,
            &last,
            "netd_reconcile_repairs_total{kind=\"bridge\",trigger=\"on_demand\"}"
        ) >= 1.0
    );
    assert_eq!(grew(&later, &last, &op("system_reconcile", "ok")), 1.0);

    // A second netd on the same metrics address is a usage error and leaves no socket.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("second.sock");
    let out = run(&mut host.cmd(
        bin_dir().join("netd").to_str().unwrap(),
        &[
            "--root",
            dir.path().join("root").to_str().unwrap(),
            "--run-dir",
            dir.path().join("run").to_str().unwrap(),
            "--socket",
            socket.to_str().unwrap(),
            "--no-default-network",
            "--metrics-addr",
            METRICS_ADDR,
        ],
    ));
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--metrics-addr 127.0.0.1:9464"));
    assert!(!socket.exists());
}

/// `system events` shows the kept operations (filtered as Docker's), and streams new ones
/// as they happen.
#[test]
fn system_events_show_what_was_done_and_stream_what_follows() {
    let host = TestHost::new();
    host.netctl_ok(&["network", "create", "--subnet", "10.69.0.0/24", "ev"]);
    host.netctl_err(&["network", "create", "--subnet", "10.69.1.0/24", "ev"]);
    host.netctl_ok(&["run", "-d", "--name", "one", "--network", "ev"]);
    host.netctl_ok(&["network", "disconnect", "ev", "one"]);
    host.netctl_ok(&["network", "ls"]);
    let lines = |args: &[&str]| host.kept_events(args);
    let all = lines(&[]);
    let seen: Vec<(String, String, String)> = all
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["result"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String, String)> = [
        ("network", "create", "ok"),
        ("network", "create", "rejected"),
        ("sandbox", "start", "ok"),
        ("network", "disconnect", "ok"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    // Reads (network ls) are no events.
    assert_eq!(seen, expected, "{all:#?}");
    assert_eq!(all[0]["objects"]["network"], "ev");
    assert!(
        all[1]["error"].as_str().unwrap().contains("ev"),
        "{}",
        all[1]
    );
    assert_eq!(all[2]["objects"]["sandbox"], "one");
    assert_eq!(all[2]["objects"]["network"], "ev");
    assert_eq!(all[3]["objects"]["sandbox"], "one");
    assert_eq!(all[0]["uid"], 0);
    assert!(all
        .windows(2)
        .all(|w| w[0]["time_nano"].as_u64() <= w[1]["time_nano"].as_u64()));

    let network_ok = lines(&["--filter", "type=network", "--filter", "result=ok"]);
    assert_eq!(network_ok.len(), 2, "{network_ok:#?}");
    let of_one = lines(&["--filter", "container=one"]);
    assert_eq!(of_one.len(), 2, "{of_one:#?}");
    let text = host.kept_events_text(&["--format", "text", "--filter", "event=disconnect"]);
    assert!(
        text.contains(" network disconnect network=ev sandbox=one (ok, "),
        "{text}"
    );
    let bad = host.netctl_err(&["system", "events", "--filter", "colour=red"]);
    assert!(bad.contains("colour is not a filter"), "{bad}");

    // Live: a watcher started now sees the next change, and only what its filter takes.
    let mut watcher = host
        .netctl_cmd(&[
            "system",
            "events",
            "--since",
            "0s",
            "--filter",
            "network=live",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watcher.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    host.netctl_ok(&["network", "create", "--subnet", "10.69.2.0/24", "other"]);
    host.netctl_ok(&["network", "create", "--subnet", "10.69.3.0/24", "live"]);
    let line = rx.recv_timeout(Duration::from_secs(5));
    let _ = watcher.kill();
    let _ = watcher.wait();
    let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
    assert_eq!(event["action"], "create");
    assert_eq!(event["objects"]["network"], "live");
}
