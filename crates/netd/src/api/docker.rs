//! The Docker Engine network API (`--docker-socket`): the calls `docker network ...` and
//! the Docker SDKs make, answered from netd's networks and sandboxes, with Docker's JSON,
//! status codes and error shape, with or without an API version prefix (`/v1.41/...`).
//! Everything else answers 501, naming what netd does not do.

use std::collections::BTreeMap;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bridge_driver::NetworkRequest;
use serde::Deserialize;
use serde_json::{json, Value};

use super::types::{ConnectRequest, NetworkInfo};
use crate::engine::EngineHandle;
use crate::error::NetdError;

/// The API version netd speaks (the network calls have not changed since).
pub const API_VERSION: &str = "1.41";

/// An error in Docker's shape: `{"message": ...}` with Docker's status.
#[derive(Debug)]
pub struct DockerError(StatusCode, String);

impl From<NetdError> for DockerError {
    fn from(e: NetdError) -> Self {
        let message = e.to_string();
        // Docker answers 403 to removing a network that still has endpoints.
        let status = if message.contains("has active endpoints") {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        };
        DockerError(status, message)
    }
}

impl IntoResponse for DockerError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "message": self.1 }))).into_response()
    }
}

type DockerResult<T> = Result<T, DockerError>;

fn bad_request(message: impl Into<String>) -> DockerError {
    DockerError(StatusCode::BAD_REQUEST, message.into())
}

/// The routes, at `/` and under `/v<version>/`.
pub fn router(engine: EngineHandle) -> Router {
    let api = Router::new()
        .route("/_ping", get(ping).head(ping))
        .route("/version", get(version))
        .route("/networks", get(list))
        .route("/networks/create", post(create))
        .route("/networks/prune", post(prune))
        .route("/networks/{id}", get(inspect).delete(remove))
        .route("/networks/{id}/connect", post(connect))
        .route("/networks/{id}/disconnect", post(disconnect));
    Router::new()
        .merge(api.clone())
        .nest("/{version}", api)
        .fallback(unsupported)
        .layer(axum::middleware::from_fn_with_state(
            super::listen::Api::Docker,
            super::listen::observe,
        ))
        .with_state(engine)
}

async fn ping() -> impl IntoResponse {
    (
        [("API-Version", API_VERSION), ("Content-Type", "text/plain")],
        "OK",
    )
}

async fn version() -> Json<Value> {
    Json(json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": API_VERSION,
        "MinAPIVersion": "1.24",
        "Os": "linux",
        "Arch": std::env::consts::ARCH,
        "Components": [{"Name": "netd", "Version": env!("CARGO_PKG_VERSION")}],
    }))
}

async fn unsupported(uri: Uri, method: axum::http::Method) -> DockerError {
    DockerError(
        StatusCode::NOT_IMPLEMENTED,
        format!(
            "netd serves only Docker's network API; {method} {} is not one of its calls",
            uri.path()
        ),
    )
}

/// `filters`, in the map form the CLI sends (`{"name":{"a":true}}`) or the list form
/// docker-py sends (`{"name":["a"]}`).
fn parse_filters(text: Option<&str>) -> DockerResult<BTreeMap<String, Vec<String>>> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(BTreeMap::new());
    };
    let value: Value =
        serde_json::from_str(text).map_err(|e| bad_request(format!("invalid filter: {e}")))?;
    let Value::Object(map) = value else {
        return Err(bad_request("invalid filter: not a JSON object"));
    };
    let mut out = BTreeMap::new();
    for (key, values) in map {
        let list = match values {
            Value::Array(items) => items
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Value::Object(set) => set
                .into_iter()
                .filter(|(_, on)| on.as_bool().unwrap_or(true))
                .map(|(k, _)| k)
                .collect(),
            Value::String(one) => vec![one],
            _ => return Err(bad_request(format!("invalid filter {key:?}"))),
        };
        if !matches!(
            key.as_str(),
            "name" | "id" | "driver" | "label" | "type" | "scope"
        ) {
            return Err(bad_request(format!("invalid filter '{key}'")));
        }
        out.insert(key, list);
    }
    Ok(out)
}

fn matches(network: &NetworkInfo, filters: &BTreeMap<String, Vec<String>>) -> bool {
    filters.iter().all(|(key, wanted)| {
        wanted.is_empty()
            || wanted.iter().any(|w| match key.as_str() {
                "name" => network.name.contains(w.as_str()),
                "id" => network.id.starts_with(w.as_str()),
                "driver" => network.driver == *w,
                "scope" => network.scope == *w,
                "type" => match w.as_str() {
                    "builtin" => network.name == "bridge",
                    "custom" => network.name != "bridge",
                    _ => false,
                },
                "label" => match w.split_once('=') {
                    Some((k, v)) => network.labels.get(k).is_some_and(|l| l == v),
                    None => network.labels.contains_key(w.as_str()),
                },
                _ => false,
            })
    })
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    filters: Option<String>,
}

async fn list(
    State(e): State<EngineHandle>,
    Query(q): Query<ListQuery>,
) -> DockerResult<Json<Vec<NetworkInfo>>> {
    let filters = parse_filters(q.filters.as_deref())?;
    let all = e.call(|e| Ok(e.list_networks())).await?;
    Ok(Json(
        all.into_iter().filter(|n| matches(n, &filters)).collect(),
    ))
}

