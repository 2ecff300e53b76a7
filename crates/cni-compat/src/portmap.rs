//! `netd-portmap`: the reference `portmap` plugin's behaviour (capability `portMappings`,
//! `snat`, `markMasqBit`, `externalSetMarkChain`, hairpin and localhost clients), with
//! every attachment's rules in shared chains tagged by a comment: an ADD is one
//! `iptables-restore` that appends, a DEL one nf_tables transaction that deletes by handle.
//!
//! Chains (nat): `PREROUTING`/`OUTPUT` -> (local destinations) `NETD-CNI-HOSTPORT-DNAT`,
//! which marks hairpin and localhost flows for masquerading (`NETD-CNI-HOSTPORT-SETMARK`,
//! or the external chain) and DNATs; `POSTROUTING` -> `NETD-CNI-HOSTPORT-MASQ`, which
//! masquerades marked packets.

use std::cell::RefCell;

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};
use serde::Deserialize;

use crate::rules;
use crate::spec::{CniEnv, CniError, CniResult, Code, Context, NetConf, Plugin, Result};

use bridge_driver::cni_rules::{self, HostPort, PortMappings};

use crate::host::CniHost;
pub use bridge_driver::cni_rules::{CHAIN_DNAT, CHAIN_SETMARK};
use bridge_driver::ports::Protocol;
const DEFAULT_MARK_BIT: u32 = 13;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PortmapConf {
    #[serde(default = "default_true")]
    snat: bool,
    #[serde(default)]
    mark_masq_bit: Option<u32>,
    #[serde(default)]
    external_set_mark_chain: Option<String>,
    #[serde(default)]
    conditions_v4: Option<Vec<String>>,
    #[serde(default)]
    runtime_config: PortmapRuntime,
}

/// The `portMappings` capability.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PortmapRuntime {
    #[serde(default)]
    port_mappings: Vec<PortMapping>,
}

fn default_true() -> bool {
    true
}

/// One entry of `runtimeConfig.portMappings`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u32,
    pub container_port: u32,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(default, rename = "hostIP")]
    pub host_ip: String,
}

fn default_protocol() -> String {
    "tcp".into()
}

/// What the rules of one attachment are made of.
#[derive(Debug, Clone)]
pub struct Plan {
    pub network: String,
    pub container_id: String,
    pub container_ip: Ipv4Addr,
    pub subnet: Ipv4Net,
    pub mappings: Vec<PortMapping>,
    pub snat: bool,
    /// The chain that marks packets for masquerading, and the mark.
    pub setmark_chain: String,
    pub mark: u32,
    pub conditions: Vec<String>,
    /// The host-side interfaces of the previous result (they get `route_localnet`).
    pub host_interfaces: Vec<String>,
}

/// Checks the runtime's port mappings (ports, protocol, host address).
fn check_mappings(mappings: &[PortMapping]) -> Result<()> {
    for (i, m) in mappings.iter().enumerate() {
        let field = |f: &str| format!("runtimeConfig.portMappings[{i}].{f}");
        for (name, port) in [
            ("hostPort", m.host_port),
            ("containerPort", m.container_port),
        ] {
            if !(1..=65535).contains(&port) {
                return Err(CniError::config(format!(
                    "{}: {port} is outside 1..65535",
                    field(name)
                )));
            }
        }
        if !matches!(
            m.protocol.to_ascii_lowercase().as_str(),
            "tcp" | "udp" | "sctp"
        ) {
            return Err(CniError::config(format!(
                "{}: {:?} is not tcp, udp or sctp",
                field("protocol"),
                m.protocol
            )));
        }
        if !m.host_ip.is_empty() && m.host_ip.parse::<IpAddr>().is_err() {
            return Err(CniError::config(format!(
                "{}: {:?} is not an IP address",
                field("hostIP"),
                m.host_ip
            )));
        }
    }
    Ok(())
}

/// Checks `conditionsV4`: each entry is one iptables argument (as the reference plugin
/// passes them), so none may hold what would end a token, a rule or the transaction.
fn check_conditions(conditions: &[String]) -> Result<()> {
    for (i, c) in conditions.iter().enumerate() {
        let bad = c.is_empty()
            || c.chars()
                .any(|ch| ch.is_whitespace() || ch.is_control() || matches!(ch, '"' | '\'' | '\\'));
        if bad {
            return Err(CniError::config(format!(
                "conditionsV4[{i}]: {c:?} is not one iptables argument (no spaces, quotes, backslashes or control characters)"
            )));
        }
    }
    Ok(())
}

