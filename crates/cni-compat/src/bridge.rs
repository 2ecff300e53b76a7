//! `netd-bridge`: the reference `bridge` plugin's configuration and behaviour (a Linux
//! bridge, a veth into the container, addresses and routes from the IPAM plugin named in
//! `ipam.type`, gateway addresses on the bridge, masquerading), built on `linkd`.

use std::cell::RefCell;
use std::net::IpAddr;
use std::path::Path;

use bridge_driver::plan::{cni_attachment_plan, cni_bridge_plan, CniIpam, RoutePlan};
use ipnet::{IpNet, Ipv4Net};
use linkd::address::add_address_request;
use linkd::link::{
    create_veth_request, set_hairpin_by_name_request, set_up_by_name_request, set_up_request,
};
use linkd::route::replace_route_request;
use linkd::{Firewall, Kernel, Mac, Namespaces, Netns, Request, Route, VethSpec};
use serde::Deserialize;

use crate::host::{CniHost, Parts};
use crate::masq;
use crate::spec::{
    CniEnv, CniError, CniResult, Code, Command, Context, DnsConf, Interface, IpConfig, NetConf,
    Plugin, Result, RouteEntry,
};

const DEFAULT_BRIDGE: &str = "cni0";
const DEFAULT_MTU: u32 = 1500;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BridgeConf {
    #[serde(default = "default_bridge")]
    bridge: String,
    #[serde(default)]
    is_gateway: bool,
    #[serde(default)]
    is_default_gateway: bool,
    #[serde(default)]
    force_address: bool,
    #[serde(default)]
    ip_masq: bool,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    hairpin_mode: bool,
    #[serde(default)]
    promisc_mode: bool,
    #[serde(default)]
    vlan: u32,
    #[serde(default)]
    macspoofchk: bool,
    #[serde(default)]
    ipam: Option<IpamRef>,
    /// The result's `dns` when given (else the IPAM plugin's).
    #[serde(default)]
    dns: DnsConf,
    #[serde(default)]
    runtime_config: MacArg,
    #[serde(default)]
    args: BridgeArgs,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct IpamRef {
    #[serde(rename = "type", default)]
    kind: String,
}

/// `runtimeConfig.mac` and `args.cni.mac`.
#[derive(Debug, Clone, Default, Deserialize)]
struct MacArg {
    #[serde(default)]
    mac: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
struct BridgeArgs {
    #[serde(default)]
    cni: MacArg,
}

fn default_bridge() -> String {
    DEFAULT_BRIDGE.to_string()
}

impl BridgeConf {
    fn parse(conf: &NetConf) -> Result<BridgeConf> {
        let mut bc: BridgeConf = conf.plugin()?;
        bridge_driver::names::validate_ifname("bridge", &bc.bridge)
            .map_err(|e| CniError::config(e.to_string()))?;
        if bc.hairpin_mode && bc.promisc_mode {
            return Err(CniError::config(
                "hairpinMode and promiscMode cannot both be set",
            ));
        }
        if bc.macspoofchk {
            return Err(CniError::new(
                Code::UnsupportedField,
                "macspoofchk: not supported by netd-bridge yet",
            ));
        }
        if bc.vlan != 0 {
            return Err(CniError::new(
                Code::UnsupportedField,
                "vlan: VLAN filtering is not supported by netd-bridge",
            ));
        }
        if bc.mtu == 0 {
            bc.mtu = DEFAULT_MTU;
        } else if !(68..=65535).contains(&bc.mtu) {
            return Err(CniError::config(format!(
                "mtu: {} is outside 68..65535",
                bc.mtu
            )));
        }
        bc.is_gateway |= bc.is_default_gateway;
        Ok(bc)
    }

    fn ipam_type(&self) -> Result<&str> {
        match &self.ipam {
            Some(ipam) if !ipam.kind.is_empty() => Ok(&ipam.kind),
            _ => Err(CniError::config("ipam.type: missing")),
        }
    }
}

/// Checks a netd-bridge configuration (and its IPAM section when the IPAM is host-local
/// compatible) without touching anything.
pub fn validate(conf: &NetConf) -> Result<()> {
    let bc = BridgeConf::parse(conf)?;
    if matches!(bc.ipam_type()?, "netd-ipam" | "host-local") {
        crate::ipam::config::parse(conf)?;
    }
    Ok(())
}

/// The MAC asked for: `runtimeConfig.mac` over `args.cni.mac` over `CNI_ARGS` `MAC=`.
fn requested_mac(env: &CniEnv, bc: &BridgeConf) -> Result<Option<Mac>> {
    let known = env.known_args(&["MAC"])?;
    let text = [&bc.runtime_config.mac, &bc.args.cni.mac]
        .into_iter()
        .find(|m| !m.is_empty())
        .cloned()
        .or_else(|| known.get("MAC").cloned());
    text.map(|t| {
        linkd::parse_mac(&t)
            .filter(|m| m[0] & 1 == 0)
            .ok_or_else(|| CniError::config(format!("mac: {t:?} is not a unicast MAC address")))
    })
    .transpose()
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| CniError::io(format!("random: {e}")))?;
    Ok(bytes)
}

fn open_netns(namespaces: &mut dyn Namespaces, env: &CniEnv) -> Result<(Netns, Box<dyn Kernel>)> {
    namespaces.open(Path::new(&env.netns)).map_err(|e| {
        CniError::new(
            Code::UnknownContainer,
            format!("CNI_NETNS {}: {e}", env.netns),
        )
    })
}

/// The bridge as planned (see `bridge_driver::plan::cni_bridge_plan`): made if missing,
/// up, with `gateways` on it.
fn ensure_bridge(
    host: &mut dyn Kernel,
    bc: &BridgeConf,
    gateways: Vec<Ipv4Net>,
) -> Result<linkd::Link> {
    let plan = cni_bridge_plan(
        &bc.bridge,
        bc.mtu,
        bc.promisc_mode,
        gateways,
        bc.force_address,
    );
    Ok(linkd::ensure_bridge(host, &plan)?.0)
}

fn ipv6_unsupported(what: impl std::fmt::Display) -> CniError {
    CniError::new(
        Code::UnsupportedField,
        format!("{what}: IPv6 is not supported by netd-bridge yet"),
    )
}

fn v4(net: &IpNet) -> Result<Ipv4Net> {
    match net {
        IpNet::V4(v4) => Ok(*v4),
        IpNet::V6(_) => Err(ipv6_unsupported(net)),
    }
}

/// What an ADD has set up by the time the IPAM plugin answers.
struct Attachment<'a> {
    env: &'a CniEnv,
    bc: &'a BridgeConf,
    host_veth: &'a linkd::Link,
}

