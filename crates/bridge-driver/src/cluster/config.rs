//! A cluster network's configuration: the options of `netctl network create --driver
//! vxlan|host-gw`, checked, and the flannel configuration JSON they are stored as
//! (`<prefix>/networks/<name>/config`), so the data means to anyone what it means to
//! flannel.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// How nodes of a cluster network reach each other's subnets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Driver {
    /// One vxlan device; per peer a neighbour, an FDB entry and an onlink route.
    #[serde(rename = "vxlan")]
    Vxlan,
    /// Per peer one route via the peer's node IP (peers must be on a connected subnet).
    #[serde(rename = "host-gw")]
    HostGw,
}

impl Driver {
    pub fn parse(text: &str) -> Result<Driver, ModelError> {
        match text {
            "vxlan" => Ok(Driver::Vxlan),
            "host-gw" => Ok(Driver::HostGw),
            other => Err(ModelError::invalid(
                "--driver",
                format!("unknown driver {other:?} (bridge, vxlan or host-gw)"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Vxlan => "vxlan",
            Driver::HostGw => "host-gw",
        }
    }
}

/// flannel's `Backend` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    #[serde(rename = "Type")]
    pub kind: Driver,
    #[serde(rename = "VNI", default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    #[serde(rename = "Port", default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(rename = "DirectRouting", default)]
    pub direct_routing: bool,
    #[serde(rename = "MTU", default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

/// flannel's network configuration JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlannelConfig {
    #[serde(rename = "Network")]
    pub network: Ipv4Net,
    #[serde(rename = "SubnetLen")]
    pub subnet_len: u8,
    #[serde(rename = "SubnetMin", default, skip_serializing_if = "Option::is_none")]
    pub subnet_min: Option<Ipv4Addr>,
    #[serde(rename = "SubnetMax", default, skip_serializing_if = "Option::is_none")]
    pub subnet_max: Option<Ipv4Addr>,
    #[serde(rename = "Backend")]
    pub backend: Backend,
    /// Where every node also writes its `subnet.env` (netd's key; flannel ignores it).
    #[serde(
        rename = "SubnetFile",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub subnet_file: Option<std::path::PathBuf>,
}

/// vxlan's default UDP port (the Linux kernel's and flannel's, not IANA's 4789).
pub const DEFAULT_VXLAN_PORT: u16 = 8472;
pub const DEFAULT_VNI: u32 = 1;
/// What vxlan's encapsulation takes from the underlay MTU (IPv4 outer header).
pub const VXLAN_OVERHEAD: u32 = 50;

/// The options `network create` accepts for a cluster network.
const OPTIONS: &[&str] = &[
    "node-subnet-len",
    "vni",
    "port",
    "direct-routing",
    "mtu",
    "subnet-file",
];

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ModelError> {
    value.parse().map_err(|_| {
        ModelError::invalid(format!("--opt {key}"), format!("{value:?} is not a number"))
    })
}

impl FlannelConfig {
    /// The configuration of `network create` when its driver is a cluster driver;
    /// `None` for a local (bridge) network. Options a cluster network cannot have
    /// (`--gateway`, `--ip-range`, `--internal`) are refused.
    pub fn from_network_request(
        request: &crate::model::NetworkRequest,
    ) -> Result<Option<FlannelConfig>, ModelError> {
        let Some(driver) = request.driver.as_deref().filter(|d| *d != "bridge") else {
            return Ok(None);
        };
        let driver = Driver::parse(driver)?;
        crate::names::validate_name("name", &request.name)?;
        let subnet = request.subnet.as_deref().ok_or_else(|| {
            ModelError::invalid(
                "--subnet",
                format!(
                    "a {} network needs its cluster subnet (such as 10.244.0.0/16)",
                    driver.as_str()
                ),
            )
        })?;
        let subnet = crate::model::parse_subnet("--subnet", subnet)?;
        for (given, field) in [
            (request.gateway.is_some(), "--gateway"),
            (request.ip_range.is_some(), "--ip-range"),
            (request.internal, "--internal"),
        ] {
            if given {
                return Err(ModelError::invalid(
                    field,
                    format!(
                        "not available on a {} network (each node's bridge takes the first address of its subnet)",
                        driver.as_str()
                    ),
                ));
            }
        }
        FlannelConfig::from_request(subnet, driver, &request.options).map(Some)
    }

    /// The configuration of a new cluster network from `network create`'s flags: the
    /// cluster subnet, the driver and `--opt` options. Checks every value, so that
    /// nothing is written for bad input.
    pub fn from_request(
        subnet: Ipv4Net,
        driver: Driver,
        options: &BTreeMap<String, String>,
    ) -> Result<FlannelConfig, ModelError> {
        if subnet.network() != subnet.addr() {
            return Err(ModelError::invalid(
                "--subnet",
                format!(
                    "{subnet} has host bits set (did you mean {}?)",
                    subnet.trunc()
                ),
            ));
        }
        for key in options.keys() {
            if !OPTIONS.contains(&key.as_str()) {
                return Err(ModelError::invalid(
                    format!("--opt {key}"),
                    format!(
                        "unknown option for a {} network (known: {})",
                        driver.as_str(),
                        OPTIONS.join(", ")
                    ),
                ));
            }
        }
        let get = |key: &str| options.get(key).map(String::as_str);
        let subnet_len = match get("node-subnet-len") {
            Some(v) => number::<u8>("node-subnet-len", v)?,
            // flannel: 24, or the network's length + 2 when the network is smaller than /22.
            None if subnet.prefix_len() > 22 => subnet.prefix_len() + 2,
            None => 24,
        };
        if !(8..=30).contains(&subnet_len) {
            return Err(ModelError::invalid(
                "--opt node-subnet-len",
                format!("{subnet_len} is outside 8..30"),
            ));
        }
        if subnet_len <= subnet.prefix_len() {
            return Err(ModelError::invalid(
                "--opt node-subnet-len",
                format!(
                    "/{subnet_len} node subnets do not fit more than once in {subnet}: use a longer node-subnet-len or a larger --subnet"
                ),
            ));
        }
        let vni = match get("vni") {
            Some(v) => {
                let vni = number::<u32>("vni", v)?;
                if !(1..=16_777_215).contains(&vni) {
                    return Err(ModelError::invalid(
                        "--opt vni",
                        format!("{vni} is outside 1..16777215"),
                    ));
                }
                Some(vni)
            }
            None => None,
        };
        let port = match get("port") {
            Some(v) => match number::<u16>("port", v)? {
                0 => {
                    return Err(ModelError::invalid(
                        "--opt port",
                        "0 is not a port (1..65535)",
                    ))
                }
                port => Some(port),
            },
            None => None,
        };
        let direct_routing = match get("direct-routing") {
            Some("true") => true,
            Some("false") | None => false,
            Some(other) => {
                return Err(ModelError::invalid(
                    "--opt direct-routing",
                    format!("{other:?} is not true or false"),
                ))
            }
        };
        let mtu = match get("mtu") {
            Some(v) => {
                let mtu = number::<u32>("mtu", v)?;
                if !(576..=65_535).contains(&mtu) {
                    return Err(ModelError::invalid(
                        "--opt mtu",
                        format!("{mtu} is outside 576..65535"),
                    ));
                }
                Some(mtu)
            }
            None => None,
        };
        let subnet_file = match get("subnet-file") {
            Some(path) if path.starts_with('/') && !path.ends_with('/') && !path.contains('\0') => {
                Some(std::path::PathBuf::from(path))
            }
            Some(path) => {
                return Err(ModelError::invalid(
                    "--opt subnet-file",
                    format!("{path:?} is not an absolute file path"),
                ))
            }
            None => None,
        };
        if driver == Driver::HostGw && (vni.is_some() || port.is_some() || direct_routing) {
            return Err(ModelError::invalid(
                "--opt",
                "vni, port and direct-routing are options of the vxlan driver, not host-gw",
            ));
        }
        Ok(FlannelConfig {
            network: subnet,
            subnet_len,
            subnet_min: None,
            subnet_max: None,
            backend: Backend {
                kind: driver,
                vni: (driver == Driver::Vxlan).then(|| vni.unwrap_or(DEFAULT_VNI)),
                port: (driver == Driver::Vxlan).then(|| port.unwrap_or(DEFAULT_VXLAN_PORT)),
                direct_routing,
                mtu,
            },
            subnet_file,
        })
    }

    /// The VNI and UDP port of a vxlan network.
    pub fn vxlan(&self) -> Option<(u32, u16)> {
        (self.backend.kind == Driver::Vxlan).then(|| {
            (
                self.backend.vni.unwrap_or(DEFAULT_VNI),
                self.backend.port.unwrap_or(DEFAULT_VXLAN_PORT),
            )
        })
    }

    /// The MTU of the network's links, given the underlay's.
    pub fn mtu(&self, underlay: u32) -> u32 {
        match (self.backend.mtu, self.backend.kind) {
            (Some(mtu), _) => mtu,
            (None, Driver::Vxlan) => underlay.saturating_sub(VXLAN_OVERHEAD),
            (None, Driver::HostGw) => underlay,
        }
    }

    /// The first and last node subnet a lease may take (flannel's defaults: all but the
    /// network's first node subnet, whose network address is the cluster network's).
    pub fn subnet_range(&self) -> (Ipv4Addr, Ipv4Addr) {
        let size = 1u64 << (32 - u32::from(self.subnet_len));
        let first = u64::from(u32::from(self.network.network()));
        let last = u64::from(u32::from(self.network.broadcast())) + 1 - size;
        let to_ip = |n: u64| Ipv4Addr::from(u32::try_from(n).unwrap_or(u32::MAX));
        let min = self.subnet_min.unwrap_or_else(|| to_ip(first + size));
        let max = self.subnet_max.unwrap_or_else(|| to_ip(last));
        (min, max)
    }

    /// Checks a configuration read back from the store (written by another node, or by
    /// hand with etcdctl).
    pub fn check(&self) -> Result<(), ModelError> {
        let mut options = BTreeMap::new();
        options.insert("node-subnet-len".to_string(), self.subnet_len.to_string());
        if let Some(vni) = self.backend.vni {
            options.insert("vni".into(), vni.to_string());
        }
        if let Some(port) = self.backend.port {
            options.insert("port".into(), port.to_string());
        }
        if let Some(mtu) = self.backend.mtu {
            options.insert("mtu".into(), mtu.to_string());
        }
        if self.backend.direct_routing {
            options.insert("direct-routing".into(), "true".into());
        }
        if let Some(path) = &self.subnet_file {
            options.insert("subnet-file".into(), path.to_string_lossy().into_owned());
        }
        FlannelConfig::from_request(self.network, self.backend.kind, &options).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("net")
    }

    #[test]
    fn defaults_are_flannels_and_the_json_is_flannels() {
        let config = FlannelConfig::from_request(net("10.244.0.0/16"), Driver::Vxlan, &opts(&[]))
            .expect("ok");
        assert_eq!(config.subnet_len, 24);
        assert_eq!(config.vxlan(), Some((1, 8472)));
        assert_eq!(config.mtu(1500), 1450);
        assert_eq!(
            config.subnet_range(),
            (
                "10.244.1.0".parse().expect("ip"),
                "10.244.255.0".parse().expect("ip")
            )
        );
        let json = serde_json::to_string(&config).expect("json");
        assert_eq!(
            json,
            r#"{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1,"Port":8472,"DirectRouting":false}}"#
        );
        let back: FlannelConfig = serde_json::from_str(
            r#"{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"host-gw"}}"#,
        )
        .expect("flannel's own");
        assert_eq!(back.backend.kind, Driver::HostGw);
        assert_eq!(back.mtu(1500), 1500);
        let small = FlannelConfig::from_request(net("10.9.0.0/24"), Driver::HostGw, &opts(&[]))
            .expect("ok");
        assert_eq!(small.subnet_len, 26, "network length + 2 below /22");
    }

    #[test]
    fn bad_options_name_the_field() {
        for (subnet, driver, options, field) in [
            (
                "10.244.0.0/16",
                Driver::Vxlan,
                vec![("node-subnet-len", "31")],
                "--opt node-subnet-len",
            ),
            (
                "10.244.0.0/16",
                Driver::Vxlan,
                vec![("node-subnet-len", "16")],
                "--opt node-subnet-len",
            ),
            (
                "10.244.0.0/16",
                Driver::Vxlan,
                vec![("vni", "0")],
                "--opt vni",
            ),
            (
                "10.244.0.0/16",
                Driver::Vxlan,
                vec![("vni", "16777216")],
                "--opt vni",
            ),
            (
                "10.244.0.0/16",
                Driver::Vxlan,
                vec![("port", "0")],
                "--opt port",
            ),
            (
                "10.244.0.0/16",
                Driver::Vxlan,
                vec![("port", "x")],
                "--opt port",
            ),
            (
                "10.244.0.0/16",
                Driver::Vxlan,
                vec![("color", "blue")],
                "--opt color",
            ),
            (
                "10.244.0.0/16",
                Driver::Vxlan,
                vec![("direct-routing", "yes")],
                "--opt direct-routing",
            ),
            ("10.244.0.0/16", Driver::HostGw, vec![("vni", "2")], "--opt"),
            ("10.244.1.0/16", Driver::Vxlan, vec![], "--subnet"),
        ] {
            let err = FlannelConfig::from_request(net(subnet), driver, &opts(&options))
                .expect_err("refused");
            assert!(
                err.to_string().starts_with(&format!("{field}:")),
                "{options:?}: {err}"
            );
        }
        assert!(Driver::parse("overlay").is_err());
    }
}
