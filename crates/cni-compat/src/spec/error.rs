//! CNI errors: a code from the spec, a message and details, printed as the spec's JSON on
//! stdout (with a non-zero exit).

use serde::Serialize;

/// The spec's well-known error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    IncompatibleVersion = 1,
    UnsupportedField = 2,
    UnknownContainer = 3,
    InvalidEnvironment = 4,
    Io = 5,
    Decode = 6,
    InvalidConfig = 7,
    TryAgainLater = 11,
    /// STATUS: the plugin cannot ADD now.
    NotAvailable = 50,
    /// STATUS: and existing attachments may be degraded.
    NotAvailableDegraded = 51,
    /// Plugin-specific (the spec reserves 100 and up): a kernel operation failed.
    Kernel = 100,
    /// Plugin-specific: no address left in a range.
    Exhausted = 101,
    /// Plugin-specific: CHECK found something other than what ADD made.
    CheckFailed = 102,
    /// Plugin-specific: a delegated plugin failed.
    Delegate = 103,
}

/// An error as a plugin reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        CniError {
            code: code as u32,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    pub fn config(msg: impl Into<String>) -> Self {
        Self::new(Code::InvalidConfig, msg)
    }

    pub fn io(msg: impl Into<String>) -> Self {
        Self::new(Code::Io, msg)
    }

    /// The spec's error JSON.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        serde_json::to_string(&Wire {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        })
        .unwrap_or_else(|_| format!("{{\"code\":{},\"msg\":\"error\"}}", self.code))
    }
}

impl From<linkd::LinkdError> for CniError {
    /// The kernel's operation and errno text in `msg`, the errno's name in `details`.
    fn from(e: linkd::LinkdError) -> Self {
        match &e {
            linkd::LinkdError::NotABridge(name) => {
                return CniError::config(format!(
                    "bridge: {name:?} already exists and is not a bridge"
                ))
            }
            linkd::LinkdError::AddressTaken { link, have, want } => {
                return CniError::config(format!(
                    "bridge {link} already has address {have}, not {want} (set forceAddress to replace it)"
                ))
            }
            _ => {}
        }
        let details = e
            .errno()
            .map(|n| format!("{:?}", nix::errno::Errno::from_raw(n)))
            .unwrap_or_default();
        CniError::new(Code::Kernel, e.to_string()).with_details(details)
    }
}

pub type Result<T> = std::result::Result<T, CniError>;

/// Says what a plugin was doing when a step failed: `configuring eth0 in /run/netns/x:
/// add route 192.0.2.0/24 via 203.0.113.1: Network is unreachable (os error 101)`.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: Into<CniError>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| {
            let mut e: CniError = e.into();
            e.msg = format!("{}: {}", what(), e.msg);
            e
        })
    }
}
