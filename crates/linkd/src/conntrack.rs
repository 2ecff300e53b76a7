//! Connection tracking entries, through the `conntrack` tool.

use std::process::{Command, Stdio};

/// Deletes the entries of UDP flows to a local port, so that flows which went elsewhere
/// (or nowhere) before a port mapping changed do not stay blackholed: UDP has no handshake
/// to start a new entry. Best effort: a missing tool or no entry is not an error.
pub fn flush_udp_to_port(port: u16) {
    let _ = Command::new("conntrack")
        .args(["-D", "-p", "udp", "--orig-port-dst", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
