//! `netd-ipam`: host-local compatible address management (same configuration, same files,
//! same order of addresses), plus GC.

pub mod config;
pub mod store;

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::spec::{CniEnv, CniError, CniResult, Code, IpConfig, NetConf, Plugin, Result};
use config::{as_u128, from_u128, HostLocalConf, Range};
use store::{Holder, Store};

/// The plugin.
#[derive(Debug, Default)]
pub struct HostLocal;

/// Addresses asked for, in host-local's order: `CNI_ARGS` `IP=`, then `args.cni.ips`, then
/// `runtimeConfig.ips`.
fn requested_ips(env: &CniEnv, hl: &HostLocalConf) -> Result<Vec<IpAddr>> {
    let known = env.known_args(&["IP", "MAC"])?;
    let mut out = Vec::new();
    for text in known.get("IP").into_iter().flat_map(|ip| ip.split(',')) {
        out.push(config::requested_ip("CNI_ARGS IP", text)?);
    }
    for ip in &hl.requested {
        if !out.contains(ip) {
            out.push(*ip);
        }
    }
    Ok(out)
}

/// The next address after `ip` in a range set, wrapping around (the gateway skipped).
fn candidates(set: &[Range], after: Option<IpAddr>) -> impl Iterator<Item = (IpAddr, &Range)> + '_ {
    // Start right after the last reserved address if it is still in a range, else at the
    // first range's start; walk every range once.
    let (first_range, first_ip) = after
        .and_then(|ip| {
            set.iter()
                .position(|r| r.contains(ip))
                .map(|i| (i, as_u128(ip) + 1))
        })
        .unwrap_or((0, as_u128(set[0].start)));
    let total: u128 = set
        .iter()
        .map(|r| as_u128(r.end) - as_u128(r.start) + 1)
        .sum();
    let mut range = first_range;
    let mut next = first_ip;
    let mut seen: u128 = 0;
    std::iter::from_fn(move || {
        while seen < total {
            let r = &set[range];
            if next > as_u128(r.end) || next < as_u128(r.start) {
                range = (range + 1) % set.len();
                next = as_u128(set[range].start);
                continue;
            }
            let v4 = matches!(r.subnet, IpNet::V4(_));
            let ip = from_u128(v4, next);
            next += 1;
            seen += 1;
            if Some(ip) != r.gateway {
                return Some((ip, r));
            }
        }
        None
    })
}

fn ip_config(ip: IpAddr, range: &Range) -> IpConfig {
    IpConfig {
        version: None,
        address: IpNet::new(ip, range.subnet.prefix_len()).unwrap_or(range.subnet),
        gateway: range.gateway,
        interface: None,
    }
}

fn describe(set: &[Range]) -> String {
    set.iter()
        .map(|r| format!("{}-{}", r.start, r.end))
        .collect::<Vec<_>>()
        .join(",")
}

impl HostLocal {
    fn allocate(
        conf: &HostLocalConf,
        store: &Store,
        holder: &Holder,
        requested: &[IpAddr],
    ) -> Result<Vec<IpConfig>> {
        // host-local refuses a second address for an attachment in the same range set.
        let held = store.held_by(&holder.container_id, &holder.ifname)?;
        let mut used_requests = BTreeSet::new();
        let mut out: Vec<IpConfig> = Vec::new();
        let mut taken: Vec<IpAddr> = Vec::new();
        let result = (|| {
            for (index, set) in conf.range_sets.iter().enumerate() {
                let wanted = requested
                    .iter()
                    .find(|ip| set.iter().any(|r| r.contains(**ip)));
                let already = held.iter().find(|ip| set.iter().any(|r| r.contains(**ip)));
                if let (None, Some(ip)) = (wanted, already) {
                    return Err(CniError::new(
                        Code::InvalidConfig,
                        format!(
                            "{ip} has been allocated to {}, duplicate allocation is not allowed",
                            holder.container_id
                        ),
                    ));
                }
                let got = match wanted {
                    Some(&ip) => {
                        used_requests.insert(ip);
                        let range = set.iter().find(|r| r.contains(ip)).unwrap_or(&set[0]);
                        if Some(ip) == range.gateway || !store.reserve(ip, holder, index)? {
                            return Err(CniError::new(
                                Code::InvalidConfig,
                                format!(
                                    "requested IP address {ip} is not available in range set {}",
                                    describe(set)
                                ),
                            ));
                        }
                        ip_config(ip, range)
                    }
                    None => {
                        let mut found = None;
                        for (ip, range) in candidates(set, store.last_reserved(index)) {
                            if store.reserve(ip, holder, index)? {
                                found = Some(ip_config(ip, range));
                                break;
                            }
                        }
                        found.ok_or_else(|| {
                            CniError::new(
                                Code::Exhausted,
                                format!(
                                    "no IP addresses available in range set: {}",
                                    describe(set)
                                ),
                            )
                        })?
                    }
                };
                taken.push(got.address.addr());
                out.push(got);
            }
            if let Some(ip) = requested.iter().find(|ip| !used_requests.contains(*ip)) {
                return Err(CniError::new(
                    Code::InvalidConfig,
                    format!("requested IP address {ip} is not in any range"),
                ));
            }
            Ok(())
        })();
        let result = result.and_then(|()| store.record(holder, &taken));
        match result {
            Ok(()) => store.stamp().map(|()| out),
            Err(e) => {
                for ip in taken {
                    let _ = store.release(ip);
                }
                // Consistent again: no need for the next operation to rebuild the index.
                let _ = store.stamp();
                Err(e)
            }
        }
    }
}

