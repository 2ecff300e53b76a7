//! The API server: thin handlers that hand each request to the engine thread.

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use bridge_driver::cluster::FlannelConfig;
use bridge_driver::NetworkRequest;
use serde::Deserialize;

use super::types::{
    ConnectRequest, DisconnectRequest, Empty, ErrorMessage, LabelRequest, NetworkCreated,
    NetworkInfo, NetworkPolicy, NetworkRemoved, NetworksPruned, NodeRemoved, PoliciesApplied,
    PolicyApplied, PolicyApplyRequest, PolicyQuery, ProcessRequest, Reconciled, RunRequest,
    SandboxId, SandboxInfo, SystemInfo,
};
use super::types::{Event, EventsQuery};
use crate::cluster::{ClusterHandle, NodeLease};
use crate::engine::{AttachRequest, EngineHandle};
use crate::error::NetdError;
use axum::body::Bytes;
use std::collections::BTreeMap;

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
        let body = ErrorMessage {
            message: self.0.to_string(),
        };
        (status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

/// What the handlers reach: the engine, and the cluster agent when netd is clustered.
#[derive(Debug, Clone)]
pub struct Services {
    pub engine: EngineHandle,
    pub cluster: Option<ClusterHandle>,
    /// When netd started, and the etcd members it was given, for `system info`.
    pub started: std::time::Instant,
    pub cluster_store: Option<String>,
}

impl axum::extract::FromRef<Services> for EngineHandle {
    fn from_ref(services: &Services) -> EngineHandle {
        services.engine.clone()
    }
}

impl Services {
    fn cluster(&self, what: &str) -> Result<&ClusterHandle, ApiError> {
        self.cluster.as_ref().ok_or_else(|| {
            ApiError(NetdError::Invalid(format!(
                "{what}: this netd has no cluster store (start it with --cluster-store etcd://HOST:PORT)"
            )))
        })
    }
}

pub fn router(services: Services) -> Router {
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
        .route("/sandboxes/attach", post(attach))
        .route("/containers/{id}", delete(detach_container))
        .route("/sandboxes/{name}", get(inspect_sandbox))
        .route("/sandboxes/{name}", delete(remove_sandbox))
        .route("/sandboxes/{name}/processes", post(add_process))
        .route("/sandboxes/{name}/labels", post(label_sandbox))
        .route("/policies", get(list_policies).post(apply_policies))
        .route(
            "/policies/{namespace}/{name}",
            get(inspect_policy).delete(remove_policy),
        )
        .route("/system/reconcile", post(reconcile))
        .route("/system/info", get(system_info))
        .route("/system/events", get(events))
        .route("/cluster/nodes", get(cluster_nodes))
        .route("/cluster/nodes/{name}", delete(remove_cluster_node))
        .layer(axum::middleware::from_fn_with_state(
            super::listen::Api::Netd,
            super::listen::observe,
        ))
        .with_state(services)
}

async fn list_networks(State(e): State<EngineHandle>) -> ApiResult<Vec<NetworkInfo>> {
    Ok(Json(e.call(|e| Ok(e.list_networks())).await?))
}

async fn create_network(
    State(services): State<Services>,
    Json(req): Json<NetworkRequest>,
) -> ApiResult<NetworkCreated> {
    if let Some(config) = FlannelConfig::from_network_request(&req).map_err(NetdError::from)? {
        let driver = req.driver.clone().unwrap_or_default();
        let cluster = services.cluster(&format!("--driver {driver}"))?;
        let id = cluster.create(req.name, config).await?;
        return Ok(Json(NetworkCreated {
            id,
            warning: String::new(),
        }));
    }
    let network = services.engine.call(move |e| e.create_network(req)).await?;
    Ok(Json(NetworkCreated {
        id: network.id,
        warning: String::new(),
    }))
}

async fn inspect_network(
    State(e): State<EngineHandle>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<NetworkInfo> {
    let mut found = e.call(move |e| e.inspect_networks(&[name])).await?;
    found
        .pop()
        .map(Json)
        .ok_or_else(|| ApiError(NetdError::Internal("no network in the answer".into())))
}

async fn remove_network(
    State(services): State<Services>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<NetworkRemoved> {
    let reference = name.clone();
    let cluster_name = services
        .engine
        .call(move |e| Ok(e.cluster_network_name(&reference)))
        .await?;
    if let (Some(name), Some(cluster)) = (cluster_name, services.cluster.as_ref()) {
        let name = cluster.remove(name).await?;
        return Ok(Json(NetworkRemoved { name }));
    }
    let name = services
        .engine
        .call(move |e| e.remove_network(&name))
        .await?;
    Ok(Json(NetworkRemoved { name }))
}

async fn cluster_nodes(State(services): State<Services>) -> ApiResult<Vec<NodeLease>> {
    Ok(Json(services.cluster("cluster nodes")?.nodes().await?))
}

async fn remove_cluster_node(
    State(services): State<Services>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<NodeRemoved> {
    let released = services
        .cluster("cluster node rm")?
        .remove_node(name)
        .await?;
    Ok(Json(NodeRemoved { released }))
}

async fn prune_networks(State(e): State<EngineHandle>) -> ApiResult<NetworksPruned> {
    let networks_deleted = e.call(|e| e.prune_networks()).await?;
    Ok(Json(NetworksPruned { networks_deleted }))
}

async fn connect(
    State(e): State<EngineHandle>,
    UrlPath(name): UrlPath<String>,
    Json(req): Json<ConnectRequest>,
) -> ApiResult<SandboxId> {
    let sandbox = e.call(move |e| e.connect(&name, req)).await?;
    Ok(Json(SandboxId { id: sandbox.id }))
}

async fn disconnect(
    State(e): State<EngineHandle>,
    UrlPath(name): UrlPath<String>,
    Json(req): Json<DisconnectRequest>,
) -> ApiResult<SandboxId> {
    let sandbox = e.call(move |e| e.disconnect(&name, &req.container)).await?;
    Ok(Json(SandboxId { id: sandbox.id }))
}

async fn list_sandboxes(State(e): State<EngineHandle>) -> ApiResult<Vec<SandboxInfo>> {
    Ok(Json(e.call(|e| Ok(e.list_sandboxes())).await?))
}

async fn run(State(e): State<EngineHandle>, Json(req): Json<RunRequest>) -> ApiResult<SandboxInfo> {
    let info = e
        .call(move |e| e.run(req).map(|s| e.sandbox_info(&s)))
        .await?;
    Ok(Json(info))
}

async fn attach(
    State(e): State<EngineHandle>,
    Json(req): Json<AttachRequest>,
) -> ApiResult<SandboxInfo> {
    let info = e
        .call(move |e| e.attach(req).map(|s| e.sandbox_info(&s)))
        .await?;
    Ok(Json(info))
}

async fn detach_container(
    State(e): State<EngineHandle>,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Empty> {
    e.call(move |e| e.detach_container(&id)).await?;
    Ok(Json(Empty {}))
}

async fn inspect_sandbox(
    State(e): State<EngineHandle>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<SandboxInfo> {
    Ok(Json(e.call(move |e| e.inspect_sandbox(&name)).await?))
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
) -> ApiResult<SandboxId> {
    let id = e.call(move |e| e.remove_sandbox(&name, q.force)).await?;
    Ok(Json(SandboxId { id }))
}

async fn add_process(
    State(e): State<EngineHandle>,
    UrlPath(name): UrlPath<String>,
    Json(req): Json<ProcessRequest>,
) -> ApiResult<Empty> {
    e.call(move |e| e.add_process(&name, req.pid)).await?;
    Ok(Json(Empty {}))
}

async fn label_sandbox(
    State(e): State<EngineHandle>,
    UrlPath(name): UrlPath<String>,
    Json(req): Json<LabelRequest>,
) -> ApiResult<SandboxInfo> {
    let info = e
        .call(move |e| e.label(&name, &req.changes).map(|s| e.sandbox_info(&s)))
        .await?;
    Ok(Json(info))
}

/// On a clustered node policies are the cluster's: they go through the store.
async fn apply_policies(
    State(services): State<Services>,
    Json(req): Json<PolicyApplyRequest>,
) -> ApiResult<PoliciesApplied> {
    let applied = match &services.cluster {
        Some(cluster) => cluster.apply_policies(req.text, req.namespace).await?,
        None => {
            services
                .engine
                .call(move |e| e.apply_policies(&req.text, req.namespace.as_deref()))
                .await?
        }
    };
    Ok(Json(PoliciesApplied {
        applied: applied
            .into_iter()
            .map(|a| PolicyApplied {
                policy: a.key,
                action: a.action.to_string(),
            })
            .collect(),
    }))
}

async fn list_policies(
    State(e): State<EngineHandle>,
    Query(q): Query<PolicyQuery>,
) -> ApiResult<Vec<NetworkPolicy>> {
    Ok(Json(
        e.call(move |e| Ok(e.policies(q.namespace.as_deref())))
            .await?,
    ))
}

async fn inspect_policy(
    State(e): State<EngineHandle>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
) -> ApiResult<NetworkPolicy> {
    Ok(Json(e.call(move |e| e.policy(&namespace, &name)).await?))
}

async fn remove_policy(
    State(services): State<Services>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
) -> ApiResult<Empty> {
    match &services.cluster {
        Some(cluster) => {
            cluster.remove_policy(namespace, name).await?;
        }
        None => {
            services
                .engine
                .call(move |e| e.remove_policy(&namespace, &name).map(|_| ()))
                .await?;
        }
    }
    Ok(Json(Empty {}))
}

async fn system_info(State(services): State<Services>) -> ApiResult<SystemInfo> {
    let (counts, root, run_dir) = services
        .engine
        .call(|e| {
            let paths = e.paths();
            Ok((e.counts(), paths.root.clone(), paths.run_dir.clone()))
        })
        .await?;
    let (networks, sandboxes, published_ports, policies) = counts;
    let backend = tokio::task::spawn_blocking(|| linkd::Iptables::default().backend())
        .await
        .map_err(|e| NetdError::Internal(format!("firewall backend: {e}")))?;
    Ok(Json(SystemInfo {
        version: crate::VERSION.to_string(),
        firewall_backend: match backend {
            linkd::Backend::Nft => "nft".into(),
            linkd::Backend::Legacy => "legacy".into(),
        },
        networks,
        sandboxes,
        published_ports,
        policies,
        root,
        run_dir,
        cluster_store: services.cluster_store.clone(),
        uptime_seconds: services.started.elapsed().as_secs(),
    }))
}

async fn reconcile(State(e): State<EngineHandle>) -> ApiResult<Reconciled> {
    let repairs = e
        .call(|e| e.reconcile(Some(crate::metrics::Trigger::on_demand)))
        .await?;
    for repair in &repairs {
        tracing::warn!("reconcile repair: {repair}");
    }
    Ok(Json(Reconciled { repairs }))
}

/// `GET /system/events`: the kept events since `since`, then each new one as it happens,
/// one JSON object per line, until `until` (when given) or until the caller hangs up.
async fn events(Query(query): Query<EventsQuery>) -> Result<Response, ApiError> {
    let filters = match query.filters.as_deref() {
        None | Some("") => BTreeMap::new(),
        Some(text) => serde_json::from_str::<BTreeMap<String, Vec<String>>>(text).map_err(|e| {
            ApiError(NetdError::Invalid(format!(
                "filters: {e} (expected {{\"key\": [\"value\", ...]}})"
            )))
        })?,
    };
    let filters = crate::events::Filters::new(filters)
        .map_err(|e| ApiError(NetdError::Invalid(e.to_string())))?;
    let until = query.until;
    let (past, mut live) = crate::events::subscribe(query.since);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let line = |event: &Event| {
        let mut line = serde_json::to_vec(event).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    };
    tokio::spawn(async move {
        let ended = |event: &Event| until.is_some_and(|u| event.time_nano > u);
        for event in past.iter().filter(|e| filters.matches(e)) {
            if ended(event) || tx.send(line(event)).await.is_err() {
                return;
            }
        }
        let wait = until.map(|u| {
            let now = crate::events::now_nanos();
            std::time::Duration::from_nanos(u.saturating_sub(now))
        });
        let deadline = tokio::time::sleep(wait.unwrap_or(std::time::Duration::MAX / 4));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline, if wait.is_some() => return,
                _ = tx.closed() => return,
                event = live.recv() => match event {
                    Ok(event) => {
                        if ended(&event) {
                            return;
                        }
                        if filters.matches(&event) && tx.send(line(&event)).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!("an events watcher fell {missed} events behind; they are lost to it");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<_, std::convert::Infallible>(bytes), rx))
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}