impl Plan {
    fn from_conf(env: &CniEnv, conf: &NetConf, need_result: bool) -> Result<Option<Plan>> {
        let pc: PortmapConf = conf.plugin()?;
        let mappings = pc.runtime_config.port_mappings.clone();
        check_mappings(&mappings)?;
        check_conditions(pc.conditions_v4.as_deref().unwrap_or_default())?;
        crate::rules::check_comment(&conf.name, &env.container_id)?;
        let bit = pc.mark_masq_bit.unwrap_or(DEFAULT_MARK_BIT);
        if bit > 31 {
            return Err(CniError::config(format!(
                "markMasqBit: {bit} is outside 0..31"
            )));
        }
        if pc.mark_masq_bit.is_some() && pc.external_set_mark_chain.is_some() {
            return Err(CniError::config(
                "markMasqBit and externalSetMarkChain cannot both be set",
            ));
        }
        if let Some(chain) = &pc.external_set_mark_chain {
            let name_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
            if chain.is_empty() || chain.len() > 28 || !chain.chars().all(name_char) {
                return Err(CniError::config(format!(
                    "externalSetMarkChain: {chain:?} is not a chain name"
                )));
            }
        }
        let mut host_interfaces = Vec::new();
        for (i, interface) in conf
            .prev_result
            .iter()
            .flat_map(|r| r.interfaces.iter())
            .enumerate()
            .filter(|(_, interface)| interface.sandbox.is_empty())
        {
            bridge_driver::names::validate_ifname(
                &format!("prevResult.interfaces[{i}].name"),
                &interface.name,
            )
            .map_err(|e| CniError::config(e.to_string()))?;
            host_interfaces.push(interface.name.clone());
        }
        let address = conf.prev_result.as_ref().and_then(|prev| {
            let sandboxed: Vec<usize> = prev
                .interfaces
                .iter()
                .enumerate()
                .filter(|(_, i)| !i.sandbox.is_empty())
                .map(|(n, _)| n)
                .collect();
            prev.ips
                .iter()
                .filter(|ip| {
                    ip.interface.is_none_or(|n| sandboxed.contains(&n)) || sandboxed.is_empty()
                })
                .find_map(|ip| match ip.address {
                    IpNet::V4(v4) => Some(v4),
                    IpNet::V6(_) => None,
                })
        });
        let Some(address) = address else {
            if need_result && !mappings.is_empty() {
                return Err(CniError::config(
                    "prevResult: an IPv4 address of the container is needed to map ports",
                ));
            }
            return Ok(None);
        };
        Ok(Some(Plan {
            network: conf.name.clone(),
            container_id: env.container_id.clone(),
            container_ip: address.addr(),
            subnet: address.trunc(),
            mappings,
            snat: pc.snat,
            setmark_chain: pc
                .external_set_mark_chain
                .unwrap_or_else(|| CHAIN_SETMARK.to_string()),
            mark: 1 << bit,
            conditions: pc.conditions_v4.unwrap_or_default(),
            host_interfaces,
        }))
    }
}

/// Checks a netd-portmap configuration (and the port mappings the runtime passed) without
/// touching anything.
pub fn validate(env: &CniEnv, conf: &NetConf) -> Result<()> {
    Plan::from_conf(env, conf, false).map(|_| ())
}

impl Plan {
    /// The attachment's port mappings as bridge-driver renders them (ports and protocols
    /// were checked by `check_mappings`).
    pub fn port_mappings(&self) -> Result<PortMappings> {
        let mut ports = Vec::new();
        for m in &self.mappings {
            let port = |n: u32| {
                u16::try_from(n)
                    .map_err(|_| CniError::config(format!("port {n} is outside 1..65535")))
            };
            ports.push(HostPort {
                host_port: port(m.host_port)?,
                container_port: port(m.container_port)?,
                protocol: m
                    .protocol
                    .parse::<Protocol>()
                    .map_err(|e| CniError::config(e.to_string()))?,
                host_ip: HostPort::host_ip_of(&m.host_ip),
            });
        }
        Ok(PortMappings {
            network: self.network.clone(),
            container_id: self.container_id.clone(),
            container_ip: self.container_ip,
            subnet: self.subnet,
            ports,
            snat: self.snat,
            setmark_chain: self.setmark_chain.clone(),
            mark: self.mark,
            conditions: self.conditions.clone(),
        })
    }
}

/// The restore text of an ADD; `declare` when netd-portmap's chains are not there yet.
pub fn add_text(plan: &Plan, declare: bool) -> Result<String> {
    cni_rules::port_mapping_rules(&plan.port_mappings()?, declare)
        .render()
        .map_err(|e| CniError::config(e.to_string()))
}

