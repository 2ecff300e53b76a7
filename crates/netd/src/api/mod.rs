//! netd's API: HTTP/JSON over a unix socket. Errors are `{"message": "..."}` with a
//! status that says what kind of failure it was, as in Docker's Engine API.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};

/// Body of `POST /networks/{name}/disconnect`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DisconnectRequest {
    pub container: String,
}

/// Body of `POST /sandboxes/{name}/processes`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessRequest {
    pub pid: i32,
}
