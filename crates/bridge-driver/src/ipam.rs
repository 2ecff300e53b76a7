//! Address allocation within one network's subnet.
//!
//! Allocation is sequential from the last address handed out, wrapping around, like
//! Docker's: a released address is not reused at once, so stale ARP and conntrack entries
//! of a removed container do not hit the next one.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::error::IpamError;

/// The addresses of one subnet: which are taken and where allocation continues.
#[derive(Debug, Clone)]
pub struct Pool {
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
    /// Where dynamic allocation draws from (the subnet, or `--ip-range`).
    range: Ipv4Net,
    allocated: BTreeSet<u32>,
    /// The next address dynamic allocation tries.
    next: u32,
}

impl Pool {
    pub fn new(subnet: Ipv4Net, gateway: Ipv4Addr, range: Option<Ipv4Net>) -> Self {
        let range = range.unwrap_or(subnet);
        Pool {
            subnet,
            gateway,
            range,
            allocated: BTreeSet::new(),
            next: u32::from(range.network()),
        }
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    pub fn in_use(&self) -> usize {
        self.allocated.len()
    }

    fn check(&self, ip: Ipv4Addr) -> Result<(), IpamError> {
        if !self.subnet.contains(&ip) {
            return Err(IpamError::OutsideSubnet {
                ip,
                subnet: self.subnet,
            });
        }
        let what = if ip == self.subnet.network() {
            Some("network address")
        } else if ip == self.subnet.broadcast() {
            Some("broadcast address")
        } else if ip == self.gateway {
            Some("gateway")
        } else {
            None
        };
        if let Some(what) = what {
            return Err(IpamError::Reserved {
                ip,
                subnet: self.subnet,
                what,
            });
        }
        if self.allocated.contains(&u32::from(ip)) {
            return Err(IpamError::InUse { ip });
        }
        Ok(())
    }

    /// Takes a specific address (`--ip`, or an address recorded before a restart).
    pub fn reserve(&mut self, ip: Ipv4Addr) -> Result<(), IpamError> {
        self.check(ip)?;
        self.allocated.insert(u32::from(ip));
        Ok(())
    }

    /// Takes the next free address of the range after the last one handed out.
    pub fn allocate(&mut self) -> Result<Ipv4Addr, IpamError> {
        let first = u32::from(self.range.network());
        let last = u32::from(self.range.broadcast());
        let size = u64::from(last - first) + 1;
        let mut candidate = self.next;
        for _ in 0..size {
            if candidate > last || candidate < first {
                candidate = first;
            }
            let ip = Ipv4Addr::from(candidate);
            if self.check(ip).is_ok() {
                self.allocated.insert(candidate);
                self.next = candidate.wrapping_add(1);
                return Ok(ip);
            }
            candidate = candidate.wrapping_add(1);
        }
        Err(IpamError::Exhausted { range: self.range })
    }

    /// Gives an address back; releasing a free address is harmless.
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.allocated.remove(&u32::from(ip));
    }

    pub fn is_allocated(&self, ip: Ipv4Addr) -> bool {
        self.allocated.contains(&u32::from(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(subnet: &str, gw: &str, range: Option<&str>) -> Pool {
        Pool::new(
            subnet.parse().expect("subnet"),
            gw.parse().expect("gw"),
            range.map(|r| r.parse().expect("range")),
        )
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    #[test]
    fn allocates_sequentially_skipping_reserved() {
        let mut p = pool("10.1.0.0/24", "10.1.0.1", None);
        assert_eq!(p.allocate(), Ok(ip("10.1.0.2")));
        assert_eq!(p.allocate(), Ok(ip("10.1.0.3")));
    }

    #[test]
    fn released_addresses_are_not_reused_at_once() {
        let mut p = pool("10.1.0.0/24", "10.1.0.1", None);
        let a = p.allocate().expect("a");
        let b = p.allocate().expect("b");
        p.release(a);
        let c = p.allocate().expect("c");
        assert_ne!(c, a);
        assert!(c > b);
    }

    #[test]
    fn exhaustion_and_wrap_around() {
        let mut p = pool("10.1.0.0/29", "10.1.0.1", None);
        let got: Vec<_> = (0..5).map(|_| p.allocate().expect("free")).collect();
        assert_eq!(got.first(), Some(&ip("10.1.0.2")));
        assert_eq!(got.last(), Some(&ip("10.1.0.6")));
        assert_eq!(
            p.allocate(),
            Err(IpamError::Exhausted {
                range: "10.1.0.0/29".parse().expect("net")
            })
        );
        p.release(ip("10.1.0.4"));
        assert_eq!(
            p.allocate(),
            Ok(ip("10.1.0.4")),
            "wraps around to the freed address"
        );
    }

    #[test]
    fn reservations() {
        let mut p = pool("10.1.0.0/24", "10.1.0.1", None);
        assert!(matches!(
            p.reserve(ip("10.1.0.1")),
            Err(IpamError::Reserved {
                what: "gateway",
                ..
            })
        ));
        assert!(matches!(
            p.reserve(ip("10.1.0.0")),
            Err(IpamError::Reserved { .. })
        ));
        assert!(matches!(
            p.reserve(ip("10.1.0.255")),
            Err(IpamError::Reserved { .. })
        ));
        assert!(matches!(
            p.reserve(ip("10.2.0.5")),
            Err(IpamError::OutsideSubnet { .. })
        ));
        p.reserve(ip("10.1.0.2")).expect("free");
        assert_eq!(
            p.reserve(ip("10.1.0.2")),
            Err(IpamError::InUse { ip: ip("10.1.0.2") })
        );
        assert_eq!(
            p.allocate(),
            Ok(ip("10.1.0.3")),
            "dynamic allocation skips the reserved one"
        );
    }

    #[test]
    fn ip_range_limits_dynamic_allocation_only() {
        let mut p = pool("10.1.0.0/24", "10.1.0.1", Some("10.1.0.128/30"));
        assert_eq!(p.allocate(), Ok(ip("10.1.0.128")));
        assert_eq!(p.allocate(), Ok(ip("10.1.0.129")));
        assert_eq!(p.allocate(), Ok(ip("10.1.0.130")));
        assert_eq!(p.allocate(), Ok(ip("10.1.0.131")));
        assert!(p.allocate().is_err());
        p.reserve(ip("10.1.0.10"))
            .expect("static address outside the range is fine");
    }
}
