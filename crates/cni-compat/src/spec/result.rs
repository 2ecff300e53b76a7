//! ADD results, read from any supported version (a `prevResult`) and written in the shape
//! of the configuration's version.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::error::{CniError, Code, Result};
use super::gojson::Node;
use super::version::Version;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The namespace path, for interfaces inside the container.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sandbox: String,
    /// 1.1.0's, passed along as given.
    #[serde(
        default,
        rename = "socketPath",
        skip_serializing_if = "String::is_empty"
    )]
    pub socket_path: String,
    #[serde(default, rename = "pciID", skip_serializing_if = "String::is_empty")]
    pub pci_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// "4" or "6", in results before 1.0.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub address: IpNet,
    #[serde(
        default,
        deserialize_with = "go_ip",
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    pub dst: IpNet,
    #[serde(
        default,
        deserialize_with = "go_ip",
        skip_serializing_if = "Option::is_none"
    )]
    pub gw: Option<IpAddr>,
    /// 1.1.0's optional route attributes, passed along as given.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mtu: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub advmss: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<i64>,
}

impl RouteEntry {
    /// A route to `dst`, via `gw` if given.
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Self {
        RouteEntry {
            dst,
            gw,
            mtu: 0,
            advmss: 0,
            priority: 0,
            table: None,
            scope: None,
        }
    }
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// An address field as Go's `net.IP` reads it: `""` means none (containerd sends
/// `"Gateway":""` in its ipRanges).
pub fn go_ip<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<IpAddr>, D::Error> {
    let text: Option<String> = Option::deserialize(d)?;
    match text.as_deref() {
        None | Some("") => Ok(None),
        Some(t) => t
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{t:?} is not an IP address"))),
    }
}

/// The `dns` of a network configuration, as the bridge reads it: a list that is given at
/// all (even empty) counts as set, as in Go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct DnsConf {
    #[serde(default)]
    pub nameservers: Option<Vec<String>>,
    #[serde(default)]
    pub domain: String,
    #[serde(default)]
    pub search: Option<Vec<String>>,
    #[serde(default)]
    pub options: Option<Vec<String>>,
}

impl DnsConf {
    /// What the reference bridge calls `dnsConfSet`.
    pub fn is_set(&self) -> bool {
        self.nameservers.is_some()
            || self.search.is_some()
            || self.options.is_some()
            || !self.domain.is_empty()
    }

    pub fn to_dns(&self) -> Dns {
        Dns {
            nameservers: self.nameservers.clone().unwrap_or_default(),
            domain: self.domain.clone(),
            search: self.search.clone().unwrap_or_default(),
            options: self.options.clone().unwrap_or_default(),
        }
    }
}

/// A result's `dns`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self == &Dns::default()
    }
}

/// The result of an ADD (or of an IPAM plugin, without interfaces).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteEntry>,
    /// Always printed (`{}` when empty), as the reference plugins print it.
    #[serde(default)]
    pub dns: Dns,
}

impl CniResult {
    /// Reads a result of any supported version (a `prevResult`), with Go's rules.
    pub fn from_node(node: &Node) -> Result<CniResult> {
        let mut result: CniResult = node
            .decode()
            .map_err(|e| CniError::new(Code::Decode, format!("prevResult: {}", e)))?;
        for ip in &mut result.ips {
            ip.version = None;
        }
        Ok(result)
    }

    /// Reads a result printed by a plugin (a delegate's output).
    pub fn parse(bytes: &[u8], what: &str) -> Result<CniResult> {
        let node = Node::parse(bytes).map_err(|e| {
            CniError::new(
                Code::Decode,
                format!("{what} returned a result that is not JSON: {e}"),
            )
        })?;
        let mut result: CniResult = node.decode().map_err(|e| {
            CniError::new(
                Code::Decode,
                format!("{what} returned an unreadable result: {e}"),
            )
        })?;
        for ip in &mut result.ips {
            ip.version = None;
        }
        Ok(result)
    }

    /// The JSON of this result in the shape of `version`.
    pub fn to_json(&self, version: Version) -> String {
        let mut out = self.clone();
        out.cni_version = version.as_str().to_string();
        for ip in &mut out.ips {
            ip.version = version.ips_have_version().then(|| {
                match ip.address {
                    IpNet::V4(_) => "4",
                    IpNet::V6(_) => "6",
                }
                .to_string()
            });
        }
        serde_json::to_string(&out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_per_version_and_back() {
        let result = CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: "02:42:0a:01:00:02".into(),
                sandbox: "/run/netns/x".into(),
                ..Default::default()
            }],
            ips: vec![IpConfig {
                version: None,
                address: "10.1.0.2/24".parse().expect("net"),
                gateway: Some("10.1.0.1".parse().expect("ip")),
                interface: Some(0),
            }],
            ..Default::default()
        };
        let old = result.to_json(Version::V0_3_1);
        assert!(old.contains("\"version\":\"4\""), "{old}");
        assert!(old.starts_with("{\"cniVersion\":\"0.3.1\""), "{old}");
        let new = result.to_json(Version::V1_0_0);
        assert!(!new.contains("\"version\""), "{new}");
        let back = CniResult::parse(old.as_bytes(), "test").expect("reads");
        assert_eq!(back.ips, result.ips);
    }
}
