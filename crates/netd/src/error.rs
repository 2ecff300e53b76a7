use bridge_driver::{IpamError, ModelError};
use linkd::LinkdError;

/// What an operation of the daemon can fail with. The variant decides the HTTP status; the
/// message goes to the user as is, so it names the field or object at fault.
#[derive(Debug, thiserror::Error)]
pub enum NetdError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Kernel(#[from] LinkdError),
    /// The state store refused or failed (the cause is kept).
    #[error("state store: {what}: {source}")]
    Store {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file, thread or process the daemon needs could not be made or used.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A service the operation needs does not answer now (the cluster store).
    #[error("{0}")]
    Unavailable(String),
    /// Something that should not happen (a stopped engine thread, an inconsistent record).
    #[error("{0}")]
    Internal(String),
}

impl NetdError {
    /// An I/O failure, saying what was being done to what.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        NetdError::Io {
            what: what.into(),
            source,
        }
    }

    /// A failure of the state store.
    pub fn store(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        NetdError::Store {
            what: what.into(),
            source: source.into(),
        }
    }
}

impl NetdError {
    /// The HTTP status the API answers with.
    pub fn status(&self) -> u16 {
        match self {
            NetdError::Invalid(_) | NetdError::Model(_) => 400,
            NetdError::NotFound(_) => 404,
            NetdError::Conflict(_) => 409,
            NetdError::Ipam(IpamError::InUse { .. })
            | NetdError::Ipam(IpamError::Exhausted { .. }) => 409,
            NetdError::Ipam(_) => 400,
            NetdError::Kernel(_)
            | NetdError::Store { .. }
            | NetdError::Io { .. }
            | NetdError::Internal(_) => 500,
            NetdError::Unavailable(_) => 503,
        }
    }
}

pub type Result<T> = std::result::Result<T, NetdError>;
