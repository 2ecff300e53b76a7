//! Published ports: parsing Docker's `-p` syntax and expanding it into one mapping per
//! port (iptables DNAT to a port range does not keep offsets, so ranges map port by port).

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// A transport protocol a port can be published for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Protocol::Tcp),
            "udp" => Ok(Protocol::Udp),
            "sctp" => Ok(Protocol::Sctp),
            other => Err(ModelError::invalid(
                "-p",
                format!("unknown protocol {other:?} (tcp, udp or sctp)"),
            )),
        }
    }
}

/// One published port: host address and port to container port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// `0.0.0.0` means every address of the host.
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl PortMapping {
    /// Whether two mappings compete for the same host port (same protocol and port, and
    /// the same address or either on every address).
    pub fn conflicts_with(&self, other: &PortMapping) -> bool {
        self.protocol == other.protocol
            && self.host_port == other.host_port
            && (self.host_ip == other.host_ip
                || self.host_ip.is_unspecified()
                || other.host_ip.is_unspecified())
    }
}

impl fmt::Display for PortMapping {
    /// Docker's `docker port` format: `80/tcp -> 0.0.0.0:8080`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} -> {}:{}",
            self.container_port, self.protocol, self.host_ip, self.host_port
        )
    }
}

/// A `-p` request before host ports are chosen: host ports are `None` where the host
/// should pick free ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRequest {
    pub host_ip: Ipv4Addr,
    /// A host port range, or none for "any free port".
    pub host_ports: Option<(u16, u16)>,
    pub container_ports: (u16, u16),
    pub protocol: Protocol,
}

fn parse_port(field: &str, text: &str) -> Result<u16, ModelError> {
    let port: u32 = text
        .parse()
        .map_err(|_| ModelError::invalid(field, format!("{text:?} is not a port number")))?;
    if port == 0 || port > 65535 {
        return Err(ModelError::invalid(
            field,
            format!("port {port} is outside 1-65535"),
        ));
    }
    Ok(port as u16)
}

fn parse_range(field: &str, text: &str) -> Result<(u16, u16), ModelError> {
    let (start, end) = match text.split_once('-') {
        Some((a, b)) => (parse_port(field, a)?, parse_port(field, b)?),
        None => {
            let p = parse_port(field, text)?;
            (p, p)
        }
    };
    if end < start {
        return Err(ModelError::invalid(
            field,
            format!("range {text} is reversed (start after end)"),
        ));
    }
    Ok((start, end))
}

impl PortRequest {
    /// Parses `[HOSTIP:][HOSTPORT[-END]:]CPORT[-END][/PROTO]`.
    pub fn parse(spec: &str) -> Result<Self, ModelError> {
        let field = format!("-p {spec}");
        let (ports, protocol) = match spec.rsplit_once('/') {
            Some((ports, proto)) => (
                ports,
                proto.parse::<Protocol>().map_err(|_| {
                    ModelError::invalid(
                        &field,
                        format!("unknown protocol {proto:?} (tcp, udp or sctp)"),
                    )
                })?,
            ),
            None => (spec, Protocol::Tcp),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [c] => (None, None, *c),
            [h, c] => (None, Some(*h), *c),
            [ip, h, c] => (Some(*ip), Some(*h), *c),
            _ => {
                return Err(ModelError::invalid(
                    &field,
                    "expected [HOSTIP:][HOSTPORT[-END]:]CONTAINERPORT[-END][/PROTO]",
                ))
            }
        };
        let host_ip = match ip {
            None | Some("") => Ipv4Addr::UNSPECIFIED,
            Some(text) => text.parse().map_err(|_| {
                ModelError::invalid(&field, format!("{text:?} is not an IPv4 address"))
            })?,
        };
        let container_ports = parse_range(&field, container)?;
        let host_ports = match host {
            None | Some("") => None,
            Some(text) => Some(parse_range(&field, text)?),
        };
        if let Some((hs, he)) = host_ports {
            let host_len = he - hs;
            let container_len = container_ports.1 - container_ports.0;
            // A host range for one container port means "any free port of the range".
            if container_len != 0 && host_len != container_len {
                return Err(ModelError::invalid(
                    &field,
                    format!(
                        "host range {hs}-{he} and container range {}-{} differ in length",
                        container_ports.0, container_ports.1
                    ),
                ));
            }
        }
        Ok(PortRequest {
            host_ip,
            host_ports,
            container_ports,
            protocol,
        })
    }