/// The plugin.
#[derive(Debug)]
pub struct Portmap {
    host: RefCell<CniHost>,
}

impl Default for Portmap {
    fn default() -> Self {
        Portmap::on(CniHost::real())
    }
}

impl Portmap {
    /// The plugin working on `host` (fakes, in unit tests).
    pub fn on(host: CniHost) -> Self {
        Portmap {
            host: RefCell::new(host),
        }
    }
}

fn passthrough(conf: &NetConf) -> CniResult {
    conf.prev_result.clone().unwrap_or_default()
}

impl Plugin for Portmap {
    fn add(&self, env: &CniEnv, conf: &NetConf) -> Result<CniResult> {
        if conf.prev_result.is_none() {
            return Err(CniError::config(
                "prevResult: required (portmap is a chained plugin)",
            ));
        }
        let Some(plan) = Plan::from_conf(env, conf, true)? else {
            return Ok(passthrough(conf));
        };
        if plan.mappings.is_empty() {
            return Ok(passthrough(conf));
        }
        let expected = plan.mappings.len() * if plan.snat { 3 } else { 1 };
        let mut host = self.host.borrow_mut();
        let host = &mut *host;
        let run_dir = host.run_dir.clone();
        rules::append(
            host.firewall(),
            &run_dir,
            CHAIN_DNAT,
            &plan.network,
            &plan.container_id,
            expected,
            |rules| add_text(&plan, !rules.chain_exists("nat", CHAIN_DNAT)?),
        )
        .context(|| "adding the port mapping rules".to_string())?;
        // 127.0.0.1 -> container needs route_localnet on the host-side interfaces.
        for interface in &plan.host_interfaces {
            let key = format!("net/ipv4/conf/{interface}/route_localnet");
            if let Ok(kernel) = host.kernel() {
                let _ = kernel.sysctl_set(&key, "1");
            }
        }
        // Stale UDP flows towards these ports would keep bypassing the new DNAT.
        for m in plan
            .mappings
            .iter()
            .filter(|m| m.protocol.eq_ignore_ascii_case("udp"))
        {
            if let Ok(port) = u16::try_from(m.host_port) {
                host.firewall().flush_udp_conntrack(port);
            }
        }
        Ok(passthrough(conf))
    }

    fn del(&self, env: &CniEnv, conf: &NetConf) -> Result<()> {
        // Whatever the mappings say now, the attachment's rules carry its comment.
        conf.plugin::<PortmapConf>()?;
        remove(&mut self.host.borrow_mut(), &conf.name, &env.container_id)
    }

    fn check(&self, env: &CniEnv, conf: &NetConf) -> Result<()> {
        let Some(plan) = Plan::from_conf(env, conf, true)? else {
            return Ok(());
        };
        let per_mapping = if plan.snat { 3 } else { 1 };
        let found = rules::present(
            self.host.borrow_mut().firewall(),
            CHAIN_DNAT,
            &conf.name,
            &env.container_id,
        )?;
        if found < plan.mappings.len() * per_mapping {
            return Err(CniError::new(
                Code::CheckFailed,
                format!(
                    "{} of {} port mapping rules of {} are in place",
                    found,
                    plan.mappings.len() * per_mapping,
                    env.container_id
                ),
            ));
        }
        Ok(())
    }

    fn status(&self, _env: &CniEnv, conf: &NetConf) -> Result<()> {
        conf.plugin::<PortmapConf>().map(|_| ())
    }

    fn gc(&self, _env: &CniEnv, conf: &NetConf) -> Result<()> {
        let valid = crate::ipam::valid_attachments(conf)?;
        let mut host = self.host.borrow_mut();
        let saved = host.firewall().save("nat")?;
        for id in rules::attachments_in(&saved, CHAIN_DNAT, &conf.name) {
            if !valid.iter().any(|(cid, _)| *cid == id) {
                remove(&mut host, &conf.name, &id)?;
            }
        }
        Ok(())
    }
}

