//! HTTP routes of the agent API and `/v1/status/*`, merged into the emulator's router.
//!
//! IDs are the rest of the path (`{*id}`), percent-decoded, as Consul trims the route's
//! prefix off the path: registrator's `host:container:port:udp` and IDs holding `/` work.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::body;
use crate::http::{
    decode_body, first_param, json_text, parse_go_bool, query_timeout, text, write_response,
};
use crate::{duration, EmulatorError, Inner};

type Shared = State<Arc<Inner>>;

pub(crate) fn routes() -> Router<Arc<Inner>> {
    Router::new()
        .route("/v1/agent/services", get(services))
        .route("/v1/agent/service/register", put(register_service))
        .route(
            "/v1/agent/service/deregister/{*id}",
            put(deregister_service),
        )
        .route("/v1/agent/service/maintenance/", put(missing_service_id))
        .route(
            "/v1/agent/service/maintenance/{*id}",
            put(service_maintenance),
        )
        .route("/v1/agent/service/{*id}", get(service))
        .route("/v1/agent/checks", get(checks))
        .route("/v1/agent/check/register", put(register_check))
        .route("/v1/agent/check/deregister/{*id}", put(deregister_check))
        .route("/v1/agent/check/pass/{*id}", put(pass))
        .route("/v1/agent/check/warn/{*id}", put(warn))
        .route("/v1/agent/check/fail/{*id}", put(fail))
        .route("/v1/agent/check/update/{*id}", put(update))
        .route("/v1/agent/maintenance", put(node_maintenance))
        .route("/v1/status/leader", get(leader))
        .route("/v1/status/peers", get(peers))
}

/// Consul answers a successful agent write with 200 and no body.
fn done(result: Result<(), EmulatorError>) -> Response {
    write_response(result.map(|()| StatusCode::OK.into_response()))
}

fn json_body(v: &Value) -> Response {
    json_text(&v.to_string())
}

async fn services(State(inner): Shared) -> Response {
    json_body(&inner.agent_services_json())
}

async fn checks(State(inner): Shared) -> Response {
    json_body(&inner.agent_checks_json())
}

/// `?replace-existing-checks` counts when empty or `true` (not any Go bool).
async fn register_service(State(inner): Shared, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let replace = first_param(q.as_deref(), "replace-existing-checks")
        .is_some_and(|v| v.is_empty() || v == "true");
    done(decode_body(&body).and_then(|v| inner.agent_register_service(&v, replace)))
}

async fn deregister_service(State(inner): Shared, Path(id): Path<String>) -> Response {
    done(inner.agent_deregister_service(&id))
}

/// `GET /v1/agent/service/<id>`; with `?hash=` the current hash, blocks until the service
/// changes (hash-based blocking, `wait` as for index-based queries).
async fn service(State(inner): Shared, Path(id): Path<String>, RawQuery(q): RawQuery) -> Response {
    let wait = match first_param(q.as_deref(), "wait").filter(|w| !w.is_empty()) {
        None => None,
        Some(w) => match duration::parse(&w) {
            Ok(w) => Some(w).filter(|w| !w.is_zero()),
            Err(()) => return text(StatusCode::BAD_REQUEST, "Invalid wait time"),
        },
    };
    let hash = first_param(q.as_deref(), "hash").unwrap_or_default();
    let deadline = Instant::now() + query_timeout(&inner.cfg, wait);
    let mut changes = inner.changes.subscribe();
    loop {
        changes.borrow_and_update();
        let Some((current, body)) = inner.agent_service_json(&id) else {
            return text(StatusCode::NOT_FOUND, &format!("unknown service ID: {id}"));
        };
        if hash.is_empty() || hash != current || Instant::now() >= deadline {
            let mut resp = json_body(&body);
            if let Ok(value) = HeaderValue::from_str(&current) {
                resp.headers_mut()
                    .insert(HeaderName::from_static("x-consul-contenthash"), value);
            }
            return resp;
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return text(StatusCode::INTERNAL_SERVER_ERROR, "agent stopped") },
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
}

async fn register_check(State(inner): Shared, body: Bytes) -> Response {
    done(decode_body(&body).and_then(|v| inner.agent_register_check(&v)))
}

async fn deregister_check(State(inner): Shared, Path(id): Path<String>) -> Response {
    done(inner.agent_deregister_check(&id))
}

async fn pass(State(inner): Shared, Path(id): Path<String>, RawQuery(q): RawQuery) -> Response {
    ttl_note(&inner, &id, "passing", q.as_deref())
}

async fn warn(State(inner): Shared, Path(id): Path<String>, RawQuery(q): RawQuery) -> Response {
    ttl_note(&inner, &id, "warning", q.as_deref())
}

async fn fail(State(inner): Shared, Path(id): Path<String>, RawQuery(q): RawQuery) -> Response {
    ttl_note(&inner, &id, "critical", q.as_deref())
}

fn ttl_note(inner: &Inner, id: &str, status: &str, q: Option<&str>) -> Response {
    let note = first_param(q, "note").unwrap_or_default();
    done(inner.agent_update_ttl(id, status, note))
}

async fn update(State(inner): Shared, Path(id): Path<String>, body: Bytes) -> Response {
    let result = decode_body(&body)
        .and_then(|v| body::parse_check_update(&v))
        .and_then(|(status, output)| inner.agent_update_ttl(&id, &status, output));
    done(result)
}

async fn missing_service_id() -> Response {
    text(StatusCode::BAD_REQUEST, "Missing service ID")
}

async fn service_maintenance(
    State(inner): Shared,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let enable = match enable_param(q.as_deref()) {
        Ok(enable) => enable,
        Err(msg) => return text(StatusCode::BAD_REQUEST, &msg),
    };
    let reason = first_param(q.as_deref(), "reason").unwrap_or_default();
    done(inner.agent_service_maintenance(&id, enable, &reason))
}

async fn node_maintenance(State(inner): Shared, RawQuery(q): RawQuery) -> Response {
    let enable = match enable_param(q.as_deref()) {
        Ok(enable) => enable,
        Err(msg) => return text(StatusCode::BAD_REQUEST, &msg),
    };
    let reason = first_param(q.as_deref(), "reason").unwrap_or_default();
    done(inner.agent_node_maintenance(enable, &reason))
}

/// `?enable=` is required and a Go bool; the error is Consul's 400 text.
fn enable_param(q: Option<&str>) -> Result<bool, String> {
    let Some(raw) = first_param(q, "enable") else {
        return Err("Missing value for enable".to_string());
    };
    parse_go_bool(&raw).ok_or_else(|| format!("Invalid value for enable: {raw:?}"))
}

/// The emulator is a one-server cluster: itself, on the server RPC port (`""` while it
/// reports no known leader).
async fn leader(State(inner): Shared) -> Response {
    let leader = if inner.known_leader.load(Ordering::SeqCst) {
        "127.0.0.1:8300"
    } else {
        ""
    };
    json_body(&json!(leader))
}

async fn peers() -> Response {
    json_body(&json!(["127.0.0.1:8300"]))
}
