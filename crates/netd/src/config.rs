//! netd's settings: flags, each also settable in a TOML file (`--config`); a flag given on
//! the command line wins over the file, the file over the defaults.

use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::Deserialize;

use crate::cluster::{parse_duration, parse_store, ClusterSettings, TlsFiles};
use crate::error::{NetdError, Result};

/// Command-line flags of `netd`.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(name = "netd", version = crate::VERSION, about = "Container network daemon")]
pub struct Args {
    /// TOML file with any of the settings below (kebab-case keys).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// State directory [default: /var/lib/netd].
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Runtime directory: namespaces, pause pids, sandbox files [default: /run/netd].
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// API socket [default: RUN_DIR/netd.sock].
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Bridge of the default network [default: docker0].
    #[arg(long)]
    pub default_bridge: Option<String>,
    /// Subnet of the default network; host bits set the gateway [default: 172.17.0.0/16].
    #[arg(long)]
    pub default_subnet: Option<String>,
    /// Do not create the default `bridge` network.
    #[arg(long)]
    pub no_default_network: bool,
    /// Seconds between checks that netd's firewall rules are still in place (restored if
    /// not); 0 turns the check off [default: 3].
    #[arg(long)]
    pub firewall_check_interval: Option<u64>,
    /// The host's resolv.conf: where the DNS server finds its upstream resolvers (re-read
    /// when it changes) [default: /etc/resolv.conf].
    #[arg(long)]
    pub resolv_conf: Option<PathBuf>,
    /// An option of the default `bridge` network, KEY=VALUE (repeatable): `dns=true` gives
    /// it name resolution (off by default, as in Docker), `dns-upstream=IP[,IP]`.
    #[arg(long = "default-network-opt", value_name = "KEY=VALUE")]
    pub default_network_opts: Vec<String>,
    /// Join a cluster: its etcd members, etcd://HOST:PORT[,HOST:PORT...]. Enables the
    /// vxlan and host-gw drivers.
    #[arg(long, value_name = "etcd://HOST:PORT[,...]")]
    pub cluster_store: Option<String>,
    /// The address other nodes reach this one on [default: the source address of the
    /// default route].
    #[arg(long, value_name = "IP")]
    pub node_ip: Option<String>,
    /// This node's name in the cluster [default: the hostname].
    #[arg(long, value_name = "NAME")]
    pub node_name: Option<String>,
    /// How long this node's subnet leases last without renewal (24h, 30s, or seconds);
    /// they are renewed every third of it [default: 24h].
    #[arg(long, value_name = "DURATION")]
    pub lease_ttl: Option<String>,
    /// The root of netd's keys in etcd [default: /netd].
    #[arg(long, value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// Also serve Docker's Engine network API here (`DOCKER_HOST=unix://PATH`), mode 0660.
    #[arg(long, value_name = "PATH")]
    pub docker_socket: Option<PathBuf>,
    /// CA certificate (PEM) of an etcd served over TLS.
    #[arg(long, value_name = "FILE")]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate (PEM) for etcd.
    #[arg(long, value_name = "FILE")]
    pub etcd_certfile: Option<PathBuf>,
    /// Client key (PEM) for etcd.
    #[arg(long, value_name = "FILE")]
    pub etcd_keyfile: Option<PathBuf>,
    /// The group that owns the API sockets (mode 0660), so its members run netctl without
    /// root [default: netd, when that group exists; else root only].
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// How the log is written: `text` for people, `json` (one object per line) for
    /// collectors [default: text].
    #[arg(long, value_name = "text|json")]
    pub log_format: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (as 127.0.0.1:9464; keep it off
    /// public addresses) [default: off].
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    root: Option<PathBuf>,
    run_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    default_bridge: Option<String>,
    default_subnet: Option<String>,
    no_default_network: Option<bool>,
    firewall_check_interval: Option<u64>,
    resolv_conf: Option<PathBuf>,
    /// Spelled as the flag is; the plural was this key's first spelling.
    #[serde(rename = "default-network-opt", alias = "default-network-opts")]
    default_network_opts: Option<Vec<String>>,
    docker_socket: Option<PathBuf>,
    cluster_store: Option<String>,
    node_ip: Option<String>,
    node_name: Option<String>,
    lease_ttl: Option<String>,
    etcd_prefix: Option<String>,
    etcd_cafile: Option<PathBuf>,
    etcd_certfile: Option<PathBuf>,
    etcd_keyfile: Option<PathBuf>,
    socket_group: Option<String>,
    log_format: Option<String>,
    metrics_addr: Option<String>,
}

/// How netd writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The group given the API sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketGroup {
    pub name: String,
    pub gid: u32,
}

/// The group netd's package creates; used when it exists and no other is given.
pub const DEFAULT_SOCKET_GROUP: &str = "netd";

