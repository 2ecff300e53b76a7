//! netd-oci-hook: an OCI runtime hook that joins a container's network namespace to netd's
//! networks named by its annotations (`netd.networks`, `netd.name`, `netd.aliases`,
//! `netd.ports`, `netd.ip`) at `createRuntime` (or `prestart`), and takes it out again at
//! `poststop`. The OCI state comes on stdin; the stage is the first argument, or is told
//! from the state's status. It prints nothing on success; on failure it says why on
//! stderr and exits 1, which fails the container's start.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use hyper::Method;
use netd::api::client::Client;
use netd::api::types::{AttachRequest, Empty, RunRequest, SandboxInfo};
use oci_spec::runtime::{ContainerState, LinuxNamespaceType, Spec, State};

/// The annotations the hook reads; others under `netd.` get a warning.
const KNOWN: &[&str] = &[
    "netd.networks",
    "netd.name",
    "netd.aliases",
    "netd.ports",
    "netd.ip",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Attach,
    Detach,
    Nothing,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netd-oci-hook: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut stage_arg = None;
    let mut socket = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--socket" => socket = Some(args.next().context("--socket needs a PATH")?),
            other if other.starts_with("--socket=") => {
                socket = Some(other.trim_start_matches("--socket=").to_string())
            }
            other if stage_arg.is_none() => stage_arg = Some(other.to_string()),
            other => bail!(
                "unexpected argument {other:?} (usage: netd-oci-hook [STAGE] [--socket PATH])"
            ),
        }
    }
    let socket = socket
        .or_else(|| std::env::var("NETD_SOCKET").ok())
        .unwrap_or_else(|| "/run/netd/netd.sock".into());
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .context("cannot read the OCI state from stdin")?;
    let state: State = serde_json::from_slice(&input).context("stdin: not an OCI state (JSON)")?;
    let stage = match stage_arg.as_deref() {
        Some("createRuntime" | "prestart" | "createContainer") => Stage::Attach,
        Some("poststop") => Stage::Detach,
        Some("poststart" | "startContainer") => Stage::Nothing,
        Some(other) => bail!("unknown stage {other:?} (createRuntime, prestart, poststop)"),
        None => match state.status() {
            ContainerState::Creating | ContainerState::Created => Stage::Attach,
            ContainerState::Stopped => Stage::Detach,
            ContainerState::Running => Stage::Nothing,
        },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start")?;
    let client = Client::new(&socket);
    runtime.block_on(async {
        match stage {
            Stage::Attach => attach(&client, &state).await,
            Stage::Detach => {
                let _: Empty = client
                    .send(Method::DELETE, &format!("/containers/{}", state.id()))
                    .await?;
                Ok(())
            }
            Stage::Nothing => Ok(()),
        }
    })
}

fn list(annotations: &HashMap<String, String>, key: &str) -> Vec<String> {
    annotations
        .get(key)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

async fn attach(client: &Client, state: &State) -> anyhow::Result<()> {
    let bundle = state.bundle();
    let config = bundle.join("config.json");
    let spec = Spec::load(&config)
        .map_err(|e| anyhow!("bundle {}: cannot read config.json: {e}", bundle.display()))?;
    let mut annotations: HashMap<String, String> = spec.annotations().clone().unwrap_or_default();
    annotations.extend(state.annotations().clone().unwrap_or_default());
    let networks = list(&annotations, "netd.networks");
    if networks.is_empty() {
        return Ok(());
    }
    for key in annotations.keys().filter(|k| k.starts_with("netd.")) {
        if !KNOWN.contains(&key.as_str()) {
            eprintln!("netd-oci-hook: warning: annotation {key} is not one of netd's (ignored)");
        }
    }
    let netns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|namespaces| {
            namespaces
                .iter()
                .find(|ns| ns.typ() == LinuxNamespaceType::Network)
                .and_then(|ns| ns.path().clone())
        });
    let (netns, pid) = match (netns, *state.pid()) {
        (Some(path), _) => (Some(path.display().to_string()), None),
        (None, Some(pid)) if pid > 0 => (None, Some(pid)),
        _ => bail!("the OCI state has no pid and config.json no network namespace path"),
    };
    let name = annotations
        .get("netd.name")
        .cloned()
        .unwrap_or_else(|| state.id().to_string());
    let request = AttachRequest {
        netns,
        pid,
        sandbox: RunRequest {
            name: Some(name),
            network: networks.first().cloned(),
            more_networks: networks[1..].to_vec(),
            ip: annotations.get("netd.ip").cloned(),
            aliases: list(&annotations, "netd.aliases"),
            publish: list(&annotations, "netd.ports"),
            hostname: spec.hostname().clone(),
            ..Default::default()
        },
        container_id: Some(state.id().to_string()),
    };
    let info: SandboxInfo = client
        .post("/sandboxes/attach", &request)
        .await
        .with_context(|| {
            format!(
                "container {}: cannot attach it to {}",
                state.id(),
                networks.join(", ")
            )
        })?;
    // The container's view of its names, also in its rootfs when that can be written
    // (runc has made its mounts before createRuntime hooks run).
    let readonly = spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    if let Some(root) = spec.root().as_ref().map(|r| r.path().clone()) {
        if !readonly {
            let root = if root.is_absolute() {
                root
            } else {
                bundle.join(root)
            };
            copy_files(&info, &root)?;
        }
    }
    Ok(())
}

fn copy_files(info: &SandboxInfo, root: &Path) -> anyhow::Result<()> {
    let etc = root.join("etc");
    if !etc.is_dir() {
        return Ok(());
    }
    for (from, to) in [
        (
            PathBuf::from(&info.resolv_conf_path),
            etc.join("resolv.conf"),
        ),
        (PathBuf::from(&info.hosts_path), etc.join("hosts")),
    ] {
        // A symlink in the rootfs must not lead the write outside it.
        if to
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            std::fs::remove_file(&to)
                .with_context(|| format!("cannot replace {}", to.display()))?;
        }
        std::fs::copy(&from, &to)
            .with_context(|| format!("cannot write {} from {}", to.display(), from.display()))?;
    }
    Ok(())
}
