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
use serde_json::{json, Value};
use tokio::time::Instant;

use super::config_entry::config_entry_json;
use super::query::query_json;
use super::state::{Catalog, Resource};
use super::translate::{self, Shape};
use super::views::Select;
use super::{EmulatorConfig, EmulatorError, Inner};
use crate::duration;

type Shared = State<Arc<Inner>>;

pub(super) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/catalog/datacenters", get(datacenters))
        .route("/v1/catalog/services", get(catalog_services))
        .route("/v1/catalog/nodes", get(catalog_nodes))
        .route("/v1/catalog/service/{service}", get(catalog_service))
        .route("/v1/catalog/connect/{service}", get(catalog_connect))
        .route("/v1/catalog/node/{node}", get(catalog_node))
        .route("/v1/health/service/{service}", get(health_service))
        .route("/v1/health/connect/{service}", get(health_connect))
        .route("/v1/health/ingress/{service}", get(health_ingress))
        .route("/v1/health/node/{node}", get(health_node))
        .route("/v1/catalog/register", put(register))
        .route("/v1/catalog/deregister", put(deregister))
        .route("/v1/query", get(query_list).post(query_create))
        .route(
            "/v1/query/{id}",
            get(query_get).put(query_update).delete(query_delete),
        )
        .route("/v1/query/{id}/execute", get(query_execute))
        .route("/v1/config", put(config_put))
        .route("/v1/config/{kind}", get(config_list))
        .route(
            "/v1/config/{kind}/{name}",
            get(config_get).delete(config_delete),
        )
        .merge(super::agent::routes())
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
    let index = inner.dcs().primary().index_of(&Resource::Raft);
    let body = super::views::agent_self_json(&inner.cfg, &inner.node_id);
    json_response(&inner, &ReadParams::default(), index, &body)
}

async fn datacenters(State(inner): Shared, RawQuery(q): RawQuery) -> Response {
    let names = Value::from(inner.dcs().names());
    read(&inner, q, Resource::Raft, Shape::None, move |_| {
        names.clone()
    })
    .await
}

async fn catalog_services(State(inner): Shared, RawQuery(q): RawQuery) -> Response {
    read(
        &inner,
        q,
        Resource::Services,
        Shape::None,
        Catalog::catalog_services_json,
    )
    .await
}

async fn catalog_nodes(State(inner): Shared, RawQuery(q): RawQuery) -> Response {
    read(
        &inner,
        q,
        Resource::Nodes,
        Shape::Nodes,
        Catalog::catalog_nodes_json,
    )
    .await
}

async fn catalog_service(
    State(inner): Shared,
    Path(service): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let tags = query_all(q.as_deref(), "tag");
    let res = Resource::Service(service.clone());
    read(&inner, q, res, Shape::ServiceNodes, |c| {
        c.catalog_service_json(&Select::Service(&service), &tags)
    })
    .await
}

async fn catalog_connect(
    State(inner): Shared,
    Path(service): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let tags = query_all(q.as_deref(), "tag");
    let res = Resource::Connect(service.clone());
    read(&inner, q, res, Shape::ServiceNodes, |c| {
        c.catalog_service_json(&Select::Connect(&service), &tags)
    })
    .await
}

async fn catalog_node(
    State(inner): Shared,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let res = Resource::Node(node.clone());
    read(&inner, q, res, Shape::NodeServices, |c| {
        c.catalog_node_json(&node)
    })
    .await
}

async fn health_service(
    State(inner): Shared,
    Path(service): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let res = Resource::Service(service.clone());
    health(&inner, q, res, Select::Service(&service)).await
}

async fn health_connect(
    State(inner): Shared,
    Path(service): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let res = Resource::Connect(service.clone());
    health(&inner, q, res, Select::Connect(&service)).await
}

async fn health_ingress(
    State(inner): Shared,
    Path(service): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let res = Resource::Ingress(service.clone());
    health(&inner, q, res, Select::Ingress(&service)).await
}

/// `/v1/health/{service,connect,ingress}/<name>` (one handler in Consul too).
async fn health(inner: &Inner, q: Option<String>, res: Resource, select: Select<'_>) -> Response {
    let passing = match query_all(q.as_deref(), "passing").first() {
        None => false,
        Some(v) if v.is_empty() => true,
        Some(v) => match parse_go_bool(v) {
            Some(b) => b,
            None => return text(StatusCode::BAD_REQUEST, "Invalid value for ?passing"),
        },
    };
    let tags = query_all(q.as_deref(), "tag");
    read(inner, q, res, Shape::CheckServiceNodes, |c| {
        c.health_service_json(&select, &tags, passing)
    })
    .await
}

async fn health_node(
    State(inner): Shared,
    Path(node): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let res = Resource::Node(node.clone());
    read(&inner, q, res, Shape::None, |c| c.health_node_json(&node)).await
}

