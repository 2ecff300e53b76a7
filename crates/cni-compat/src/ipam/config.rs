//! host-local's configuration: range sets of ranges, routes, dataDir, resolvConf; the
//! legacy single-range keys too.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

use crate::spec::gojson::{DecodeError, Node};
use crate::spec::{go_ip, CniError, Dns, NetConf, Result, RouteEntry};

/// Where host-local keeps its files unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// host-local's `Range` (and containerd's `ipRanges` entries, which carry empty strings for
/// the addresses they leave out).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RangeConf {
    subnet: String,
    #[serde(default, deserialize_with = "go_ip")]
    range_start: Option<IpAddr>,
    #[serde(default, deserialize_with = "go_ip")]
    range_end: Option<IpAddr>,
    #[serde(default, deserialize_with = "go_ip")]
    gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IpamConf {
    #[serde(default)]
    ranges: Vec<Vec<RangeConf>>,
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default, deserialize_with = "go_ip")]
    range_start: Option<IpAddr>,
    #[serde(default, deserialize_with = "go_ip")]
    range_end: Option<IpAddr>,
    #[serde(default, deserialize_with = "go_ip")]
    gateway: Option<IpAddr>,
    #[serde(default)]
    routes: Vec<RouteEntry>,
    #[serde(default)]
    data_dir: String,
    #[serde(default)]
    resolv_conf: String,
}

/// The runtime's part: the `ipRanges` and `ips` capabilities.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeConf {
    #[serde(default)]
    ip_ranges: Vec<Vec<RangeConf>>,
    #[serde(default)]
    ips: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct ArgsConf {
    #[serde(default)]
    cni: Option<IpamArgs>,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct IpamArgs {
    #[serde(default)]
    ips: Vec<String>,
}

/// What host-local reads of the whole configuration (its Go `Net`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Net {
    #[serde(default)]
    ipam: Option<IpamConf>,
    #[serde(default)]
    runtime_config: RuntimeConf,
    #[serde(default)]
    args: Option<ArgsConf>,
}

/// One range: the addresses `start..=end` of `subnet` handed out (the gateway never).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: Option<IpAddr>,
}