impl Plugin for HostLocal {
    fn add(&self, env: &CniEnv, conf: &NetConf) -> Result<CniResult> {
        let hl = config::parse(conf)?;
        let requested = requested_ips(env, &hl)?;
        let store = Store::open(&hl.data_dir, &conf.name)?;
        let holder = Holder {
            container_id: env.container_id.clone(),
            ifname: env.ifname.clone(),
        };
        let ips = Self::allocate(&hl, &store, &holder, &requested)?;
        Ok(CniResult {
            ips,
            routes: hl.routes,
            dns: hl.dns,
            ..Default::default()
        })
    }

    fn del(&self, env: &CniEnv, conf: &NetConf) -> Result<()> {
        let hl = config::parse(conf)?;
        let store = Store::open(&hl.data_dir, &conf.name)?;
        for ip in store.held_by(&env.container_id, &env.ifname)? {
            store.release(ip)?;
        }
        store.forget(&Holder {
            container_id: env.container_id.clone(),
            ifname: env.ifname.clone(),
        })?;
        store.stamp()
    }

    fn check(&self, env: &CniEnv, conf: &NetConf) -> Result<()> {
        let hl = config::parse(conf)?;
        let store = Store::open(&hl.data_dir, &conf.name)?;
        let held = store.held_by(&env.container_id, &env.ifname)?;
        for set in &hl.range_sets {
            if !held.iter().any(|ip| set.iter().any(|r| r.contains(*ip))) {
                return Err(CniError::new(
                    Code::CheckFailed,
                    format!(
                        "host-local: failed to find address added by container {} in range set {}",
                        env.container_id,
                        describe(set)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn status(&self, _env: &CniEnv, conf: &NetConf) -> Result<()> {
        let hl = config::parse(conf)?;
        Store::open(&hl.data_dir, &conf.name).map(|_| ())
    }

    fn gc(&self, _env: &CniEnv, conf: &NetConf) -> Result<()> {
        let hl = config::parse(conf)?;
        let valid = valid_attachments(conf)?;
        let store = Store::open(&hl.data_dir, &conf.name)?;
        for (ip, holder) in store.reservations()? {
            let kept = valid.iter().any(|(id, ifname)| {
                *id == holder.container_id && (holder.ifname.is_empty() || *ifname == holder.ifname)
            });
            if !kept {
                store.release(ip)?;
                store.forget(&holder)?;
            }
        }
        store.stamp()
    }
}

/// GC's `cni.dev/valid-attachments`: (container id, ifname) pairs to keep.
pub fn valid_attachments(conf: &NetConf) -> Result<Vec<(String, String)>> {
    #[derive(Deserialize)]
    struct Attachment {
        #[serde(rename = "containerID")]
        container_id: String,
        #[serde(default)]
        ifname: String,
    }
    #[derive(Deserialize)]
    struct Gc {
        #[serde(rename = "cni.dev/valid-attachments", default)]
        valid: Vec<Attachment>,
    }
    let gc: Gc = conf.plugin()?;
    Ok(gc
        .valid
        .into_iter()
        .map(|a| (a.container_id, a.ifname))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::gojson::Node;

    fn set(json: &str) -> Vec<Range> {
        config::from_node(&Node::parse(json.as_bytes()).expect("json"))
            .expect("valid")
            .range_sets
            .remove(0)
    }

    #[test]
    fn candidates_continue_after_the_last_and_wrap() {
        let s = set(r#"{"ipam":{"ranges":[[{"subnet":"10.1.0.0/29"},{"subnet":"10.2.0.0/30"}]]}}"#);
        let all: Vec<String> = candidates(&s, None).map(|(ip, _)| ip.to_string()).collect();
        assert_eq!(
            all,
            ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6", "10.2.0.2"]
        );
        let after: Vec<String> = candidates(&s, Some("10.1.0.5".parse().expect("ip")))
            .map(|(ip, _)| ip.to_string())
            .collect();
        assert_eq!(
            after,
            ["10.1.0.6", "10.2.0.2", "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5"]
        );
    }

    #[test]
    fn allocation_release_and_exhaustion_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let json = format!(
            r#"{{"ipam":{{"ranges":[[{{"subnet":"10.1.0.0/30"}}]],"dataDir":"{}"}}}}"#,
            dir.path().display()
        );
        let hl = config::from_node(&Node::parse(json.as_bytes()).expect("json")).expect("valid");
        let run = tempfile::tempdir().expect("tempdir");
        let store = Store::open_in(&hl.data_dir, "net", run.path()).expect("store");
        let a = Holder {
            container_id: "a".into(),
            ifname: "eth0".into(),
        };
        let got = HostLocal::allocate(&hl, &store, &a, &[]).expect("first");
        assert_eq!(got[0].address.to_string(), "10.1.0.2/30");
        let text = std::fs::read_to_string(dir.path().join("net/10.1.0.2")).expect("file");
        assert_eq!(text, "a\r\neth0");
        assert!(
            HostLocal::allocate(&hl, &store, &a, &[]).is_err(),
            "duplicate"
        );
        let b = Holder {
            container_id: "b".into(),
            ifname: "eth0".into(),
        };
        let err = HostLocal::allocate(&hl, &store, &b, &[]).expect_err("a /30 has one");
        assert_eq!(err.code, Code::Exhausted as u32);
        store
            .release("10.1.0.2".parse().expect("ip"))
            .expect("release");
        assert_eq!(
            HostLocal::allocate(&hl, &store, &b, &[]).expect("freed")[0]
                .address
                .to_string(),
            "10.1.0.2/30"
        );
    }
}