/// Deletes an attachment's rules, letting go of the socket without waiting for their RCU
/// grace period (see `TaggedRules::close_detached`).
fn remove(host: &mut CniHost, network: &str, container_id: &str) -> Result<()> {
    let run_dir = host.run_dir.clone();
    rules::delete(host.firewall(), &run_dir, CHAIN_DNAT, network, container_id)?;
    host.release_firewall();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_of_an_attachment() {
        let plan = Plan {
            network: "net".into(),
            container_id: "c1".into(),
            container_ip: "10.1.0.2".parse().expect("ip"),
            subnet: "10.1.0.0/24".parse().expect("net"),
            mappings: vec![
                PortMapping {
                    host_port: 8080,
                    container_port: 80,
                    protocol: "tcp".into(),
                    host_ip: String::new(),
                },
                PortMapping {
                    host_port: 5353,
                    container_port: 53,
                    protocol: "UDP".into(),
                    host_ip: "192.0.2.1".into(),
                },
            ],
            snat: true,
            setmark_chain: CHAIN_SETMARK.into(),
            mark: 0x2000,
            conditions: vec![],
            host_interfaces: vec![],
        };
        let text = add_text(&plan, false).expect("renders");
        let c = "-m comment --comment \"netd-cni name: net id: c1\"";
        assert_eq!(
            text,
            format!(
                "*nat\n\
                 -A NETD-CNI-HOSTPORT-DNAT -s 10.1.0.0/24 -p tcp -m tcp --dport 8080 {c} -j NETD-CNI-HOSTPORT-SETMARK\n\
                 -A NETD-CNI-HOSTPORT-DNAT -s 127.0.0.1/32 -p tcp -m tcp --dport 8080 {c} -j NETD-CNI-HOSTPORT-SETMARK\n\
                 -A NETD-CNI-HOSTPORT-DNAT -p tcp -m tcp --dport 8080 {c} -j DNAT --to-destination 10.1.0.2:80\n\
                 -A NETD-CNI-HOSTPORT-DNAT -s 10.1.0.0/24 -d 192.0.2.1/32 -p udp -m udp --dport 5353 {c} -j NETD-CNI-HOSTPORT-SETMARK\n\
                 -A NETD-CNI-HOSTPORT-DNAT -s 127.0.0.1/32 -d 192.0.2.1/32 -p udp -m udp --dport 5353 {c} -j NETD-CNI-HOSTPORT-SETMARK\n\
                 -A NETD-CNI-HOSTPORT-DNAT -d 192.0.2.1/32 -p udp -m udp --dport 5353 {c} -j DNAT --to-destination 10.1.0.2:53\n\
                 COMMIT\n"
            )
        );
        let first = add_text(&plan, true).expect("renders");
        assert!(first.contains("-A NETD-CNI-HOSTPORT-SETMARK -j MARK --set-xmark 0x2000/0x2000\n"));
        assert!(first.contains("-I POSTROUTING 1 -j NETD-CNI-HOSTPORT-MASQ\n"));
    }

    #[test]
    fn add_then_del_on_a_fake_firewall() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = linkd::FakeHost::new();
        let plugin = || {
            Portmap::on(CniHost::of(
                Box::new(fake.kernel()),
                Box::new(fake.namespaces()),
                Box::new(fake.firewall()),
                Box::new(crate::host::RecordingDelegate::default()),
                dir.path(),
            ))
        };
        let env = |command: &str| {
            let command = command.to_string();
            CniEnv::from_vars(move |k| match k {
                "CNI_COMMAND" => Some(command.clone()),
                "CNI_CONTAINERID" => Some("pod1".into()),
                "CNI_NETNS" => Some("/run/netns/pod1".into()),
                "CNI_IFNAME" => Some("eth0".into()),
                "CNI_PATH" => Some("/nonexistent".into()),
                _ => None,
            })
            .expect("env")
        };
        let conf = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"unitnet","type":"netd-portmap","capabilities":{"portMappings":true},
                "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"},{"hostPort":5353,"containerPort":53,"protocol":"udp"}]},
                "prevResult":{"cniVersion":"1.0.0","interfaces":[{"name":"cni0"},{"name":"veth1"},{"name":"eth0","sandbox":"/run/netns/pod1"}],
                              "ips":[{"address":"10.22.0.5/24","interface":2}]}}"#,
        )
        .expect("conf");
        plugin().add(&env("ADD"), &conf).expect("ADD");
        let dnat = fake.world().firewall.rules("nat", CHAIN_DNAT);
        assert!(
            dnat.iter().any(|r| r.contains("--dport 8080")
                && r.ends_with("-j DNAT --to-destination 10.22.0.5:80")),
            "{dnat:?}"
        );
        assert!(fake
            .world()
            .firewall
            .rules("nat", "PREROUTING")
            .iter()
            .any(|r| r.contains("NETD-CNI-HOSTPORT-DNAT")));
        assert_eq!(fake.world().firewall.conntrack_flushes, [5353]);
        plugin().check(&env("CHECK"), &conf).expect("CHECK");

        plugin().del(&env("DEL"), &conf).expect("DEL");
        assert!(fake.world().firewall.rules("nat", CHAIN_DNAT).is_empty());
        let err = plugin()
            .check(&env("CHECK"), &conf)
            .expect_err("rules gone");
        assert_eq!(err.code, Code::CheckFailed as u32);
    }
}
