//! netctl: the command line of netd, shaped like `docker network`, `docker run` and
//! `docker exec`.

mod args;
mod events;
mod output;
mod sandbox;

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use clap::Parser;
use hyper::Method;
use netd::api::client::Client;
use netd::api::types::{
    AttachRequest, ConnectRequest, DisconnectRequest, Empty, LabelRequest, NetworkCreated,
    NetworkInfo, NetworkPolicy, NetworkRequest, NetworksPruned, NodeRemoved, PoliciesApplied,
    PolicyApplyRequest, ProcessRequest, Reconciled, RunRequest, SandboxId, SandboxInfo, SystemInfo,
};

use args::{
    Cli, ClusterCmd, Cmd, ConnectArgs, DisconnectArgs, EndpointArgs, ListArgs, NetworkCmd, NodeCmd,
    PolicyCmd, RunArgs, SystemCmd,
};

async fn connect(client: &Client, args: ConnectArgs) -> anyhow::Result<u8> {
    let body = ConnectRequest {
        container: args.name,
        ip: args.ip,
        aliases: args.aliases,
    };
    let _: SandboxId = client
        .post(&format!("/networks/{}/connect", args.network), &body)
        .await?;
    Ok(0)
}

async fn disconnect(client: &Client, args: DisconnectArgs) -> anyhow::Result<u8> {
    let body = DisconnectRequest {
        container: args.name,
    };
    let _: SandboxId = client
        .post(&format!("/networks/{}/disconnect", args.network), &body)
        .await?;
    Ok(0)
}

/// netctl's pages (`netctl.1`, `netctl-network-create.1`, ...) and netd's (`netd.8`).
fn generate_man(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let netctl = <Cli as clap::CommandFactory>::command();
    clap_mangen::generate_to(netctl, dir)?;
    let netd = <netd::config::Args as clap::CommandFactory>::command();
    clap_mangen::Man::new(netd).section("8").generate_to(dir)?;
    Ok(())
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
        Cmd::Attach {
            netns,
            pid,
            name,
            endpoints,
        } => {
            let body = AttachRequest {
                netns,
                pid,
                sandbox: endpoints.request(Some(name)),
                container_id: None,
            };
            let info: SandboxInfo = client.post("/sandboxes/attach", &body).await?;
            println!("{}", info.id);
            Ok(0)
        }
        Cmd::Detach { names } => {
            for name in &names {
                let info: SandboxInfo = client.get(&format!("/sandboxes/{name}")).await?;
                if info.managed {
                    bail!("{name} is netd's own sandbox, not an attached namespace; use netctl rm");
                }
            }
            remove_all(&client, &names, |name| format!("/sandboxes/{name}")).await
        }
        Cmd::Port { name, port } => {
            let info: SandboxInfo = client.get(&format!("/sandboxes/{name}")).await?;
            let lines = output::port_lines(&info.network_settings.ports, port.as_deref());
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
            let info: SandboxInfo = client.get(&format!("/sandboxes/{name}")).await?;
            sandbox::wait_foreground(&info, &command)
        }
        Cmd::Connect(args) => connect(&client, args).await,
        Cmd::Disconnect(args) => disconnect(&client, args).await,
        Cmd::Ps(ListArgs {
            quiet,
            format,
            filter,
        }) => {
            let filters = output::Filters::parse(&filter)?;
            let list: Vec<SandboxInfo> = client.get("/sandboxes").await?;
            let list: Vec<SandboxInfo> = list
                .into_iter()
                .filter(|s| filters.admit(s.name.trim_start_matches('/'), &s.config.labels))
                .collect();
            output::print_sandboxes(&list, quiet, format.as_deref());
            Ok(0)
        }
        Cmd::Label { name, changes } => {
            let info: SandboxInfo = client
                .post(
                    &format!("/sandboxes/{name}/labels"),
                    &LabelRequest { changes },
                )
                .await?;
            println!("{}", info.name.trim_start_matches('/'));
            Ok(0)
        }
        Cmd::Policy(command) => policy_command(&client, command).await,
        Cmd::Inspect { names } => inspect_all::<SandboxInfo>(&client, "sandboxes", &names).await,
        Cmd::Rm { force, names } => {
            remove_all(&client, &names, |name| {
                format!("/sandboxes/{name}?force={force}")
            })
            .await
        }
        Cmd::Cluster(ClusterCmd::Nodes) => {
            let nodes: Vec<netd::cluster::NodeLease> = client.get("/cluster/nodes").await?;
            output::print_nodes(&nodes);
            Ok(0)
        }
        Cmd::Cluster(ClusterCmd::Node(NodeCmd::Rm { name })) => {
            let answer: NodeRemoved = client
                .send(Method::DELETE, &format!("/cluster/nodes/{name}"))
                .await?;
            for lease in answer.released {
                println!("released {lease}");
            }
            Ok(0)
        }
        Cmd::Completion { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, "netctl", &mut script);
            use std::io::Write;
            match std::io::stdout().write_all(&script) {
                Ok(()) => Ok(0),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
                Err(e) => bail!("cannot write the completion script: {e}"),
            }
        }
        Cmd::GenerateMan { dir } => {
            generate_man(&dir)?;
            Ok(0)
        }
        Cmd::System(SystemCmd::Info { format }) => {
            let info: SystemInfo = client.get("/system/info").await?;
            match format.as_deref() {
                Some("json") => println!("{}", serde_json::to_string_pretty(&info)?),
                Some(other) => bail!("--format: {other:?} is not a format (json)"),
                None => output::print_system_info(&info),
            }
            Ok(0)
        }
        Cmd::System(SystemCmd::Events(args)) => events::run(&client, args).await,
        Cmd::System(SystemCmd::Reconcile) => {
            let answer: Reconciled = client.send(Method::POST, "/system/reconcile").await?;
            if answer.repairs.is_empty() {
                println!("nothing to repair");
            }
            for repair in answer.repairs {
                println!("{repair}");
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
            let body = NetworkRequest {
                name,
                driver: Some(driver),
                subnet,
                gateway,
                ip_range,
                internal,
                options: key_values("--opt", &opts)?,
                labels: key_values("--label", &labels)?,
            };
            let answer: NetworkCreated = client.post("/networks", &body).await?;
            println!("{}", answer.id);
            Ok(0)
        }
        NetworkCmd::Ls(ListArgs {
            quiet,
            format,
            filter,
        }) => {
            let filters = output::Filters::parse(&filter)?;
            let list: Vec<NetworkInfo> = client.get("/networks").await?;
            let list: Vec<NetworkInfo> = list
                .into_iter()
                .filter(|n| filters.admit(&n.name, &n.labels))
                .collect();
            output::print_networks(&list, quiet, format.as_deref());
            Ok(0)
        }
        NetworkCmd::Connect(args) => connect(client, args).await,
        NetworkCmd::Disconnect(args) => disconnect(client, args).await,
        NetworkCmd::Inspect { names } => {
            inspect_all::<NetworkInfo>(client, "networks", &names).await
        }
        NetworkCmd::Rm { names } => {
            remove_all(client, &names, |name| format!("/networks/{name}")).await
        }
        NetworkCmd::Prune { force: _ } => {
            let answer: NetworksPruned = client.send(Method::POST, "/networks/prune").await?;
            if !answer.networks_deleted.is_empty() {
                println!("Deleted Networks:");
                for name in answer.networks_deleted {
                    println!("{name}");
                }
            }
            Ok(0)
        }
    }
}

