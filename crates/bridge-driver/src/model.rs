//! The network model: what a network is, and how a user's request becomes one.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::names::{default_bridge_name, validate_ifname, validate_name};

/// Default MTU of a bridge network (Docker's).
pub const DEFAULT_MTU: u32 = 1500;

/// A bridge network, as recorded in netd's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub driver: String,
    /// RFC 3339 creation time.
    pub created: String,
    pub bridge: String,
    /// The bridge's MAC, pinned so it never changes as ports come and go.
    pub bridge_mac: [u8; 6],
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub ip_range: Option<Ipv4Net>,
    pub internal: bool,
    pub icc: bool,
    pub masquerade: bool,
    pub mtu: u32,
    /// The driver options as the user gave them (shown by inspect).
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    /// The predefined default network (`bridge`), which cannot be removed.
    pub default: bool,
    /// Whether netd's DNS server answers on the gateway (`--opt dns`).
    #[serde(default)]
    pub dns: bool,
    /// Resolvers this network forwards to instead of the host's (`--opt dns-upstream`).
    #[serde(default)]
    pub dns_upstreams: Vec<SocketAddr>,
    /// Set on a cluster network (`--driver vxlan|host-gw`): the subnet above is this
    /// node's lease of the cluster subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterMembership>,
}

impl Network {
    /// The gateway as an interface address (`172.18.0.1/16`).
    pub fn gateway_net(&self) -> Ipv4Net {
        // The prefix length comes from a valid Ipv4Net, so this cannot fail.
        Ipv4Net::new(self.gateway, self.subnet.prefix_len()).unwrap_or(self.subnet)
    }
}

/// Options a bridge network accepts, by their short names and Docker's long ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeOptions {
    pub bridge_name: Option<String>,
    pub mtu: u32,
    pub icc: bool,
    pub masquerade: bool,
    /// `None`: the default, on for user networks and off for the default `bridge`, as in
    /// Docker.
    pub dns: Option<bool>,
    pub dns_upstreams: Vec<SocketAddr>,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        BridgeOptions {
            bridge_name: None,
            mtu: DEFAULT_MTU,
            icc: true,
            masquerade: true,
            dns: None,
            dns_upstreams: Vec::new(),
        }
    }
}

/// The option keys netd knows, with their Docker aliases.
pub const OPTION_KEYS: &[(&str, &str)] = &[
    ("bridge-name", "com.docker.network.bridge.name"),
    ("mtu", "com.docker.network.driver.mtu"),
    ("icc", "com.docker.network.bridge.enable_icc"),
    (
        "masquerade",
        "com.docker.network.bridge.enable_ip_masquerade",
    ),
    // netd's own (Docker has no such options).
    ("dns", "dns"),
    ("dns-upstream", "dns-upstream"),
];

fn canonical_key(key: &str) -> Option<&'static str> {
    OPTION_KEYS
        .iter()
        .find(|(short, long)| *short == key || *long == key)
        .map(|(short, _)| *short)
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ModelError> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(ModelError::invalid(
            format!("--opt {key}"),
            format!("{other:?} is not true or false"),
        )),
    }
}

/// Parses `IP[,IP...]`, each optionally with a port (`10.0.0.2:5353`, `[fd00::2]:53`).
fn parse_upstreams(key: &str, value: &str) -> Result<Vec<SocketAddr>, ModelError> {
    let mut out = Vec::new();
    for part in value.split(',').map(str::trim) {
        let addr = part
            .parse::<SocketAddr>()
            .or_else(|_| {
                part.parse::<std::net::IpAddr>()
                    .map(|ip| SocketAddr::new(ip, 53))
            })
            .map_err(|_| {
                ModelError::invalid(
                    format!("--opt {key}"),
                    format!("{part:?} is not an IP address or IP:PORT"),
                )
            })?;
        if addr.ip().is_unspecified() || addr.port() == 0 {
            return Err(ModelError::invalid(
                format!("--opt {key}"),
                format!("{part} cannot be used as a resolver"),
            ));
        }
        out.push(addr);
    }
    Ok(out)
}