/// Everything of an ADD after the IPAM plugin answered: `host` is the host's kernel,
/// `inner` the container namespace's.
fn configure(
    a: &Attachment<'_>,
    host: &mut dyn Kernel,
    inner: &mut dyn Kernel,
    ipam: CniResult,
) -> Result<CniResult> {
    let Attachment { env, bc, host_veth } = *a;
    let inside = || format!("configuring {} in {}", env.ifname, env.netns);
    let mut addresses = CniIpam::default();
    for ip in &ipam.ips {
        let gateway = match ip.gateway {
            Some(IpAddr::V4(gw)) => Some(gw),
            Some(IpAddr::V6(gw)) => return Err(ipv6_unsupported(gw)),
            None => None,
        };
        addresses.addresses.push((v4(&ip.address)?, gateway));
    }
    for route in &ipam.routes {
        let gateway = match route.gw {
            Some(IpAddr::V4(gw)) => Some(gw),
            Some(IpAddr::V6(gw)) => return Err(ipv6_unsupported(gw)),
            None => None,
        };
        addresses.routes.push(RoutePlan {
            destination: v4(&route.dst)?,
            gateway,
        });
    }
    let plan = cni_attachment_plan(&addresses, bc.is_gateway, bc.is_default_gateway)
        .map_err(|e| CniError::config(e.to_string()))?;
    // Inside the container: addresses, the interface up, routes, in one batch.
    let container = inner.require_link(&env.ifname).context(inside)?;
    let mut requests: Vec<Request> = plan
        .addresses
        .iter()
        .map(|(address, _)| add_address_request(container.index, *address, &env.ifname))
        .collect();
    requests.push(set_up_request(container.index, &env.ifname));
    requests.extend(plan.routes.iter().map(|r| {
        replace_route_request(&Route {
            destination: r.destination,
            gateway: r.gateway,
            oif: Some(container.index),
        })
    }));
    inner.batch(requests).context(inside)?;
    // A bridge without a MAC of its own takes its ports' (one made elsewhere may).
    let bridge_now = if plan.bridge_addresses.is_empty() {
        host.require_link(&bc.bridge)?
    } else {
        let gateways = &plan.bridge_addresses;
        ensure_bridge(host, bc, gateways.clone()).context(|| {
            let list: Vec<String> = gateways.iter().map(Ipv4Net::to_string).collect();
            format!("adding gateway {} to bridge {}", list.join(", "), bc.bridge)
        })?
    };
    if plan.forwarding {
        host.sysctl_set("net/ipv4/ip_forward", "1")
            .context(|| "enabling IPv4 forwarding".to_string())?;
    }
    let ips: Vec<IpConfig> = plan
        .addresses
        .iter()
        .map(|(address, gateway)| IpConfig {
            version: None,
            address: IpNet::V4(*address),
            gateway: gateway.map(IpAddr::V4),
            interface: Some(2),
        })
        .collect();
    let mut routes = ipam.routes.clone();
    if let Some(added) = plan.added_default_route {
        routes.push(RouteEntry::new(
            IpNet::V4(added.destination),
            added.gateway.map(IpAddr::V4),
        ));
    }
    let mac = |m: Option<Mac>| m.map(|m| linkd::format_mac(&m)).unwrap_or_default();
    Ok(CniResult {
        cni_version: String::new(),
        interfaces: vec![
            Interface {
                name: bc.bridge.clone(),
                mac: mac(bridge_now.mac),
                ..Default::default()
            },
            Interface {
                name: host_veth.name.clone(),
                mac: mac(host_veth.mac),
                ..Default::default()
            },
            Interface {
                name: env.ifname.clone(),
                mac: mac(container.mac),
                sandbox: env.netns.clone(),
                ..Default::default()
            },
        ],
        ips,
        routes,
        dns: if bc.dns.is_set() {
            bc.dns.to_dns()
        } else {
            ipam.dns
        },
    })
}