/// The settings netd runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub root: PathBuf,
    pub run_dir: PathBuf,
    pub socket: PathBuf,
    pub default_bridge: String,
    pub default_subnet: Ipv4Net,
    pub default_network: bool,
    /// `None` when the periodic firewall check is off.
    pub firewall_check: Option<std::time::Duration>,
    pub resolv_conf: PathBuf,
    /// Options of the default network (`dns`, `dns-upstream`).
    pub default_network_options: std::collections::BTreeMap<String, String>,
    /// Set when netd joins a cluster (`--cluster-store`).
    pub cluster: Option<ClusterSettings>,
    /// Where Docker's network API is served (`--docker-socket`); off when `None`.
    pub docker_socket: Option<PathBuf>,
    /// Owner group of the sockets; `None`: root's.
    pub socket_group: Option<SocketGroup>,
    pub log_format: LogFormat,
    /// Where `/metrics` is served (`--metrics-addr`); off when `None`.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl Config {
    pub fn from_args(args: &Args) -> Result<Config> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let cluster = cluster_settings(args, &file)?;
        let root = args
            .root
            .clone()
            .or(file.root)
            .unwrap_or_else(|| "/var/lib/netd".into());
        let run_dir = args
            .run_dir
            .clone()
            .or(file.run_dir)
            .unwrap_or_else(|| "/run/netd".into());
        let socket = args
            .socket
            .clone()
            .or(file.socket)
            .unwrap_or_else(|| run_dir.join("netd.sock"));
        let default_bridge = args
            .default_bridge
            .clone()
            .or(file.default_bridge)
            .unwrap_or_else(|| "docker0".into());
        let subnet_text = args
            .default_subnet
            .clone()
            .or(file.default_subnet)
            .unwrap_or_else(|| bridge_driver::pools::DEFAULT_BRIDGE_SUBNET.into());
        let default_subnet: Ipv4Net = subnet_text.parse().map_err(|_| {
            NetdError::Invalid(format!(
                "--default-subnet: {subnet_text:?} is not an IPv4 CIDR"
            ))
        })?;
        if default_subnet.prefix_len() > 30 {
            return Err(NetdError::Invalid(format!(
                "--default-subnet: {subnet_text} is too small (use /30 or larger)"
            )));
        }
        let default_network =
            !(args.no_default_network || file.no_default_network.unwrap_or(false));
        let interval = args
            .firewall_check_interval
            .or(file.firewall_check_interval)
            .unwrap_or(3);
        let firewall_check = (interval > 0).then(|| std::time::Duration::from_secs(interval));
        let resolv_conf = args
            .resolv_conf
            .clone()
            .or(file.resolv_conf)
            .unwrap_or_else(|| "/etc/resolv.conf".into());
        let opts = if args.default_network_opts.is_empty() {
            file.default_network_opts.unwrap_or_default()
        } else {
            args.default_network_opts.clone()
        };
        let mut default_network_options = std::collections::BTreeMap::new();
        for opt in &opts {
            let Some((key, value)) = opt.split_once('=') else {
                return Err(NetdError::Invalid(format!(
                    "--default-network-opt: {opt:?} is not KEY=VALUE"
                )));
            };
            if !matches!(key, "dns" | "dns-upstream") {
                return Err(NetdError::Invalid(format!(
                    "--default-network-opt: {key:?} cannot be set (known: dns, dns-upstream)"
                )));
            }
            default_network_options.insert(key.to_string(), value.to_string());
        }
        bridge_driver::BridgeOptions::parse(&default_network_options)
            .map_err(|e| NetdError::Invalid(format!("--default-network-opt: {e}")))?;
        let docker_socket = args.docker_socket.clone().or(file.docker_socket);
        if docker_socket.as_ref() == Some(&socket) {
            return Err(NetdError::Invalid(
                "--docker-socket: must differ from --socket".into(),
            ));
        }
        let log_format = match args.log_format.clone().or(file.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(NetdError::Invalid(format!(
                    "--log-format: {other:?} is not a log format (text or json)"
                )))
            }
        };
        let socket_group = match args.socket_group.clone().or(file.socket_group) {
            Some(name) => Some(lookup_group(&name)?.ok_or_else(|| {
                NetdError::Invalid(format!("--socket-group: no group {name:?} on this host"))
            })?),
            None => lookup_group(DEFAULT_SOCKET_GROUP)?,
        };
        let metrics_addr = match args.metrics_addr.clone().or(file.metrics_addr) {
            Some(text) => Some(text.parse::<std::net::SocketAddr>().map_err(|e| {
                NetdError::Invalid(format!(
                    "--metrics-addr: {text:?} is not an address and port (as 127.0.0.1:9464): {e}"
                ))
            })?),
            None => None,
        };
        Ok(Config {
            metrics_addr,
            socket_group,
            log_format,
            docker_socket,
            cluster,
            default_network_options,
            resolv_conf,
            firewall_check,
            root,
            run_dir,
            socket,
            default_bridge,
            default_subnet,
            default_network,
        })
    }
}

/// A group by name, from the host's group database.
fn lookup_group(name: &str) -> Result<Option<SocketGroup>> {
    let group = nix::unistd::Group::from_name(name).map_err(|e| {
        NetdError::Invalid(format!(
            "--socket-group: cannot look up group {name:?}: {e}"
        ))
    })?;
    Ok(group.map(|g| SocketGroup {
        name: g.name,
        gid: g.gid.as_raw(),
    }))
}

