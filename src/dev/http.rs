//! HTTP routes: query-parameter handling, response headers and blocking queries.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use rand::Rng;
use serde_json::Value;
use tokio::time::Instant;

use super::state::{Catalog, Resource};
use super::{EmulatorConfig, EmulatorError, Inner};
use crate::config::parse_go_duration;

type Shared = State<Arc<Inner>>;

pub(super) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/catalog/datacenters", get(datacenters))
        .route("/v1/catalog/services", get(catalog_services))
        .route("/v1/catalog/nodes", get(catalog_nodes))
        .route("/v1/catalog/service/{service}", get(catalog_service))
        .route("/v1/catalog/node/{node}", get(catalog_node))
        .route("/v1/health/service/{service}", get(health_service))
        .route("/v1/health/node/{node}", get(health_node))
        .route("/v1/catalog/register", put(register))
        .route("/v1/catalog/deregister", put(deregister))
        .fallback(|| async { text(StatusCode::NOT_FOUND, "404 page not found") })
        .method_not_allowed_fallback(|method: Method| async move {
            text(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("method {method} not allowed"),
            )
        })
        .with_state(inner)
}

async fn agent_self(State(inner): Shared) -> Response {
    let index = inner.catalog().index_of(&Resource::Raft);
    let body = super::views::agent_self_json(&inner.cfg, &inner.node_id);
    json_response(&inner, &ReadParams::default(), index, &body)
}

async fn datacenters(State(inner): Shared, RawQuery(q): RawQuery) -> Response {
    read(&inner, q, Resource::Raft, |c| {
        Value::from(vec![c.datacenter.clone()])
    })
    .await
}

async fn catalog_services(State(inner): Shared, RawQuery(q): RawQuery) -> Response {
    read(
        &inner,
        q,
        Resource::Services,
        Catalog::catalog_services_json,
    )
    .await
}

async fn catalog_nodes(State(inner): Shared, RawQuery(q): RawQuery) -> Response {
    read(&inner, q, Resource::Nodes, Catalog::catalog_nodes_json).await
}

async fn catalog_service(
    State(inner): Shared,
    Path(service): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let tags = query_all(q.as_deref(), "tag");
    let res = Resource::Service(service.clone());
    read(&inner, q, res, |c| c.catalog_service_json(&service, &tags)).await
}

async fn catalog_node(
    State(inner): Shared,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let res = Resource::Node(node.clone());
    read(&inner, q, res, |c| c.catalog_node_json(&node)).await
}

async fn health_service(
    State(inner): Shared,
    Path(service): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let passing = match query_all(q.as_deref(), "passing").first() {
        None => false,
        Some(v) if v.is_empty() => true,
        Some(v) => match parse_go_bool(v) {
            Some(b) => b,
            None => return text(StatusCode::BAD_REQUEST, "Invalid value for ?passing"),
        },
    };
    let tags = query_all(q.as_deref(), "tag");
    let res = Resource::Service(service.clone());
    read(&inner, q, res, |c| {
        c.health_service_json(&service, &tags, passing)
    })
    .await
}

async fn health_node(
    State(inner): Shared,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let res = Resource::Node(node.clone());
    read(&inner, q, res, |c| c.health_node_json(&node)).await
}

async fn register(State(inner): Shared, RawQuery(q): RawQuery, body: Bytes) -> Response {
    write(&inner, q, &body, Inner::register)
}

async fn deregister(State(inner): Shared, RawQuery(q): RawQuery, body: Bytes) -> Response {
    write(&inner, q, &body, Inner::deregister)
}

