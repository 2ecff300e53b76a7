//! Test hosts for netd's integration tests.
//!
//! A [`TestHost`] is a throwaway network namespace with its own netd (own `--root` and
//! `--run-dir` in a temporary directory). Optionally it gets an "internet": a second
//! namespace behind a veth pair, reachable through the test host's default route. Nothing
//! touches the machine's own namespace, and everything is removed on drop, also when the
//! test fails. Tests observe the world (packets, `ip`, `iptables-save`), not netd's state.

// Test support: a setup step that cannot be done fails the test, by panicking with a reason.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::new_without_default)]

pub mod cluster;
pub mod metrics;
pub mod upstream;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Address of the test host on its uplink, and of the "internet" namespace.
pub const HOST_UPLINK_IP: &str = "198.51.100.2";
pub const INTERNET_IP: &str = "198.51.100.1";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Where cargo put the binaries (the tests run from target/<profile>/deps).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .to_path_buf();
    for bin in ["netd", "netctl", "netd-pause"] {
        assert!(
            dir.join(bin).exists(),
            "{} is missing: build the binaries first (cargo build --workspace --bins)",
            dir.join(bin).display()
        );
    }
    dir
}

/// The integration tests create network namespaces, which needs root. Run as another
/// user (`cargo test` on a workstation), a test binary says so and ends at its first test
/// host, successfully, so that the unit tests' results stand on their own; CI runs as root.
fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        use std::io::Write;
        // Straight to the descriptor: the test harness would hold back what eprintln! says.
        let _ = std::io::stderr().write_all(
            b"\nnetd-tests: NOT RUN: the integration tests need root (they create network \
              namespaces). Run them with `sudo scripts/test.sh`.\n",
        );
        std::process::exit(0);
    }
}

/// Runs a command and returns its output.
pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub(crate) fn must(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A throwaway host: a network namespace running its own netd.
#[derive(Debug)]
pub struct TestHost {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub bin: PathBuf,
    netd: Option<Child>,
    netd_args: Vec<String>,
    internet: Option<String>,
    /// Container namespaces made for CNI plugins (`/run/netns/<name>`).
    containers: std::sync::Mutex<Vec<String>>,
    /// A directory put first in the PATH of every command run in the host (the iptables
    /// backend's tools, see [`iptables_backend`]).
    tools: Option<PathBuf>,
}

/// The iptables backend the tests run against: `NETD_TEST_IPTABLES=legacy` gives every
/// test host `iptables`, `iptables-save` and `iptables-restore` that are the legacy
/// (x_tables) tools, first in its PATH; the host's own alternatives stay as they are.
pub fn iptables_backend() -> &'static str {
    match std::env::var("NETD_TEST_IPTABLES").as_deref() {
        Ok("legacy") => "legacy",
        _ => "nft",
    }
}

impl TestHost {
    /// A test host with netd started with default flags (plus its own directories).
    pub fn new() -> Self {
        Self::with_args(&[])
    }

    /// A test host whose netd gets `args` in addition to its directories.
    pub fn with_args(args: &[&str]) -> Self {
        let mut host = Self::bare();
        host.netd_args = args.iter().map(|s| s.to_string()).collect();
        host.start_netd();
        host
    }

