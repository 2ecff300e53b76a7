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
    #[error("state store: {0}")]
    Store(String),
    #[error("{0}")]
    Internal(String),
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
            NetdError::Kernel(_) | NetdError::Store(_) | NetdError::Internal(_) => 500,
        }
    }
}

pub type Result<T> = std::result::Result<T, NetdError>;
