//! The HTTP client for Consul: one reqwest client, the ACL token as a sensitive header,
//! `?stale`, blocking parameters and the response metadata headers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use tracing::debug;

use super::body::{self, BodyBudget};
use super::{tls, ConsulError};
use crate::config::ConsulTls;
use crate::metrics::Metrics;

/// Extra time allowed past `wait + wait/16` for a blocking query: a Consul server may hold a
/// request up to `rpc_hold_timeout` (7 s by default) during a leader election.
const BLOCKING_SLACK: Duration = Duration::from_secs(10);
/// Timeout of a non-blocking request.
const PLAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest error body kept for a log line.
const MAX_ERROR_BODY: usize = 200;
/// Metadata Consul returns with every read (`X-Consul-*` headers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryMeta {
    /// When the response's headers arrived.
    pub received: Option<Instant>,
    /// `X-Consul-Index`; 0 when the header was absent or unreadable.
    pub index: u64,
    /// `X-Consul-KnownLeader`, absent with the streaming backend.
    pub known_leader: Option<bool>,
    /// `X-Consul-Results-Filtered-By-ACLs: true`.
    pub filtered_by_acls: bool,
    /// `X-Consul-Translate-Addresses: true`: the agent already applied WAN translation.
    pub translated: bool,
}

/// Options of the client, from the configuration.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Send `?stale` so any server may answer (Consul DNS's `allow_stale`).
    pub stale: bool,
    /// The `wait` of blocking queries.
    pub wait: Duration,
    /// The largest response body accepted from the endpoints that grow with the catalog.
    pub max_response_bytes: usize,
    /// Bytes of all bodies being read at once.
    pub body_budget: usize,
    /// TLS, for an `https://` address.
    pub tls: ConsulTls,
}

/// A Consul HTTP API client. Cheap to clone.
#[derive(Clone)]
pub struct ConsulClient {
    http: reqwest::Client,
    base: Url,
    options: ClientOptions,
    budget: Arc<BodyBudget>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ConsulClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token lives in the default headers and is never printed.
        f.debug_struct("ConsulClient")
            .field("base", &self.base.as_str())
            .field("options", &self.options)
            .finish()
    }
}

