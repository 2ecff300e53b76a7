//! `netd-flannel`: flannel's CNI meta plugin on netd's cluster networks. It reads the
//! node's lease from `subnetFile` (flannel's `subnet.env`, which netd writes for each
//! cluster network) and delegates to a bridge plugin with a host-local IPAM on that
//! subnet, exactly as flannel's plugin delegates to `bridge` + `host-local`, saving the
//! delegate's configuration under `dataDir` so that DEL replays it.
//!
//! Defaults differ from flannel's only in the plugin names (`netd-bridge`, `netd-ipam`)
//! and in three keys of netd's `subnet.env` that flannel's file lacks: `NETD_BRIDGE` (the
//! delegate uses netd's bridge of the network), `NETD_NETWORK` and `NETD_IPAM_DATA_DIR`
//! (the delegate's IPAM keeps its reservations with the daemon's, so pods and netd's own
//! sandboxes never get the same address).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::host::{Delegate, PathDelegate};
use crate::spec::{CniEnv, CniError, CniResult, Code, Command, NetConf, Plugin, Result};

const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
const DEFAULT_DATA_DIR: &str = "/var/lib/cni/flannel";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FlannelConf {
    #[serde(default)]
    subnet_file: Option<String>,
    #[serde(default)]
    data_dir: Option<String>,
    #[serde(default)]
    delegate: Option<Value>,
    #[serde(default)]
    runtime_config: Option<Value>,
}

/// What `subnet.env` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    pub network: Ipv4Net,
    /// The node's subnet with the gateway as address (`10.244.1.1/24`).
    pub subnet: Ipv4Net,
    pub mtu: Option<u32>,
    pub ipmasq: bool,
    pub bridge: Option<String>,
    pub netd_network: Option<String>,
    pub ipam_data_dir: Option<String>,
}

impl SubnetEnv {
    /// Parses flannel's `KEY=VALUE` lines; `path` names the file in errors.
    pub fn parse(path: &Path, text: &str) -> Result<SubnetEnv> {
        let mut values = BTreeMap::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                values.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
        let field = |key: &str| {
            values
                .get(key)
                .cloned()
                .ok_or_else(|| CniError::config(format!("{}: {key} is missing", path.display())))
        };
        let net = |key: &str| -> Result<Ipv4Net> {
            let text = field(key)?;
            text.parse().map_err(|_| {
                CniError::config(format!(
                    "{}: {key}={text:?} is not an IPv4 CIDR",
                    path.display()
                ))
            })
        };
        let network = net("FLANNEL_NETWORK")?;
        let subnet = net("FLANNEL_SUBNET")?;
        let mtu = match values.get("FLANNEL_MTU") {
            Some(text) => Some(text.parse().map_err(|_| {
                CniError::config(format!(
                    "{}: FLANNEL_MTU={text:?} is not a number",
                    path.display()
                ))
            })?),
            None => None,
        };
        Ok(SubnetEnv {
            network,
            subnet,
            mtu,
            ipmasq: values.get("FLANNEL_IPMASQ").is_some_and(|v| v == "true"),
            bridge: values.get("NETD_BRIDGE").cloned(),
            netd_network: values.get("NETD_NETWORK").cloned(),
            ipam_data_dir: values.get("NETD_IPAM_DATA_DIR").cloned(),
        })
    }

    /// Reads the file; a missing one means the node has no lease yet: try again later.
    pub fn read(path: &Path) -> Result<SubnetEnv> {
        match std::fs::read_to_string(path) {
            Ok(text) => SubnetEnv::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CniError::new(
                Code::TryAgainLater,
                format!(
                    "{} does not exist yet: this node has no lease of the network (is netd running with --cluster-store?)",
                    path.display()
                ),
            )),
            Err(e) => Err(CniError::io(format!("cannot read {}: {e}", path.display()))),
        }
    }
}

