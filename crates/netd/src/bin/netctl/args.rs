//! The command line's shape: commands, flags and their help.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "netctl",
    version = netd::VERSION,
    about = "Command line of the netd container network daemon"
)]
pub struct Cli {
    /// netd's API socket.
    #[arg(
        long,
        global = true,
        env = "NETD_SOCKET",
        default_value = "/run/netd/netd.sock"
    )]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Create a sandbox (a network namespace held by a pause process), optionally running
    /// a command in it.
    Run(RunArgs),
    /// Give a namespace another runtime made (runc, podman --network none, ip netns) a
    /// sandbox on a network: address, routes, name, ports. netd keeps no hold on it.
    Attach {
        /// The namespace's path (/run/netns/NAME, /proc/PID/ns/net).
        #[arg(long, conflicts_with = "pid", required_unless_present = "pid")]
        netns: Option<String>,
        /// A process whose namespace it is.
        #[arg(long)]
        pid: Option<i32>,
        /// The sandbox's name (its DNS name).
        #[arg(long)]
        name: String,
        #[command(flatten)]
        endpoints: EndpointArgs,
    },
    /// Take netd's interfaces, address, ports and names out of attached namespaces (the
    /// namespaces and their processes stay).
    Detach {
        /// Sandboxes (name or id).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// List a sandbox's published ports, or the host address of one (PORT[/PROTO]).
    Port {
        /// The sandbox (name or id).
        name: String,
        /// One container port, PORT or PORT/PROTO (default: all of them).
        port: Option<String>,
    },
    /// Run a command inside a sandbox.
    Exec {
        /// The sandbox (name or id).
        name: String,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Connect a sandbox to a network (next free ethN); also `network connect`.
    Connect(ConnectArgs),
    /// Disconnect a sandbox from a network; also `network disconnect`.
    Disconnect(DisconnectArgs),
    /// List sandboxes ({{.ID}}, {{.Names}}, {{.Status}}, {{.Networks}}, {{.IPAddress}},
    /// {{.Ports}}, {{.CreatedAt}} for --format).
    Ps(ListArgs),
    /// Show sandboxes in detail (JSON).
    Inspect {
        /// Sandboxes (name or id).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove sandboxes.
    Rm {
        /// Stop processes running in the sandbox (and sandboxes sharing it) first.
        #[arg(short, long)]
        force: bool,
        /// Sandboxes (name or id).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// System operations.
    #[command(subcommand)]
    System(SystemCmd),
    /// The cluster this node is in (netd --cluster-store).
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Set (KEY=VALUE) or remove (KEY-) a sandbox's labels; policies follow at once.
    Label {
        /// The sandbox (name or id).
        name: String,
        /// KEY=VALUE to set, KEY- to remove.
        #[arg(required = true)]
        changes: Vec<String>,
    },
    /// Network policies (Kubernetes NetworkPolicy, networking.k8s.io/v1).
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Print a shell completion script: `source <(netctl completion bash)`.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages of netctl (section 1, one per command) and netd (section 8)
    /// into a directory; the install script runs it.
    #[command(hide = true)]
    GenerateMan {
        /// Where the pages go (created if missing).
        dir: PathBuf,
    },
}

/// `connect` and `network connect` (Docker's spelling).
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {
    /// The sandbox's address on the network (default: the next free one).
    #[arg(long)]
    pub ip: Option<String>,
    /// Another name the sandbox answers to on this network (repeatable).
    #[arg(long = "alias")]
    pub aliases: Vec<String>,
    /// The network (name or id).
    pub network: String,
    /// The sandbox (name or id).
    pub name: String,
}

/// `disconnect` and `network disconnect`.
#[derive(Debug, clap::Args)]
pub struct DisconnectArgs {
    /// The network (name or id).
    pub network: String,
    /// The sandbox (name or id).
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Create or change the policies of a YAML or JSON file (several documents or a List
    /// allowed; all or none applied).
    Apply {
        /// The file, or - for standard input.
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// The namespace of objects that name none (default: default).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
    /// List the policies of a namespace.
    Ls {
        /// The namespace (default: default).
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Every namespace's.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Show a policy as it is applied (JSON).
    Inspect {
        /// The policy's name.
        name: String,
        /// The policy's namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Remove policies.
    Rm {
        /// Policies' names.
        #[arg(required = true)]
        names: Vec<String>,
        /// The policies' namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// List the nodes: their address and, per cluster network, subnet, backend and the
    /// lease's expiry.
    Nodes,
    /// Manage a node.
    #[command(subcommand)]
    Node(NodeCmd),
}

#[derive(Debug, Subcommand)]
pub enum NodeCmd {
    /// Release a dead node's leases and names now, instead of when they expire.
    Rm {
        /// The node's name.
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum NetworkCmd {
    /// Create a network.
    Create {
        /// The network driver.
        #[arg(short, long, default_value = "bridge")]
        driver: String,
        /// The network's subnet, CIDR (default: the next free one of Docker's pools).
        #[arg(long)]
        subnet: Option<String>,
        /// The gateway's address (default: the subnet's first).
        #[arg(long)]
        gateway: Option<String>,
        /// Hand out addresses only from this part of the subnet, CIDR.
        #[arg(long)]
        ip_range: Option<String>,
        /// No NAT and no route out: sandboxes reach only each other.
        #[arg(long)]
        internal: bool,
        /// Driver option KEY=VALUE (bridge-name, mtu, icc, masquerade).
        #[arg(short, long = "opt")]
        opts: Vec<String>,
        /// A label KEY=VALUE (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// The network's name.
        name: String,
    },
    /// List networks ({{.ID}}, {{.Name}}, {{.Driver}}, {{.Scope}} for --format).
    #[command(alias = "list")]
    Ls(ListArgs),
    /// Connect a sandbox to a network, as `docker network connect`.
    Connect(ConnectArgs),
    /// Disconnect a sandbox from a network, as `docker network disconnect`.
    Disconnect(DisconnectArgs),
    /// Show networks in detail (JSON).
    Inspect {
        /// Networks (name or id).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks.
    #[command(alias = "remove")]
    Rm {
        /// Networks (name or id).
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
pub struct ListArgs {
    /// Only print ids.
    #[arg(short, long)]
    pub quiet: bool,
    /// Print each row with a template such as '{{.ID}} {{.Name}}'.
    #[arg(long)]
    pub format: Option<String>,
    /// Only rows matching: label=KEY, label=KEY=VALUE, name=NAME (repeatable; all must hold).
    #[arg(short, long)]
    pub filter: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum SystemCmd {
    /// Repair the kernel state from netd's records now, and print what was repaired.
    Reconcile,
    /// Show netd's version, firewall backend, object counts, directories and uptime.
    Info {
        /// `json` for the whole answer as JSON.
        #[arg(long)]
        format: Option<String>,
    },
    /// Stream netd's operations as they happen, one JSON object per line (as docker events).
    Events(EventsArgs),
}

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// Also show the kept events since TIME: a duration ago (10m, 1h30m), RFC 3339
    /// (2026-12-02T10:00:00Z) or Unix seconds.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Stop at TIME (as --since; a past TIME prints the kept events and ends).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only events matching KEY=VALUE: type, event, operation, result, api, network,
    /// sandbox (or container), policy, node (repeatable; values of one key are
    /// alternatives, different keys must all match).
    #[arg(short, long, value_name = "KEY=VALUE")]
    pub filter: Vec<String>,
    /// `json` (one object per line, the default) or `text` (one line for people).
    #[arg(long, value_name = "json|text")]
    pub format: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The sandbox's name (default: none; the id names it).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub endpoints: EndpointArgs,
    /// Run CMD in the background (output to the sandbox's log file) and print the id.
    #[arg(short, long)]
    pub detach: bool,
    /// Remove the sandbox when CMD exits.
    #[arg(long)]
    pub rm: bool,
    /// The command to run in the sandbox (none: just create it).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// What a new sandbox (run or attached) gets on its networks.
#[derive(Debug, clap::Args)]
pub struct EndpointArgs {
    /// NET, none, or container:NAME (default: the default network); given again, the
    /// sandbox joins each network, as `connect` would.
    #[arg(long, alias = "net")]
    pub network: Vec<String>,
    /// The sandbox's address on its (first) network (default: the next free one).
    #[arg(long)]
    pub ip: Option<String>,
    /// Another name the sandbox answers to on its networks (repeatable).
    #[arg(long = "alias")]
    pub aliases: Vec<String>,
    /// Publish a port: [HOSTIP:][HOSTPORT[-END]:]PORT[-END][/tcp|udp|sctp].
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// Publish every --expose'd port on a random host port.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// A port the sandbox offers, PORT[-END][/PROTO] (published by -P).
    #[arg(long)]
    pub expose: Vec<String>,
    /// The host name in the sandbox's hosts and hostname files (default: the short id).
    #[arg(long)]
    pub hostname: Option<String>,
    /// A label, KEY=VALUE (repeatable); netd.namespace=NS puts the sandbox in namespace NS.
    #[arg(short, long = "label")]
    pub labels: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument of every command says what it is in `--help` and the man pages.
    #[test]
    fn every_flag_and_argument_has_help() {
        fn missing(command: &clap::Command, path: &str, out: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    out.push(format!("{path} {id}"));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_about().is_none() && !sub.is_hide_set() {
                    out.push(format!("{path} {} (the command)", sub.get_name()));
                }
                missing(sub, &format!("{path} {}", sub.get_name()), out);
            }
        }
        let mut out = Vec::new();
        missing(
            &<Cli as clap::CommandFactory>::command(),
            "netctl",
            &mut out,
        );
        missing(
            &<netd::config::Args as clap::CommandFactory>::command(),
            "netd",
            &mut out,
        );
        assert!(out.is_empty(), "without help:\n{}", out.join("\n"));
    }
}