/// Adds the masquerading rule of every address of a result.
fn add_masquerade(
    firewall: &mut dyn Firewall,
    run_dir: &Path,
    env: &CniEnv,
    conf: &NetConf,
    result: &CniResult,
) -> Result<()> {
    for ip in &result.ips {
        let address = v4(&ip.address)?;
        masq::add(
            firewall,
            run_dir,
            &conf.name,
            &env.container_id,
            address.addr(),
            address.trunc(),
        )
        .context(|| format!("adding the masquerading rule of {address}"))?;
    }
    Ok(())
}

/// The plugin, working on a host (the real one by default).
#[derive(Debug)]
pub struct Bridge {
    host: RefCell<CniHost>,
}

impl Default for Bridge {
    fn default() -> Self {
        Bridge::on(CniHost::real())
    }
}

impl Bridge {
    /// The plugin working on `host` (fakes, in unit tests).
    pub fn on(host: CniHost) -> Self {
        Bridge {
            host: RefCell::new(host),
        }
    }
}

impl Plugin for Bridge {
    fn add(&self, env: &CniEnv, conf: &NetConf) -> Result<CniResult> {
        let bc = BridgeConf::parse(conf)?;
        if bc.ip_masq {
            crate::rules::check_comment(&conf.name, &env.container_id)?;
        }
        let ipam_type = bc.ipam_type()?.to_string();
        let peer_mac = match requested_mac(env, &bc)? {
            Some(mac) => mac,
            None => {
                let mut mac: Mac = random_bytes()?;
                mac[0] = (mac[0] & 0xfe) | 0x02;
                mac
            }
        };
        let mut guard = self.host.borrow_mut();
        let Parts {
            kernel: host,
            namespaces,
            firewall,
            delegate,
            run_dir,
        } = guard.parts()?;
        // A missing IPAM plugin fails the ADD before anything is made.
        delegate.find(env, &ipam_type)?;
        let (netns, mut inner) = open_netns(namespaces, env)?;
        if inner.link_by_name(&env.ifname)?.is_some() {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!(
                    "CNI_IFNAME {}: an interface of that name already exists in {}",
                    env.ifname, env.netns
                ),
            ));
        }
        let bridge = ensure_bridge(host, &bc, Vec::new())
            .context(|| format!("setting up bridge {}", bc.bridge))?;
        let suffix: [u8; 4] = random_bytes()?;
        let host_name = format!(
            "veth{}",
            suffix
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        host.batch(vec![create_veth_request(&VethSpec {
            host_name: &host_name,
            master: bridge.index,
            mtu: bc.mtu,
            peer_name: &env.ifname,
            peer_mac,
            peer_netns: netns.fd(),
        })])
        .context(|| format!("creating the veth pair for {} in {}", env.ifname, env.netns))?;
        let config = &conf.bytes;
        let host_veth = (|| {
            let mut requests = Vec::new();
            if bc.hairpin_mode {
                requests.push(set_hairpin_by_name_request(&host_name, true));
            }
            requests.push(set_up_by_name_request(&host_name));
            host.batch(requests)?;
            Ok::<_, CniError>(host.require_link(&host_name)?)
        })()
        .context(|| format!("setting up {host_name} on bridge {}", bc.bridge));
        let outcome = host_veth.and_then(|host_veth| {
            let ipam = delegate
                .run(env, &ipam_type, Command::Add, config)?
                .ok_or_else(|| {
                    CniError::new(Code::Delegate, format!("{ipam_type} returned no result"))
                })?;
            let attachment = Attachment {
                env,
                bc: &bc,
                host_veth: &host_veth,
            };
            let configured = configure(&attachment, host, &mut inner, ipam).and_then(|result| {
                if bc.ip_masq {
                    add_masquerade(firewall, run_dir, env, conf, &result)?;
                }
                Ok(result)
            });
            match configured {
                Ok(result) => Ok(result),
                Err(e) => {
                    // Give the addresses back, as the spec asks.
                    let _ = delegate.run(env, &ipam_type, Command::Del, config);
                    if bc.ip_masq {
                        let _ = masq::remove(firewall, run_dir, &conf.name, &env.container_id);
                    }
                    Err(e)
                }
            }
        });
        if outcome.is_err() {
            let _ = host.delete_link_by_name(&host_name);
        }
        outcome
    }

    fn del(&self, env: &CniEnv, conf: &NetConf) -> Result<()> {
        let bc = BridgeConf::parse(conf)?;
        let config = &conf.bytes;
        let mut host = self.host.borrow_mut();
        // Rules first, so that their RCU grace period runs along with the one the veth's
        // deletion waits for; the firewall's socket is closed last, when that period is
        // over.
        if bc.ip_masq {
            let run_dir = host.run_dir.clone();
            masq::remove(host.firewall(), &run_dir, &conf.name, &env.container_id)?;
        }
        // The IPAM plugin releases the addresses while the veth is deleted.
        let ipam = match bc.ipam_type() {
            Ok(ipam_type) => Some(host.delegate.start(env, ipam_type, Command::Del, config)?),
            Err(_) => None,
        };
        let deleted = if env.netns.is_empty() {
            Ok(())
        } else {
            // A namespace that is gone took the interface with it.
            match host.namespaces.open(Path::new(&env.netns)) {
                // Returns once the name is free; the kernel's wait after that (~20 ms for
                // a veth) is a detached process's.
                Ok((netns, mut inner)) => host
                    .namespaces
                    .delete_link_soon(&netns, &mut *inner, &env.ifname)
                    .map_err(CniError::from),
                Err(_) => Ok(()),
            }
        };
        if let Some(ipam) = ipam {
            ipam.finish()?;
        }
        deleted?;
        Ok(())
    }

    fn check(&self, env: &CniEnv, conf: &NetConf) -> Result<()> {
        let bc = BridgeConf::parse(conf)?;
        let prev = conf
            .prev_result
            .as_ref()
            .ok_or_else(|| CniError::config("prevResult: required by CHECK"))?;
        let config = &conf.bytes;
        let mut guard = self.host.borrow_mut();
        let Parts {
            kernel: host,
            namespaces,
            firewall,
            delegate,
            ..
        } = guard.parts()?;
        delegate.run(env, bc.ipam_type()?, Command::Check, config)?;
        let failed = |what: String| CniError::new(Code::CheckFailed, what);
        match host.link_by_name(&bc.bridge)? {
            Some(l) if l.kind.as_deref() == Some("bridge") => {}
            _ => return Err(failed(format!("bridge {} is missing", bc.bridge))),
        }
        let (_netns, mut inner) = open_netns(namespaces, env)?;
        let link = inner
            .link_by_name(&env.ifname)?
            .ok_or_else(|| failed(format!("{} is missing in {}", env.ifname, env.netns)))?;
        let position = prev
            .interfaces
            .iter()
            .position(|i| i.name == env.ifname && !i.sandbox.is_empty());
        if let Some(expected) = position.map(|p| &prev.interfaces[p]) {
            let mac = link.mac.map(|m| linkd::format_mac(&m)).unwrap_or_default();
            if !expected.mac.is_empty() && !expected.mac.eq_ignore_ascii_case(&mac) {
                return Err(failed(format!(
                    "{} has MAC {mac}, not {}",
                    env.ifname, expected.mac
                )));
            }
        }
        let addresses = inner.addresses_of(link.index)?;
        for ip in prev
            .ips
            .iter()
            .filter(|ip| ip.interface.is_none() || ip.interface == position)
        {
            let address = v4(&ip.address)?;
            if !addresses.contains(&address) {
                return Err(failed(format!("{} lacks address {address}", env.ifname)));
            }
        }
        let routes = inner.routes()?;
        for route in &prev.routes {
            let destination = v4(&route.dst)?;
            if !routes.iter().any(|r| r.destination == destination) {
                return Err(failed(format!("route to {destination} is missing")));
            }
        }
        if bc.ip_masq && !masq::present(firewall, &conf.name, &env.container_id)? {
            return Err(failed(format!(
                "masquerading rule of {} is missing",
                env.container_id
            )));
        }
        Ok(())
    }

    fn status(&self, env: &CniEnv, conf: &NetConf) -> Result<()> {
        let bc = BridgeConf::parse(conf)?;
        let config = &conf.bytes;
        let mut host = self.host.borrow_mut();
        host.delegate
            .run(env, bc.ipam_type()?, Command::Status, config)
            .map(|_| ())
    }

    fn gc(&self, env: &CniEnv, conf: &NetConf) -> Result<()> {
        let bc = BridgeConf::parse(conf)?;
        let config = &conf.bytes;
        let mut host = self.host.borrow_mut();
        host.delegate
            .run(env, bc.ipam_type()?, Command::Gc, config)?;
        if bc.ip_masq {
            let valid = crate::ipam::valid_attachments(conf)?;
            let run_dir = host.run_dir.clone();
            let saved = host.firewall().save("nat")?;
            for id in crate::rules::attachments_in(&saved, masq::CHAIN_POSTROUTING, &conf.name) {
                if !valid.iter().any(|(cid, _)| *cid == id) {
                    masq::remove(host.firewall(), &run_dir, &conf.name, &id)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use linkd::{Link, RecordingKernel};

    fn link(index: u32, name: &str, kind: &str) -> Link {
        Link {
            mac: Some([2, 0, 0, 0, 0, index as u8]),
            up: true,
            ..Link::new(index, name, Some(kind))
        }
    }

    fn env() -> CniEnv {
        CniEnv::from_vars(|k| match k {
            "CNI_COMMAND" => Some("ADD".into()),
            "CNI_CONTAINERID" => Some("c1".into()),
            "CNI_NETNS" => Some("/run/netns/c1".into()),
            "CNI_IFNAME" => Some("eth0".into()),
            "CNI_PATH" => Some("/opt/cni/bin".into()),
            _ => None,
        })
        .expect("env")
    }

    /// ADD's configuration step against fake kernels: what is asked of the host and of the
    /// container, and the result.
    fn configure_with(
        conf: &str,
        ipam: &str,
    ) -> (RecordingKernel, RecordingKernel, Result<CniResult>) {
        configure_failing(conf, ipam, None)
    }

    /// [`configure_with`], with the container's requests named by `fail_on` failing.
    fn configure_failing(
        conf: &str,
        ipam: &str,
        fail_on: Option<&str>,
    ) -> (RecordingKernel, RecordingKernel, Result<CniResult>) {
        let conf = NetConf::parse(conf.as_bytes()).expect("conf");
        let bc = BridgeConf::parse(&conf).expect("bridge conf");
        let bridge = link(3, "cni0", "bridge");
        let host_veth = link(4, "veth0a1b2c3d", "veth");
        let mut host = RecordingKernel::default().with_link(bridge.clone());
        let mut inner = RecordingKernel::default().with_link(link(2, "eth0", "veth"));
        inner.fail_on = fail_on.map(str::to_string);
        let ipam = CniResult::parse(ipam.as_bytes(), "netd-ipam").expect("ipam result");
        let env = env();
        let attachment = Attachment {
            env: &env,
            bc: &bc,
            host_veth: &host_veth,
        };
        let result = configure(&attachment, &mut host, &mut inner, ipam);
        (host, inner, result)
    }

    const IPAM: &str = r#"{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.7/24"}],"routes":[{"dst":"192.0.2.0/24"}]}"#;

    #[test]
    fn a_default_gateway_attachment() {
        let (host, inner, result) = configure_with(
            r#"{"cniVersion":"1.0.0","name":"n","type":"netd-bridge","bridge":"cni0","isDefaultGateway":true,"ipam":{"type":"netd-ipam"}}"#,
            IPAM,
        );
        let result = result.expect("configured");
        assert_eq!(
            inner.log,
            [
                "add address 10.1.0.7/24 to eth0",
                "set eth0 up",
                "add route 192.0.2.0/24 via 10.1.0.1",
                "add route 0.0.0.0/0 via 10.1.0.1",
            ]
        );
        assert_eq!(
            host.log,
            [
                "add address 10.1.0.1/24 to cni0",
                "sysctl net/ipv4/ip_forward=1"
            ]
        );
        assert_eq!(result.ips[0].gateway, Some("10.1.0.1".parse().expect("ip")));
        assert_eq!(result.ips[0].interface, Some(2));
        let dsts: Vec<String> = result.routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(dsts, ["192.0.2.0/24", "0.0.0.0/0"]);
        assert_eq!(result.interfaces.len(), 3);
        assert_eq!(result.interfaces[2].sandbox, "/run/netns/c1");
    }

    #[test]
    fn a_plain_attachment_touches_nothing_on_the_host() {
        let (host, inner, result) = configure_with(
            r#"{"cniVersion":"1.0.0","name":"n","type":"netd-bridge","bridge":"cni0","ipam":{"type":"netd-ipam"}}"#,
            IPAM,
        );
        result.expect("configured");
        assert!(host.log.is_empty(), "{:?}", host.log);
        assert_eq!(inner.log.len(), 3, "{:?}", inner.log);
    }

    #[test]
    fn another_gateway_on_the_bridge_needs_force_address() {
        let conf = r#"{"cniVersion":"1.0.0","name":"n","type":"netd-bridge","bridge":"cni0","isGateway":true,"ipam":{"type":"netd-ipam"}}"#;
        let taken = |force: bool| {
            let conf = NetConf::parse(
                conf.replace(
                    "\"isGateway\":true",
                    &format!("\"isGateway\":true,\"forceAddress\":{force}"),
                )
                .as_bytes(),
            )
            .expect("conf");
            let bc = BridgeConf::parse(&conf).expect("bc");
            let mut host = RecordingKernel::default().with_link(link(3, "cni0", "bridge"));
            host.addresses
                .insert(3, vec!["10.1.0.254/24".parse().expect("net")]);
            let r = ensure_bridge(&mut host, &bc, vec!["10.1.0.1/24".parse().expect("net")]);
            (host.log, r)
        };
        let (log, refused) = taken(false);
        assert!(refused.expect_err("taken").msg.contains("forceAddress"));
        assert!(log.is_empty());
        let (log, replaced) = taken(true);
        replaced.expect("forced");
        assert_eq!(
            log,
            [
                "delete address 10.1.0.254/24",
                "add address 10.1.0.1/24 to cni0"
            ]
        );
    }

    #[test]
    fn a_kernel_failure_names_the_step() {
        let (_, _, result) = configure_failing(
            r#"{"cniVersion":"1.0.0","name":"n","type":"netd-bridge","ipam":{"type":"netd-ipam"}}"#,
            IPAM,
            Some("add route"),
        );
        let err = result.expect_err("fails");
        assert_eq!(err.code, Code::Kernel as u32);
        assert!(
            err.msg.starts_with(
                "configuring eth0 in /run/netns/c1: add route 192.0.2.0/24 via 10.1.0.1"
            ),
            "{}",
            err.msg
        );
        assert_eq!(err.details, "EINVAL");
    }

    /// A whole ADD or DEL on a fake host: the kernel, the container's namespace and the
    /// firewall of `linkd::FakeHost`, and an IPAM plugin that answers `IPAM_GW`.
    struct Pod {
        dir: tempfile::TempDir,
        fake: linkd::FakeHost,
        ipam: crate::host::RecordingDelegate,
        netns: std::path::PathBuf,
    }

    const IPAM_GW: &str = r#"{"cniVersion":"1.0.0","ips":[{"address":"10.22.0.5/24","gateway":"10.22.0.1"}],"routes":[{"dst":"0.0.0.0/0"}]}"#;
    const MASQ_CONF: &str = r#"{"cniVersion":"1.0.0","name":"unitnet","type":"netd-bridge","bridge":"cni-ut0","isGateway":true,"ipMasq":true,"ipam":{"type":"netd-ipam"}}"#;

    impl Pod {
        fn new() -> Pod {
            let dir = tempfile::tempdir().expect("tempdir");
            let fake = linkd::FakeHost::new();
            let netns = dir.path().join("netns").join("pod1");
            fake.namespaces().create(&netns, &[]).expect("namespace");
            let ipam = crate::host::RecordingDelegate::answering(
                CniResult::parse(IPAM_GW.as_bytes(), "netd-ipam").expect("ipam result"),
            );
            Pod {
                dir,
                fake,
                ipam,
                netns,
            }
        }

        fn plugin(&self) -> Bridge {
            Bridge::on(CniHost::of(
                Box::new(self.fake.kernel()),
                Box::new(self.fake.namespaces()),
                Box::new(self.fake.firewall()),
                Box::new(self.ipam.clone()),
                &self.dir.path().join("run"),
            ))
        }

        fn env(&self, command: &str) -> CniEnv {
            let netns = self.netns.display().to_string();
            CniEnv::from_vars(|k| match k {
                "CNI_COMMAND" => Some(command.into()),
                "CNI_CONTAINERID" => Some("pod1".into()),
                "CNI_NETNS" => Some(netns.clone()),
                "CNI_IFNAME" => Some("eth0".into()),
                "CNI_PATH" => Some("/nonexistent".into()),
                _ => None,
            })
            .expect("env")
        }

        fn masquerade_rules(&self) -> Vec<String> {
            self.fake
                .world()
                .firewall
                .rules("nat", crate::masq::CHAIN_POSTROUTING)
        }
    }

    #[test]
    fn add_then_del_on_a_fake_host() {
        let pod = Pod::new();
        let conf = NetConf::parse(MASQ_CONF.as_bytes()).expect("conf");
        let result = pod.plugin().add(&pod.env("ADD"), &conf).expect("ADD");

        let world = pod.fake.world();
        let bridge = world.host.link("cni-ut0").expect("bridge").clone();
        assert!(bridge.up, "made up");
        assert_eq!(
            world.host.addresses.get(&bridge.index),
            Some(&vec!["10.22.0.1/24".parse().expect("net")]),
            "isGateway puts the gateway on the bridge"
        );
        let veth = world
            .host
            .links
            .iter()
            .find(|l| l.kind.as_deref() == Some("veth"))
            .expect("host end")
            .clone();
        assert_eq!(veth.master, Some(bridge.index));
        assert!(veth.up);
        let inside = world.namespaces.get(&pod.netns).expect("namespace");
        let eth0 = inside.link("eth0").expect("eth0");
        assert!(eth0.up);
        assert_eq!(
            inside.addresses.get(&eth0.index),
            Some(&vec!["10.22.0.5/24".parse().expect("net")])
        );
        assert!(inside.routes.iter().any(|r| r.destination.prefix_len() == 0
            && r.gateway == Some("10.22.0.1".parse().expect("ip"))));
        assert_eq!(
            world
                .host
                .sysctls
                .get("net/ipv4/ip_forward")
                .map(String::as_str),
            Some("1")
        );
        drop(world);
        let masq = pod.masquerade_rules();
        assert_eq!(masq.len(), 1, "{masq:?}");
        assert!(masq[0].starts_with("-s 10.22.0.5/32 "), "{masq:?}");
        assert!(
            masq[0].contains("netd-cni name: unitnet id: pod1"),
            "{masq:?}"
        );
        let names: Vec<&str> = result.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["cni-ut0", veth.name.as_str(), "eth0"]);
        assert_eq!(result.ips[0].interface, Some(2));

        pod.plugin().del(&pod.env("DEL"), &conf).expect("DEL");
        let world = pod.fake.world();
        assert!(world.namespaces[&pod.netns].link("eth0").is_none());
        assert!(
            world.host.link(&veth.name).is_none(),
            "the pair went together"
        );
        drop(world);
        assert!(pod.masquerade_rules().is_empty());
        assert_eq!(*pod.ipam.calls(), ["ADD netd-ipam", "DEL netd-ipam"]);
        // A second DEL (runtimes send them) finds nothing and succeeds.
        pod.plugin().del(&pod.env("DEL"), &conf).expect("DEL again");
    }

    #[test]
    fn an_add_failing_inside_the_container_gives_everything_back() {
        let pod = Pod::new();
        pod.fake
            .world()
            .namespaces
            .get_mut(&pod.netns)
            .expect("namespace")
            .fail_on = Some("add address".into());
        let conf = NetConf::parse(MASQ_CONF.as_bytes()).expect("conf");
        let err = pod
            .plugin()
            .add(&pod.env("ADD"), &conf)
            .expect_err("refused");
        assert!(err.msg.contains("add address 10.22.0.5/24"), "{}", err.msg);
        let world = pod.fake.world();
        assert!(
            !world
                .host
                .links
                .iter()
                .any(|l| l.kind.as_deref() == Some("veth")),
            "{:?}",
            world.host.links
        );
        assert!(world.namespaces[&pod.netns].link("eth0").is_none());
        drop(world);
        assert!(pod.masquerade_rules().is_empty());
        assert_eq!(*pod.ipam.calls(), ["ADD netd-ipam", "DEL netd-ipam"]);
    }

    #[test]
    fn an_add_into_a_taken_name_or_a_missing_namespace_touches_nothing() {
        let pod = Pod::new();
        let conf = NetConf::parse(MASQ_CONF.as_bytes()).expect("conf");
        pod.fake
            .world()
            .namespaces
            .get_mut(&pod.netns)
            .expect("namespace")
            .links
            .push(link(5, "eth0", "dummy"));
        let err = pod.plugin().add(&pod.env("ADD"), &conf).expect_err("taken");
        assert_eq!(err.code, Code::InvalidEnvironment as u32);
        pod.fake.namespaces().remove(&pod.netns).expect("remove");
        let err = pod
            .plugin()
            .add(&pod.env("ADD"), &conf)
            .expect_err("no netns");
        assert_eq!(err.code, Code::UnknownContainer as u32);
        assert!(
            pod.fake.world().host.log.is_empty(),
            "{:?}",
            pod.fake.world().host.log
        );
        assert!(pod.ipam.calls().is_empty());
        assert!(pod.fake.world().firewall.log.is_empty());
    }
}
