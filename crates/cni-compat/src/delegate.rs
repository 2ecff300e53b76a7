//! Delegation as the spec has it: a plugin runs another plugin (its IPAM) found by type in
//! `CNI_PATH`, with the same environment (the verb replaced) and the same configuration.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command as Process, Stdio};

use serde::Deserialize;

use crate::spec::gojson::Node;
use crate::spec::{CniEnv, CniError, CniResult, Code, Command, Result};

/// Finds a plugin binary in `CNI_PATH`.
pub fn find(env: &CniEnv, plugin_type: &str) -> Result<PathBuf> {
    if plugin_type.is_empty() || plugin_type.contains('/') {
        return Err(CniError::config(format!(
            "ipam.type: {plugin_type:?} is not a plugin name"
        )));
    }
    env.path
        .iter()
        .map(|dir| dir.join(plugin_type))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::config(format!(
                "ipam.type: no plugin {plugin_type:?} in CNI_PATH ({})",
                env.path
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            ))
        })
}

/// Runs `plugin_type` for `command` with `config` on stdin. ADD returns its result.
pub fn run(
    env: &CniEnv,
    plugin_type: &str,
    command: Command,
    config: &[u8],
) -> Result<Option<CniResult>> {
    start(env, plugin_type, command, config)?.finish()
}

/// A delegated plugin that is running (so the caller can work meanwhile).
#[derive(Debug)]
pub struct Running {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Process {
        child: std::process::Child,
        binary: PathBuf,
        plugin_type: String,
        command: Command,
    },
    /// Answered already (a fake's).
    Done(Box<Result<Option<CniResult>>>),
}

/// Starts `plugin_type` for `command` with `config` on stdin.
pub fn start(env: &CniEnv, plugin_type: &str, command: Command, config: &[u8]) -> Result<Running> {
    let binary = find(env, plugin_type)?;
    let mut child = Process::new(&binary)
        .env("CNI_COMMAND", command.as_str())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| CniError::io(format!("cannot run {}: {e}", binary.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin that exits before reading is reported by its status in `finish`.
        let _ = stdin.write_all(config);
    }
    Ok(Running {
        inner: Inner::Process {
            child,
            binary,
            plugin_type: plugin_type.to_string(),
            command,
        },
    })
}

impl Running {
    /// A delegate that has answered already.
    pub fn done(answer: Result<Option<CniResult>>) -> Self {
        Running {
            inner: Inner::Done(Box::new(answer)),
        }
    }

    /// Waits for the plugin; ADD returns its result.
    pub fn finish(self) -> Result<Option<CniResult>> {
        let (child, binary, plugin_type, command) = match self.inner {
            Inner::Done(answer) => return *answer,
            Inner::Process {
                child,
                binary,
                plugin_type,
                command,
            } => (child, binary, plugin_type, command),
        };
        let output = child
            .wait_with_output()
            .map_err(|e| CniError::io(format!("{} did not finish: {e}", binary.display())))?;
        if !output.status.success() {
            #[derive(Deserialize)]
            struct WireError {
                code: u32,
                #[serde(default)]
                msg: String,
                #[serde(default)]
                details: String,
            }
            let wire = Node::parse(&output.stdout)
                .ok()
                .and_then(|n| n.decode::<WireError>().ok());
            return Err(match wire.ok_or(()) {
                Ok(e) => CniError {
                    code: e.code,
                    msg: format!("{plugin_type}: {}", e.msg),
                    details: e.details,
                },
                Err(_) => CniError::new(
                    Code::Delegate,
                    format!(
                        "{plugin_type} {} failed ({}): {}",
                        command.as_str(),
                        output.status,
                        String::from_utf8_lossy(&output.stdout).trim()
                    ),
                ),
            });
        }
        if command != Command::Add {
            return Ok(None);
        }
        CniResult::parse(&output.stdout, &plugin_type).map(Some)
    }
}