    /// A test host without netd running.
    pub fn bare() -> Self {
        require_root();
        let bin = bin_dir();
        let name = format!(
            "ndt{}x{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        must(Command::new("ip").args(["netns", "add", &name]));
        let host = TestHost {
            dir: tempfile::Builder::new()
                .prefix(&format!("{name}-"))
                .tempdir()
                .expect("tempdir"),
            bin,
            netd: None,
            netd_args: Vec::new(),
            internet: None,
            containers: std::sync::Mutex::new(Vec::new()),
            tools: None,
            name,
        };
        let mut host = host;
        if iptables_backend() == "legacy" {
            let tools = host.dir.path().join("iptables-legacy");
            std::fs::create_dir_all(&tools).expect("tools dir");
            for (name, target) in [
                ("iptables", "/usr/sbin/iptables-legacy"),
                ("iptables-save", "/usr/sbin/iptables-legacy-save"),
                ("iptables-restore", "/usr/sbin/iptables-legacy-restore"),
            ] {
                std::os::unix::fs::symlink(target, tools.join(name)).expect("symlink");
            }
            host.tools = Some(tools);
        }
        must(&mut host.cmd("ip", &["link", "set", "lo", "up"]));
        // The host's real resolvers are never used: forwarded names go to the "internet"
        // namespace (where a test may run a DNS server) or nowhere.
        host.set_resolv_conf(&format!("nameserver {INTERNET_IP}\n"));
        host
    }

    /// The resolv.conf this host's netd reads its upstream resolvers from.
    pub fn resolv_conf(&self) -> PathBuf {
        self.dir.path().join("resolv.conf")
    }

    /// Rewrites that resolv.conf in place (netd notices by itself).
    pub fn set_resolv_conf(&self, text: &str) {
        std::fs::write(self.resolv_conf(), text).expect("write resolv.conf");
    }

    pub fn netns_path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    pub fn socket(&self) -> PathBuf {
        self.run_dir().join("netd.sock")
    }

    /// A command that runs inside the test host's namespace.
    pub fn cmd(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns_path()))
            .arg(program)
            .args(args);
        if let Some(tools) = &self.tools {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![tools.clone()];
            dirs.extend(std::env::split_paths(&path));
            cmd.env("PATH", std::env::join_paths(dirs).expect("PATH"));
        }
        cmd
    }

    /// Runs a command in the test host and returns its stdout; panics on failure.
    pub fn sh_ok(&self, program: &str, args: &[&str]) -> String {
        must(&mut self.cmd(program, args))
    }

    /// The netd command line this host runs with.
    pub fn netd_command(&self, extra: &[String]) -> Command {
        let mut cmd = self.cmd(self.bin.join("netd").to_str().expect("utf-8 path"), &[]);
        cmd.arg("--root")
            .arg(self.root())
            .arg("--run-dir")
            .arg(self.run_dir())
            .arg("--resolv-conf")
            .arg(self.resolv_conf())
            .args(&self.netd_args)
            .args(extra);
        cmd
    }

    /// Sets the flags netd starts with (from now on, restarts included).
    pub fn set_netd_args(&mut self, args: Vec<String>) {
        self.netd_args = args;
    }

    /// Starts netd and waits until its API answers.
    pub fn start_netd(&mut self) {
        self.start_netd_with(&[]);
    }

    /// Starts netd with extra flags (the API socket must stay where [`Self::socket`] says,
    /// or be found by the caller) and waits until it is up; stopped on drop.
    pub fn start_netd_with(&mut self, extra: &[&str]) {
        assert!(self.netd.is_none(), "netd already running");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let socket = extra
            .iter()
            .position(|a| a == "--socket")
            .and_then(|i| extra.get(i + 1))
            .map(PathBuf::from)
            .unwrap_or_else(|| self.socket());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("netd.log"))
            .expect("netd log");
        let child = self
            .netd_command(&extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start netd");
        self.netd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return;
            }
            if let Some(child) = self.netd.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.netd = None;
                    panic!("netd exited at start ({status}): {}", self.netd_log());
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("netd did not come up: {}", self.netd_log());
    }

    pub fn netd_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("netd.log")).unwrap_or_default()
    }

    /// The pid of the running netd.
    pub fn netd_pid(&self) -> Option<u32> {
        self.netd.as_ref().map(Child::id)
    }

    /// Stops netd with SIGTERM and waits for it.
    pub fn stop_netd(&mut self) {
        if let Some(mut child) = self.netd.take() {
            // SAFETY: kill on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    /// Kills netd with SIGKILL (a crash) and waits for it.
    pub fn kill_netd(&mut self) {
        if let Some(mut child) = self.netd.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs netctl against this host's netd, inside the test host.
    pub fn netctl(&self, args: &[&str]) -> Output {
        let mut cmd = self.cmd(self.bin.join("netctl").to_str().expect("utf-8 path"), &[]);
        cmd.arg("--socket").arg(self.socket()).args(args);
        run(&mut cmd)
    }

    /// A netctl command (not yet run), for long-running ones.
    pub fn netctl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.cmd(self.bin.join("netctl").to_str().expect("utf-8 path"), &[]);
        cmd.arg("--socket").arg(self.socket()).args(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    /// Runs netctl and returns its stdout; panics with its stderr when it fails.
    pub fn netctl_ok(&self, args: &[&str]) -> String {
        let out = self.netctl(args);
        assert!(
            out.status.success(),
            "netctl {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The events netd kept from the last ten minutes (`netctl system events --since 10m
    /// --until 0s ARGS`), as printed: JSON lines, or text with `--format text`.
    pub fn kept_events_text(&self, args: &[&str]) -> String {
        let mut argv = vec!["system", "events", "--since", "10m", "--until", "0s"];
        argv.extend_from_slice(args);
        self.netctl_ok(&argv)
    }

    /// The same, each event parsed.
    pub fn kept_events(&self, args: &[&str]) -> Vec<serde_json::Value> {
        self.kept_events_text(args)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("event {l}: {e}")))
            .collect()
    }

    /// Runs netctl expecting failure; returns stderr (checked to be one `error:` line).
    pub fn netctl_err(&self, args: &[&str]) -> String {
        let out = self.netctl(args);
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert!(
            !out.status.success(),
            "netctl {args:?} should fail but succeeded"
        );
        assert!(
            stderr.starts_with("error: "),
            "netctl {args:?}: stderr {stderr:?} must start with error:"
        );
        assert_eq!(
            stderr.lines().count(),
            1,
            "one-line error expected: {stderr:?}"
        );
        stderr
    }

    /// `netctl inspect NAME` parsed.
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let text = self.netctl_ok(&["inspect", name]);
        let mut v: serde_json::Value = serde_json::from_str(&text).expect("inspect JSON");
        v[0].take()
    }

    /// The IPv4 address of a sandbox on a network.
    pub fn ip_of(&self, sandbox: &str, network: &str) -> String {
        self.inspect(sandbox)["NetworkSettings"]["Networks"][network]["IPAddress"]
            .as_str()
            .unwrap_or_else(|| panic!("{sandbox} has no address on {network}"))
            .to_string()
    }

    /// Runs a command inside a sandbox (via `netctl exec`).
    pub fn exec(&self, sandbox: &str, argv: &[&str]) -> Output {
        let mut args = vec!["exec", sandbox, "--"];
        args.extend_from_slice(argv);
        self.netctl(&args)
    }

    /// Whether one ping from a sandbox to `ip` gets an answer.
    pub fn can_ping(&self, sandbox: &str, ip: &str) -> bool {
        self.exec(sandbox, &["ping", "-c1", "-W1", ip])
            .status
            .success()
    }

    /// Adds the "internet": a namespace at 198.51.100.1 behind a veth, the test host's
    /// default route pointing at it. It has no route back to any container subnet, so
    /// only masqueraded traffic gets answers.
    pub fn add_internet(&mut self) -> String {
        let name = format!("{}-inet", self.name);
        must(Command::new("ip").args(["netns", "add", &name]));
        self.internet = Some(name.clone());
        let inet = |args: &[&str]| {
            must(Command::new("ip").arg("-n").arg(&name).args(args));
        };
        must(&mut self.cmd(
            "ip",
            &[
                "link", "add", "uplink", "type", "veth", "peer", "name", "wan", "netns", &name,
            ],
        ));
        self.sh_ok(
            "ip",
            &[
                "addr",
                "add",
                &format!("{HOST_UPLINK_IP}/24"),
                "dev",
                "uplink",
            ],
        );
        self.sh_ok("ip", &["link", "set", "uplink", "up"]);
        self.sh_ok("ip", &["route", "add", "default", "via", INTERNET_IP]);
        inet(&["link", "set", "lo", "up"]);
        inet(&["addr", "add", &format!("{INTERNET_IP}/24"), "dev", "wan"]);
        inet(&["link", "set", "wan", "up"]);
        name
    }

    /// A new empty namespace for a container (loopback up), as a runtime makes before it
    /// runs CNI plugins; returns its path. Removed with the host.
    pub fn add_container_netns(&self) -> String {
        let mut containers = self.containers.lock().expect("containers");
        let name = format!("{}-c{}", self.name, containers.len());
        must(Command::new("ip").args(["netns", "add", &name]));
        must(Command::new("ip").args(["-n", &name, "link", "set", "lo", "up"]));
        containers.push(name.clone());
        format!("/run/netns/{name}")
    }

    /// A command inside a namespace given by path.
    pub fn in_netns(path: &str, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={path}")).arg(program).args(args);
        cmd
    }

    /// A command inside the "internet" namespace.
    pub fn internet_cmd(&self, program: &str, args: &[&str]) -> Command {
        let name = self.internet.as_ref().expect("add_internet first");
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{name}"))
            .arg(program)
            .args(args);
        cmd
    }

    /// `iptables-save` of the test host, without counters and comments, for comparisons.
    pub fn iptables(&self) -> String {
        let mut out = String::new();
        for table in ["filter", "nat"] {
            let text = self.sh_ok("iptables-save", &["-t", table]);
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                let line = match line.split_once(" [") {
                    Some((decl, _)) if line.starts_with(':') => decl,
                    _ => line,
                };
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// The test host's links, one name per line (with kind), for comparisons.
    pub fn links(&self) -> Vec<String> {
        let text = self.sh_ok("ip", &["-o", "-d", "link", "show"]);
        let mut out: Vec<String> = text
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect();
        out.sort();
        out
    }

    /// The test host's host-side veths of sandboxes (netd's prefix).
    pub fn sandbox_veths(&self) -> Vec<String> {
        self.links()
            .into_iter()
            .filter(|l| l.starts_with("nd") && l.len() >= 13)
            .collect()
    }

    /// Mount points of sandbox namespaces under the run directory that are live.
    pub fn netns_mounts(&self) -> Vec<String> {
        mounts_under(&self.run_dir().join("netns"))
    }

    /// Pause processes this host's sandboxes have, from the pid files netd wrote.
    pub fn pause_pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(self.run_dir().join("sandboxes")) {
            for entry in entries.flatten() {
                if let Ok(text) = std::fs::read_to_string(entry.path().join("pause.pid")) {
                    if let Ok(pid) = text.trim().parse() {
                        out.push(pid);
                    }
                }
            }
        }
        out
    }

    /// Live pause processes serving this host's sandboxes, found by scanning /proc (not
    /// by netd's pid files), so leaked ones are counted too.
    pub fn live_pauses(&self) -> Vec<i32> {
        let run = self.run_dir();
        let needle = run.to_string_lossy().into_owned();
        let mut out = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                continue;
            };
            let text = String::from_utf8_lossy(&cmdline);
            let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(true);
            if text.contains("netd-pause") && text.contains(&needle) && !zombie {
                out.push(pid);
            }
        }
        out
    }

    /// Waits until `f` holds, polling; returns whether it did within `timeout`.
    pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if f() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The mode bits of the API socket.
    pub fn socket_mode(&self) -> u32 {
        std::fs::metadata(self.socket())
            .expect("socket")
            .permissions()
            .mode()
            & 0o777
    }
}

/// Live mount points under `dir` (namespace bind mounts, a runtime's snapshots and shm),
/// deepest first.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let prefix = dir.to_string_lossy().to_string();
    let mut out: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|p| p.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.len()));
    out.dedup();
    out
}

