//! Names and identifiers: what users may call things, and the names netd derives for the
//! kernel objects it owns.

use sha2::{Digest, Sha256};

use crate::error::ModelError;

/// Validates a host name (`--hostname`, an OCI config's `hostname`) as RFC 1123 and the
/// kernel take it: dot-separated labels of letters, digits, `-` (not first or last) and
/// `_` (which resolvers accept and images use), at most 63 each and 64 in all (the
/// kernel's `HOST_NAME_MAX`).
pub fn validate_hostname(field: &str, name: &str) -> Result<(), ModelError> {
    if name.is_empty() {
        return Err(ModelError::invalid(field, "must not be empty"));
    }
    if name.len() > 64 {
        return Err(ModelError::invalid(
            field,
            format!("host name {name:?} is longer than 64 characters"),
        ));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(ModelError::invalid(
                field,
                format!(
                    "invalid host name {name:?}: labels of letters, digits and '-' \
                     (not first or last), separated by dots"
                ),
            ));
        }
    }
    Ok(())
}

/// Validates a network or sandbox name the way Docker does: a letter or digit first, then
/// letters, digits, `_`, `.` or `-`.
pub fn validate_name(field: &str, name: &str) -> Result<(), ModelError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if name.is_empty() {
        return Err(ModelError::invalid(field, "must not be empty"));
    }
    if !first_ok || !rest_ok {
        return Err(ModelError::invalid(
            field,
            format!("invalid name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"),
        ));
    }
    if name.len() > 64 {
        return Err(ModelError::invalid(
            field,
            format!("name {name:?} is longer than 64 characters"),
        ));
    }
    Ok(())
}

/// Validates a Linux interface name (at most 15 bytes, no `/`, `:` or white space).
pub fn validate_ifname(field: &str, name: &str) -> Result<(), ModelError> {
    if name.is_empty() || name.len() > 15 {
        return Err(ModelError::invalid(
            field,
            format!("interface name {name:?} must be 1 to 15 characters"),
        ));
    }
    if name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(ModelError::invalid(
            field,
            format!("invalid interface name {name:?}"),
        ));
    }
    Ok(())
}

/// The prefix of every host-side veth netd creates, so netd's links can be found and
/// leaks counted: `nd` + 10 hex digits of the sandbox id + `e` + the interface number.
pub const VETH_PREFIX: &str = "nd";

/// The host-side veth name for interface `ethN` of a sandbox.
pub fn host_veth_name(sandbox_id: &str, interface: u32) -> String {
    let short: String = sandbox_id.chars().take(10).collect();
    format!("{VETH_PREFIX}{short}e{interface}")
}

/// Splits a host-side veth name back into (sandbox id prefix, interface number).
pub fn parse_host_veth_name(name: &str) -> Option<(&str, u32)> {
    let rest = name.strip_prefix(VETH_PREFIX)?;
    if rest.len() < 12 {
        return None;
    }
    let (short, tail) = rest.split_at(10);
    if !short
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    {
        return None;
    }
    let number = tail.strip_prefix('e')?.parse().ok()?;
    Some((short, number))
}

/// A short stable hash of a network id, used in the names of its firewall chains.
pub fn short_hash(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// The default bridge name of a user network: `br-` and the first 12 hex of its id.
pub fn default_bridge_name(network_id: &str) -> String {
    format!("br-{}", &network_id[..network_id.len().min(12)])
}

/// The alias netd puts on the bridges it creates, naming the network that owns it.
pub fn bridge_alias(network_id: &str) -> String {
    format!("netd network {network_id}")
}

/// The network id a bridge alias names, if the bridge is netd's.
pub fn network_of_alias(alias: &str) -> Option<&str> {
    alias.strip_prefix("netd network ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_and_round_trip() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let name = host_veth_name(id, 12);
        assert!(name.len() <= 15, "{name}");
        assert_eq!(parse_host_veth_name(&name), Some(("0123456789", 12)));
        assert_eq!(parse_host_veth_name("eth0"), None);
        assert_eq!(parse_host_veth_name("ndXYZ"), None);
    }

    #[test]
    fn names_follow_docker_rules() {
        assert!(validate_name("name", "my-net_1.0").is_ok());
        assert!(validate_name("name", "-bad").is_err());
        assert!(validate_name("name", "").is_err());
        assert!(validate_name("name", "a b").is_err());
        assert!(validate_ifname("bridge-name", "br-0123456789ab").is_ok());
        assert!(validate_ifname("bridge-name", "0123456789abcdef").is_err());
        assert!(validate_ifname("bridge-name", "a/b").is_err());
    }

    #[test]
    fn host_names_follow_rfc_1123() {
        for good in [
            "web",
            "web-1",
            "a.b.example",
            "1st",
            "my_host",
            &"x".repeat(63),
        ] {
            assert!(validate_hostname("--hostname", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-web",
            "web-",
            "a..b",
            "a/b",
            "web.",
            "sp ace",
            &"x".repeat(65),
        ] {
            let error = validate_hostname("--hostname", bad)
                .unwrap_err()
                .to_string();
            assert!(error.contains("--hostname"), "{bad}: {error}");
        }
    }

    #[test]
    fn short_hash_is_stable() {
        assert_eq!(short_hash("x"), short_hash("x"));
        assert_eq!(short_hash("x").len(), 12);
        assert_ne!(short_hash("x"), short_hash("y"));
    }
}
