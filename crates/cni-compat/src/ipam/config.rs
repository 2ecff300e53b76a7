//! host-local's configuration: range sets of ranges, routes, dataDir, resolvConf; the
//! legacy single-range keys too.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Deserialize;

use crate::spec::{CniError, Dns, Result, RouteEntry};

/// Where host-local keeps its files unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RangeConf {
    subnet: String,
    #[serde(default)]
    range_start: Option<IpAddr>,
    #[serde(default)]
    range_end: Option<IpAddr>,
    #[serde(default)]
    gateway: Option<IpAddr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IpamConf {
    #[serde(default)]
    ranges: Vec<Vec<RangeConf>>,
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    range_start: Option<IpAddr>,
    #[serde(default)]
    range_end: Option<IpAddr>,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    routes: Vec<RouteEntry>,
    #[serde(default)]
    data_dir: Option<PathBuf>,
    #[serde(default)]
    resolv_conf: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct Outer {
    ipam: Option<IpamConf>,
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

fn canonical_range(set: usize, index: usize, conf: &RangeConf) -> Result<Range> {
    let field = |name: &str| format!("ipam.ranges[{set}][{index}].{name}");
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

/// Reads and checks the `ipam` section of a configuration.
pub fn parse(raw: &serde_json::Map<String, serde_json::Value>) -> Result<HostLocalConf> {
    let outer: Outer = serde_json::from_value(serde_json::Value::Object(raw.clone()))
        .map_err(|e| CniError::config(format!("ipam: {e}")))?;
    let conf = outer
        .ipam
        .ok_or_else(|| CniError::config("ipam: missing"))?;
    let mut sets = conf.ranges.clone();
    if let Some(subnet) = &conf.subnet {
        sets.insert(
            0,
            vec![RangeConf {
                subnet: subnet.clone(),
                range_start: conf.range_start,
                range_end: conf.range_end,
                gateway: conf.gateway,
            }],
        );
    }
    if sets.is_empty() || sets.iter().any(Vec::is_empty) {
        return Err(CniError::config(
            "ipam.ranges: at least one range set with at least one range is needed",
        ));
    }
    let mut range_sets = Vec::with_capacity(sets.len());
    for (s, set) in sets.iter().enumerate() {
        let ranges = set
            .iter()
            .enumerate()
            .map(|(i, r)| canonical_range(s, i, r))
            .collect::<Result<Vec<_>>>()?;
        let v4 = matches!(ranges[0].subnet, IpNet::V4(_));
        if ranges
            .iter()
            .any(|r| matches!(r.subnet, IpNet::V4(_)) != v4)
        {
            return Err(CniError::config(format!(
                "ipam.ranges[{s}]: mixes IPv4 and IPv6 ranges"
            )));
        }
        range_sets.push(ranges);
    }
    let all: Vec<(usize, &Range)> = range_sets
        .iter()
        .enumerate()
        .flat_map(|(s, set)| set.iter().map(move |r| (s, r)))
        .collect();
    for (i, (s1, a)) in all.iter().enumerate() {
        for (s2, b) in &all[i + 1..] {
            if a.overlaps(b) {
                return Err(CniError::config(format!(
                    "ipam.ranges[{s1}] and ipam.ranges[{s2}]: {} and {} overlap",
                    a.subnet, b.subnet
                )));
            }
        }
    }
    let dns = match &conf.resolv_conf {
        Some(path) => read_resolv_conf(path)?,
        None => Dns::default(),
    };
    Ok(HostLocalConf {
        range_sets,
        routes: conf.routes,
        data_dir: conf
            .data_dir
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        dns,
    })
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
        let raw: serde_json::Value = serde_json::from_str(json).expect("json");
        parse(raw.as_object().expect("object"))
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
            (r#"{"ipam":{"ranges":"x"}}"#, "ipam:"),
        ] {
            let err = conf(json).expect_err(json).msg;
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