/// The cluster flags, checked; `None` without `--cluster-store`, when every other
/// cluster flag is refused too (it would do nothing).
fn cluster_settings(args: &Args, file: &FileConfig) -> Result<Option<ClusterSettings>> {
    let store = args.cluster_store.clone().or(file.cluster_store.clone());
    let node_ip = args.node_ip.clone().or(file.node_ip.clone());
    let node_name = args.node_name.clone().or(file.node_name.clone());
    let lease_ttl = args.lease_ttl.clone().or(file.lease_ttl.clone());
    let prefix = args.etcd_prefix.clone().or(file.etcd_prefix.clone());
    let ca = args.etcd_cafile.clone().or(file.etcd_cafile.clone());
    let cert = args.etcd_certfile.clone().or(file.etcd_certfile.clone());
    let key = args.etcd_keyfile.clone().or(file.etcd_keyfile.clone());
    let Some(store) = store else {
        let given = [
            ("--node-ip", node_ip.is_some()),
            ("--node-name", node_name.is_some()),
            ("--lease-ttl", lease_ttl.is_some()),
            ("--etcd-prefix", prefix.is_some()),
            ("--etcd-cafile", ca.is_some()),
            ("--etcd-certfile", cert.is_some()),
            ("--etcd-keyfile", key.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
            return Err(NetdError::Invalid(format!(
                "{flag}: only meaningful with --cluster-store"
            )));
        }
        return Ok(None);
    };
    if cert.is_some() != key.is_some() {
        return Err(NetdError::Invalid(
            "--etcd-certfile and --etcd-keyfile go together".into(),
        ));
    }
    for path in [&ca, &cert, &key].into_iter().flatten() {
        if !path.is_file() {
            return Err(NetdError::Invalid(format!(
                "--etcd-*file: {} does not exist",
                path.display()
            )));
        }
    }
    let tls = (ca.is_some() || cert.is_some()).then_some(TlsFiles { ca, cert, key });
    let endpoints = parse_store(&store, tls.is_some())?;
    let node_ip = node_ip
        .map(|text| {
            text.parse::<std::net::Ipv4Addr>().map_err(|_| {
                NetdError::Invalid(format!("--node-ip: {text:?} is not an IPv4 address"))
            })
        })
        .transpose()?;
    let node_name = match node_name {
        Some(name) => name,
        None => nix::unistd::gethostname()
            .map_err(|e| {
                NetdError::Invalid(format!("--node-name: no hostname to default to: {e}"))
            })?
            .to_string_lossy()
            .into_owned(),
    };
    bridge_driver::names::validate_name("--node-name", &node_name)?;
    let lease_ttl = match lease_ttl {
        Some(text) => parse_duration("--lease-ttl", &text)?,
        None => std::time::Duration::from_secs(24 * 3600),
    };
    let prefix = prefix.unwrap_or_else(|| "/netd".into());
    if !prefix.starts_with('/') || prefix.contains("//") {
        return Err(NetdError::Invalid(format!(
            "--etcd-prefix: {prefix:?} must be an absolute key path such as /netd"
        )));
    }
    Ok(Some(ClusterSettings {
        endpoints,
        tls,
        node_ip,
        node_name,
        lease_ttl,
        prefix: prefix.trim_end_matches('/').to_string(),
    }))
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| NetdError::Invalid(format!("--config {}: {e}", path.display())))?;
    toml::from_str(&text)
        .map_err(|e| NetdError::Invalid(format!("--config {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_override_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("netd.toml");
        std::fs::write(&path, "root = \"/srv/netd\"\ndefault-bridge = \"br9\"\n").expect("write");
        let args = Args {
            config: Some(path),
            default_bridge: Some("br1".into()),
            ..Default::default()
        };
        let c = Config::from_args(&args).expect("valid");
        assert_eq!(c.root, PathBuf::from("/srv/netd"));
        assert_eq!(c.default_bridge, "br1");
        assert_eq!(c.run_dir, PathBuf::from("/run/netd"));
        assert_eq!(c.socket, PathBuf::from("/run/netd/netd.sock"));
        assert!(c.default_network);
    }

    #[test]
    fn file_keys_are_the_flags_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("netd.toml");
        std::fs::write(
            &path,
            "firewall-check-interval = 7\ndefault-network-opt = [\"dns=true\"]\n",
        )
        .expect("write");
        let args = Args {
            config: Some(path),
            ..Default::default()
        };
        let c = Config::from_args(&args).expect("valid");
        assert_eq!(
            c.default_network_options.get("dns").map(String::as_str),
            Some("true")
        );
    }

    #[test]
    fn unknown_keys_and_bad_subnets_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("netd.toml");
        std::fs::write(&path, "colour = \"blue\"\n").expect("write");
        let args = Args {
            config: Some(path),
            ..Default::default()
        };
        assert!(Config::from_args(&args).is_err());
        let args = Args {
            default_subnet: Some("nope".into()),
            ..Default::default()
        };
        let err = Config::from_args(&args).expect_err("bad").to_string();
        assert!(err.contains("--default-subnet"), "{err}");
    }
}
