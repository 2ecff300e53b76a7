//! What decoding costs an ADD: the inputs the three plugins of a chain decode (netd-bridge's
//! configuration, netd-ipam's, the IPAM result netd-bridge reads back, netd-portmap's with
//! its prevResult and port mappings), decoded as the plugins decode them, in-process, many
//! times. Run by `bench/cni_plugins.py`; prints microseconds per ADD for each shape.

use std::time::Instant;

use cni_compat::spec::{CniEnv, CniResult, NetConf};

const ROUNDS: u32 = 20_000;

fn bridge_conf(runtime: &str) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"benchnet","type":"netd-bridge","bridge":"ndcni0","isGateway":true,"ipMasq":true,"hairpinMode":true,"ipam":{{"type":"netd-ipam","ranges":[[{{"subnet":"10.88.0.0/16","gateway":"10.88.0.1"}}]],"routes":[{{"dst":"0.0.0.0/0"}}],"dataDir":"/var/lib/cni/networks"}},"runtimeConfig":{runtime}}}"#
    )
}

const RESULT: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"ndcni0","mac":"86:6f:42:95:ec:a4"},{"name":"vethc96ea39b","mac":"7a:7e:83:5b:94:c9"},{"name":"eth0","mac":"d6:51:0b:b5:90:71","sandbox":"/run/netns/bench-0"}],"ips":[{"address":"10.88.0.2/16","gateway":"10.88.0.1","interface":2}],"routes":[{"dst":"0.0.0.0/0"}],"dns":{}}"#;

fn portmap_conf(mappings: &str) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"benchnet","type":"netd-portmap","snat":true,"runtimeConfig":{{"portMappings":{mappings}}},"prevResult":{RESULT}}}"#
    )
}

fn env() -> CniEnv {
    CniEnv::from_vars(|k| match k {
        "CNI_COMMAND" => Some("ADD".into()),
        "CNI_CONTAINERID" => {
            Some("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into())
        }
        "CNI_NETNS" => Some("/run/netns/bench-0".into()),
        "CNI_IFNAME" => Some("eth0".into()),
        "CNI_PATH" => Some("/opt/cni/bin".into()),
        _ => None,
    })
    .unwrap_or_else(|e| panic!("environment: {e}"))
}

/// Microseconds per ADD to decode everything once, as the plugins do.
fn per_add(bridge: &[u8], portmap: &[u8]) -> f64 {
    let env = env();
    let once = || {
        // netd-bridge: the envelope and its own keys (with the IPAM section it checks).
        let conf = NetConf::parse(bridge).unwrap_or_else(|e| panic!("bridge: {e}"));
        cni_compat::bridge::validate(&conf).unwrap_or_else(|e| panic!("bridge: {e}"));
        // netd-ipam: the same bytes, its own keys.
        let conf = NetConf::parse(bridge).unwrap_or_else(|e| panic!("ipam: {e}"));
        cni_compat::ipam::config::parse(&conf).unwrap_or_else(|e| panic!("ipam: {e}"));
        // netd-bridge reads netd-ipam's result back.
        CniResult::parse(RESULT.as_bytes(), "netd-ipam").unwrap_or_else(|e| panic!("{e}"));
        // netd-portmap: the envelope with prevResult, its keys and the port mappings.
        let conf = NetConf::parse(portmap).unwrap_or_else(|e| panic!("portmap: {e}"));
        cni_compat::portmap::validate(&env, &conf).unwrap_or_else(|e| panic!("portmap: {e}"));
    };
    for _ in 0..ROUNDS / 10 {
        once();
    }
    let start = Instant::now();
    for _ in 0..ROUNDS {
        once();
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS)
}

fn main() {
    let lower = r#"[{"hostPort":20000,"containerPort":80,"protocol":"tcp"}]"#;
    let go_cni = r#"[{"HostPort":20000,"ContainerPort":80,"Protocol":"tcp","HostIP":""}]"#;
    let shapes = [
        (
            "libcni/podman (lowercase keys)",
            bridge_conf("{}"),
            portmap_conf(lower),
        ),
        (
            "containerd go-cni (capitalised keys, ipRanges)",
            bridge_conf(
                r#"{"ipRanges":[[{"Subnet":"10.89.0.0/16","RangeStart":"","RangeEnd":"","Gateway":""}]]}"#,
            ),
            portmap_conf(go_cni),
        ),
    ];
    for (label, bridge, portmap) in shapes {
        let us = per_add(bridge.as_bytes(), portmap.as_bytes());
        println!("decode per ADD, {label}: {us:.1} us");
    }
}
