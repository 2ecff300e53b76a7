//! Node leases as flannel stores them: the key `<ip>-<len>` under a network's `subnets/`
//! and the JSON `LeaseAttrs`; and choosing a node's subnet.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::config::{Driver, FlannelConfig};
use crate::error::ModelError;

/// flannel's `BackendData` of a vxlan lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanData {
    #[serde(rename = "VNI")]
    pub vni: u32,
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: String,
}

/// flannel's `LeaseAttrs`, with netd's node name (flannel ignores unknown keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAttrs {
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    #[serde(rename = "BackendType")]
    pub backend_type: Driver,
    #[serde(
        rename = "BackendData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_data: Option<VxlanData>,
    /// The node's name (`--node-name`), for `network inspect` and `cluster nodes`.
    #[serde(rename = "NodeName", default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
}

impl LeaseAttrs {
    /// The VTEP MAC of a vxlan lease, parsed.
    pub fn vtep_mac(&self) -> Option<[u8; 6]> {
        let text = &self.backend_data.as_ref()?.vtep_mac;
        let mut mac = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut mac {
            *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
        }
        parts.next().is_none().then_some(mac)
    }
}

/// flannel's subnet key: `10.244.1.0-24`.
pub fn subnet_key(subnet: Ipv4Net) -> String {
    format!("{}-{}", subnet.network(), subnet.prefix_len())
}

/// The subnet a key names, if it is one.
pub fn parse_subnet_key(key: &str) -> Option<Ipv4Net> {
    let (ip, len) = key.rsplit_once('-')?;
    let net = Ipv4Net::new(ip.parse().ok()?, len.parse().ok()?).ok()?;
    (net.network() == net.addr()).then_some(net)
}

/// A VTEP MAC that stays the same while the node's IP and the VNI do (so a restart
/// changes no peer's FDB entry): derived from them, locally administered and unicast.
pub fn vtep_mac(node_ip: Ipv4Addr, vni: u32) -> [u8; 6] {
    let mut mac = crate::mac::bridge_mac(&format!("netd vtep {node_ip} {vni}"));
    // Apart from the bridges' MACs too.
    mac[0] = (mac[0] & 0xfc) | 0x06;
    mac
}

/// Which subnet a node takes, as flannel chooses: the one a lease of this node's IP
/// holds already; else the one it held before (`previous`, from its last subnet.env), if
/// free and in range; else the first free one in the network's range. `None`: all taken.
pub fn choose_subnet(
    config: &FlannelConfig,
    node_ip: Ipv4Addr,
    leases: &[(Ipv4Net, LeaseAttrs)],
    previous: Option<Ipv4Net>,
) -> Option<Ipv4Net> {
    let in_range = |subnet: &Ipv4Net| {
        let (min, max) = config.subnet_range();
        subnet.prefix_len() == config.subnet_len
            && config.network.contains(subnet)
            && subnet.network() >= min
            && subnet.network() <= max
    };
    if let Some((subnet, _)) = leases
        .iter()
        .find(|(subnet, attrs)| attrs.public_ip == node_ip && in_range(subnet))
    {
        return Some(*subnet);
    }
    let taken: BTreeSet<Ipv4Net> = leases.iter().map(|(s, _)| *s).collect();
    if let Some(previous) = previous.filter(|p| in_range(p) && !taken.contains(p)) {
        return Some(previous);
    }
    let (min, max) = config.subnet_range();
    let size = 1u32 << (32 - u32::from(config.subnet_len));
    let mut at = u32::from(min);
    while at <= u32::from(max) {
        if let Ok(subnet) = Ipv4Net::new(Ipv4Addr::from(at), config.subnet_len) {
            if !taken.contains(&subnet) {
                return Some(subnet);
            }
        }
        at = at.checked_add(size)?;
    }
    None
}

