use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Invalid input to the model or to IPAM. Every variant names the field at fault, because
/// these messages go straight to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("subnet {subnet} is too small: it needs room for a gateway and at least one container (use /30 or larger)")]
    SubnetTooSmall { subnet: Ipv4Net },
    #[error("subnet {subnet} overlaps network {network} ({other})")]
    SubnetOverlap {
        subnet: Ipv4Net,
        network: String,
        other: Ipv4Net,
    },
    #[error("no free address pool left for a new network (all default pools overlap existing networks or host routes); give --subnet")]
    PoolsExhausted,
}

impl ModelError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ModelError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Address management failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("address {ip} is not in subnet {subnet}")]
    OutsideSubnet { ip: Ipv4Addr, subnet: Ipv4Net },
    #[error("address {ip} is reserved in subnet {subnet} ({what})")]
    Reserved {
        ip: Ipv4Addr,
        subnet: Ipv4Net,
        what: &'static str,
    },
    #[error("address {ip} is already in use")]
    InUse { ip: Ipv4Addr },
    #[error("no free address left in {range}")]
    Exhausted { range: Ipv4Net },
}