fn is_process_of(pid: i32, needle: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| c.windows(needle.len()).any(|w| w == needle))
        .unwrap_or(false)
}

/// Kills every process whose network namespace is one of `namespaces` (by inode): what a
/// test started inside its test host, wherever it was reparented to.
pub fn kill_processes_in(namespaces: &[PathBuf]) {
    use std::os::unix::fs::MetadataExt;
    let inodes: Vec<(u64, u64)> = namespaces
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    if inodes.is_empty() {
        return;
    }
    let me = std::process::id() as i32;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(ns) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
            continue;
        };
        if pid != me && inodes.contains(&(ns.dev(), ns.ino())) {
            // SAFETY: kill of a process living in one of this test host's namespaces.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        self.kill_netd();
        let mut namespaces = vec![PathBuf::from(self.netns_path())];
        if let Some(inet) = &self.internet {
            namespaces.push(PathBuf::from(format!("/run/netns/{inet}")));
        }
        let containers = self
            .containers
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        namespaces.extend(
            containers
                .iter()
                .map(|c| PathBuf::from(format!("/run/netns/{c}"))),
        );
        // Namespaces mounted anywhere under the host's directory (its netd's sandboxes, a
        // container runtime's pods).
        namespaces.extend(mounts_under(self.dir.path()).into_iter().map(PathBuf::from));
        kill_processes_in(&namespaces);
        // Pause processes and detached commands of this host's sandboxes, by pid file.
        if let Ok(entries) = std::fs::read_dir(self.run_dir().join("sandboxes")) {
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                if let Ok(text) = std::fs::read_to_string(entry.path().join("pause.pid")) {
                    if let Ok(pid) = text.trim().parse::<i32>() {
                        if is_process_of(pid, id.as_bytes()) {
                            // SAFETY: kill on a pid verified to be this host's pause process.
                            unsafe { libc::kill(pid, libc::SIGKILL) };
                        }
                    }
                }
                if let Ok(text) = std::fs::read_to_string(entry.path().join("processes")) {
                    for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                        let ns = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
                        let want = std::fs::metadata(self.run_dir().join("netns").join(&id)).ok();
                        let same = match (ns, want) {
                            (Some(link), Some(meta)) => {
                                use std::os::unix::fs::MetadataExt;
                                link.to_string_lossy().contains(&meta.ino().to_string())
                            }
                            _ => false,
                        };
                        if same {
                            // SAFETY: kill on a pid verified to live in this host's sandbox.
                            unsafe { libc::kill(pid, libc::SIGKILL) };
                        }
                    }
                }
            }
        }
        for mount in mounts_under(self.dir.path()) {
            let _ = umount_lazy(&mount);
        }
        if let Some(inet) = self.internet.take() {
            let _ = run(Command::new("ip").args(["netns", "del", &inet]));
        }
        for container in containers {
            let _ = run(Command::new("ip").args(["netns", "del", &container]));
        }
        let _ = run(Command::new("ip").args(["netns", "del", &self.name]));
    }
}