/// A lease record read from the store: checked, so that a corrupt one is skipped (and
/// logged by the caller) instead of breaking the node.
pub fn parse_lease(key: &str, value: &[u8]) -> Result<(Ipv4Net, LeaseAttrs), ModelError> {
    let subnet = parse_subnet_key(key)
        .ok_or_else(|| ModelError::invalid(key, "not a subnet key (<ip>-<length>)"))?;
    let attrs: LeaseAttrs = serde_json::from_slice(value)
        .map_err(|e| ModelError::invalid(key, format!("not a lease: {e}")))?;
    if attrs.backend_type == Driver::Vxlan && attrs.vtep_mac().is_none() {
        return Err(ModelError::invalid(
            key,
            "a vxlan lease without a valid VtepMAC",
        ));
    }
    Ok((subnet, attrs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn net(s: &str) -> Ipv4Net {
        s.parse().expect("net")
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    fn lease(public_ip: &str) -> LeaseAttrs {
        LeaseAttrs {
            public_ip: ip(public_ip),
            backend_type: Driver::Vxlan,
            backend_data: Some(VxlanData {
                vni: 1,
                vtep_mac: "06:11:22:33:44:55".into(),
            }),
            node_name: String::new(),
        }
    }

    #[test]
    fn keys_and_records_are_flannels() {
        assert_eq!(subnet_key(net("10.244.1.0/24")), "10.244.1.0-24");
        assert_eq!(
            parse_subnet_key("10.244.1.0-24"),
            Some(net("10.244.1.0/24"))
        );
        assert_eq!(parse_subnet_key("10.244.1.5-24"), None, "host bits");
        assert_eq!(parse_subnet_key("junk"), None);
        let record = br#"{"PublicIP":"192.168.1.10","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}"#;
        let (subnet, attrs) = parse_lease("10.244.2.0-24", record).expect("flannel's record");
        assert_eq!(subnet, net("10.244.2.0/24"));
        assert_eq!(attrs.vtep_mac(), Some([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]));
        assert!(parse_lease("10.244.2.0-24", b"{\"PublicIP\":1}").is_err());
        assert!(parse_lease(
            "10.244.2.0-24",
            br#"{"PublicIP":"192.168.1.10","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"zz"}}"#
        )
        .is_err());
        let mac = vtep_mac(ip("192.168.1.10"), 1);
        assert_eq!(mac, vtep_mac(ip("192.168.1.10"), 1), "stable");
        assert_ne!(mac, vtep_mac(ip("192.168.1.11"), 1));
        assert_eq!(mac[0] & 0x03, 0x02, "locally administered, unicast");
    }

    #[test]
    fn a_node_keeps_its_lease_then_its_previous_subnet_then_takes_the_first_free() {
        let config =
            FlannelConfig::from_request(net("10.244.0.0/16"), Driver::Vxlan, &BTreeMap::new())
                .expect("config");
        let leases = vec![
            (net("10.244.1.0/24"), lease("192.168.1.10")),
            (net("10.244.2.0/24"), lease("192.168.1.11")),
        ];
        assert_eq!(
            choose_subnet(&config, ip("192.168.1.11"), &leases, None),
            Some(net("10.244.2.0/24"))
        );
        assert_eq!(
            choose_subnet(
                &config,
                ip("192.168.1.12"),
                &leases,
                Some(net("10.244.7.0/24"))
            ),
            Some(net("10.244.7.0/24"))
        );
        assert_eq!(
            choose_subnet(
                &config,
                ip("192.168.1.12"),
                &leases,
                Some(net("10.244.1.0/24"))
            ),
            Some(net("10.244.3.0/24")),
            "a previous subnet another node holds now is not taken"
        );
        let tiny = FlannelConfig::from_request(
            net("10.9.0.0/24"),
            Driver::HostGw,
            &[("node-subnet-len".to_string(), "25".to_string())].into(),
        )
        .expect("config");
        // A /24 in /25s: only the second is in flannel's range.
        assert_eq!(
            choose_subnet(&tiny, ip("192.168.1.12"), &[], None),
            Some(net("10.9.0.128/25"))
        );
        let full = vec![(net("10.9.0.128/25"), lease("192.168.1.10"))];
        assert_eq!(choose_subnet(&tiny, ip("192.168.1.12"), &full, None), None);
    }
}