impl ConsulClient {
    /// `addr` is the agent's base URL, e.g. `http://127.0.0.1:8500`.
    pub fn new(
        addr: &str,
        token: Option<&str>,
        options: ClientOptions,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ConsulError> {
        let mut base =
            Url::parse(addr).map_err(|e| ConsulError::Config(format!("{addr:?}: {e}")))?;
        if base.cannot_be_a_base() {
            return Err(ConsulError::Config(format!("{addr:?}: not an http(s) URL")));
        }
        let mut headers = HeaderMap::new();
        let mut builder = reqwest::Client::builder();
        if base.scheme() == "https" {
            builder = builder.use_preconfigured_tls(tls::client_config(&options.tls)?);
            if !options.tls.verify {
                tracing::warn!(
                    "ssl_verify is false: the Consul server's certificate is NOT verified; \
                     anyone on the path can read the token and forge answers"
                );
            }
            if let Some(name) = &options.tls.server_name {
                builder = send_server_name(builder, &mut base, &mut headers, name)?;
            }
        } else {
            let keys = options.tls.keys_set();
            if !keys.is_empty() {
                tracing::warn!(
                    "TLS options ({}) are ignored: the Consul address {addr} is not https://",
                    keys.join(", ")
                );
            }
        }
        if let Some(token) = token.filter(|t| !t.is_empty()) {
            let mut value = HeaderValue::from_str(token).map_err(|_| {
                ConsulError::Config(
                    "the Consul token contains characters not allowed in an HTTP header".into(),
                )
            })?;
            value.set_sensitive(true);
            headers.insert("X-Consul-Token", value);
        }
        let http = builder
            .default_headers(headers)
            .user_agent(concat!("consul-dns/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| ConsulError::Config(format!("HTTP client: {e}")))?;
        Ok(ConsulClient {
            http,
            base,
            budget: BodyBudget::new(options.body_budget),
            options,
            metrics,
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The URL of an API path given as segments (each one percent-encoded as needed).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A read. With `index > 0` it is a blocking query of `options.wait`.
    pub async fn get<T: DeserializeOwned + Send + 'static>(
        &self,
        segments: &[&str],
        index: u64,
    ) -> Result<(T, QueryMeta), ConsulError> {
        self.get_in(segments, None, index).await
    }

    /// A read in datacenter `dc` (`?dc=`; None: the agent's own).
    pub async fn get_in<T: DeserializeOwned + Send + 'static>(
        &self,
        segments: &[&str],
        dc: Option<&str>,
        index: u64,
    ) -> Result<(T, QueryMeta), ConsulError> {
        let mut url = self.url(segments);
        let timeout = {
            let mut q = url.query_pairs_mut();
            if let Some(dc) = dc {
                q.append_pair("dc", dc);
            }
            if self.options.stale {
                q.append_key_only("stale");
            }
            if index > 0 {
                q.append_pair("index", &index.to_string());
                q.append_pair("wait", &format!("{}ms", self.options.wait.as_millis()));
                self.options.wait + self.options.wait / 16 + BLOCKING_SLACK
            } else {
                PLAIN_TIMEOUT
            }
        };
        let path = segments.join("/");
        let endpoint = endpoint_label(segments);
        let limit = body::endpoint_limit(segments, self.options.max_response_bytes);
        let result = self.send::<T>(url, timeout, &path, limit).await;
        let status = match &result {
            Ok(_) => "200".to_string(),
            Err(ConsulError::Status { status, .. }) => status.to_string(),
            Err(ConsulError::Timeout { .. }) => "timeout".to_string(),
            Err(ConsulError::Decode { .. }) => "invalid".to_string(),
            Err(ConsulError::TooLarge { .. }) => "too_large".to_string(),
            Err(ConsulError::OverBodyBudget { .. }) => "over_budget".to_string(),
            Err(_) => "error".to_string(),
        };
        self.metrics.consul_request(&endpoint, &status);
        result
    }

    async fn send<T: DeserializeOwned + Send + 'static>(
        &self,
        url: Url,
        timeout: Duration,
        path: &str,
        limit: usize,
    ) -> Result<(T, QueryMeta), ConsulError> {
        let mut retried = false;
        let response = loop {
            match self.http.get(url.clone()).timeout(timeout).send().await {
                Ok(response) => break response,
                // Typically a kept-alive connection the agent closed as we reused it: the
                // request is sent again once, on a new connection (as Go's client does for
                // idempotent requests). Refused connections and timeouts are not retried.
                Err(e) if !retried && !e.is_connect() && !e.is_timeout() => {
                    debug!(path, error = %e, "Consul request failed before an answer; sent again");
                    retried = true;
                }
                Err(e) => return Err(ConsulError::from_transport(path, e)),
            }
        };
        let status = response.status();
        let mut meta = read_meta(response.headers());
        meta.received = Some(Instant::now());
        if status != StatusCode::OK {
            let body = response.text().await.unwrap_or_default();
            let mut body = body.trim().to_owned();
            if body.len() > MAX_ERROR_BODY {
                let mut cut = MAX_ERROR_BODY;
                while !body.is_char_boundary(cut) {
                    cut -= 1;
                }
                body.truncate(cut);
            }
            return Err(ConsulError::Status {
                path: path.to_owned(),
                status: status.as_u16(),
                body,
            });
        }
        let body = body::read_json(response, path, limit, &self.budget).await?;
        Ok((body, meta))
    }
}

/// Makes the connection name `server_name`, so that rustls sends it as SNI (and verifies
/// the certificate against it), while still connecting to the configured host: the URL's
/// host becomes `server_name`, a resolver maps that name to the configured host's
/// addresses, and the `Host` header keeps the configured host. An IP address is never sent
/// as SNI, so for one the verifier alone uses the name.
fn send_server_name(
    builder: reqwest::ClientBuilder,
    base: &mut Url,
    headers: &mut HeaderMap,
    server_name: &str,
) -> Result<reqwest::ClientBuilder, ConsulError> {
    let host = base.host_str().unwrap_or_default().to_string();
    if server_name.parse::<IpAddr>().is_ok() || host.eq_ignore_ascii_case(server_name) {
        return Ok(builder);
    }
    let authority = match base.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.clone(),
    };
    let host_header = HeaderValue::from_str(&authority)
        .map_err(|e| ConsulError::Config(format!("Host header {authority:?}: {e}")))?;
    base.set_host(Some(server_name))
        .map_err(|e| ConsulError::Config(format!("tls_server_name {server_name:?}: {e}")))?;
    headers.insert(reqwest::header::HOST, host_header);
    let target = match host.trim_start_matches('[').trim_end_matches(']').parse() {
        Ok(ip) => Target::Ip(ip),
        Err(_) => Target::Domain(host),
    };
    Ok(builder.dns_resolver(Arc::new(ServerNameResolver {
        name: server_name.to_string(),
        target,
    })))
}

#[derive(Debug, Clone)]
enum Target {
    Ip(IpAddr),
    Domain(String),
}

/// Resolves the TLS server name to the configured host; any other name as usual.
struct ServerNameResolver {
    name: String,
    target: Target,
}

impl reqwest::dns::Resolve for ServerNameResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let target = if name.as_str().eq_ignore_ascii_case(&self.name) {
            self.target.clone()
        } else {
            Target::Domain(name.as_str().to_string())
        };
        Box::pin(async move {
            // Port 0: the connector puts the URL's port in.
            let addrs: Vec<SocketAddr> = match target {
                Target::Ip(ip) => vec![SocketAddr::new(ip, 0)],
                Target::Domain(host) => {
                    tokio::net::lookup_host((host.as_str(), 0)).await?.collect()
                }
            };
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn read_meta(headers: &HeaderMap) -> QueryMeta {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    QueryMeta {
        received: None,
        index: text("X-Consul-Index")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        known_leader: text("X-Consul-KnownLeader").and_then(|v| v.parse().ok()),
        filtered_by_acls: text("X-Consul-Results-Filtered-By-ACLs") == Some("true"),
        translated: text("X-Consul-Translate-Addresses") == Some("true"),
    }
}

/// The path segments the metrics label requests by; any other segment is a name, from
/// the catalog or from a DNS question, and becomes `*`: a flood of distinct names must not
/// grow the metrics' label sets.
const ENDPOINT_WORDS: [&str; 13] = [
    "v1",
    "health",
    "service",
    "connect",
    "ingress",
    "catalog",
    "services",
    "nodes",
    "node",
    "datacenters",
    "query",
    "agent",
    "self",
];

/// The `endpoint` label of a request: its first three path segments, names as `*`
/// (`v1/health/service`, `v1/query/*`).
fn endpoint_label(segments: &[&str]) -> String {
    segments
        .iter()
        .take(3)
        .map(|s| if ENDPOINT_WORDS.contains(s) { *s } else { "*" })
        .collect::<Vec<_>>()
        .join("/")
}
