//! Sysctls under `/proc/sys`, which for `net/` are those of the calling thread's network
//! namespace.

use std::fs;
use std::io::Write;

use crate::error::{LinkdError, Result};

fn sysctl_error(key: &str, source: std::io::Error) -> LinkdError {
    LinkdError::Sysctl {
        key: key.to_string(),
        source,
    }
}

/// Writes a sysctl given as a path below `/proc/sys` (`net/ipv4/ip_forward`), skipping the
/// write when the value is already there.
pub fn set(key: &str, value: &str) -> Result<()> {
    let path = format!("/proc/sys/{key}");
    if let Ok(current) = fs::read_to_string(&path) {
        if current.trim() == value {
            return Ok(());
        }
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| sysctl_error(key, e))?;
    file.write_all(value.as_bytes())
        .map_err(|e| sysctl_error(key, e))
}

/// Reads a sysctl given as a path below `/proc/sys`.
pub fn get(key: &str) -> Result<String> {
    fs::read_to_string(format!("/proc/sys/{key}"))
        .map(|v| v.trim().to_string())
        .map_err(|e| sysctl_error(key, e))
}