    /// Expands the request, asking `pick` for a free host port where the host chooses
    /// (given the candidate range, or `None` for the ephemeral range).
    pub fn expand(
        &self,
        mut pick: impl FnMut(Protocol, Ipv4Addr, Option<(u16, u16)>) -> Result<u16, ModelError>,
    ) -> Result<Vec<PortMapping>, ModelError> {
        let (cs, ce) = self.container_ports;
        let mut out = Vec::new();
        for (i, container_port) in (cs..=ce).enumerate() {
            let host_port = match self.host_ports {
                Some((hs, he)) if cs == ce && hs != he => {
                    pick(self.protocol, self.host_ip, Some((hs, he)))?
                }
                Some((hs, _)) => hs + i as u16,
                None => pick(self.protocol, self.host_ip, None)?,
            };
            out.push(PortMapping {
                host_ip: self.host_ip,
                host_port,
                container_port,
                protocol: self.protocol,
            });
        }
        Ok(out)
    }
}

/// Parses `--expose PORT[-END][/PROTO]` into requests on every address and random ports.
pub fn parse_expose(spec: &str) -> Result<PortRequest, ModelError> {
    let field = format!("--expose {spec}");
    let (ports, protocol) = match spec.rsplit_once('/') {
        Some((p, proto)) => (p, proto.parse::<Protocol>()?),
        None => (spec, Protocol::Tcp),
    };
    Ok(PortRequest {
        host_ip: Ipv4Addr::UNSPECIFIED,
        host_ports: None,
        container_ports: parse_range(&field, ports)?,
        protocol,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(r: &PortRequest) -> Vec<PortMapping> {
        let mut next = 40000;
        r.expand(|_, _, range| {
            next += 1;
            Ok(range.map(|(s, _)| s).unwrap_or(next))
        })
        .expect("expand")
    }

    #[test]
    fn docker_forms() {
        let r = PortRequest::parse("8080:80").expect("valid");
        assert_eq!(fixed(&r)[0].to_string(), "80/tcp -> 0.0.0.0:8080");
        let r = PortRequest::parse("127.0.0.1:5353:53/udp").expect("valid");
        assert_eq!(fixed(&r)[0].to_string(), "53/udp -> 127.0.0.1:5353");
        let r = PortRequest::parse("127.0.0.1::80").expect("valid");
        assert_eq!(fixed(&r)[0].to_string(), "80/tcp -> 127.0.0.1:40001");
        let r = PortRequest::parse("80").expect("valid");
        assert_eq!(r.host_ports, None);
        let r = PortRequest::parse("9000-9002:90-92/sctp").expect("valid");
        let m: Vec<String> = fixed(&r).iter().map(|m| m.to_string()).collect();
        assert_eq!(
            m,
            [
                "90/sctp -> 0.0.0.0:9000",
                "91/sctp -> 0.0.0.0:9001",
                "92/sctp -> 0.0.0.0:9002"
            ]
        );
        let r = PortRequest::parse("8000-8100:80").expect("valid");
        assert_eq!(fixed(&r).len(), 1, "one free port of the host range");
    }

    #[test]
    fn bad_specs_name_the_flag() {
        for (spec, needle) in [
            ("0:80", "outside 1-65535"),
            ("8080:0", "outside 1-65535"),
            ("70000:80", "outside 1-65535"),
            ("90-80:90-80", "reversed"),
            ("8080-8082:80-81", "differ in length"),
            ("8080:80/icmp", "unknown protocol"),
            ("x:80", "not a port number"),
            ("1.2.3:80:80", "not an IPv4 address"),
            ("1:2:3:4", "expected"),
        ] {
            let err = PortRequest::parse(spec).expect_err(spec).to_string();
            assert!(err.contains(needle), "{spec}: {err}");
            assert!(err.contains("-p"), "{err}");
        }
    }

    #[test]
    fn conflicts() {
        let m = |ip: &str, port, proto| PortMapping {
            host_ip: ip.parse().expect("ip"),
            host_port: port,
            container_port: 80,
            protocol: proto,
        };
        assert!(m("0.0.0.0", 80, Protocol::Tcp).conflicts_with(&m("10.0.0.1", 80, Protocol::Tcp)));
        assert!(!m("0.0.0.0", 80, Protocol::Tcp).conflicts_with(&m("0.0.0.0", 80, Protocol::Udp)));
        assert!(!m("10.0.0.2", 80, Protocol::Tcp).conflicts_with(&m(
            "10.0.0.1",
            80,
            Protocol::Tcp
        )));
    }
}
