//! DNS over TCP (RFC 1035 §4.2.2, RFC 7766), with bounds: at most `max_connections` open
//! (past it a new connection is accepted and reset at once, which keeps the kernel's
//! backlog moving), each closed when no complete query arrives within `idle_timeout`, when
//! `total_timeout` has passed since it was accepted (a client trickling bytes cannot hold
//! a slot), or when an answer cannot be written within `write_timeout` (a client that does
//! not read). hickory's TCP server has none of these bounds.
//!
//! Each connection is a task of its own: a query waiting on Consul never holds up the
//! accept loop or other connections. Pipelined queries on one connection are answered
//! concurrently (up to [`MAX_IN_FLIGHT`]) and each answer is written as soon as it is
//! ready, so out of order (RFC 7766 §6.2.1.1); clients match answers by id.
//! Queries go through `responder::respond` as UDP's do (stored responses, TCP's own per
//! runtime thread, then the handler).

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use hickory_server::net::xfer::Protocol;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::handler::DnsHandler;
use super::responder::{self, Reply, StoredResponses};
use crate::config::TcpConfig;
use crate::metrics::Metrics;

/// Queries of one connection being answered at once; past it, the connection is not read
/// until one is answered.
pub const MAX_IN_FLIGHT: usize = 32;
/// How long a connection may take, once shutdown starts, to write the answers of the
/// queries it already read.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(3);
/// Pause after an accept error other than a connection aborted by its client (out of file
/// descriptors, say), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Bytes of queries buffered per connection before reading pauses: two of the largest.
const MAX_BUFFERED: usize = 2 * (2 + u16::MAX as usize);

