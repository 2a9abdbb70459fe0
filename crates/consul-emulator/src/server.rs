//! Accept loop and per-connection serving. Our own loop (rather than `axum::serve`) so that
//! `stop()` can drop every connection at once, cutting in-flight long polls.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::http::{parse_query, router, text};
use super::{lock, Fault, Inner, RequestRecord};

/// A running accept loop and its connections.
pub(super) struct Server {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    /// Returns once the listener and every connection are closed.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        if let Err(e) = self.task.await {
            tracing::warn!("emulator accept loop ended abnormally: {e}");
        }
    }
}

/// Binds with SO_REUSEADDR so `restart()` can rebind while old connections sit in TIME_WAIT.
pub(super) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

pub(super) fn spawn(listener: TcpListener, inner: Arc<Inner>) -> Server {
    let cancel = CancellationToken::new();
    let task = tokio::spawn(accept_loop(listener, inner, cancel.clone()));
    Server { cancel, task }
}

async fn accept_loop(listener: TcpListener, inner: Arc<Inner>, cancel: CancellationToken) {
    let app = TowerToHyperService::new(router(inner.clone()));
    let tls = inner.cfg.tls.clone().map(TlsAcceptor::from);
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match &tls {
                    // The handshake runs on the connection's task, not the accept loop's.
                    Some(tls) => {
                        conns.spawn(serve_tls(tls.clone(), stream, inner.clone(), app.clone()));
                    }
                    None => {
                        conns.spawn(serve_connection(stream, inner.clone(), app.clone()));
                    }
                },
                Err(e) => {
                    // E.g. EMFILE: back off instead of spinning.
                    tracing::warn!("emulator accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
        }
    }
    drop(listener);
    // Aborting the tasks drops their sockets: clients see EOF/reset at once.
    conns.shutdown().await;
}

async fn serve_tls(
    tls: TlsAcceptor,
    stream: TcpStream,
    inner: Arc<Inner>,
    app: TowerToHyperService<axum::Router>,
) {
    match tls.accept(stream).await {
        Ok(stream) => serve_connection(stream, inner, app).await,
        Err(e) => tracing::info!("emulator TLS handshake failed: {e}"),
    }
}

async fn serve_connection<S>(stream: S, inner: Arc<Inner>, app: TowerToHyperService<axum::Router>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let inner = inner.clone();
        let app = app.clone();
        async move { Ok::<_, Infallible>(handle(&inner, &app, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = conn.await {
        tracing::debug!("emulator connection ended: {e}");
    }
}

/// Not part of Consul's API: the emulator's request counters as JSON, for benchmarks that
/// run it in another process. Not counted, never faulted.
pub const STATS_PATH: &str = "/_emulator/stats";

fn stats(inner: &Inner) -> Response<Body> {
    let body = serde_json::json!({
        "requests": inner.total_requests.load(std::sync::atomic::Ordering::SeqCst),
        "by_path": lock(&inner.stats).per_path.clone(),
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "stats"))
}

/// Counts and logs the request, applies the injected fault and token check, then routes.
async fn handle(
    inner: &Inner,
    app: &TowerToHyperService<axum::Router>,
    req: Request<Incoming>,
) -> Response<Body> {
    if req.uri().path() == STATS_PATH {
        return stats(inner);
    }
    let token = request_token(&req);
    inner.record(RequestRecord {
        method: req.method().to_string(),
        path: req.uri().path().to_string(),
        query: req.uri().query().unwrap_or("").to_string(),
        token: token.clone(),
        received_at: Instant::now(),
    });
    let fault = lock(&inner.fault).clone();
    match fault {
        Fault::None => {}
        Fault::Status(code, body) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return text(status, &body);
        }
        Fault::Hang => std::future::pending::<()>().await,
        Fault::Body(body) => return fault_body(inner, Body::from(body)),
        Fault::Trickle { body, every } => {
            let bytes = body.into_bytes();
            let stream = futures_util::stream::unfold(0usize, move |i| {
                let byte = bytes.get(i).copied();
                async move {
                    let byte = byte?;
                    tokio::time::sleep(every).await;
                    Some((
                        Ok::<_, Infallible>(axum::body::Bytes::from(vec![byte])),
                        i + 1,
                    ))
                }
            });
            return fault_body(inner, Body::from_stream(stream));
        }
    }
    let required = lock(&inner.required_token).clone();
    if required.is_some() && token != required {
        let mut resp = text(StatusCode::FORBIDDEN, "ACL not found");
        translate_header(inner, &mut resp);
        return resp;
    }
    let mut resp = match app.call(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    translate_header(inner, &mut resp);
    resp
}

/// A 200 JSON response with `body`, whatever was asked (the `Body` and `Trickle` faults).
fn fault_body(inner: &Inner, body: Body) -> Response<Body> {
    Response::builder()
        .header("content-type", "application/json")
        .header(
            "x-consul-index",
            inner.dcs().primary().raft_index().to_string(),
        )
        .body(body)
        .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "fault"))
}

/// Consul sets `X-Consul-Translate-Addresses: true` on every response of an agent with
/// `translate_wan_addrs`, whatever the datacenter asked about (`agent/http.go` `wrap`).
fn translate_header(inner: &Inner, resp: &mut Response<Body>) {
    if inner.cfg.translate_wan_addrs {
        resp.headers_mut().insert(
            HeaderName::from_static("x-consul-translate-addresses"),
            HeaderValue::from_static("true"),
        );
    }
}

/// Consul's priority: `?token=`, then `X-Consul-Token`, then `Authorization: Bearer`.
fn request_token<B>(req: &Request<B>) -> Option<String> {
    let from_query = req.uri().query().and_then(|q| {
        parse_query(q)
            .into_iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v)
    });
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let bearer = || {
        header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
    };
    from_query
        .or_else(|| header("x-consul-token").map(str::to_string))
        .or_else(|| bearer().map(str::to_string))
        .filter(|t| !t.is_empty())
}
