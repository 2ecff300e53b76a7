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
