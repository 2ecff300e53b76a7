//! Running commands inside a sandbox, in the foreground or detached.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context};
use linkd::SandboxEntry;
use netd::api::types::SandboxInfo;

/// A command to run inside the sandbox (its network namespace, and a private mount and
/// UTS namespace where the sandbox's hosts, resolv.conf and hostname are in place), and how
/// it enters.
fn sandbox_command(info: &SandboxInfo, argv: &[String]) -> anyhow::Result<(Command, SandboxEntry)> {
    let files: Vec<(PathBuf, &Path)> = [
        (&info.hosts_path, "/etc/hosts"),
        (&info.resolv_conf_path, "/etc/resolv.conf"),
        (&info.hostname_path, "/etc/hostname"),
    ]
    .into_iter()
    .filter(|(source, _)| !source.is_empty())
    .map(|(source, target)| (PathBuf::from(source), Path::new(target)))
    .collect();
    let binds: Vec<(&Path, &Path)> = files
        .iter()
        .map(|(source, target)| (source.as_path(), *target))
        .collect();
    let entry = SandboxEntry::new(
        Path::new(&info.network_settings.sandbox_key),
        &binds,
        &info.config.hostname,
    )
    .context("cannot enter the sandbox")?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    Ok((cmd, entry))
}

/// Starts a command in a sandbox; `Err(code)` when it could not be run (127: not found,
/// 126: not runnable, as a shell says), after saying why.
fn spawn_in(
    entry: SandboxEntry,
    cmd: &mut Command,
    program: &str,
) -> anyhow::Result<std::result::Result<std::process::Child, u8>> {
    match entry.spawn(cmd) {
        Ok(child) => Ok(Ok(child)),
        Err(linkd::LinkdError::Spawn(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("error: cannot run {program}: executable file not found");
            Ok(Err(127))
        }
        Err(linkd::LinkdError::Spawn(e)) => {
            eprintln!("error: cannot run {program}: {e}");
            Ok(Err(126))
        }
        Err(e) => Err(anyhow!(e).context(format!("cannot run {program} in the sandbox"))),
    }
}

pub fn wait_foreground(info: &SandboxInfo, argv: &[String]) -> anyhow::Result<u8> {
    let (mut cmd, entry) = sandbox_command(info, argv)?;
    // Like a shell, leave terminal signals to the child while it runs.
    // SAFETY: installing SIG_IGN runs no handler code.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
    let mut child = match spawn_in(entry, &mut cmd, &argv[0])? {
        Ok(child) => child,
        Err(code) => return Ok(code),
    };
    let status = child.wait().context("waiting for the command")?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(1),
        _ => 1,
    })
}

pub fn start_detached(info: &SandboxInfo, argv: &[String]) -> anyhow::Result<u32> {
    let log_path = &info.log_path;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .with_context(|| format!("cannot open log file {log_path}"))?;
    let (mut cmd, entry) = sandbox_command(info, argv)?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // A session of its own: the command outlives this terminal.
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = match entry.spawn(&mut cmd) {
        Ok(child) => child,
        Err(e) => return Err(anyhow!(e).context(format!("cannot run {}", argv[0]))),
    };
    let pid = child.id();
    if pid == 0 {
        bail!("cannot run {}", argv[0]);
    }
    Ok(pid)
}