// ---------------------------------------------------------------------------------------
// Writes.

async fn register(State(inner): Shared, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let dc = first_param(q.as_deref(), "dc");
    let result = decode_body(&body).and_then(|v| inner.register(&v, dc.as_deref()));
    write_response(result.map(|()| json_text("true")))
}

async fn deregister(State(inner): Shared, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let dc = first_param(q.as_deref(), "dc");
    let result = decode_body(&body).and_then(|v| inner.deregister(&v, dc.as_deref()));
    write_response(result.map(|()| json_text("true")))
}

async fn query_create(State(inner): Shared, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let dc = first_param(q.as_deref(), "dc");
    let result = decode_body(&body).and_then(|v| inner.create_query(&v, dc.as_deref()));
    write_response(result.map(|id| json_text(&json!({ "ID": id }).to_string())))
}

async fn query_update(
    State(inner): Shared,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let dc = first_param(q.as_deref(), "dc");
    let result = decode_body(&body).and_then(|v| inner.update_query(&id, &v, dc.as_deref()));
    write_response(result.map(|()| StatusCode::OK.into_response()))
}

async fn query_delete(
    State(inner): Shared,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let dc = first_param(q.as_deref(), "dc");
    let result = inner.delete_query(&id, dc.as_deref());
    write_response(result.map(|()| StatusCode::OK.into_response()))
}

async fn config_put(State(inner): Shared, RawQuery(q): RawQuery, body: Bytes) -> Response {
    let dc = first_param(q.as_deref(), "dc");
    let result = decode_body(&body)
        .map_err(|e| match e {
            EmulatorError::Decode(msg) => EmulatorError::ConfigDecode(msg),
            other => other,
        })
        .and_then(|v| inner.put_config_entry(&v, dc.as_deref()));
    write_response(result.map(|()| json_text("true")))
}