/// The delegate's configuration, as flannel builds it: the user's `delegate` object with
/// what is missing filled in from the lease.
pub fn delegate_conf(conf: &NetConf, own: &FlannelConfView, lease: &SubnetEnv) -> Result<Value> {
    let mut delegate = match &own.delegate {
        Some(Value::Object(map)) => map.clone(),
        Some(Value::Null) | None => Map::new(),
        Some(_) => return Err(CniError::config("delegate: must be an object")),
    };
    let mut set_default = |key: &str, value: Value| {
        delegate.entry(key.to_string()).or_insert(value);
    };
    set_default("type", json!("netd-bridge"));
    if let Some(mtu) = lease.mtu {
        set_default("mtu", json!(mtu));
    }
    set_default("ipMasq", json!(!lease.ipmasq));
    set_default("isGateway", json!(true));
    if let Some(bridge) = &lease.bridge {
        set_default("bridge", json!(bridge));
    }
    let mut ipam = Map::new();
    ipam.insert("type".into(), json!("netd-ipam"));
    ipam.insert("subnet".into(), json!(lease.subnet.trunc().to_string()));
    ipam.insert(
        "routes".into(),
        json!([{ "dst": lease.network.to_string() }]),
    );
    if let Some(dir) = &lease.ipam_data_dir {
        ipam.insert("dataDir".into(), json!(dir));
    }
    match delegate.get_mut("ipam") {
        Some(Value::Object(given)) => {
            for (k, v) in ipam {
                given.entry(k).or_insert(v);
            }
        }
        _ => {
            delegate.insert("ipam".into(), Value::Object(ipam));
        }
    }
    // The delegate works under the cluster network's name, so its IPAM directory is the
    // one the daemon shares.
    let name = lease
        .netd_network
        .clone()
        .unwrap_or_else(|| conf.name.clone());
    delegate.insert("name".into(), json!(name));
    delegate.insert("cniVersion".into(), json!(conf.version.as_str()));
    if let Some(runtime) = &own.runtime_config {
        delegate.insert("runtimeConfig".into(), runtime.clone());
    }
    Ok(Value::Object(delegate))
}

/// The plugin's own keys.
#[derive(Debug, Clone)]
pub struct FlannelConfView {
    pub subnet_file: PathBuf,
    pub data_dir: PathBuf,
    pub delegate: Option<Value>,
    pub runtime_config: Option<Value>,
}

impl FlannelConfView {
    pub fn parse(conf: &NetConf) -> Result<FlannelConfView> {
        let raw: FlannelConf = conf.plugin()?;
        Ok(FlannelConfView {
            subnet_file: PathBuf::from(
                raw.subnet_file
                    .unwrap_or_else(|| DEFAULT_SUBNET_FILE.into()),
            ),
            data_dir: PathBuf::from(raw.data_dir.unwrap_or_else(|| DEFAULT_DATA_DIR.into())),
            delegate: raw.delegate,
            runtime_config: raw.runtime_config,
        })
    }

    fn saved(&self, container_id: &str) -> Result<PathBuf> {
        if !crate::spec::valid_identifier(container_id) {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!("CNI_CONTAINERID: {container_id:?} cannot name a file"),
            ));
        }
        Ok(self.data_dir.join(container_id))
    }
}

/// The plugin, with the way it runs its delegate.
#[derive(Debug, Default)]
pub struct Flannel<D: Delegate = PathDelegate> {
    delegate: std::cell::RefCell<D>,
}

impl<D: Delegate> Flannel<D> {
    pub fn with(delegate: D) -> Self {
        Flannel {
            delegate: std::cell::RefCell::new(delegate),
        }
    }

    fn run(&self, env: &CniEnv, command: Command, conf: &Value) -> Result<Option<CniResult>> {
        let plugin_type = conf
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| CniError::config("delegate.type: must be a plugin name"))?
            .to_string();
        let bytes = serde_json::to_vec(conf)
            .map_err(|e| CniError::io(format!("cannot encode the delegate configuration: {e}")))?;
        self.delegate
            .borrow_mut()
            .run(env, &plugin_type, command, &bytes)
    }

    /// The delegate configuration saved by ADD.
    fn load(&self, own: &FlannelConfView, container_id: &str) -> Result<Option<Value>> {
        let path = own.saved(container_id)?;
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                CniError::io(format!(
                    "{}: not a saved configuration: {e}",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CniError::io(format!("cannot read {}: {e}", path.display()))),
        }
    }
}