/// Serves `listener` with `handler` until `cancel` fires; then stops accepting and returns
/// once every connection has written the answers to the queries it had read (each for at
/// most `SHUTDOWN_DRAIN`).
pub async fn serve(
    listener: TcpListener,
    handler: Arc<DnsHandler>,
    metrics: Arc<Metrics>,
    limits: TcpConfig,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    loop {
        let (stream, src) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    debug!(error = %e, "TCP accept error");
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::ConnectionReset
                            | std::io::ErrorKind::Interrupted
                    ) {
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics.tcp_refused.inc();
            debug!(%src, "TCP connection refused: tcp_max_connections are open");
            // A reset rather than a close: no TIME_WAIT left here for a refused client.
            let _ = stream.set_zero_linger();
            continue;
        };
        let open = OpenConnection::new(Arc::clone(&metrics));
        let conn = Connection {
            handler: Arc::clone(&handler),
            metrics: Arc::clone(&metrics),
            limits,
            src,
            cancel: cancel.clone(),
        };
        connections.spawn(async move {
            conn.run(stream).await;
            drop(open);
            drop(slot);
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Counts a connection in the gauge while it lives (also if its task is aborted).
struct OpenConnection(Arc<Metrics>);

impl OpenConnection {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.tcp_connections.inc();
        OpenConnection(metrics)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.tcp_connections.dec();
    }
}

/// The answer frames (length-prefixed) of one query.
type Answer = Pin<Box<dyn Future<Output = Vec<u8>> + Send>>;

struct Connection {
    handler: Arc<DnsHandler>,
    metrics: Arc<Metrics>,
    limits: TcpConfig,
    src: SocketAddr,
    cancel: CancellationToken,
}

/// What the read buffer starts with.
enum Frame {
    /// Not a whole message in the buffer yet.
    Partial,
    /// A message (without its length prefix).
    Message(Vec<u8>),
    /// A zero length: not DNS; the connection is closed.
    Invalid,
}

impl Connection {
    async fn run(self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = stream.into_split();
        let accepted = Instant::now();
        let end = accepted + self.limits.total_timeout;
        let mut idle_until = accepted + self.limits.idle_timeout;
        let mut buf: Vec<u8> = Vec::with_capacity(1024);
        let mut answers: FuturesUnordered<Answer> = FuturesUnordered::new();
        let mut reading = true;
        let mut drain_until = None;
        loop {
            while reading && answers.len() < MAX_IN_FLIGHT {
                match next_frame(&mut buf) {
                    Frame::Partial => break,
                    Frame::Invalid => {
                        debug!(src = %self.src, "zero-length TCP message: closing");
                        return;
                    }
                    Frame::Message(message) => {
                        idle_until = Instant::now() + self.limits.idle_timeout;
                        if let Some(answer) = self.answer(message) {
                            answers.push(answer);
                        }
                    }
                }
            }
            if !reading && answers.is_empty() {
                return;
            }
            let can_read = reading && answers.len() < MAX_IN_FLIGHT && buf.len() < MAX_BUFFERED;
            let stop_at = drain_until.map_or(end, |d: Instant| d.min(end));
            tokio::select! {
                biased;
                _ = sleep_until(stop_at) => {
                    if drain_until.is_none_or(|d| end <= d) {
                        self.metrics.tcp_total_timeouts.inc();
                        debug!(src = %self.src, "TCP connection reached tcp_total_timeout");
                    }
                    return;
                }
                _ = self.cancel.cancelled(), if reading => {
                    reading = false;
                    drain_until = Some(Instant::now() + SHUTDOWN_DRAIN);
                }
                Some(frames) = answers.next() => {
                    if frames.is_empty() {
                        continue;
                    }
                    let write_until = (Instant::now() + self.limits.write_timeout).min(stop_at);
                    match timeout_at(write_until, writer.write_all(&frames)).await {
                        Ok(Ok(())) => idle_until = Instant::now() + self.limits.idle_timeout,
                        Ok(Err(e)) => {
                            debug!(src = %self.src, error = %e, "TCP write failed");
                            return;
                        }
                        Err(_) => {
                            if write_until >= end {
                                self.metrics.tcp_total_timeouts.inc();
                            } else if drain_until.is_none() {
                                self.metrics.tcp_write_timeouts.inc();
                                debug!(src = %self.src, "TCP answer not written within tcp_write_timeout");
                            }
                            return;
                        }
                    }
                }
                r = reader.read_buf(&mut buf), if can_read => match r {
                    // The client is done sending (it may have half-closed): answer what
                    // it asked, then close.
                    Ok(0) => reading = false,
                    Ok(_) => {}
                    Err(e) => {
                        debug!(src = %self.src, error = %e, "TCP read failed");
                        return;
                    }
                },
                _ = sleep_until(idle_until), if reading && answers.is_empty() => {
                    self.metrics.tcp_idle_timeouts.inc();
                    debug!(src = %self.src, "TCP connection idle for tcp_idle_timeout");
                    return;
                }
            }
        }
    }

    /// The future answering `message` with its framed reply, or None when nothing is to
    /// be sent: shorter than a header, or a response (answering those makes reflection
    /// loops).
    fn answer(&self, message: Vec<u8>) -> Option<Answer> {
        let mut out = Vec::new();
        let reply = STORED.with_borrow_mut(|stored| {
            responder::respond(
                &self.handler,
                stored,
                &message,
                self.src,
                Protocol::Tcp,
                &mut out,
            )
        });
        match reply {
            Reply::Sent => Some(Box::pin(std::future::ready(frame(out)))),
            Reply::Drop => None,
            Reply::Later(later) => Some(Box::pin(async move {
                let bytes = later.await;
                if bytes.is_empty() {
                    Vec::new()
                } else {
                    frame(bytes)
                }
            })),
        }
    }
}

thread_local! {
    /// The stored TCP responses of this thread (each runtime worker has its own, as each
    /// UDP socket does: no locking). Apart from UDP's: TCP answers are never cut to fit.
    static STORED: RefCell<StoredResponses> = RefCell::new(StoredResponses::default());
}

/// Takes the next whole message out of `buf`.
fn next_frame(buf: &mut Vec<u8>) -> Frame {
    let Some(&[hi, lo]) = buf.get(..2) else {
        return Frame::Partial;
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len == 0 {
        return Frame::Invalid;
    }
    let Some(message) = buf.get(2..2 + len) else {
        buf.reserve(2 + len - buf.len());
        return Frame::Partial;
    };
    let message = message.to_vec();
    buf.drain(..2 + len);
    Frame::Message(message)
}

/// `message` with its two-byte length prefix.
fn frame(message: Vec<u8>) -> Vec<u8> {
    let len = u16::try_from(message.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(2 + message.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let mut buf = vec![0, 3, 1, 2];
        assert!(matches!(next_frame(&mut buf), Frame::Partial));
        buf.extend_from_slice(&[3, 0, 1, 9, 0]);
        assert!(matches!(next_frame(&mut buf), Frame::Message(m) if m == [1, 2, 3]));
        assert!(matches!(next_frame(&mut buf), Frame::Message(m) if m == [9]));
        assert!(matches!(next_frame(&mut buf), Frame::Partial));
        buf.push(0);
        assert!(matches!(next_frame(&mut buf), Frame::Invalid), "{buf:?}");
        assert_eq!(frame(vec![7, 8]), vec![0, 2, 7, 8]);
    }
}