/// Detaches a mount (what `umount -l` does).
pub fn umount_lazy(path: &str) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path)?;
    // SAFETY: umount2 on a NUL-terminated path we own.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A TCP server in a namespace answering "hello"; bounded in time, and killed (and reaped)
/// when dropped.
#[derive(Debug)]
pub struct Server(Child);

impl Server {
    /// Takes charge of a server process started by the test.
    pub fn new(child: Child) -> Server {
        Server(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a [`Server`] on `port` in the namespace at `netns`.
pub fn serve_hello(netns: &str, port: u16) -> Server {
    serve_tcp(netns, port, "SYSTEM:echo hello")
}

/// A TCP server on `port` in the namespace at `netns` whose every connection is answered
/// by socat's `answer` (`SYSTEM:echo $SOCAT_PEERADDR` tells the client's address).
pub fn serve_tcp(netns: &str, port: u16, answer: &str) -> Server {
    let child = TestHost::in_netns(
        netns,
        "timeout",
        &[
            "60",
            "socat",
            &format!("TCP-LISTEN:{port},fork,reuseaddr"),
            answer,
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("start server");
    Server(child)
}

/// What a TCP client run by `make` reads, retried briefly while the server starts.
pub fn tcp_answer(mut make: impl FnMut() -> Command) -> String {
    for _ in 0..30 {
        let out = run(&mut make());
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !text.is_empty() {
            return text;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    String::new()
}
