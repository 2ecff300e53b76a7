//! Applying a rendered iptables ruleset: one `iptables-restore --noflush` transaction per
//! operation, so a change costs one process and is all-or-nothing.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{LinkdError, Result};

/// The kernel API the iptables tools write to: nf_tables (`iptables-nft`, rules with
/// handles) or x_tables (`iptables-legacy`, still the default on older hosts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Nft,
    Legacy,
}

/// The iptables tools to run; overridable so tests and other backends can point elsewhere.
#[derive(Debug, Clone)]
pub struct Iptables {
    pub restore: String,
    pub save: String,
}

impl Default for Iptables {
    fn default() -> Self {
        Iptables {
            restore: "iptables-restore".into(),
            save: "iptables-save".into(),
        }
    }
}

impl Iptables {
    /// Applies `ruleset` (iptables-restore syntax) atomically without flushing tables.
    /// Chains declared in it are flushed and refilled; everything else is left alone.
    pub fn restore(&self, ruleset: &str) -> Result<()> {
        run_with_input(&self.restore, &["--noflush", "-w", "5"], ruleset)
    }

    /// The backend `iptables-restore` writes to: told from the binary it resolves to
    /// (Debian's alternatives link `xtables-nft-multi` or `xtables-legacy-multi`), else
    /// from what `--version` says.
    pub fn backend(&self) -> Backend {
        let resolved = find_in_path(&self.restore).and_then(|p| std::fs::canonicalize(p).ok());
        if let Some(name) = resolved.as_ref().and_then(|p| p.file_name()) {
            let name = name.to_string_lossy();
            if name.contains("legacy") {
                return Backend::Legacy;
            }
            if name.contains("nft") {
                return Backend::Nft;
            }
        }
        let version = Command::new(&self.restore)
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if version.contains("legacy") {
            Backend::Legacy
        } else {
            Backend::Nft
        }
    }

    /// The current rules of one table, as `iptables-save -t TABLE` prints them.
    pub fn save(&self, table: &str) -> Result<String> {
        run_for_output(&self.save, &["-t", table])
    }
}

/// Runs `program args`, writes `input` to its standard input, and fails with the first
/// line it printed on standard error.
pub(crate) fn run_with_input(program: &str, args: &[&str], input: &str) -> Result<()> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| tool_error("cannot run", program, source))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|source| tool_error("writing to", program, source))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| tool_error("waiting for", program, source))?;
    if out.status.success() {
        return Ok(());
    }
    Err(LinkdError::ToolFailed {
        program: format!("{program} {}", args.join(" ")).trim().to_string(),
        status: out.status,
        reason: String::from_utf8_lossy(&out.stderr)
            .lines()
            .next()
            .unwrap_or("no message")
            .trim()
            .to_string(),
    })
}

/// Runs `program args` and returns what it printed.
pub(crate) fn run_for_output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| tool_error("cannot run", program, source))?;
    if !out.status.success() {
        return Err(LinkdError::ToolFailed {
            program: format!("{program} {}", args.join(" ")),
            status: out.status,
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn tool_error(what: &'static str, program: &str, source: std::io::Error) -> LinkdError {
    LinkdError::Tool {
        what,
        program: program.to_string(),
        source,
    }
}

/// Where `program` is found: itself if it names a path, else the first match in `PATH`.
fn find_in_path(program: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        return Some(program.into());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// What netd's appliers ask of the firewall of one namespace: whole transactions, the
/// rules of a table, and rules told apart by their owner's comment (see [`crate::Tag`]).
/// [`crate::TaggedRules`] is the real one, [`crate::fake::RecordingFirewall`] a model.
pub trait Firewall: std::fmt::Debug {
    /// Applies `ruleset` (iptables-restore syntax, `--noflush`) as one transaction.
    fn restore(&mut self, ruleset: &str) -> Result<()>;
    /// One table as `iptables-save -t TABLE` prints it.
    fn save(&mut self, table: &str) -> Result<String>;
    /// Whether a chain exists (declaring an existing chain in a restore flushes it).
    fn chain_exists(&mut self, table: &str, chain: &str) -> Result<bool>;
    /// Applies `ruleset` (appends only), which adds `expected` rules tagged `tag`; their
    /// handles when the backend has them, for [`Firewall::delete_tagged`].
    fn append_tagged(
        &mut self,
        ruleset: &str,
        tag: &crate::Tag<'_>,
        expected: usize,
    ) -> Result<Option<Vec<u64>>>;
    /// Deletes every rule tagged `tag` (none is fine); how many there were.
    fn delete_tagged(&mut self, tag: &crate::Tag<'_>, remembered: Option<&[u64]>) -> Result<usize>;
    /// How many rules carry `tag`.
    fn count_tagged(&mut self, tag: &crate::Tag<'_>) -> Result<usize>;
    /// Applies `ipset restore` commands (kernel sets) in one process.
    fn sets_restore(&mut self, text: &str) -> Result<()>;
    /// Moves addresses into and out of sets (a sandbox's memberships), without a process.
    fn sets_change(&mut self, changes: &[crate::ipset::MemberChange]) -> Result<()>;
    /// Every kernel set, as `ipset save` prints them.
    fn sets_save(&mut self) -> Result<String>;
    /// Forgets connection-tracking entries of UDP flows to a local port (best effort).
    fn flush_udp_conntrack(&mut self, port: u16);
    /// Lets go of the firewall's sockets; a short-lived single-threaded process uses it to
    /// leave without waiting for deleted rules' grace period (see
    /// [`crate::TaggedRules::close_detached`]).
    fn release(self: Box<Self>) {}
}