fn write(
    inner: &Inner,
    q: Option<String>,
    body: &[u8],
    apply: fn(&Inner, &Value) -> Result<(), EmulatorError>,
) -> Response {
    let dc = query_all(q.as_deref(), "dc").into_iter().next();
    let result = serde_json::from_slice::<Value>(body)
        .map_err(|e| EmulatorError::Decode(e.to_string()))
        .and_then(|v| {
            inner.check_datacenter(dc.as_deref())?;
            apply(inner, &v)
        });
    match result {
        Ok(()) => (
            [(header::CONTENT_TYPE, "application/json")],
            "true".to_string(),
        )
            .into_response(),
        Err(EmulatorError::NoPathToDatacenter) => no_path_to_datacenter(),
        Err(e) => text(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

/// Common parameters of read endpoints.
#[derive(Default)]
struct ReadParams {
    index: u64,
    /// Requested `wait`; `None` when absent or not positive.
    wait: Option<Duration>,
    stale: bool,
    consistent: bool,
}

/// Parses the common parameters, then blocks (if `?index` > 0) and answers.
async fn read(
    inner: &Inner,
    q: Option<String>,
    res: Resource,
    render: impl Fn(&Catalog) -> Value,
) -> Response {
    let p = match parse_read_params(inner, q.as_deref()) {
        Ok(p) => p,
        Err(ReadError::BadRequest(msg)) => return text(StatusCode::BAD_REQUEST, msg),
        Err(ReadError::NoPathToDatacenter) => return no_path_to_datacenter(),
    };
    if p.index > 0 {
        wait_for_change(inner, &p, &res).await;
    }
    let (index, mut body) = {
        let catalog = inner.catalog();
        (catalog.index_of(&res), render(&catalog))
    };
    let filtered = inner.acl_filter_all.load(Ordering::SeqCst);
    if filtered {
        match &mut body {
            Value::Array(items) => items.clear(),
            Value::Object(map) => map.clear(),
            _ => {}
        }
    }
    let mut resp = json_response(inner, &p, index, &body);
    if filtered {
        resp.headers_mut().insert(
            HeaderName::from_static("x-consul-results-filtered-by-acls"),
            HeaderValue::from_static("true"),
        );
    }
    resp
}

enum ReadError {
    BadRequest(&'static str),
    NoPathToDatacenter,
}

fn parse_read_params(inner: &Inner, q: Option<&str>) -> Result<ReadParams, ReadError> {
    let params = parse_query(q.unwrap_or(""));
    let first = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let mut p = ReadParams {
        stale: first("stale").is_some(),
        consistent: first("consistent").is_some(),
        ..ReadParams::default()
    };
    if p.stale && p.consistent {
        return Err(ReadError::BadRequest(
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        ));
    }
    if let Some(index) = first("index").filter(|s| !s.is_empty()) {
        p.index = index
            .parse()
            .map_err(|_| ReadError::BadRequest("Invalid index"))?;
    }
    if let Some(wait) = first("wait").filter(|s| !s.is_empty()) {
        let wait =
            parse_go_duration(wait).map_err(|_| ReadError::BadRequest("Invalid wait time"))?;
        p.wait = Some(wait).filter(|w| !w.is_zero());
    }
    if inner.check_datacenter(first("dc")).is_err() {
        return Err(ReadError::NoPathToDatacenter);
    }
    Ok(p)
}

/// Returns when the resource's index exceeds `p.index`, on a snapshot restore, or on timeout.
async fn wait_for_change(inner: &Inner, p: &ReadParams, res: &Resource) {
    let mut changes = inner.changes.subscribe();
    let restores = inner.catalog().restores;
    let deadline = Instant::now() + query_timeout(&inner.cfg, p.wait);
    loop {
        changes.borrow_and_update();
        {
            let catalog = inner.catalog();
            if catalog.index_of(res) > p.index || catalog.restores != restores {
                return;
            }
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep_until(deadline) => return,
        }
    }
}

/// Consul's RPCQueryTimeout: wait capped at max, default when absent, plus jitter in
/// [0, timeout/16).
fn query_timeout(cfg: &EmulatorConfig, wait: Option<Duration>) -> Duration {
    let base = match wait {
        Some(w) => w.min(cfg.max_query_time),
        None => cfg.default_query_time,
    };
    let jitter_range = u64::try_from(base.as_nanos() / 16).unwrap_or(u64::MAX);
    let jitter = if jitter_range == 0 {
        0
    } else {
        rand::rng().random_range(0..jitter_range)
    };
    base + Duration::from_nanos(jitter)
}

fn json_response(inner: &Inner, p: &ReadParams, index: u64, body: &Value) -> Response {
    let consistency = if p.stale {
        "stale"
    } else if p.consistent {
        "consistent"
    } else {
        "leader"
    };
    let leader = inner.known_leader.load(Ordering::SeqCst);
    let mut resp = (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    let headers = resp.headers_mut();
    headers.insert(
        HeaderName::from_static("x-consul-index"),
        HeaderValue::from(index.max(1)),
    );
    headers.insert(
        HeaderName::from_static("x-consul-knownleader"),
        HeaderValue::from_static(if leader { "true" } else { "false" }),
    );
    headers.insert(
        HeaderName::from_static("x-consul-lastcontact"),
        HeaderValue::from_static("0"),
    );
    headers.insert(
        HeaderName::from_static("x-consul-effective-consistency"),
        HeaderValue::from_static(consistency),
    );
    resp
}

/// 500 as an agent answers for an unknown `?dc=` (hashicorp/consul#4901).
fn no_path_to_datacenter() -> Response {
    let mut resp = text(StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter");
    let headers = resp.headers_mut();
    headers.insert(
        HeaderName::from_static("x-consul-index"),
        HeaderValue::from_static("1"),
    );
    headers.insert(
        HeaderName::from_static("x-consul-knownleader"),
        HeaderValue::from_static("false"),
    );
    resp
}

pub(super) fn text(status: StatusCode, msg: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.to_string(),
    )
        .into_response()
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn query_all(q: Option<&str>, key: &str) -> Vec<String> {
    parse_query(q.unwrap_or(""))
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v)
        .collect()
}

/// Decodes `application/x-www-form-urlencoded` pairs; `flag` alone yields `("flag", "")`.
pub(super) fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |i: usize| {
        let digit = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
        Some(digit(bytes.get(i + 1))? * 16 + digit(bytes.get(i + 2))?)
    };
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex(i)) {
            (b'%', Some(byte)) => {
                out.push(byte as u8);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
