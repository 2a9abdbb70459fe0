//! The agent's check runners: one tokio task per check that has a timer, doing what
//! Consul's `CheckTTL` (critical with "TTL expired" when not refreshed in time),
//! `CheckHTTP`/`CheckTCP` (a probe every `Interval`, the first one staggered randomly
//! within it, each bounded by `Timeout`, default 10 s) and the agent's reaper
//! (`DeregisterCriticalServiceAfter`) do.
//!
//! A runner holds no strong reference to the emulator: it asks the agent state for its
//! deadlines ([`Plan`]) and reports back through it, and ends when its check is removed or
//! replaced, when the emulator stops (its token is cancelled), or when the emulator is gone.
//! Unlike Consul, intervals below 1 s and reap timeouts below 1 min are honoured as given
//! (tests need short ones).

use std::collections::BTreeMap;
use std::io;
use std::pin::pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode, Uri};
use hyper::body::Body as _;
use hyper_util::rt::TokioIo;
use rand::Rng;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::agent::body::Probe;
use crate::Inner;

/// Consul's default check `Timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of an HTTP check's response body the output keeps (its end, as Consul's
/// circular buffer does).
const BODY_KEPT: usize = 4096;

/// A running check task.
pub(crate) struct Runner {
    pub cancel: CancellationToken,
    /// Tells the task its deadlines changed (TTL refreshed, status changed).
    pub wake: Arc<Notify>,
    pub task: JoinHandle<()>,
}

/// The deadlines the agent state holds for a check.
pub(crate) struct Plan {
    /// When the TTL runs out (`None`: not a TTL check, or already expired).
    pub ttl: Option<Instant>,
    /// When the service is deregistered if the check stays critical.
    pub reap: Option<Instant>,
}

/// A probe and its schedule.
pub(crate) struct ProbeJob {
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Option<Duration>,
}

/// Starts the task of check `check_id` (its `generation` tells it from a check registered
/// again under the same ID).
pub(crate) fn spawn(
    runtime: &Handle,
    inner: Weak<Inner>,
    check_id: String,
    generation: u64,
    job: Option<ProbeJob>,
    cancel: CancellationToken,
) -> Runner {
    let wake = Arc::new(Notify::new());
    let task = runtime.spawn(run(
        inner,
        check_id,
        generation,
        job,
        cancel.clone(),
        wake.clone(),
    ));
    Runner { cancel, wake, task }
}