impl BridgeOptions {
    pub fn parse(options: &BTreeMap<String, String>) -> Result<Self, ModelError> {
        let mut out = BridgeOptions::default();
        for (key, value) in options {
            match canonical_key(key) {
                Some("bridge-name") => {
                    validate_ifname(&format!("--opt {key}"), value)?;
                    out.bridge_name = Some(value.clone());
                }
                Some("mtu") => {
                    let mtu: u32 = value.parse().map_err(|_| {
                        ModelError::invalid(
                            format!("--opt {key}"),
                            format!("{value:?} is not a number"),
                        )
                    })?;
                    if mtu == 0 {
                        out.mtu = DEFAULT_MTU;
                    } else if !(68..=65535).contains(&mtu) {
                        return Err(ModelError::invalid(
                            format!("--opt {key}"),
                            format!("{mtu} is outside 68..65535"),
                        ));
                    } else {
                        out.mtu = mtu;
                    }
                }
                Some("icc") => out.icc = parse_bool(key, value)?,
                Some("masquerade") => out.masquerade = parse_bool(key, value)?,
                Some("dns") => out.dns = Some(parse_bool(key, value)?),
                Some("dns-upstream") => out.dns_upstreams = parse_upstreams(key, value)?,
                _ => {
                    let known: Vec<&str> = OPTION_KEYS.iter().map(|(s, _)| *s).collect();
                    return Err(ModelError::invalid(
                        format!("--opt {key}"),
                        format!("unknown option (known: {})", known.join(", ")),
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// A request to create a network, before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRequest {
    pub name: String,
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub ip_range: Option<String>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The validated parts of a request that do not depend on other networks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidRequest {
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<Ipv4Net>,
    pub options: BridgeOptions,
}

pub fn parse_subnet(field: &str, text: &str) -> Result<Ipv4Net, ModelError> {
    let net: Ipv4Net = text.parse().map_err(|_| {
        ModelError::invalid(
            field,
            format!("{text:?} is not an IPv4 CIDR such as 10.1.0.0/24"),
        )
    })?;
    if net.network() != net.addr() {
        return Err(ModelError::invalid(
            field,
            format!("{text} has host bits set (did you mean {}?)", net.trunc()),
        ));
    }
    Ok(net)
}

pub fn parse_ip(field: &str, text: &str) -> Result<Ipv4Addr, ModelError> {
    text.parse()
        .map_err(|_| ModelError::invalid(field, format!("{text:?} is not an IPv4 address")))
}

impl NetworkRequest {
    /// Checks everything that can be checked without looking at other networks.
    pub fn validate(&self) -> Result<ValidRequest, ModelError> {
        validate_name("name", &self.name)?;
        if let Some(driver) = &self.driver {
            if driver != "bridge" {
                return Err(ModelError::invalid(
                    "--driver",
                    format!("unknown driver {driver:?} (available: bridge, vxlan, host-gw)"),
                ));
            }
        }
        let subnet = self
            .subnet
            .as_deref()
            .map(|s| parse_subnet("--subnet", s))
            .transpose()?;
        if let Some(subnet) = subnet {
            if subnet.prefix_len() > 30 {
                return Err(ModelError::SubnetTooSmall { subnet });
            }
        }
        let gateway = self
            .gateway
            .as_deref()
            .map(|s| parse_ip("--gateway", s))
            .transpose()?;
        let ip_range = self
            .ip_range
            .as_deref()
            .map(|s| parse_subnet("--ip-range", s))
            .transpose()?;
        if subnet.is_none() && (gateway.is_some() || ip_range.is_some()) {
            return Err(ModelError::invalid(
                if gateway.is_some() {
                    "--gateway"
                } else {
                    "--ip-range"
                },
                "requires --subnet",
            ));
        }
        if let (Some(subnet), Some(gw)) = (subnet, gateway) {
            if !subnet.contains(&gw) {
                return Err(ModelError::invalid(
                    "--gateway",
                    format!("{gw} is not in subnet {subnet}"),
                ));
            }
            if gw == subnet.network() || gw == subnet.broadcast() {
                return Err(ModelError::invalid(
                    "--gateway",
                    format!("{gw} is the network or broadcast address of {subnet}"),
                ));
            }
        }
        if let (Some(subnet), Some(range)) = (subnet, ip_range) {
            if !subnet.contains(&range) {
                return Err(ModelError::invalid(
                    "--ip-range",
                    format!("{range} is not inside subnet {subnet}"),
                ));
            }
        }
        for key in self.labels.keys() {
            if key.is_empty() {
                return Err(ModelError::invalid("--label", "empty key"));
            }
        }
        let options = BridgeOptions::parse(&self.options)?;
        Ok(ValidRequest {
            subnet,
            gateway,
            ip_range,
            options,
        })
    }
}

/// Builds the network record from a validated request and the subnet IPAM settled on.
pub fn build_network(
    id: String,
    created: String,
    request: &NetworkRequest,
    valid: &ValidRequest,
    subnet: Ipv4Net,
    default: bool,
) -> Result<Network, ModelError> {
    let gateway = match valid.gateway {
        Some(gw) => gw,
        None => first_host(subnet)?,
    };
    let bridge = valid
        .options
        .bridge_name
        .clone()
        .unwrap_or_else(|| default_bridge_name(&id));
    Ok(Network {
        bridge_mac: crate::mac::bridge_mac(&id),
        id,
        name: request.name.clone(),
        driver: "bridge".into(),
        created,
        bridge,
        subnet,
        gateway,
        ip_range: valid.ip_range,
        internal: request.internal,
        icc: valid.options.icc,
        masquerade: valid.options.masquerade,
        mtu: valid.options.mtu,
        options: request.options.clone(),
        labels: request.labels.clone(),
        default,
        dns: valid.options.dns.unwrap_or(!default),
        dns_upstreams: valid.options.dns_upstreams.clone(),
        cluster: None,
    })
}

/// The first usable host address of a subnet (Docker's default gateway).
pub fn first_host(subnet: Ipv4Net) -> Result<Ipv4Addr, ModelError> {
    if subnet.prefix_len() > 30 {
        return Err(ModelError::SubnetTooSmall { subnet });
    }
    Ok(Ipv4Addr::from(u32::from(subnet.network()) + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(name: &str) -> NetworkRequest {
        NetworkRequest {
            name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn options_accept_short_and_docker_names() {
        let mut o = BTreeMap::new();
        o.insert(
            "com.docker.network.bridge.enable_icc".to_string(),
            "false".to_string(),
        );
        o.insert("mtu".to_string(), "1400".to_string());
        o.insert("bridge-name".to_string(), "mybr0".to_string());
        let p = BridgeOptions::parse(&o).expect("valid");
        assert!(!p.icc);
        assert_eq!(p.mtu, 1400);
        assert_eq!(p.bridge_name.as_deref(), Some("mybr0"));
        assert_eq!(p.dns, None);

        let mut o = BTreeMap::new();
        o.insert("dns".to_string(), "false".to_string());
        o.insert(
            "dns-upstream".to_string(),
            "10.0.0.2, 10.0.0.3:5353".to_string(),
        );
        let p = BridgeOptions::parse(&o).expect("valid");
        assert_eq!(p.dns, Some(false));
        let expected: Vec<SocketAddr> = vec![
            "10.0.0.2:53".parse().expect("addr"),
            "10.0.0.3:5353".parse().expect("addr"),
        ];
        assert_eq!(p.dns_upstreams, expected);
    }

    #[test]
    fn bad_options_name_the_key() {
        for (k, v, needle) in [
            ("colour", "blue", "--opt colour"),
            ("icc", "maybe", "--opt icc"),
            ("mtu", "big", "--opt mtu"),
            ("mtu", "10", "--opt mtu"),
            ("bridge-name", "waytoolongbridgename", "--opt bridge-name"),
            ("dns", "yes", "--opt dns"),
            ("dns-upstream", "10.0.0.300", "--opt dns-upstream"),
            ("dns-upstream", "10.0.0.1,", "--opt dns-upstream"),
            ("dns-upstream", "0.0.0.0", "--opt dns-upstream"),
        ] {
            let mut o = BTreeMap::new();
            o.insert(k.to_string(), v.to_string());
            let err = BridgeOptions::parse(&o).expect_err("invalid").to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn request_validation() {
        let mut r = req("n1");
        r.subnet = Some("10.1.0.0/24".into());
        r.gateway = Some("10.1.0.254".into());
        r.ip_range = Some("10.1.0.128/25".into());
        let v = r.validate().expect("valid");
        assert_eq!(v.gateway, Some("10.1.0.254".parse().expect("ip")));

        let cases: Vec<(NetworkRequest, &str)> = vec![
            (
                NetworkRequest {
                    subnet: Some("10.1.0.0/33".into()),
                    ..req("a")
                },
                "--subnet",
            ),
            (
                NetworkRequest {
                    subnet: Some("10.1.0.5/24".into()),
                    ..req("a")
                },
                "host bits",
            ),
            (
                NetworkRequest {
                    subnet: Some("10.1.0.0/31".into()),
                    ..req("a")
                },
                "too small",
            ),
            (
                NetworkRequest {
                    subnet: Some("10.1.0.0/24".into()),
                    gateway: Some("10.2.0.1".into()),
                    ..req("a")
                },
                "--gateway",
            ),
            (
                NetworkRequest {
                    subnet: Some("10.1.0.0/24".into()),
                    gateway: Some("10.1.0.255".into()),
                    ..req("a")
                },
                "broadcast",
            ),
            (
                NetworkRequest {
                    gateway: Some("10.1.0.1".into()),
                    ..req("a")
                },
                "requires --subnet",
            ),
            (
                NetworkRequest {
                    subnet: Some("10.1.0.0/24".into()),
                    ip_range: Some("10.2.0.0/25".into()),
                    ..req("a")
                },
                "--ip-range",
            ),
            (
                NetworkRequest {
                    driver: Some("overlay".into()),
                    ..req("a")
                },
                "--driver",
            ),
            (req("bad name"), "name"),
        ];
        for (r, needle) in cases {
            let err = r.validate().expect_err("must fail").to_string();
            assert!(err.contains(needle), "{err} should mention {needle}");
        }
    }
}