async fn config_delete(
    State(inner): Shared,
    Path((kind, name)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let dc = first_param(q.as_deref(), "dc");
    let result = inner.delete_config_entry(&kind, &name, dc.as_deref());
    write_response(result.map(|()| json_text("{}")))
}

pub(super) fn decode_body(body: &[u8]) -> Result<Value, EmulatorError> {
    serde_json::from_slice::<Value>(body).map_err(|e| EmulatorError::Decode(e.to_string()))
}

pub(super) fn json_text(body: &str) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Server-side (RPC) failures are 500 in Consul, request decoding failures 400, unknown
/// agent services and checks 404.
pub(super) fn write_response(result: Result<Response, EmulatorError>) -> Response {
    match result {
        Ok(resp) => resp,
        Err(EmulatorError::NoPathToDatacenter) => no_path_to_datacenter(),
        Err(e @ EmulatorError::Invalid(_)) => {
            text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
        }
        Err(e @ EmulatorError::NotFound(_)) => text(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e) => text(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

// ---------------------------------------------------------------------------------------
// Prepared queries and config entries (reads).

async fn query_list(State(inner): Shared, RawQuery(q): RawQuery) -> Response {
    read(&inner, q, Resource::Queries, Shape::None, |c| {
        Value::Array(c.queries.values().map(query_json).collect())
    })
    .await
}

async fn query_get(
    State(inner): Shared,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    read_or(&inner, q, Resource::Queries, Shape::None, |c| {
        match c.queries.get(&id.to_lowercase()) {
            Some(query) => Ok(json!([query_json(query)])),
            None => Err((StatusCode::NOT_FOUND, "Query not found".to_string())),
        }
    })
    .await
}

/// Not a blocking query (`index`/`wait` are ignored); `X-Consul-Index` is always 1, as
/// Consul leaves the reply's index unset.
async fn query_execute(
    State(inner): Shared,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    let p = match parse_read_params(&inner, q.as_deref()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let limit = match first_param(q.as_deref(), "limit").filter(|s| !s.is_empty()) {
        None => 0,
        Some(v) => match v.parse::<i64>() {
            Ok(n) => usize::try_from(n).unwrap_or(0),
            Err(_) => {
                let msg = format!("Bad limit: strconv.Atoi: parsing {v:?}: invalid syntax");
                return text(StatusCode::INTERNAL_SERVER_ERROR, &msg);
            }
        },
    };
    let result = inner.dcs().at(p.dc).execute_query_json(&id, limit);
    let Some(mut body) = result else {
        return text(StatusCode::NOT_FOUND, "Query not found");
    };
    if p.dc != 0 && inner.cfg.translate_wan_addrs {
        translate::check_service_nodes(&mut body["Nodes"]);
    }
    body["KnownLeader"] = inner.known_leader.load(Ordering::SeqCst).into();
    body["ConsistencyLevel"] = consistency(&p).into();
    let filtered = acl_filter(&inner, &mut body["Nodes"]);
    with_filtered_header(json_response(&inner, &p, 1, &body), filtered)
}

async fn config_list(
    State(inner): Shared,
    Path(kind): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    read(&inner, q, Resource::ConfigEntries, Shape::None, |c| {
        let entries = c
            .config_entries
            .values()
            .filter(|e| e.spec.kind == kind)
            .map(config_entry_json);
        Value::Array(entries.collect())
    })
    .await
}

async fn config_get(
    State(inner): Shared,
    Path((kind, name)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    read_or(&inner, q, Resource::ConfigEntries, Shape::None, |c| {
        c.config_entry(&kind, &name)
            .map(config_entry_json)
            .ok_or_else(|| {
                let msg = format!("Config entry not found for {kind:?} / {name:?}");
                (StatusCode::NOT_FOUND, msg)
            })
    })
    .await
}

// ---------------------------------------------------------------------------------------
// Reads and blocking.

/// Common parameters of read endpoints.
#[derive(Default)]
struct ReadParams {
    index: u64,
    /// Requested `wait`; `None` when absent or not positive.
    wait: Option<Duration>,
    stale: bool,
    consistent: bool,
    /// Position of the `?dc=` datacenter (0: the agent's).
    dc: usize,
}

async fn read(
    inner: &Inner,
    q: Option<String>,
    res: Resource,
    shape: Shape,
    render: impl Fn(&Catalog) -> Value,
) -> Response {
    read_or(inner, q, res, shape, |c| Ok(render(c))).await
}

/// Parses the common parameters, then blocks (if `?index` > 0) on the datacenter's
/// resource index and answers; `render` may answer with an error (text body) instead.
async fn read_or(
    inner: &Inner,
    q: Option<String>,
    res: Resource,
    shape: Shape,
    render: impl Fn(&Catalog) -> Result<Value, (StatusCode, String)>,
) -> Response {
    let p = match parse_read_params(inner, q.as_deref()) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if p.index > 0 {
        wait_for_change(inner, &p, &res).await;
    }
    let (index, body) = {
        let dcs = inner.dcs();
        let catalog = dcs.at(p.dc);
        (catalog.index_of(&res), render(catalog))
    };
    let mut body = match body {
        Ok(body) => body,
        Err((status, msg)) => return text(status, &msg),
    };
    if p.dc != 0 && inner.cfg.translate_wan_addrs {
        translate::apply(shape, &mut body);
    }
    let filtered = acl_filter(inner, &mut body);
    with_filtered_header(json_response(inner, &p, index, &body), filtered)
}

/// Empties the list (or object) when every result is ACL-filtered; true if so.
fn acl_filter(inner: &Inner, body: &mut Value) -> bool {
    let filtered = inner.acl_filter_all.load(Ordering::SeqCst);
    if filtered {
        match body {
            Value::Array(items) => items.clear(),
            Value::Object(map) => map.clear(),
            _ => {}
        }
    }
    filtered
}

fn with_filtered_header(mut resp: Response, filtered: bool) -> Response {
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

impl IntoResponse for ReadError {
    fn into_response(self) -> Response {
        match self {
            ReadError::BadRequest(msg) => text(StatusCode::BAD_REQUEST, msg),
            ReadError::NoPathToDatacenter => no_path_to_datacenter(),
        }
    }
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
            duration::parse(wait).map_err(|()| ReadError::BadRequest("Invalid wait time"))?;
        p.wait = Some(wait).filter(|w| !w.is_zero());
    }
    p.dc = inner
        .dcs()
        .position(first("dc"))
        .ok_or(ReadError::NoPathToDatacenter)?;
    Ok(p)
}

/// Returns when the resource's index (in the queried datacenter) exceeds `p.index`, on a
/// snapshot restore, or on timeout.
async fn wait_for_change(inner: &Inner, p: &ReadParams, res: &Resource) {
    let mut changes = inner.changes.subscribe();
    let restores = inner.dcs().at(p.dc).restores;
    let deadline = Instant::now() + query_timeout(&inner.cfg, p.wait);
    loop {
        changes.borrow_and_update();
        {
            let dcs = inner.dcs();
            let catalog = dcs.at(p.dc);
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
pub(super) fn query_timeout(cfg: &EmulatorConfig, wait: Option<Duration>) -> Duration {
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

/// Name of the consistency mode used (`X-Consul-Effective-Consistency`).
fn consistency(p: &ReadParams) -> &'static str {
    if p.stale {
        "stale"
    } else if p.consistent {
        "consistent"
    } else {
        "leader"
    }
}

fn json_response(inner: &Inner, p: &ReadParams, index: u64, body: &Value) -> Response {
    let consistency = consistency(p);
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
pub(super) fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

pub(super) fn first_param(q: Option<&str>, key: &str) -> Option<String> {
    query_all(q, key).into_iter().next()
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
