//! MAC addresses netd assigns.

use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

/// A container interface's MAC, derived from its IPv4 address as Docker does
/// (`02:42` followed by the four address bytes), so ARP caches survive re-creation.
pub fn mac_from_ip(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// A bridge's MAC: locally administered, unicast, stable for the network's life.
pub fn bridge_mac(network_id: &str) -> [u8; 6] {
    let digest = Sha256::digest(network_id.as_bytes());
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&digest[..6]);
    mac[0] = (mac[0] & 0xfc) | 0x02;
    // Keep clear of the 02:42 prefix used for containers.
    if mac[1] == 0x42 {
        mac[1] = 0x43;
    }
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_style_mac() {
        assert_eq!(
            mac_from_ip(Ipv4Addr::new(172, 17, 0, 2)),
            [0x02, 0x42, 0xac, 0x11, 0, 2]
        );
    }

    #[test]
    fn bridge_mac_is_local_unicast() {
        let m = bridge_mac("abc");
        assert_eq!(m[0] & 0x01, 0, "unicast");
        assert_eq!(m[0] & 0x02, 0x02, "locally administered");
        assert_eq!(bridge_mac("abc"), m);
    }
}