async fn run_sandbox(client: &Client, args: RunArgs) -> anyhow::Result<u8> {
    let body = args.endpoints.request(args.name);
    let info: SandboxInfo = client.post("/sandboxes", &body).await?;
    let id = info.id.clone();
    let force_remove = format!("/sandboxes/{id}?force=true");
    if args.command.is_empty() {
        println!("{id}");
        return Ok(0);
    }
    if args.detach {
        return match sandbox::start_detached(&info, &args.command) {
            Ok(pid) => {
                let pid =
                    i32::try_from(pid).map_err(|_| anyhow!("process id {pid} is out of range"))?;
                let _: Empty = client
                    .post(
                        &format!("/sandboxes/{id}/processes"),
                        &ProcessRequest { pid },
                    )
                    .await?;
                println!("{id}");
                Ok(0)
            }
            Err(e) => {
                let _ = client
                    .send::<SandboxId>(Method::DELETE, &force_remove)
                    .await;
                Err(e)
            }
        };
    }
    let code = sandbox::wait_foreground(&info, &args.command);
    if args.rm {
        let _: SandboxId = client.send(Method::DELETE, &force_remove).await?;
    }
    code
}

/// `inspect` of several objects: a JSON array, as Docker prints it.
async fn inspect_all<T: serde::de::DeserializeOwned + serde::Serialize>(
    client: &Client,
    kind: &str,
    names: &[String],
) -> anyhow::Result<u8> {
    let mut out: Vec<T> = Vec::new();
    for name in names {
        out.push(client.get(&format!("/{kind}/{name}")).await?);
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
        match client
            .send::<serde_json::Value>(Method::DELETE, &path(name))
            .await
        {
            Ok(_) => println!("{name}"),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    Ok(u8::from(failed))
}

impl EndpointArgs {
    /// The API's request for a sandbox named `name` with these flags.
    fn request(self, name: Option<String>) -> RunRequest {
        let mut networks = self.network.into_iter();
        RunRequest {
            name,
            network: networks.next(),
            more_networks: networks.collect(),
            ip: self.ip,
            aliases: self.aliases,
            publish: self.publish,
            publish_all: self.publish_all,
            expose: self.expose,
            hostname: self.hostname,
            labels: self.labels,
        }
    }
}

async fn policy_command(client: &Client, command: PolicyCmd) -> anyhow::Result<u8> {
    match command {
        PolicyCmd::Apply { file, namespace } => {
            let text = if file == "-" {
                let mut text = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                    .map_err(|e| anyhow!("cannot read standard input: {e}"))?;
                text
            } else {
                std::fs::read_to_string(&file).map_err(|e| anyhow!("cannot read {file}: {e}"))?
            };
            let answer: PoliciesApplied = client
                .post("/policies", &PolicyApplyRequest { text, namespace })
                .await?;
            for applied in answer.applied {
                println!("networkpolicy {} {}", applied.policy, applied.action);
            }
            Ok(0)
        }
        PolicyCmd::Ls {
            namespace,
            all_namespaces,
        } => {
            let path = if all_namespaces {
                "/policies".to_string()
            } else {
                format!("/policies?namespace={namespace}")
            };
            let list: Vec<NetworkPolicy> = client.get(&path).await?;
            output::print_policies(&list);
            Ok(0)
        }
        PolicyCmd::Inspect { name, namespace } => {
            let policy: NetworkPolicy =
                client.get(&format!("/policies/{namespace}/{name}")).await?;
            println!("{}", serde_json::to_string_pretty(&policy)?);
            Ok(0)
        }
        PolicyCmd::Rm { names, namespace } => {
            let mut code = 0;
            for name in names {
                let removed: Result<Empty, _> = client
                    .send(Method::DELETE, &format!("/policies/{namespace}/{name}"))
                    .await;
                match removed {
                    Ok(_) => println!("{name}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
    }
}
