//! CNI plugins built on netd's kernel layer (`linkd`) and bridge model: `netd-bridge`,
//! `netd-ipam` (host-local compatible) and `netd-portmap`, drop-in replacements for the
//! reference plugins that runtimes (containerd, CRI-O, Podman) exec.

pub mod bridge;
pub mod delegate;
pub mod flannel;
pub mod host;
pub mod ipam;
pub mod masq;
pub mod portmap;
pub mod rules;
pub mod spec;

/// Where the plugins keep what is not host-local's or the kernel's: the rule lock and
/// remembered rule handles, and netd-ipam's index (`$NETD_CNI_RUN_DIR`, else
/// `/run/netd-cni`). Losing it costs a scan, never correctness.
pub fn run_dir() -> std::path::PathBuf {
    std::env::var_os("NETD_CNI_RUN_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/run/netd-cni"))
}

/// Parses and checks a plugin configuration as the plugin named by its `type` would on
/// ADD, with no side effect: the target of the configuration fuzzers.
pub fn validate_config(stdin: &[u8]) -> spec::Result<()> {
    let conf = spec::NetConf::parse(stdin)?;
    conf.require_valid_name()?;
    let env = spec::CniEnv::from_vars(|k| match k {
        "CNI_COMMAND" => Some("ADD".into()),
        "CNI_CONTAINERID" => Some("fuzz".into()),
        "CNI_NETNS" => Some("/run/netns/fuzz".into()),
        "CNI_IFNAME" => Some("eth0".into()),
        "CNI_PATH" => Some("/opt/cni/bin".into()),
        _ => None,
    })?;
    match conf.plugin_type.as_str() {
        "netd-ipam" | "host-local" => ipam::config::parse(&conf).map(|_| ()),
        "netd-portmap" | "portmap" => portmap::validate(&env, &conf),
        _ => bridge::validate(&conf),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    /// Errors carry a spec code that fits the input: decoding, version or configuration.
    fn check(bytes: &[u8]) {
        if let Err(e) = super::validate_config(bytes) {
            assert!(matches!(e.code, 1 | 2 | 4 | 6 | 7), "{e:?}");
            assert!(!e.msg.is_empty());
        }
    }

    const SEEDS: [&str; 3] = [
        r#"{"cniVersion":"1.0.0","name":"n","type":"netd-bridge","bridge":"cni0","isGateway":true,"ipMasq":true,"mtu":1400,"ipam":{"type":"netd-ipam","ranges":[[{"subnet":"10.1.0.0/24","rangeStart":"10.1.0.10","rangeEnd":"10.1.0.20","gateway":"10.1.0.1"}],[{"subnet":"fd00::/64"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":"/tmp/x"}}"#,
        r#"{"cniVersion":"0.4.0","name":"n","type":"netd-portmap","snat":true,"markMasqBit":13,"runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp","hostIP":"10.0.0.1"}]},"prevResult":{"cniVersion":"0.4.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"version":"4","address":"10.1.0.2/24","interface":0}]}}"#,
        r#"{"cniVersion":"1.1.0","name":"n","type":"netd-ipam","ipam":{"type":"netd-ipam","subnet":"10.2.0.0/16"},"cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
    ];

    #[test]
    fn seeds_are_valid() {
        for seed in SEEDS {
            super::validate_config(seed.as_bytes()).expect(seed);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn fuzz_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            check(&bytes);
        }

        #[test]
        fn fuzz_mutated_configs(
            seed in 0usize..3,
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut bytes = SEEDS[seed].as_bytes().to_vec();
            let len = bytes.len();
            for (at, byte) in edits {
                // Mostly printable, to reach past the JSON parser.
                bytes[at % len] = if byte < 200 { b' ' + byte % 95 } else { byte };
            }
            if cut % 4 == 0 {
                bytes.truncate(cut % (len + 1));
            }
            check(&bytes);
        }
    }
}
