use std::io;

/// Everything the kernel boundary can report. Callers match on the variants that carry
/// meaning (a link that does not exist, a name that is taken) and pass the rest on.
#[derive(Debug, thiserror::Error)]
pub enum LinkdError {
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("{op}: {source}")]
    Kernel {
        op: String,
        #[source]
        source: io::Error,
    },
    /// The kernel's answer was cut short or mis-sized.
    #[error("netlink: cannot decode the kernel's answer: {0}")]
    Decode(String),
    #[error("netlink: cannot decode the kernel's answer: {0}")]
    DecodeMessage(#[source] netlink_packet_core::DecodeError),
    #[error("link {0} does not exist")]
    NoSuchLink(String),
    /// A link of a planned bridge's name that netd does not own.
    #[error("interface {0} already exists and is not managed by netd")]
    Foreign(String),
    #[error("{0} already exists and is not a bridge")]
    NotABridge(String),
    /// Another address of the planned address's subnet is on the link.
    #[error("{link} already has address {have}, not {want}")]
    AddressTaken {
        link: String,
        have: ipnet::Ipv4Net,
        want: ipnet::Ipv4Net,
    },
    #[error("network namespace {path}: {source}")]
    Netns {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("sysctl {key}: {source}")]
    Sysctl {
        key: String,
        #[source]
        source: io::Error,
    },
    /// An iptables tool could not be run, fed or waited for.
    #[error("firewall: {what} {program}: {source}")]
    Tool {
        what: &'static str,
        program: String,
        #[source]
        source: io::Error,
    },
    /// An iptables tool ran and refused the change.
    #[error("firewall: {program} failed ({status}): {reason}")]
    ToolFailed {
        program: String,
        status: std::process::ExitStatus,
        reason: String,
    },
    /// A command to start in a sandbox could not be run (see `enter`).
    #[error("{0}")]
    Spawn(#[source] io::Error),
}

impl LinkdError {
    /// The errno behind a kernel error, so callers can tell EEXIST from ENOENT.
    pub fn errno(&self) -> Option<i32> {
        match self {
            LinkdError::Kernel { source, .. }
            | LinkdError::Netns { source, .. }
            | LinkdError::Sysctl { source, .. }
            | LinkdError::Spawn(source)
            | LinkdError::Tool { source, .. }
            | LinkdError::Socket(source) => source.raw_os_error(),
            _ => None,
        }
    }

    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, LinkdError::NoSuchLink(_))
            || matches!(
                self.errno(),
                Some(libc::ENODEV) | Some(libc::ENOENT) | Some(libc::ESRCH)
            )
    }
}

pub type Result<T> = std::result::Result<T, LinkdError>;
