//! Starting a process inside a sandbox: its network namespace, plus a private mount and
//! UTS namespace in which the sandbox's hosts, resolv.conf and hostname are in place (what
//! `netctl exec` and `netctl run` do for the commands they start).
//!
//! The work happens in the child between fork and exec, where only async-signal-safe calls
//! are allowed (the caller may be multi-threaded), so everything is prepared beforehand.
//! A failing step cannot report more than an errno through `spawn`; so before each step the
//! child writes the step's number to a pipe, and the parent names the step that failed.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};

use crate::error::{LinkdError, Result};

/// How a process enters one sandbox.
#[derive(Debug)]
pub struct SandboxEntry {
    netns: File,
    netns_path: String,
    /// (file of the sandbox, path it is bound over), e.g. its resolv.conf over
    /// /etc/resolv.conf.
    binds: Vec<(CString, CString)>,
    hostname: Vec<u8>,
}

/// The steps, in order, as the parent names them; after the last one comes the exec.
const STEPS: [&str; 5] = [
    "enter the network namespace",
    "unshare the mount and UTS namespaces",
    "make mounts private to the command",
    "bind the sandbox's files",
    "set the hostname",
];
const EXEC: u8 = STEPS.len() as u8;

impl SandboxEntry {
    /// Prepares entry into the namespace at `netns`, with `binds` (source, target) where
    /// both exist and the `hostname` (none if empty).
    pub fn new(netns: &Path, binds: &[(&Path, &Path)], hostname: &str) -> Result<Self> {
        let netns_path = netns.display().to_string();
        let file = File::open(netns).map_err(|source| LinkdError::Netns {
            path: netns_path.clone(),
            source,
        })?;
        let cstring = |p: &Path| {
            CString::new(p.as_os_str().as_encoded_bytes()).map_err(|_| LinkdError::Netns {
                path: p.display().to_string(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"),
            })
        };
        let mut prepared = Vec::new();
        for (source, target) in binds {
            if source.exists() && target.exists() {
                prepared.push((cstring(source)?, cstring(target)?));
            }
        }
        Ok(SandboxEntry {
            netns: file,
            netns_path,
            binds: prepared,
            hostname: hostname.as_bytes().to_vec(),
        })
    }

    /// Spawns `cmd` inside the sandbox. An error names the step that failed.
    pub fn spawn(self, cmd: &mut Command) -> Result<Child> {
        let (mut progress_read, progress_write) = progress_pipe()?;
        let netns_path = self.netns_path.clone();
        let write_fd = progress_write.as_raw_fd();
        let root = c"/";
        let none = c"none";
        let entry = self;
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // system calls on data prepared beforehand (no allocation, no locks).
        unsafe {
            cmd.pre_exec(move || {
                let step = |n: u8| {
                    libc::write(write_fd, (&n as *const u8).cast(), 1);
                };
                let fail = || Err(io::Error::last_os_error());
                step(0);
                if libc::setns(entry.netns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return fail();
                }
                step(1);
                if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS) != 0 {
                    return fail();
                }
                step(2);
                let slave = libc::MS_REC | libc::MS_SLAVE;
                if libc::mount(
                    none.as_ptr(),
                    root.as_ptr(),
                    std::ptr::null(),
                    slave,
                    std::ptr::null(),
                ) != 0
                {
                    return fail();
                }
                step(3);
                for (source, target) in &entry.binds {
                    if libc::mount(
                        source.as_ptr(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    {
                        return fail();
                    }
                }
                step(4);
                if !entry.hostname.is_empty()
                    && libc::sethostname(entry.hostname.as_ptr().cast(), entry.hostname.len()) != 0
                {
                    return fail();
                }
                step(EXEC);
                Ok(())
            });
        }
        let spawned = cmd.spawn();
        // The child's copy closes at exec (or exit); ours must go for the read to end.
        drop(progress_write);
        match spawned {
            Ok(child) => Ok(child),
            Err(source) => {
                let mut reached = Vec::new();
                let _ = progress_read.read_to_end(&mut reached);
                match reached.last().map(|n| STEPS.get(usize::from(*n))) {
                    Some(Some(step)) => Err(LinkdError::Netns {
                        path: netns_path,
                        source: io::Error::new(source.kind(), format!("{step}: {source}")),
                    }),
                    // The command itself could not be run (not found, not executable), or
                    // there was no child at all.
                    _ => Err(LinkdError::Spawn(source)),
                }
            }
        }
    }
}

/// A close-on-exec pipe: (read end as a file, write end).
fn progress_pipe() -> Result<(File, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| LinkdError::Socket(io::Error::from(e)))?;
    Ok((File::from(read), write))
}
