//! netctl: the command line of netd, shaped like `docker network`, `docker run` and
//! `docker exec`.

use std::collections::BTreeMap;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{anyhow, bail, Context};
use clap::{Parser, Subcommand};
use hyper::Method;
use linkd::SandboxEntry;
use netd::api::client::Client;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(
    name = "netctl",
    version,
    about = "Command line of the netd container network daemon"
)]
struct Cli {
    /// netd's API socket.
    #[arg(
        long,
        global = true,
        env = "NETD_SOCKET",
        default_value = "/run/netd/netd.sock"
    )]
    socket: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Create a sandbox (a network namespace held by a pause process), optionally running
    /// a command in it.
    Run(RunArgs),
    /// List a sandbox's published ports, or the host address of one (PORT[/PROTO]).
    Port { name: String, port: Option<String> },
    /// Run a command inside a sandbox.
    Exec {
        name: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Connect a sandbox to a network (next free ethN).
    Connect {
        #[arg(long)]
        ip: Option<String>,
        #[arg(long = "alias")]
        aliases: Vec<String>,
        network: String,
        name: String,
    },
    /// Disconnect a sandbox from a network.
    Disconnect { network: String, name: String },
    /// List sandboxes ({{.ID}}, {{.Names}}, {{.Status}}, {{.Networks}}, {{.IPAddress}},
    /// {{.Ports}}, {{.CreatedAt}} for --format).
    Ps(ListArgs),
    /// Show sandboxes in detail (JSON).
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove sandboxes.
    Rm {
        /// Stop processes running in the sandbox (and sandboxes sharing it) first.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// System operations.
    #[command(subcommand)]
    System(SystemCmd),
}

#[derive(Debug, Subcommand)]
enum NetworkCmd {
    /// Create a network.
    Create {
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        #[arg(long)]
        subnet: Option<String>,
        #[arg(long)]
        gateway: Option<String>,
        #[arg(long)]
        ip_range: Option<String>,
        #[arg(long)]
        internal: bool,
        /// Driver option KEY=VALUE (bridge-name, mtu, icc, masquerade).
        #[arg(short, long = "opt")]
        opts: Vec<String>,
        #[arg(long = "label")]
        labels: Vec<String>,
        name: String,
    },
    /// List networks ({{.ID}}, {{.Name}}, {{.Driver}}, {{.Scope}} for --format).
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Show networks in detail (JSON).
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove all networks no sandbox uses.
    Prune {
        /// Accepted for Docker compatibility; prune never asks.
        #[arg(short, long)]
        force: bool,
    },
}

/// How a listing prints: a table, ids only, or each row through a template.
#[derive(Debug, clap::Args)]
struct ListArgs {
    /// Only print ids.
    #[arg(short, long)]
    quiet: bool,
    /// Print each row with a template such as '{{.ID}} {{.Name}}'.
    #[arg(long)]
    format: Option<String>,
}

#[derive(Debug, Subcommand)]
enum SystemCmd {
    /// Repair the kernel state from netd's records now, and print what was repaired.
    Reconcile,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[arg(long)]
    name: Option<String>,
    /// NET, none, or container:NAME.
    #[arg(long, alias = "net")]
    network: Option<String>,
    #[arg(long)]
    ip: Option<String>,
    #[arg(long = "alias")]
    aliases: Vec<String>,
    /// Publish a port: [HOSTIP:][HOSTPORT[-END]:]PORT[-END][/tcp|udp|sctp].
    #[arg(short = 'p', long = "publish")]
    publish: Vec<String>,
    /// Publish every --expose'd port on a random host port.
    #[arg(short = 'P', long = "publish-all")]
    publish_all: bool,
    /// A port the sandbox offers, PORT[-END][/PROTO] (published by -P).
    #[arg(long)]
    expose: Vec<String>,
    /// Run CMD in the background (output to the sandbox's log file) and print the id.
    #[arg(short, long)]
    detach: bool,
    /// Remove the sandbox when CMD exits.
    #[arg(long)]
    rm: bool,
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {}", one_line(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

fn one_line(text: &str) -> String {
    text.lines().map(str::trim).collect::<Vec<_>>().join(" ")
}

fn key_values(field: &str, items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|item| match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(anyhow!("{field}: {item:?} is not KEY=VALUE")),
        })
        .collect()
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    let client = Client::new(&cli.socket);
    match cli.command {
        Cmd::Network(cmd) => network(&client, cmd).await,
        Cmd::Run(args) => run_sandbox(&client, args).await,
        Cmd::Port { name, port } => {
            let info = client
                .call(Method::GET, &format!("/sandboxes/{name}"), None)
                .await?;
            let lines = port_lines(&info, port.as_deref());
            if lines.is_empty() {
                if let Some(port) = port {
                    bail!("no public port {port} published for {name}");
                }
            }
            for line in lines {
                println!("{line}");
            }
            Ok(0)
        }
        Cmd::Exec { name, command } => {
            let info = client
                .call(Method::GET, &format!("/sandboxes/{name}"), None)
                .await?;
            wait_foreground(&info, &command)
        }
        Cmd::Connect {
            ip,
            aliases,
            network,
            name,
        } => {
            let body = json!({"container": name, "ip": ip, "aliases": aliases});
            client
                .call(
                    Method::POST,
                    &format!("/networks/{network}/connect"),
                    Some(&body),
                )
                .await?;
            Ok(0)
        }
        Cmd::Disconnect { network, name } => {
            let body = json!({"container": name});
            client
                .call(
                    Method::POST,
                    &format!("/networks/{network}/disconnect"),
                    Some(&body),
                )
                .await?;
            Ok(0)
        }
        Cmd::Ps(ListArgs { quiet, format }) => {
            let list = client.call(Method::GET, "/sandboxes", None).await?;
            print_sandboxes(&list, quiet, format.as_deref());
            Ok(0)
        }
        Cmd::Inspect { names } => inspect_all(&client, "sandboxes", &names).await,
        Cmd::Rm { force, names } => {
            remove_all(&client, &names, |name| {
                format!("/sandboxes/{name}?force={force}")
            })
            .await
        }
        Cmd::System(SystemCmd::Reconcile) => {
            let answer = client.call(Method::POST, "/system/reconcile", None).await?;
            let repairs = answer["Repairs"].as_array().cloned().unwrap_or_default();
            if repairs.is_empty() {
                println!("nothing to repair");
            }
            for repair in repairs {
                println!("{}", repair.as_str().unwrap_or_default());
            }
            Ok(0)
        }
    }
}

