//! The optional HTTP endpoint (`--http-addr`): Prometheus `/metrics`, `/health/live` and
//! `/health/ready` (ready once the first sync with Consul is done).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::consul::sync::Syncer;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves on `listener` until `cancel` fires.
pub fn serve(listener: TcpListener, syncer: Arc<Syncer>, cancel: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health/live", get(|| async { "ok\n" }))
        .route("/health/ready", get(ready))
        .with_state(syncer);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    });
}

async fn metrics(State(syncer): State<Arc<Syncer>>) -> impl IntoResponse {
    syncer.refresh_gauges();
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        syncer.metrics().render(),
    )
}

async fn ready(State(syncer): State<Arc<Syncer>>) -> impl IntoResponse {
    if syncer.view().is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not synced with Consul yet\n",
        )
    }
}