impl<D: Delegate> Plugin for Flannel<D> {
    fn add(&self, env: &CniEnv, conf: &NetConf) -> Result<CniResult> {
        let own = FlannelConfView::parse(conf)?;
        let lease = SubnetEnv::read(&own.subnet_file)?;
        let delegate = delegate_conf(conf, &own, &lease)?;
        let path = own.saved(&env.container_id)?;
        std::fs::create_dir_all(&own.data_dir)
            .map_err(|e| CniError::io(format!("cannot create {}: {e}", own.data_dir.display())))?;
        let bytes = serde_json::to_vec(&delegate)
            .map_err(|e| CniError::io(format!("cannot encode the delegate configuration: {e}")))?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &bytes)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| CniError::io(format!("cannot save {}: {e}", path.display())))?;
        match self.run(env, Command::Add, &delegate) {
            Ok(Some(result)) => Ok(result),
            Ok(None) => Err(CniError::new(Code::Delegate, "the delegate gave no result")),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    fn del(&self, env: &CniEnv, conf: &NetConf) -> Result<()> {
        let own = FlannelConfView::parse(conf)?;
        // Nothing saved: ADD never got that far, or DEL ran already.
        let Some(delegate) = self.load(&own, &env.container_id)? else {
            return Ok(());
        };
        self.run(env, Command::Del, &delegate)?;
        let path = own.saved(&env.container_id)?;
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CniError::io(format!(
                "cannot remove {}: {e}",
                path.display()
            ))),
            _ => Ok(()),
        }
    }

    fn check(&self, env: &CniEnv, conf: &NetConf) -> Result<()> {
        let own = FlannelConfView::parse(conf)?;
        let delegate = self.load(&own, &env.container_id)?.ok_or_else(|| {
            CniError::new(
                Code::UnknownContainer,
                format!("no saved configuration for {}", env.container_id),
            )
        })?;
        self.run(env, Command::Check, &delegate).map(|_| ())
    }

    fn status(&self, _env: &CniEnv, conf: &NetConf) -> Result<()> {
        let own = FlannelConfView::parse(conf)?;
        SubnetEnv::read(&own.subnet_file)
            .map(|_| ())
            .map_err(|e| CniError::new(Code::NotAvailable, e.msg))
    }

    fn gc(&self, _env: &CniEnv, _conf: &NetConf) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::RecordingDelegate;

    const LEASE: &str = "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\nNETD_BRIDGE=br-abc\nNETD_NETWORK=ov\nNETD_IPAM_DATA_DIR=/var/lib/netd/cluster-ipam\n";

    fn env(command: &str) -> CniEnv {
        CniEnv::from_vars(|k| match k {
            "CNI_COMMAND" => Some(command.into()),
            "CNI_CONTAINERID" => Some("c1".into()),
            "CNI_NETNS" => Some("/run/netns/x".into()),
            "CNI_IFNAME" => Some("eth0".into()),
            "CNI_PATH" => Some("/opt/cni/bin".into()),
            _ => None,
        })
        .expect("env")
    }

    #[test]
    fn the_delegate_gets_flannels_defaults_from_the_lease() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("subnet.env");
        std::fs::write(&file, LEASE).expect("write");
        let conf = NetConf::parse(
            format!(
                r#"{{"cniVersion":"1.0.0","name":"cbr0","type":"netd-flannel","subnetFile":"{}","dataDir":"{}","delegate":{{"hairpinMode":true}}}}"#,
                file.display(),
                dir.path().join("data").display()
            )
            .as_bytes(),
        )
        .expect("conf");
        let own = FlannelConfView::parse(&conf).expect("own");
        let lease = SubnetEnv::read(&file).expect("lease");
        let d = delegate_conf(&conf, &own, &lease).expect("delegate");
        assert_eq!(d["type"], "netd-bridge");
        assert_eq!(d["name"], "ov");
        assert_eq!(d["bridge"], "br-abc");
        assert_eq!(d["mtu"], 1450);
        assert_eq!(
            d["ipMasq"], false,
            "netd masquerades the cluster network itself"
        );
        assert_eq!(d["isGateway"], true);
        assert_eq!(d["hairpinMode"], true, "the user's keys stay");
        assert_eq!(d["ipam"]["subnet"], "10.244.1.0/24");
        assert_eq!(d["ipam"]["routes"][0]["dst"], "10.244.0.0/16");
        assert_eq!(d["ipam"]["dataDir"], "/var/lib/netd/cluster-ipam");

        // ADD saves what DEL replays; DEL removes it; a second DEL is a no-op.
        let plugin = Flannel::with(RecordingDelegate::answering(CniResult::default()));
        plugin.add(&env("ADD"), &conf).expect("add");
        assert!(dir.path().join("data/c1").exists());
        plugin.del(&env("DEL"), &conf).expect("del");
        assert!(!dir.path().join("data/c1").exists());
        plugin.del(&env("DEL"), &conf).expect("again");
        assert_eq!(plugin.delegate.borrow().calls().len(), 2);
    }

    #[test]
    fn without_a_lease_add_asks_to_try_again_and_status_fails() {
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"cbr0","type":"netd-flannel","subnetFile":"/nonexistent/subnet.env"}"#,
        )
        .expect("conf");
        let plugin = Flannel::with(RecordingDelegate::answering(CniResult::default()));
        let err = plugin.add(&env("ADD"), &conf).expect_err("no lease");
        assert_eq!(err.code, Code::TryAgainLater as u32);
        let err = plugin.status(&env("STATUS"), &conf).expect_err("no lease");
        assert_eq!(err.code, Code::NotAvailable as u32);
        assert!(plugin.delegate.borrow().calls().is_empty());
    }
}