async fn network(client: &Client, cmd: NetworkCmd) -> anyhow::Result<u8> {
    match cmd {
        NetworkCmd::Create {
            driver,
            subnet,
            gateway,
            ip_range,
            internal,
            opts,
            labels,
            name,
        } => {
            let body = json!({
                "name": name,
                "driver": driver,
                "subnet": subnet,
                "gateway": gateway,
                "ip_range": ip_range,
                "internal": internal,
                "options": key_values("--opt", &opts)?,
                "labels": key_values("--label", &labels)?,
            });
            let answer = client.call(Method::POST, "/networks", Some(&body)).await?;
            println!("{}", answer["Id"].as_str().unwrap_or_default());
            Ok(0)
        }
        NetworkCmd::Ls(ListArgs { quiet, format }) => {
            let list = client.call(Method::GET, "/networks", None).await?;
            let rows: Vec<Vec<String>> = list
                .as_array()
                .map(|a| a.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|n| {
                    vec![
                        short(n["Id"].as_str().unwrap_or_default()),
                        text(&n["Name"]),
                        text(&n["Driver"]),
                        text(&n["Scope"]),
                    ]
                })
                .collect();
            let header = ["NETWORK ID", "NAME", "DRIVER", "SCOPE"];
            let keys = ["ID", "Name", "Driver", "Scope"];
            print_rows(&header, &keys, &rows, quiet, format.as_deref());
            Ok(0)
        }
        NetworkCmd::Inspect { names } => inspect_all(client, "networks", &names).await,
        NetworkCmd::Rm { names } => {
            remove_all(client, &names, |name| format!("/networks/{name}")).await
        }
        NetworkCmd::Prune { force: _ } => {
            let answer = client.call(Method::POST, "/networks/prune", None).await?;
            let deleted = answer["NetworksDeleted"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !deleted.is_empty() {
                println!("Deleted Networks:");
                for name in deleted {
                    println!("{}", name.as_str().unwrap_or_default());
                }
            }
            Ok(0)
        }
    }
}

async fn run_sandbox(client: &Client, args: RunArgs) -> anyhow::Result<u8> {
    let body = json!({
        "name": args.name,
        "network": args.network,
        "ip": args.ip,
        "aliases": args.aliases,
        "publish": args.publish,
        "publish_all": args.publish_all,
        "expose": args.expose,
    });
    let info = client.call(Method::POST, "/sandboxes", Some(&body)).await?;
    let id = text(&info["Id"]);
    if args.command.is_empty() {
        println!("{id}");
        return Ok(0);
    }
    if args.detach {
        let started = start_detached(&info, &args.command);
        match started {
            Ok(pid) => {
                let body = json!({"pid": pid});
                client
                    .call(
                        Method::POST,
                        &format!("/sandboxes/{id}/processes"),
                        Some(&body),
                    )
                    .await?;
                println!("{id}");
                return Ok(0);
            }
            Err(e) => {
                let _ = client
                    .call(Method::DELETE, &format!("/sandboxes/{id}?force=true"), None)
                    .await;
                return Err(e);
            }
        }
    }
    let code = wait_foreground(&info, &args.command);
    if args.rm {
        client
            .call(Method::DELETE, &format!("/sandboxes/{id}?force=true"), None)
            .await?;
    }
    code
}

/// `inspect` of several objects: a JSON array, as Docker prints it.
async fn inspect_all(client: &Client, kind: &str, names: &[String]) -> anyhow::Result<u8> {
    let mut out = Vec::new();
    for name in names {
        out.push(
            client
                .call(Method::GET, &format!("/{kind}/{name}"), None)
                .await?,
        );
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}

/// `rm` of several objects: each name printed when removed, each failure reported, and a
/// non-zero exit if any failed.
async fn remove_all(
    client: &Client,
    names: &[String],
    path: impl Fn(&str) -> String,
) -> anyhow::Result<u8> {
    let mut failed = false;
    for name in names {
        match client.call(Method::DELETE, &path(name), None).await {
            Ok(_) => println!("{name}"),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    Ok(u8::from(failed))
}

/// `docker port` lines: `80/tcp -> 0.0.0.0:8080`, or just `0.0.0.0:8080` for one port.
fn port_lines(info: &Value, only: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    let ports = info["NetworkSettings"]["Ports"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let wanted = only.map(|p| {
        if p.contains('/') {
            p.to_string()
        } else {
            format!("{p}/tcp")
        }
    });
    let mut keys: Vec<&String> = ports.keys().collect();
    keys.sort_by_key(|k| {
        let (port, proto) = k.split_once('/').unwrap_or((k.as_str(), ""));
        (port.parse::<u32>().unwrap_or(0), proto.to_string())
    });
    for key in keys {
        if wanted.as_ref().is_some_and(|w| w != key) {
            continue;
        }
        for binding in ports[key].as_array().map(Vec::as_slice).unwrap_or_default() {
            let host = format!(
                "{}:{}",
                text(&binding["HostIp"]),
                text(&binding["HostPort"])
            );
            out.push(if wanted.is_some() {
                host
            } else {
                format!("{key} -> {host}")
            });
        }
    }
    out
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Prints rows as a table, ids only (`-q`), or through a `--format` template whose
/// `{{.Key}}` placeholders name the columns.
fn print_rows(
    header: &[&str],
    keys: &[&str],
    rows: &[Vec<String>],
    quiet: bool,
    format: Option<&str>,
) {
    if quiet {
        rows.iter().for_each(|r| println!("{}", r[0]));
    } else if let Some(template) = format {
        let template = template.replace("\\t", "\t");
        for row in rows {
            let mut line = template.clone();
            for (key, cell) in keys.iter().zip(row) {
                line = line.replace(&format!("{{{{.{key}}}}}"), cell);
            }
            println!("{line}");
        }
    } else {
        print_table(header, rows);
    }
}

fn print_sandboxes(list: &Value, quiet: bool, format: Option<&str>) {
    let rows: Vec<Vec<String>> = list
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|s| {
            let nets = s["NetworkSettings"]["Networks"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            let names: Vec<String> = nets.keys().cloned().collect();
            let ips: Vec<String> = nets.values().map(|n| text(&n["IPAddress"])).collect();
            let mode = text(&s["HostConfig"]["NetworkMode"]);
            let ports = port_lines(s, None).join(", ");
            vec![
                short(&text(&s["Id"])),
                ago(&text(&s["Created"])),
                if s["State"]["Running"].as_bool() == Some(true) {
                    "Up".into()
                } else {
                    "Dead".into()
                },
                if names.is_empty() {
                    mode
                } else {
                    names.join(",")
                },
                ips.join(","),
                ports,
                text(&s["Name"]).trim_start_matches('/').to_string(),
            ]
        })
        .collect();
    let header = [
        "CONTAINER ID",
        "CREATED",
        "STATUS",
        "NETWORKS",
        "IP ADDRESS",
        "PORTS",
        "NAMES",
    ];
    let keys = [
        "ID",
        "CreatedAt",
        "Status",
        "Networks",
        "IPAddress",
        "Ports",
        "Names",
    ];
    print_rows(&header, &keys, &rows, quiet, format);
}

fn ago(rfc3339: &str) -> String {
    let Ok(then) = humantime::parse_rfc3339_weak(rfc3339) else {
        return rfc3339.to_string();
    };
    let secs = std::time::SystemTime::now()
        .duration_since(then)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match secs {
        0..=59 => format!("{secs} seconds ago"),
        60..=3599 => format!("{} minutes ago", secs / 60),
        3600..=86399 => format!("{} hours ago", secs / 3600),
        _ => format!("{} days ago", secs / 86400),
    }
}

/// A command to run inside the sandbox (its network namespace, and a private mount and
/// UTS namespace where the sandbox's hosts, resolv.conf and hostname are in place), and how
/// it enters.
fn sandbox_command(info: &Value, argv: &[String]) -> anyhow::Result<(Command, SandboxEntry)> {
    let key = text(&info["NetworkSettings"]["SandboxKey"]);
    let files: Vec<(PathBuf, &str)> = [
        ("HostsPath", "/etc/hosts"),
        ("ResolvConfPath", "/etc/resolv.conf"),
        ("HostnamePath", "/etc/hostname"),
    ]
    .into_iter()
    .map(|(field, target)| (PathBuf::from(text(&info[field])), target))
    .filter(|(source, _)| !source.as_os_str().is_empty())
    .collect();
    let binds: Vec<(&std::path::Path, &std::path::Path)> = files
        .iter()
        .map(|(source, target)| (source.as_path(), std::path::Path::new(*target)))
        .collect();
    let entry = SandboxEntry::new(
        std::path::Path::new(&key),
        &binds,
        &text(&info["Config"]["Hostname"]),
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

fn wait_foreground(info: &Value, argv: &[String]) -> anyhow::Result<u8> {
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

fn start_detached(info: &Value, argv: &[String]) -> anyhow::Result<u32> {
    let log_path = text(&info["LogPath"]);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
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
