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
    child: Child,
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
    Ok(Starting { child })
}

impl Starting {
    /// Waits for the pause process to report its pid.
    pub fn finish(mut self) -> Result<i32> {
        let mut line = String::new();
        if let Some(stdout) = self.child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let status = self
            .child
            .wait()
            .map_err(|e| NetdError::io("waiting for the pause process", e))?;
        match line.trim().parse::<i32>() {
            Ok(pid) if status.success() && pid > 0 => Ok(pid),
            _ => {
                let mut err = String::new();
                if let Some(stderr) = self.child.stderr.take() {
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