async fn run(
    inner: Weak<Inner>,
    id: String,
    generation: u64,
    job: Option<ProbeJob>,
    cancel: CancellationToken,
    wake: Arc<Notify>,
) {
    let mut next_probe = job.as_ref().map(|j| Instant::now() + stagger(j.interval));
    loop {
        // Upgraded only for the call: a sleeping runner keeps nothing alive.
        let plan = match inner.upgrade() {
            Some(inner) => inner.runner_plan(&id, generation),
            None => return,
        };
        let Some(plan) = plan else { return };
        let deadline = [plan.ttl, plan.reap, next_probe]
            .into_iter()
            .flatten()
            .min();
        tokio::select! {
            () = cancel.cancelled() => return,
            () = wake.notified() => continue,
            () = sleep_until(deadline) => {}
        }
        let now = Instant::now();
        if let (Some(job), Some(at)) = (&job, next_probe) {
            if at <= now {
                let (status, output) = tokio::select! {
                    () = cancel.cancelled() => return,
                    result = probe(&job.probe, job.timeout) => result,
                };
                let Some(inner) = inner.upgrade() else { return };
                inner.runner_probe_result(&id, generation, status, output);
                // As Consul: the next probe an interval after this one ended.
                next_probe = Some(Instant::now() + job.interval);
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        if plan.ttl.is_some_and(|at| at <= now) {
            inner.runner_ttl_expired(&id, generation);
        }
        if plan.reap.is_some_and(|at| at <= now) {
            inner.runner_reap(&id, generation);
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Consul's `lib.RandomStagger(interval)`: uniform in [0, interval).
fn stagger(interval: Duration) -> Duration {
    let nanos = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rand::rng().random_range(0..nanos))
}

/// Runs a probe once: (status, output) as Consul words them.
async fn probe(probe: &Probe, timeout: Option<Duration>) -> (&'static str, String) {
    let timeout = timeout.filter(|t| !t.is_zero()).unwrap_or(DEFAULT_TIMEOUT);
    match probe {
        Probe::Tcp(target) => tcp(target, timeout).await,
        Probe::Http {
            url,
            method,
            header,
            body,
        } => {
            let method = if method.is_empty() { "GET" } else { method };
            http(url, method, header, body, timeout).await
        }
    }
}

/// `CheckTCP`: passing when a connection is made.
async fn tcp(target: &str, timeout: Duration) -> (&'static str, String) {
    match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Ok(Ok(_connection)) => ("passing", format!("TCP connect {target}: Success")),
        Ok(Err(e)) => ("critical", format!("dial tcp {target}: {}", dial_error(&e))),
        Err(_) => ("critical", format!("dial tcp {target}: i/o timeout")),
    }
}

/// Go's wording of the usual connect failures.
fn dial_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
        io::ErrorKind::TimedOut => "i/o timeout".to_string(),
        _ => format!("connect: {e}"),
    }
}

/// `CheckHTTP`: 2xx passing, 429 warning, anything else (or no answer) critical.
async fn http(
    url: &str,
    method: &str,
    header: &BTreeMap<String, Vec<String>>,
    body: &str,
    timeout: Duration,
) -> (&'static str, String) {
    // Go's url.Error: `Get "http://…": …`.
    let op = {
        let lower = method.to_ascii_lowercase();
        let mut chars = lower.chars();
        chars
            .next()
            .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
            .unwrap_or_default()
    };
    let exchange = http_exchange(url, method, header, body);
    match tokio::time::timeout(timeout, exchange).await {
        Err(_) => (
            "critical",
            format!(
                "{op} {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ),
        ),
        Ok(Err(detail)) => ("critical", format!("{op} {url:?}: {detail}")),
        Ok(Ok((status, output))) => {
            let line = format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            );
            let text = format!("HTTP {method} {url}: {} Output: {output}", line.trim_end());
            let health = if status.is_success() {
                "passing"
            } else if status == StatusCode::TOO_MANY_REQUESTS {
                "warning"
            } else {
                "critical"
            };
            (health, text)
        }
    }
}

/// One HTTP/1.1 request on a fresh connection (Consul's check client keeps none alive):
/// the status and the end of the body.
async fn http_exchange(
    url: &str,
    method: &str,
    header: &BTreeMap<String, Vec<String>>,
    body: &str,
) -> Result<(StatusCode, String), String> {
    let uri: Uri = url.parse().map_err(|e| format!("parse {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err("the emulator runs no HTTPS checks".to_string()),
        Some(other) => return Err(format!("unsupported protocol scheme {other:?}")),
        None => return Err("unsupported protocol scheme \"\"".to_string()),
    }
    let (Some(authority), Some(host)) = (uri.authority(), uri.host()) else {
        return Err("http: no Host in request URL".to_string());
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("dial tcp {authority}: {}", dial_error(&e)))?;
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| format!("net/http: invalid method {method:?}"))?;
    let mut request = Request::builder()
        .method(method)
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(header::HOST, authority.as_str())
        .header(header::CONNECTION, "close");
    for (name, values) in header {
        for value in values {
            request = request.header(name.as_str(), value.as_str());
        }
    }
    let defaults = [
        (header::USER_AGENT, "Consul Health Check"),
        (header::ACCEPT, "text/plain, text/*, */*"),
    ];
    for (name, value) in defaults {
        if !header.keys().any(|k| k.eq_ignore_ascii_case(name.as_str())) {
            request = request.header(name, value);
        }
    }
    let request = request
        .body(Body::from(body.to_string()))
        .map_err(|e| format!("net/http: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let exchange = async move {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        // Dropping the sender lets the connection future end once the body is read.
        drop(sender);
        let status = response.status();
        let mut incoming = pin!(response.into_body());
        let mut kept: Vec<u8> = Vec::new();
        while let Some(frame) = std::future::poll_fn(|cx| incoming.as_mut().poll_frame(cx)).await {
            let frame = frame.map_err(|e| e.to_string())?;
            if let Ok(data) = frame.into_data() {
                kept.extend_from_slice(&data);
                if kept.len() > BODY_KEPT {
                    kept.drain(..kept.len() - BODY_KEPT);
                }
            }
        }
        Ok((status, String::from_utf8_lossy(&kept).into_owned()))
    };
    // The connection is driven on this task, next to the exchange (no task of its own).
    let (result, _) = futures_util::future::join(exchange, connection).await;
    result
}
