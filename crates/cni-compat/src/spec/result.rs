//! ADD results, read from any supported version (a `prevResult`) and written in the shape
//! of the configuration's version.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::error::{CniError, Code, Result};
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// "4" or "6", in results before 1.0.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// 1.1.0's optional route attributes, kept as given.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

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
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

impl CniResult {
    /// Reads a result of any supported version (a `prevResult`, or a delegate's output).
    pub fn from_value(value: &serde_json::Value) -> Result<CniResult> {
        let mut result: CniResult = serde_json::from_value(value.clone()).map_err(|e| {
            CniError::new(
                Code::Decode,
                format!("cannot read the previous result: {e}"),
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
        let back =
            CniResult::from_value(&serde_json::from_str(&old).expect("json")).expect("reads");
        assert_eq!(back.ips, result.ips);
    }
}
