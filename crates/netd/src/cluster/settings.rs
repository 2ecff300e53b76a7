//! How netd joins a cluster (`--cluster-store` and its companions), checked at start.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{NetdError, Result};

/// Client certificate files for an etcd that wants TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// The cluster settings netd runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `http://HOST:PORT` (or `https://` with TLS), one per etcd member given.
    pub endpoints: Vec<String>,
    pub tls: Option<TlsFiles>,
    /// `None`: the source address of the default route.
    pub node_ip: Option<Ipv4Addr>,
    pub node_name: String,
    pub lease_ttl: Duration,
    /// The root of netd's keys, without a trailing slash (`/netd`).
    pub prefix: String,
}

/// Parses `etcd://HOST:PORT[,HOST:PORT...]` into endpoint URLs.
pub fn parse_store(text: &str, tls: bool) -> Result<Vec<String>> {
    let bad = |why: String| NetdError::Invalid(format!("--cluster-store: {text:?}: {why}"));
    let rest = text
        .strip_prefix("etcd://")
        .ok_or_else(|| bad("must start with etcd:// (etcd://HOST:PORT[,HOST:PORT...])".into()))?;
    let scheme = if tls { "https" } else { "http" };
    let mut endpoints = Vec::new();
    for member in rest.split(',') {
        let (host, port) = member
            .rsplit_once(':')
            .ok_or_else(|| bad(format!("{member:?} is not HOST:PORT")))?;
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
        if !host_ok {
            return Err(bad(format!("{host:?} is not a host name or address")));
        }
        match port.parse::<u16>() {
            Ok(p) if p > 0 => {}
            _ => return Err(bad(format!("{port:?} is not a port (1..65535)"))),
        }
        endpoints.push(format!("{scheme}://{host}:{port}"));
    }
    Ok(endpoints)
}

/// Parses `24h`, `30s`, `5m`, `1h30m` or a bare number of seconds.
pub fn parse_duration(field: &str, text: &str) -> Result<Duration> {
    let bad = || {
        NetdError::Invalid(format!(
            "{field}: {text:?} is not a duration (such as 24h, 30s or 90)"
        ))
    };
    let duration = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(text).map_err(|_| bad())?,
    };
    if duration < Duration::from_secs(5) {
        return Err(NetdError::Invalid(format!(
            "{field}: {text} is too short (etcd leases last at least 5s)"
        )));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_endpoints_are_checked() {
        assert_eq!(
            parse_store("etcd://10.0.0.1:2379,etcd-b:2379", false).expect("valid"),
            ["http://10.0.0.1:2379", "http://etcd-b:2379"]
        );
        assert_eq!(
            parse_store("etcd://10.0.0.1:2379", true).expect("valid"),
            ["https://10.0.0.1:2379"]
        );
        for bad in [
            "10.0.0.1:2379",
            "http://10.0.0.1:2379",
            "etcd://10.0.0.1",
            "etcd://10.0.0.1:0",
            "etcd://:2379",
            "etcd://a b:2379",
        ] {
            let err = parse_store(bad, false).expect_err(bad).to_string();
            assert!(err.contains("--cluster-store"), "{err}");
        }
    }

    #[test]
    fn durations_take_units_or_seconds() {
        assert_eq!(
            parse_duration("--lease-ttl", "24h").expect("valid"),
            Duration::from_secs(86400)
        );
        assert_eq!(
            parse_duration("--lease-ttl", "30").expect("valid"),
            Duration::from_secs(30)
        );
        assert!(parse_duration("--lease-ttl", "1s").is_err());
        assert!(parse_duration("--lease-ttl", "soon").is_err());
    }
}
