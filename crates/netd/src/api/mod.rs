//! netd's API: HTTP/JSON over a unix socket. Errors are `{"message": "..."}` with a
//! status that says what kind of failure it was, as in Docker's Engine API.

pub mod client;
pub mod docker;
pub mod listen;
pub mod metrics;
pub mod operations;
pub mod server;
pub mod types;
