//! netd's settings: flags, each also settable in a TOML file (`--config`); a flag given on
//! the command line wins over the file, the file over the defaults.

use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::Deserialize;

use crate::error::{NetdError, Result};

/// Command-line flags of `netd`.
#[derive(Debug, Clone, Default, clap::Parser)]
#[command(name = "netd", version, about = "Container network daemon")]
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
}

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
}

impl Config {
    pub fn from_args(args: &Args) -> Result<Config> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
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
        Ok(Config {
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