impl Range {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.subnet.contains(&ip)
            && as_u128(ip) >= as_u128(self.start)
            && as_u128(ip) <= as_u128(self.end)
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.subnet.contains(&other.start)
            || self.subnet.contains(&other.end)
            || other.subnet.contains(&self.start)
            || other.subnet.contains(&self.end)
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct HostLocalConf {
    /// Each set gives an attachment one address (dual stack: two sets).
    pub range_sets: Vec<Vec<Range>>,
    pub routes: Vec<RouteEntry>,
    pub data_dir: PathBuf,
    pub dns: Dns,
    /// Addresses asked for in the configuration (`args.cni.ips`, then `runtimeConfig.ips`).
    pub requested: Vec<IpAddr>,
}

pub fn as_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

pub fn from_u128(v4: bool, n: u128) -> IpAddr {
    if v4 {
        IpAddr::V4(std::net::Ipv4Addr::from(n as u32))
    } else {
        IpAddr::V6(std::net::Ipv6Addr::from(n))
    }
}

/// `set` names the range set in error messages (`ipam.ranges[1]`, `runtimeConfig.ipRanges[0]`,
/// `ipam` for the legacy keys).
fn canonical_range(set: &str, index: usize, conf: &RangeConf) -> Result<Range> {
    let field = |name: &str| match set {
        "ipam" => format!("ipam.{name}"),
        _ => format!("{set}[{index}].{name}"),
    };
    let subnet: IpNet = conf.subnet.parse().map_err(|_| {
        CniError::config(format!(
            "{}: {:?} is not a CIDR such as 10.1.0.0/24",
            field("subnet"),
            conf.subnet
        ))
    })?;
    let subnet = subnet.trunc();
    let v4 = matches!(subnet, IpNet::V4(_));
    let host_bits = u32::from(subnet.max_prefix_len() - subnet.prefix_len());
    if host_bits < 2 {
        return Err(CniError::config(format!(
            "{}: {subnet} is too small to allocate from",
            field("subnet")
        )));
    }
    let network = as_u128(subnet.network());
    let last = as_u128(subnet.broadcast());
    let start = conf
        .range_start
        .unwrap_or_else(|| from_u128(v4, network + 1));
    // IPv4 keeps its broadcast address out.
    let end = conf
        .range_end
        .unwrap_or_else(|| from_u128(v4, if v4 { last - 1 } else { last }));
    let gateway = Some(conf.gateway.unwrap_or_else(|| from_u128(v4, network + 1)));
    for (name, ip) in [("rangeStart", start), ("rangeEnd", end)] {
        if !subnet.contains(&ip) || as_u128(ip) == network || (v4 && as_u128(ip) == last) {
            return Err(CniError::config(format!(
                "{}: {ip} is not a usable address of {subnet}",
                field(name)
            )));
        }
    }
    if as_u128(start) > as_u128(end) {
        return Err(CniError::config(format!(
            "{}: {start} is after rangeEnd {end}",
            field("rangeStart")
        )));
    }
    if let Some(gw) = gateway {
        if !subnet.contains(&gw) {
            return Err(CniError::config(format!(
                "{}: {gw} is not in {subnet}",
                field("gateway")
            )));
        }
    }
    Ok(Range {
        subnet,
        start,
        end,
        gateway,
    })
}

/// Reads and checks what host-local reads of a configuration: the `ipam` section, the
/// runtime's `ipRanges` and `ips`, and `args.cni.ips`.
pub fn parse(conf: &NetConf) -> Result<HostLocalConf> {
    from_node(conf.document())
}

/// [`parse`] of a document.
pub fn from_node(doc: &Node) -> Result<HostLocalConf> {
    let net: Net = doc
        .decode()
        .map_err(|e: DecodeError| CniError::config(e.to_string()))?;
    let conf = net.ipam.ok_or_else(|| CniError::config("ipam: missing"))?;
    // As host-local: the runtime's ranges first, then the legacy single range, then ranges.
    let mut sets: Vec<(String, &Vec<RangeConf>)> = Vec::new();
    for (i, set) in net.runtime_config.ip_ranges.iter().enumerate() {
        sets.push((format!("runtimeConfig.ipRanges[{i}]"), set));
    }
    let legacy = conf
        .subnet
        .as_ref()
        .filter(|s| !s.is_empty())
        .map(|subnet| {
            vec![RangeConf {
                subnet: subnet.clone(),
                range_start: conf.range_start,
                range_end: conf.range_end,
                gateway: conf.gateway,
            }]
        });
    if let Some(legacy) = &legacy {
        sets.push(("ipam".to_string(), legacy));
    }
    for (i, set) in conf.ranges.iter().enumerate() {
        sets.push((format!("ipam.ranges[{i}]"), set));
    }
    if sets.is_empty() || sets.iter().any(|(_, set)| set.is_empty()) {
        return Err(CniError::config(
            "ipam.ranges: at least one range set with at least one range is needed",
        ));
    }
    let mut range_sets = Vec::with_capacity(sets.len());
    for (label, set) in &sets {
        let ranges = set
            .iter()
            .enumerate()
            .map(|(i, r)| canonical_range(label, i, r))
            .collect::<Result<Vec<_>>>()?;
        let v4 = matches!(ranges[0].subnet, IpNet::V4(_));
        if ranges
            .iter()
            .any(|r| matches!(r.subnet, IpNet::V4(_)) != v4)
        {
            return Err(CniError::config(format!(
                "{label}: mixes IPv4 and IPv6 ranges"
            )));
        }
        range_sets.push(ranges);
    }
    let all: Vec<(&str, &Range)> = range_sets
        .iter()
        .zip(&sets)
        .flat_map(|(set, (label, _))| set.iter().map(move |r| (label.as_str(), r)))
        .collect();
    for (i, (s1, a)) in all.iter().enumerate() {
        for (s2, b) in &all[i + 1..] {
            if a.overlaps(b) {
                return Err(CniError::config(format!(
                    "{s1} and {s2}: {} and {} overlap",
                    a.subnet, b.subnet
                )));
            }
        }
    }
    let dns = match conf.resolv_conf.as_str() {
        "" => Dns::default(),
        path => read_resolv_conf(std::path::Path::new(path))?,
    };
    let mut requested = Vec::new();
    let texts = net
        .args
        .iter()
        .flat_map(|a| a.cni.iter())
        .flat_map(|c| c.ips.iter())
        .map(|t| ("args.cni.ips", t))
        .chain(
            net.runtime_config
                .ips
                .iter()
                .map(|t| ("runtimeConfig.ips", t)),
        );
    for (field, text) in texts {
        requested.push(requested_ip(field, text)?);
    }
    Ok(HostLocalConf {
        range_sets,
        routes: conf.routes,
        data_dir: match conf.data_dir.as_str() {
            "" => PathBuf::from(DEFAULT_DATA_DIR),
            dir => PathBuf::from(dir),
        },
        dns,
        requested,
    })
}

/// An address asked for: `10.1.0.5` or, as podman sends it, `10.1.0.5/24`.
pub fn requested_ip(field: &str, text: &str) -> Result<IpAddr> {
    text.split('/')
        .next()
        .unwrap_or_default()
        .trim()
        .parse::<IpAddr>()
        .map_err(|_| CniError::config(format!("{field}: {text:?} is not an IP address")))
}

fn read_resolv_conf(path: &std::path::Path) -> Result<Dns> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CniError::config(format!(
            "ipam.resolvConf: cannot read {}: {e}",
            path.display()
        ))
    })?;
    let mut dns = Dns::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.nameservers.extend(words.next().map(String::from)),
            Some("domain") => dns.domain = words.next().unwrap_or_default().to_string(),
            Some("search") => dns.search = words.map(String::from).collect(),
            Some("options") => dns.options.extend(words.map(String::from)),
            _ => {}
        }
    }
    Ok(dns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(json: &str) -> Result<HostLocalConf> {
        from_node(&Node::parse(json.as_bytes()).expect("json"))
    }

    #[test]
    fn defaults_like_host_local() {
        let c = conf(r#"{"ipam":{"type":"host-local","subnet":"10.1.0.5/24"}}"#).expect("valid");
        let r = &c.range_sets[0][0];
        assert_eq!(r.subnet.to_string(), "10.1.0.0/24");
        assert_eq!(r.start.to_string(), "10.1.0.1");
        assert_eq!(r.end.to_string(), "10.1.0.254");
        assert_eq!(
            r.gateway.map(|g| g.to_string()).as_deref(),
            Some("10.1.0.1")
        );
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn bad_configs_name_the_field() {
        for (json, needle) in [
            (
                r#"{"ipam":{"ranges":[[{"subnet":"10.1.0.0/33"}]]}}"#,
                "ipam.ranges[0][0].subnet",
            ),
            (
                r#"{"ipam":{"ranges":[[{"subnet":"10.1.0.0/31"}]]}}"#,
                "too small",
            ),
            (
                r#"{"ipam":{"ranges":[[{"subnet":"10.1.0.0/24","rangeStart":"10.2.0.1"}]]}}"#,
                "rangeStart",
            ),
            (
                r#"{"ipam":{"ranges":[[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.9","rangeEnd":"10.1.0.3"}]]}}"#,
                "after rangeEnd",
            ),
            (
                r#"{"ipam":{"ranges":[[{"subnet":"10.1.0.0/24"}],[{"subnet":"10.1.0.0/25"}]]}}"#,
                "overlap",
            ),
            (r#"{"ipam":{"ranges":[]}}"#, "at least one"),
            (r#"{"other":1}"#, "ipam: missing"),
            (r#"{"ipam":{"ranges":"x"}}"#, "ipam.ranges: invalid type"),
        ] {
            let err = conf(json).expect_err(json).msg;
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
