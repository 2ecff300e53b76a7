//! Pause processes: one tiny process per sandbox, sitting in the sandbox's namespace (as
//! the Kubernetes pause container does), so the sandbox has a Pid that other runtimes can
//! join through `/proc/PID/ns/net`.
//!
//! `netd-pause NETNS SANDBOX_ID PIDFILE` enters the namespace, forks, records the child's
//! pid in PIDFILE, prints it and exits; the child detaches into its own session. netd
//! therefore never has to reap it, stopping netd stops no sandbox, and a pause started
//! just before netd died is still found by its pid file.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{NetdError, Result};

/// A pause process being started.
#[derive(Debug)]
pub struct Starting {
    inner: StartingInner,
}

#[derive(Debug)]
enum StartingInner {
    Child(Child),
    /// Already known (a fake's).
    Started(i32),
}

/// Starts the pause process for `sandbox_id` in the namespace at `netns`; the pid comes
/// later from [`Starting::finish`], so the caller can configure links meanwhile.
pub fn start(binary: &Path, netns: &Path, sandbox_id: &str, pid_file: &Path) -> Result<Starting> {
    let child = Command::new(binary)
        .arg(netns)
        .arg(sandbox_id)
        .arg(pid_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            NetdError::io(
                format!("cannot start pause process {}", binary.display()),
                e,
            )
        })?;
    Ok(Starting {
        inner: StartingInner::Child(child),
    })
}

impl Starting {
    /// One whose pid is known already.
    pub fn started(pid: i32) -> Self {
        Starting {
            inner: StartingInner::Started(pid),
        }
    }

    /// Waits for the pause process to report its pid.
    pub fn finish(self) -> Result<i32> {
        let mut child = match self.inner {
            StartingInner::Started(pid) => return Ok(pid),
            StartingInner::Child(child) => child,
        };
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let status = child
            .wait()
            .map_err(|e| NetdError::io("waiting for the pause process", e))?;
        match line.trim().parse::<i32>() {
            Ok(pid) if status.success() && pid > 0 => Ok(pid),
            _ => {
                let mut err = String::new();
                if let Some(stderr) = child.stderr.take() {
                    let _ = BufReader::new(stderr).read_line(&mut err);
                }
                Err(NetdError::Internal(format!(
                    "pause process failed ({status}): {}",
                    err.trim()
                )))
            }
        }
    }
}

/// Whether `pid` is the pause process of `sandbox_id` (guards against pid reuse).
pub fn is_pause_of(pid: i32, sandbox_id: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut args = cmdline.split(|b| *b == 0);
    let is_pause = args.next().is_some_and(|a| a.ends_with(b"netd-pause"));
    is_pause && args.nth(1) == Some(sandbox_id.as_bytes())
}

