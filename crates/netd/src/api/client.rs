//! The API client `netctl` uses: one HTTP/1.1 request per connection over the socket, with
//! the API's types on both sides.

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::ErrorMessage;

/// What a call to netd can fail with, as `netctl` reports it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach netd at {path}: {source} (is netd running? set --socket or NETD_SOCKET)"
    )]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to netd: {what}: {source}")]
    Http {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// netd answered with an error; the message is netd's own.
    #[error("{message}")]
    Api { status: u16, message: String },
}

fn http(
    what: &'static str,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> ClientError {
    move |source| ClientError::Http { what, source }
}

/// A client of one netd.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    pub fn new(socket: impl AsRef<Path>) -> Self {
        Client {
            socket: socket.as_ref().to_path_buf(),
        }
    }

    /// `GET path`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.call::<T, ()>(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post<T: DeserializeOwned, B: Serialize>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.call(Method::POST, path, Some(body)).await
    }

    /// `method path` without a body.
    pub async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<T, ClientError> {
        self.call::<T, ()>(method, path, None).await
    }

    /// Sends one request; returns the answer, or netd's error message.
    async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let response = self.request(method, path, body).await?;
        let body = read_all(response).await?;
        serde_json::from_slice(&body).map_err(|e| http("decoding the answer")(e.into()))
    }

    /// `GET path` of a streamed answer of lines (`/system/events`): `each` gets every line
    /// as it arrives, until netd ends the answer or `each` says stop.
    pub async fn lines(
        &self,
        path: &str,
        mut each: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), ClientError> {
        let response = self.request::<()>(Method::GET, path, None).await?;
        let mut body = response.into_body();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| http("reading the answer")(e.into()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            pending.extend_from_slice(&data);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if !each(&line[..end]) {
                    return Ok(());
                }
            }
        }
        if !pending.is_empty() {
            each(&pending);
        }
        Ok(())
    }

    /// Connects, sends the request and returns the answer's head and body; an error answer
    /// is read and returned as netd's message.
    async fn request<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Connect {
                path: self.socket.display().to_string(),
                source,
            })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http("handshake")(e.into()))?;
        tokio::spawn(connection);
        let bytes = match body {
            Some(v) => Bytes::from(
                serde_json::to_vec(v).map_err(|e| http("encoding the request")(e.into()))?,
            ),
            None => Bytes::new(),
        };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "netd")
            .header("content-type", "application/json")
            .body(Full::new(bytes))
            .map_err(|e| http("building the request")(e.into()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| http("sending the request")(e.into()))?;
        let status = response.status().as_u16();
        if status >= 400 {
            let body = read_all(response).await?;
            let message = serde_json::from_slice::<ErrorMessage>(&body)
                .map(|e| e.message)
                .unwrap_or_else(|_| format!("netd answered {status}"));
            return Err(ClientError::Api { status, message });
        }
        Ok(response)
    }
}

async fn read_all(response: hyper::Response<hyper::body::Incoming>) -> Result<Bytes, ClientError> {
    Ok(response
        .into_body()
        .collect()
        .await
        .map_err(|e| http("reading the answer")(e.into()))?
        .to_bytes())
}
