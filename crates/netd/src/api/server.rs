//! The API server: thin handlers that hand each request to the engine thread.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bridge_driver::NetworkRequest;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{DisconnectRequest, ProcessRequest};
use crate::engine::{ConnectRequest, EngineHandle, RunRequest};
use crate::error::NetdError;

/// An engine error as an HTTP answer.
#[derive(Debug)]
pub struct ApiError(NetdError);

impl From<NetdError> for ApiError {
    fn from(e: NetdError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!("{}", self.0);
        }
        (status, Json(json!({"message": self.0.to_string()}))).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

fn to_json<T: serde::Serialize>(value: T) -> ApiResult {
    serde_json::to_value(value)
        .map(Json)
        .map_err(|e| ApiError(NetdError::Internal(e.to_string())))
}

pub fn router(engine: EngineHandle) -> Router {
    Router::new()
        .route("/_ping", get(|| async { "OK" }))
        .route("/networks", get(list_networks).post(create_network))
        .route("/networks/prune", post(prune_networks))
        .route(
            "/networks/{name}",
            get(inspect_network).delete(remove_network),
        )
        .route("/networks/{name}/connect", post(connect))
        .route("/networks/{name}/disconnect", post(disconnect))
        .route("/sandboxes", get(list_sandboxes).post(run))
        .route("/sandboxes/{name}", get(inspect_sandbox))
        .route("/sandboxes/{name}", delete(remove_sandbox))
        .route("/sandboxes/{name}/processes", post(add_process))
        .route("/system/reconcile", post(reconcile))
        .with_state(engine)
}

async fn list_networks(State(e): State<EngineHandle>) -> ApiResult {
    to_json(e.call(|e| Ok(e.list_networks())).await?)
}

async fn create_network(
    State(e): State<EngineHandle>,
    Json(req): Json<NetworkRequest>,
) -> ApiResult {
    let network = e.call(move |e| e.create_network(req)).await?;
    to_json(json!({"Id": network.id, "Warning": ""}))
}

async fn inspect_network(
    State(e): State<EngineHandle>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult {
    let mut found = e.call(move |e| e.inspect_networks(&[name])).await?;
    to_json(found.pop())
}

async fn remove_network(
    State(e): State<EngineHandle>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult {
    to_json(json!({"Name": e.call(move |e| e.remove_network(&name)).await?}))
}

async fn prune_networks(State(e): State<EngineHandle>) -> ApiResult {
    to_json(json!({"NetworksDeleted": e.call(|e| e.prune_networks()).await?}))
}

async fn connect(
    State(e): State<EngineHandle>,
    UrlPath(name): UrlPath<String>,
    Json(req): Json<ConnectRequest>,
) -> ApiResult {
    let sandbox = e.call(move |e| e.connect(&name, req)).await?;
    to_json(json!({"Id": sandbox.id}))
}

async fn disconnect(
    State(e): State<EngineHandle>,
    UrlPath(name): UrlPath<String>,
    Json(req): Json<DisconnectRequest>,
) -> ApiResult {
    let sandbox = e.call(move |e| e.disconnect(&name, &req.container)).await?;
    to_json(json!({"Id": sandbox.id}))
}

async fn list_sandboxes(State(e): State<EngineHandle>) -> ApiResult {
    to_json(e.call(|e| Ok(e.list_sandboxes())).await?)
}

async fn run(State(e): State<EngineHandle>, Json(req): Json<RunRequest>) -> ApiResult {
    to_json(
        e.call(move |e| e.run(req).map(|s| e.sandbox_json(&s)))
            .await?,
    )
}

async fn inspect_sandbox(
    State(e): State<EngineHandle>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult {
    to_json(e.call(move |e| e.inspect_sandbox(&name)).await?)
}

#[derive(Debug, Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    force: bool,
}

async fn remove_sandbox(
    State(e): State<EngineHandle>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<RemoveQuery>,
) -> ApiResult {
    to_json(json!({"Id": e.call(move |e| e.remove_sandbox(&name, q.force)).await?}))
}

async fn add_process(
    State(e): State<EngineHandle>,
    UrlPath(name): UrlPath<String>,
    Json(req): Json<ProcessRequest>,
) -> ApiResult {
    e.call(move |e| e.add_process(&name, req.pid)).await?;
    to_json(json!({}))
}

async fn reconcile(State(e): State<EngineHandle>) -> ApiResult {
    to_json(json!({"Repairs": e.call(|e| e.reconcile()).await?}))
}

/// Binds the API socket (mode 0660), replacing a stale socket file left by a crash.
pub fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("{} is in use by a running netd", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}