/// Stops a sandbox's pause process if `pid` still is it.
pub fn stop(pid: i32, sandbox_id: &str) {
    if is_pause_of(pid, sandbox_id) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Kills every process in the namespace mounted at `netns` (found by scanning /proc, so
/// it costs time proportional to the processes on the host: only for `rm -f`).
pub fn kill_all_in(netns: &Path) {
    let Ok(target) = std::fs::metadata(netns) else {
        return;
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid != std::process::id() as i32 && in_netns(pid, &target) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Whether process `pid` lives in the namespace whose mount's metadata is `netns`.
pub fn in_netns(pid: i32, netns: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .is_ok_and(|ns| ns.ino() == netns.ino() && ns.dev() == netns.dev())
}

/// Whether a process exists (and is not a zombie).
pub fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state field follows the parenthesised command name.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// The processes netd starts and stops for sandboxes (pause processes, and commands run
/// detached in them), behind a trait so the engine's verbs run against
/// [`RecordingProcesses`] in unit tests.
pub trait Processes: std::fmt::Debug {
    /// Starts the pause process of `sandbox_id` in the namespace at `netns` (see [`start`]).
    fn start_pause(&mut self, netns: &Path, sandbox_id: &str, pid_file: &Path) -> Result<Starting>;
    /// Whether `pid` is the running pause process of `sandbox_id`.
    fn is_pause_of(&self, pid: i32, sandbox_id: &str) -> bool;
    /// Stops a sandbox's pause process if `pid` still is it.
    fn stop_pause(&mut self, pid: i32, sandbox_id: &str);
    /// Whether `pid` runs (and is not a zombie) in the namespace at `netns`.
    fn runs_in(&self, pid: i32, netns: &Path) -> bool;
    fn is_alive(&self, pid: i32) -> bool;
    fn kill(&mut self, pid: i32);
    /// Kills every process in the namespace at `netns`.
    fn kill_all_in(&mut self, netns: &Path);
}

/// The host's processes; pause processes run `binary` (netd-pause).
#[derive(Debug, Clone)]
pub struct HostProcesses {
    pub binary: std::path::PathBuf,
}

impl Processes for HostProcesses {
    fn start_pause(&mut self, netns: &Path, sandbox_id: &str, pid_file: &Path) -> Result<Starting> {
        start(&self.binary, netns, sandbox_id, pid_file)
    }

    fn is_pause_of(&self, pid: i32, sandbox_id: &str) -> bool {
        pid > 0 && is_pause_of(pid, sandbox_id) && is_alive(pid)
    }

    fn stop_pause(&mut self, pid: i32, sandbox_id: &str) {
        stop(pid, sandbox_id);
    }

    fn runs_in(&self, pid: i32, netns: &Path) -> bool {
        std::fs::metadata(netns).is_ok_and(|want| in_netns(pid, &want) && is_alive(pid))
    }

    fn is_alive(&self, pid: i32) -> bool {
        is_alive(pid)
    }

    fn kill(&mut self, pid: i32) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }

    fn kill_all_in(&mut self, netns: &Path) {
        kill_all_in(netns);
    }
}

/// A process of the fake: which sandbox it is the pause process of, if any, and where it
/// runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeProcess {
    pub pause_of: Option<String>,
    pub netns: std::path::PathBuf,
}

/// Fake processes for unit tests: pids handed out in order, a pause process writes its pid
/// file as netd-pause does; tests see (and kill) them through `table()`.
#[derive(Debug, Clone, Default)]
pub struct RecordingProcesses {
    table: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<i32, FakeProcess>>>,
}

impl RecordingProcesses {
    pub fn table(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<i32, FakeProcess>> {
        self.table
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A process started in the namespace at `netns` (as `netctl run -d` would).
    pub fn spawn_in(&self, netns: &Path) -> i32 {
        let mut table = self.table();
        let pid = table.keys().next_back().map_or(100_000, |p| p + 1);
        table.insert(
            pid,
            FakeProcess {
                pause_of: None,
                netns: netns.to_path_buf(),
            },
        );
        pid
    }
}

impl Processes for RecordingProcesses {
    fn start_pause(&mut self, netns: &Path, sandbox_id: &str, pid_file: &Path) -> Result<Starting> {
        let pid = self.spawn_in(netns);
        if let Some(process) = self.table().get_mut(&pid) {
            process.pause_of = Some(sandbox_id.to_string());
        }
        std::fs::write(pid_file, format!("{pid}\n"))
            .map_err(|e| NetdError::io(format!("cannot write {}", pid_file.display()), e))?;
        Ok(Starting::started(pid))
    }

    fn is_pause_of(&self, pid: i32, sandbox_id: &str) -> bool {
        self.table()
            .get(&pid)
            .is_some_and(|p| p.pause_of.as_deref() == Some(sandbox_id))
    }

    fn stop_pause(&mut self, pid: i32, sandbox_id: &str) {
        if self.is_pause_of(pid, sandbox_id) {
            self.table().remove(&pid);
        }
    }

    fn runs_in(&self, pid: i32, netns: &Path) -> bool {
        self.table().get(&pid).is_some_and(|p| p.netns == netns)
    }

    fn is_alive(&self, pid: i32) -> bool {
        self.table().contains_key(&pid)
    }

    fn kill(&mut self, pid: i32) {
        self.table().remove(&pid);
    }

    fn kill_all_in(&mut self, netns: &Path) {
        self.table().retain(|_, p| p.netns != netns);
    }
}
