//! Docker's default address pools, and choosing a subnet that collides with nothing.

use ipnet::Ipv4Net;

/// The subnet of the default `bridge` network.
pub const DEFAULT_BRIDGE_SUBNET: &str = "172.17.0.0/16";

/// Candidate subnets for new networks, in Docker's order: 172.17.0.0/16 .. 172.31.0.0/16,
/// then 192.168.0.0/20, 192.168.16.0/20, ... 192.168.240.0/20.
pub fn default_pools() -> impl Iterator<Item = Ipv4Net> {
    let sixteens = (17u8..=31).filter_map(|b| Ipv4Net::new([172, b, 0, 0].into(), 16).ok());
    let twenties = (0u8..16).filter_map(|i| Ipv4Net::new([192, 168, i * 16, 0].into(), 20).ok());
    sixteens.chain(twenties)
}

fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The first default pool that overlaps neither a network's subnet nor a route or address
/// on the host. Default routes (0.0.0.0/0) overlap everything and are ignored.
pub fn choose_subnet(taken: &[Ipv4Net], host: &[Ipv4Net]) -> Option<Ipv4Net> {
    default_pools().find(|candidate| {
        !taken.iter().any(|t| overlaps(candidate, t))
            && !host
                .iter()
                .filter(|h| h.prefix_len() > 0)
                .any(|h| overlaps(candidate, h))
    })
}

/// Whether two subnets share any address.
pub fn subnets_overlap(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    overlaps(a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().expect("net")
    }

    #[test]
    fn docker_order() {
        let pools: Vec<_> = default_pools().collect();
        assert_eq!(pools[0], n("172.17.0.0/16"));
        assert_eq!(pools[14], n("172.31.0.0/16"));
        assert_eq!(pools[15], n("192.168.0.0/20"));
        assert_eq!(pools[16], n("192.168.16.0/20"));
        assert_eq!(pools.len(), 31);
    }

    #[test]
    fn skips_networks_and_host_routes() {
        let taken = [n("172.17.0.0/16"), n("172.18.0.0/16")];
        let host = [n("0.0.0.0/0"), n("172.19.5.0/24"), n("10.0.0.0/8")];
        assert_eq!(choose_subnet(&taken, &host), Some(n("172.20.0.0/16")));
    }

    #[test]
    fn a_wide_host_route_covers_many_pools() {
        let host = [n("172.16.0.0/12")];
        assert_eq!(choose_subnet(&[], &host), Some(n("192.168.0.0/20")));
        let all: Vec<_> = default_pools().collect();
        assert_eq!(choose_subnet(&all, &[]), None);
    }
}