async fn inspect(
    State(e): State<EngineHandle>,
    UrlPath(params): UrlPath<std::collections::HashMap<String, String>>,
) -> DockerResult<Json<NetworkInfo>> {
    let id = network_param(&params)?;
    let found = e.call(move |e| e.inspect_networks(&[id])).await?;
    found
        .into_iter()
        .next()
        .map(Json)
        .ok_or_else(|| DockerError(StatusCode::NOT_FOUND, "network not found".into()))
}

/// `POST /networks/create`'s body, as Docker defines it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateBody {
    name: String,
    #[serde(default)]
    driver: Option<String>,
    #[serde(default)]
    internal: bool,
    #[serde(default, rename = "EnableIPv6")]
    enable_ipv6: bool,
    #[serde(default, rename = "IPAM")]
    ipam: Option<IpamBody>,
    #[serde(default)]
    options: Option<BTreeMap<String, String>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpamBody {
    #[serde(default)]
    config: Option<Vec<PoolBody>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PoolBody {
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default, rename = "IPRange")]
    ip_range: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
}

/// The `{id}` of a route, under a version prefix or not.
fn network_param(params: &std::collections::HashMap<String, String>) -> DockerResult<String> {
    params
        .get("id")
        .cloned()
        .ok_or_else(|| bad_request("missing network id"))
}

fn json_body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> DockerResult<T> {
    serde_json::from_slice(bytes).map_err(|e| bad_request(format!("invalid JSON: {e}")))
}

async fn create(
    State(e): State<EngineHandle>,
    body: axum::body::Bytes,
) -> DockerResult<(StatusCode, Json<Value>)> {
    let body: CreateBody = json_body(&body)?;
    if body.enable_ipv6 {
        return Err(bad_request("EnableIPv6: netd's networks are IPv4 only"));
    }
    let pools = body.ipam.and_then(|i| i.config).unwrap_or_default();
    if pools.len() > 1 {
        return Err(bad_request(
            "IPAM.Config: netd takes one IPv4 pool per network",
        ));
    }
    let pool = pools.into_iter().next().unwrap_or_default();
    let request = NetworkRequest {
        name: body.name,
        driver: body.driver.filter(|d| !d.is_empty()),
        subnet: pool.subnet,
        gateway: pool.gateway,
        ip_range: pool.ip_range,
        internal: body.internal,
        options: body.options.unwrap_or_default(),
        labels: body.labels.unwrap_or_default(),
    };
    if request.driver.as_deref().is_some_and(|d| d != "bridge") {
        return Err(bad_request(format!(
            "driver {:?}: the Docker API serves bridge networks (cluster networks: netctl network create --driver)",
            request.driver.unwrap_or_default()
        )));
    }
    let network = e.call(move |e| e.create_network(request)).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "Id": network.id, "Warning": "" })),
    ))
}

async fn remove(
    State(e): State<EngineHandle>,
    UrlPath(params): UrlPath<std::collections::HashMap<String, String>>,
) -> DockerResult<StatusCode> {
    let id = network_param(&params)?;
    e.call(move |e| e.remove_network(&id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn prune(State(e): State<EngineHandle>) -> DockerResult<Json<Value>> {
    let deleted = e.call(|e| e.prune_networks()).await?;
    Ok(Json(json!({ "NetworksDeleted": deleted })))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConnectBody {
    container: String,
    #[serde(default)]
    endpoint_config: Option<EndpointBody>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EndpointBody {
    #[serde(default, rename = "IPAMConfig")]
    ipam_config: Option<EndpointIpam>,
    #[serde(default)]
    aliases: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct EndpointIpam {
    #[serde(default, rename = "IPv4Address")]
    ipv4_address: Option<String>,
}

async fn connect(
    State(e): State<EngineHandle>,
    UrlPath(params): UrlPath<std::collections::HashMap<String, String>>,
    body: axum::body::Bytes,
) -> DockerResult<StatusCode> {
    let id = network_param(&params)?;
    let body: ConnectBody = json_body(&body)?;
    let endpoint = body.endpoint_config.unwrap_or_default();
    let request = ConnectRequest {
        container: body.container,
        ip: endpoint
            .ipam_config
            .and_then(|i| i.ipv4_address)
            .filter(|ip| !ip.is_empty()),
        aliases: endpoint.aliases.unwrap_or_default(),
    };
    e.call(move |e| e.connect(&id, request)).await?;
    Ok(StatusCode::OK)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DisconnectBody {
    container: String,
}

async fn disconnect(
    State(e): State<EngineHandle>,
    UrlPath(params): UrlPath<std::collections::HashMap<String, String>>,
    body: axum::body::Bytes,
) -> DockerResult<StatusCode> {
    let id = network_param(&params)?;
    let body: DisconnectBody = json_body(&body)?;
    e.call(move |e| e.disconnect(&id, &body.container)).await?;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_in_both_forms() {
        let map = parse_filters(Some(r#"{"name":{"mynet":true},"driver":{"bridge":true}}"#))
            .expect("map form");
        let list =
            parse_filters(Some(r#"{"name":["mynet"],"driver":["bridge"]}"#)).expect("list form");
        assert_eq!(map, list);
        assert!(parse_filters(Some(r#"{"colour":["blue"]}"#)).is_err());
        assert!(parse_filters(Some("{nope")).is_err());
        assert!(parse_filters(None).expect("none").is_empty());
    }
}
