//! `/metrics` over HTTP (`--metrics-addr`): the counters as they are, and the gauges of
//! what netd holds, read from the engine at each scrape.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::engine::EngineHandle;

pub fn router(engine: EngineHandle) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route(
            "/",
            get(|| async { "netd metrics: GET /metrics (OpenMetrics text)\n" }),
        )
        .with_state(engine)
}

async fn scrape(State(engine): State<EngineHandle>) -> Response {
    let metrics = crate::metrics::get();
    match engine.call(|e| Ok(e.counts())).await {
        Ok((networks, sandboxes, ports, policies)) => {
            let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            metrics.networks.set(gauge(networks));
            metrics.sandboxes.set(gauge(sandboxes));
            metrics.published_ports.set(gauge(ports));
            metrics.policies.set(gauge(policies));
        }
        Err(e) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the engine does not answer: {e}\n"),
            )
                .into_response()
        }
    }
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        metrics.encode(),
    )
        .into_response()
}
