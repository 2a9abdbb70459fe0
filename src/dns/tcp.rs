//! DNS over TCP (RFC 1035 §4.2.2, RFC 7766), with bounds: at most `max_connections` open,
//! and at most `max_connections_per_source` from one source (an IPv4 address, or an IPv6
//! /64 so that one host cannot dodge the limit by rotating addresses). A new connection
//! past either limit closes the longest-idle open connection (of its source, or of all),
//! as Knot and NSD do, so that idle connections piling up from one client never keep the
//! others out; "idle" means no query in flight, and the longest-idle one is the one whose
//! last complete query or answer is oldest. A connection just accepted counts as busy for
//! a moment ([`FRESH_GRACE`]), so that a burst of connections does not close its own
//! members before their queries arrive. When every candidate is busy, the new connection
//! waits for room (a connection closing, or going idle) for up to [`ROOM_WAIT`], as in a
//! listen backlog, and is reset only then; at most `max_connections` wait at once. Each
//! connection is also closed when no complete query arrives within `idle_timeout`, when
//! `total_timeout` has passed since it was accepted (a client trickling bytes cannot hold
//! a slot), or when an answer cannot be written within `write_timeout` (a client that does
//! not read). hickory's TCP server has none of these bounds.
//!
//! The accept loop keeps a table of the open connections (`Table`): each publishes when
//! it went idle in an atomic (or that it is busy), and has a token that closes it, so
//! choosing one to close is a scan of one source's connections, or of all of them when
//! the server is full; nothing is locked per query. The table holds one entry per open
//! connection and one per source with connections open, no more.
//!
//! Each connection is a task of its own: a query waiting on Consul never holds up the
//! accept loop or other connections. Pipelined queries on one connection are answered
//! concurrently (up to [`MAX_IN_FLIGHT`]) and each answer is written as soon as it is
//! ready, so out of order (RFC 7766 §6.2.1.1); clients match answers by id.
//! Queries go through `responder::respond` as UDP's do (stored responses, TCP's own per
//! runtime thread, then the handler).
//!
//! DNS over TLS is served by the same code: a listener's connections go through its
//! [`Handshake`] (none for TCP, the TLS handshake for `dot`) once admitted, and are then
//! read and written as any stream. Each listener has its own table and limits.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::handler::DnsHandler;
use super::query_log::Transport;
use super::responder::{self, Reply, StoredResponses};
use super::transfer::Framed;
use crate::config::TcpConfig;
use crate::metrics::ConnectionMetrics;

/// Queries of one connection being answered at once; past it, the connection is not read
/// until one is answered.
pub const MAX_IN_FLIGHT: usize = 32;
/// How long a connection may take, once shutdown starts, to write the answers of the
/// queries it already read.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(3);
/// Pause after an accept error other than a connection aborted by its client (out of file
/// descriptors, say), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// The longest a new connection counts as busy before its first query ([`fresh_grace`]).
const FRESH_GRACE: Duration = Duration::from_millis(500);
/// The longest a new connection waits for room (or `idle_timeout` if shorter).
const ROOM_WAIT: Duration = Duration::from_secs(2);
/// How often a connection waiting for room looks again (besides being told of a close).
const ROOM_POLL: Duration = Duration::from_millis(50);
/// Bytes of queries buffered per connection before reading pauses: two of the largest.
const MAX_BUFFERED: usize = 2 * (2 + u16::MAX as usize);
/// How long a connection that is done may take to close its stream (TLS: to send its
/// close_notify).
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// What a connection goes through between its accept and its first query: nothing for DNS
/// over TCP ([`Plain`]), the TLS handshake for DNS over TLS (`dot`).
pub trait Handshake: Send + Sync + 'static {
    /// The stream the queries are read from and the answers written to.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// How the queries come, for the query log.
    const TRANSPORT: Transport;

    /// The stream of the connection accepted from `src`, or None to close it.
    fn handshake(
        &self,
        stream: TcpStream,
        src: SocketAddr,
    ) -> impl Future<Output = Option<Self::Stream>> + Send;
}

/// DNS over TCP: the accepted stream as it is.
#[derive(Debug, Clone, Copy)]
pub struct Plain;

impl Handshake for Plain {
    type Stream = TcpStream;
    const TRANSPORT: Transport = Transport::Tcp;

    async fn handshake(&self, stream: TcpStream, _src: SocketAddr) -> Option<TcpStream> {
        Some(stream)
    }
}

/// Serves `listener` with `handler`, each connection through `handshake` first, until
/// `cancel` fires; then stops accepting and returns once every connection has written the
/// answers to the queries it had read (each for at most `SHUTDOWN_DRAIN`). Each listener
/// has its own table of connections, bounded by `limits`, and counts into `metrics`.
pub async fn serve<H: Handshake>(
    listener: TcpListener,
    handler: Arc<DnsHandler>,
    handshake: Arc<H>,
    metrics: ConnectionMetrics,
    limits: TcpConfig,
    cancel: CancellationToken,
) {
    let shared = Arc::new(Shared {
        table: Mutex::new(Table::new(Instant::now(), fresh_grace(&limits))),
        room: Notify::new(),
        waiting: AtomicUsize::new(0),
    });
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
        if shared.waiting.load(Ordering::Relaxed) >= limits.max_connections {
            metrics.refused.inc();
            debug!(%src, "TCP connection refused: as many are already waiting for room as may be open");
            // A reset rather than a close: no TIME_WAIT left here for a refused client.
            let _ = stream.set_zero_linger();
            continue;
        }
        shared.waiting.fetch_add(1, Ordering::Relaxed);
        let (handler, handshake, metrics, shared) = (
            Arc::clone(&handler),
            Arc::clone(&handshake),
            metrics.clone(),
            Arc::clone(&shared),
        );
        let close = cancel.child_token();
        connections.spawn(async move {
            let Some((id, activity)) = shared.make_room(src, &limits, &close, &metrics).await
            else {
                metrics.refused.inc();
                // A reset rather than a close: no TIME_WAIT left here for a refused client.
                let _ = stream.set_zero_linger();
                return;
            };
            let slot = Slot::new(metrics.clone(), shared, id);
            let _ = stream.set_nodelay(true);
            // Inside the slot: connections still in their handshake count against the
            // limits too.
            let stream = tokio::select! {
                _ = close.cancelled() => return,
                stream = handshake.handshake(stream, src) => match stream {
                    Some(stream) => stream,
                    None => return,
                },
            };
            let conn = Connection {
                handler,
                metrics,
                limits,
                src,
                transport: H::TRANSPORT,
                cancel: close,
                activity,
            };
            conn.run(stream).await;
            drop(slot);
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// How long a connection just accepted counts as busy, so that a burst of new connections
/// (which send their queries within milliseconds) is not closed to make room for itself;
/// past it, one that sent nothing is idle since it was accepted.
fn fresh_grace(limits: &TcpConfig) -> u64 {
    let grace = FRESH_GRACE.min(limits.idle_timeout / 2);
    u64::try_from(grace.as_millis()).unwrap_or(u64::MAX / 2)
}

/// What the accept loop and the connections share: the table, a signal that room was
/// made, and how many accepted connections wait for room.
struct Shared {
    table: Mutex<Table>,
    room: Notify,
    waiting: AtomicUsize,
}

impl Shared {
    /// Makes room for a connection from `src` (waiting for it, up to [`ROOM_WAIT`], while
    /// every connection it could replace is busy): its id and where it publishes its
    /// activity, or None when no room was made in time. It stops counting as waiting.
    async fn make_room(
        &self,
        src: SocketAddr,
        limits: &TcpConfig,
        close: &CancellationToken,
        metrics: &ConnectionMetrics,
    ) -> Option<(u64, Arc<Activity>)> {
        let source = source_of(src.ip());
        let give_up = Instant::now() + ROOM_WAIT.min(limits.idle_timeout);
        let admitted = loop {
            let mut evicted = Vec::new();
            let result = {
                let mut table = lock(&self.table);
                let now = millis_since(table.base);
                table.admit(source, limits, close.clone(), &mut evicted, now)
            };
            for (victim, token) in evicted {
                metrics.evicted.inc();
                debug!(%src, %victim, "closing the longest-idle TCP connection to make room");
                token.cancel();
            }
            match result {
                Ok(admitted) => break Some(admitted),
                Err(full) if Instant::now() >= give_up || close.is_cancelled() => {
                    debug!(%src, ?full, "TCP connection refused: no room made for it in time");
                    break None;
                }
                Err(_) => tokio::select! {
                    _ = self.room.notified() => {}
                    _ = tokio::time::sleep(ROOM_POLL) => {}
                    _ = close.cancelled() => {}
                },
            }
        };
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        admitted
    }
}

/// `Activity` value of a connection with queries in flight: never closed for room.
const BUSY: u64 = u64::MAX;
/// Marks the `Activity` of a connection that has sent no query yet (with its accept time).
const UNSPOKEN: u64 = 1 << 62;

/// When a connection last went idle, in milliseconds since its table's `base`, or
/// [`BUSY`]; written by the connection, read by the accept loop when it needs room.
#[derive(Debug)]
struct Activity {
    base: Instant,
    since: AtomicU64,
}

impl Activity {
    fn idle_now(&self) {
        self.since.store(millis_since(self.base), Ordering::Relaxed);
    }

    fn busy(&self) {
        self.since.store(BUSY, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.since.load(Ordering::Relaxed)
    }
}

fn millis_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_millis()).unwrap_or(BUSY - 1)
}

/// What the limits count as one client: its IPv4 address, or its IPv6 /64 (an IPv4-mapped
/// IPv6 address, from a dual-stack socket, is the IPv4 address).
fn source_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::from(u64::MAX)))),
        v4 => v4,
    }
}

/// A new connection was refused: every connection it could have replaced is busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Full {
    /// Its source has `max_connections_per_source` open.
    Source,
    /// `max_connections` are open.
    Server,
}

/// One open connection, as the table knows it.
struct Entry {
    source: IpAddr,
    activity: Arc<Activity>,
    close: CancellationToken,
}

/// The open connections of one listener, by id (accept order) and by source. Sources
/// with no connection open have no entry, so the table never holds more than the open
/// connections.
struct Table {
    base: Instant,
    /// Milliseconds a new connection counts as busy (`fresh_grace`).
    grace: u64,
    next_id: u64,
    open: HashMap<u64, Entry>,
    by_source: HashMap<IpAddr, Vec<u64>>,
}

fn lock(table: &Mutex<Table>) -> MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Table {
    fn new(base: Instant, grace: u64) -> Self {
        Table {
            base,
            grace,
            next_id: 0,
            open: HashMap::new(),
            by_source: HashMap::new(),
        }
    }

    /// Makes room for a connection from `source` (taking out the longest-idle connection
    /// of `source` past its limit, then the longest-idle of all past the server's) and adds
    /// it, closed by `close`: its id and where it publishes its activity. Or tells which
    /// limit is full of busy connections. Either way, the connections taken out are added
    /// to `evicted` (their source and the token that closes each), for the caller to close.
    /// `now`: milliseconds since `base`.
    fn admit(
        &mut self,
        source: IpAddr,
        limits: &TcpConfig,
        close: CancellationToken,
        evicted: &mut Vec<(IpAddr, CancellationToken)>,
        now: u64,
    ) -> Result<(u64, Arc<Activity>), Full> {
        while self.by_source.get(&source).map_or(0, Vec::len) >= limits.max_connections_per_source {
            let ids = self.by_source.get(&source).map_or(&[][..], Vec::as_slice);
            let victim = self
                .longest_idle(ids.iter().copied(), now)
                .ok_or(Full::Source)?;
            evicted.extend(self.evict(victim));
        }
        while self.open.len() >= limits.max_connections {
            let victim = self
                .longest_idle(self.open.keys().copied(), now)
                .ok_or(Full::Server)?;
            evicted.extend(self.evict(victim));
        }
        let id = self.next_id;
        self.next_id += 1;
        // Idle since it was accepted, but not closed for room during the grace.
        let activity = Arc::new(Activity {
            base: self.base,
            since: AtomicU64::new(now | UNSPOKEN),
        });
        self.open.insert(
            id,
            Entry {
                source,
                activity: Arc::clone(&activity),
                close,
            },
        );
        self.by_source.entry(source).or_default().push(id);
        Ok((id, activity))
    }

    /// The connection among `ids` idle for the longest (the first accepted of equals), if
    /// any is idle at `now`.
    fn longest_idle(&self, ids: impl Iterator<Item = u64>, now: u64) -> Option<u64> {
        ids.filter_map(|id| {
            let since = self.open.get(&id)?.activity.get();
            if since == BUSY {
                return None;
            }
            // Nothing since it was accepted, within the grace: its query may be on its way.
            let (since, unspoken) = (since & !UNSPOKEN, since & UNSPOKEN != 0);
            let fresh = unspoken && now < since.saturating_add(self.grace);
            (since <= now && !fresh).then_some((since, id))
        })
        .min()
        .map(|(_, id)| id)
    }

    /// Takes connection `id` out of the table: its source and the token that closes it.
    fn evict(&mut self, id: u64) -> Option<(IpAddr, CancellationToken)> {
        let entry = self.remove(id)?;
        Some((entry.source, entry.close))
    }

    /// Takes connection `id` out (when it ended, or was evicted), and its source with it
    /// when that was its last connection.
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.open.remove(&id)?;
        if let Some(ids) = self.by_source.get_mut(&entry.source) {
            if let Some(i) = ids.iter().position(|&x| x == id) {
                ids.swap_remove(i);
            }
            if ids.is_empty() {
                self.by_source.remove(&entry.source);
            }
        }
        Some(entry)
    }
}

/// A connection's place: counted in the gauge and kept in the table while it lives (also
/// if its task is aborted).
struct Slot {
    metrics: ConnectionMetrics,
    shared: Arc<Shared>,
    id: u64,
}

impl Slot {
    fn new(metrics: ConnectionMetrics, shared: Arc<Shared>, id: u64) -> Self {
        metrics.connections.inc();
        Slot {
            metrics,
            shared,
            id,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics.connections.dec();
        // Already gone when it was evicted.
        lock(&self.shared.table).remove(self.id);
        self.shared.room.notify_one();
    }
}

/// The answer frames (length-prefixed) of one query.
type Answer = Pin<Box<dyn Future<Output = Frames> + Send>>;

/// What answers one query: its frames, or a zone transfer's messages, each made when the
/// previous one is written.
enum Frames {
    Ready(Vec<u8>),
    Transfer(Framed),
}

struct Connection {
    handler: Arc<DnsHandler>,
    metrics: ConnectionMetrics,
    limits: TcpConfig,
    src: SocketAddr,
    transport: Transport,
    /// Fires at shutdown, or when the connection is closed to make room for another.
    cancel: CancellationToken,
    /// Published for the accept loop: when this connection went idle, or that it is busy.
    activity: Arc<Activity>,
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
    async fn run<S: AsyncRead + AsyncWrite + Unpin>(self, stream: S) {
        let (mut reader, mut writer) = tokio::io::split(stream);
        self.exchange(&mut reader, &mut writer).await;
        // TCP: the FIN goes before the close; TLS: the close_notify too.
        let _ = tokio::time::timeout(CLOSE_WAIT, writer.shutdown()).await;
    }

    /// Reads the queries and writes their answers until the connection is to be closed.
    async fn exchange<R, W>(&self, reader: &mut R, writer: &mut W)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let accepted = Instant::now();
        let end = accepted + self.limits.total_timeout;
        let mut idle_until = accepted + self.limits.idle_timeout;
        let mut buf: Vec<u8> = Vec::with_capacity(1024);
        let mut answers: FuturesUnordered<Answer> = FuturesUnordered::new();
        let mut reading = true;
        let mut drain_until = None;
        // What `activity` says: busy (queries in flight), or idle since a time.
        let mut busy = false;
        loop {
            // A complete query read, or an answer written: the connection is not idle.
            let mut active = false;
            while reading && answers.len() < MAX_IN_FLIGHT {
                match next_frame(&mut buf) {
                    Frame::Partial => break,
                    Frame::Invalid => {
                        debug!(src = %self.src, "zero-length TCP message: closing");
                        return;
                    }
                    Frame::Message(message) => {
                        idle_until = Instant::now() + self.limits.idle_timeout;
                        active = true;
                        if let Some(answer) = self.answer(message) {
                            answers.push(answer);
                        }
                    }
                }
            }
            if !answers.is_empty() {
                if !busy {
                    self.activity.busy();
                    busy = true;
                }
            } else if busy || active {
                self.activity.idle_now();
                busy = false;
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
                        self.metrics.total_timeouts.inc();
                        debug!(src = %self.src, "TCP connection reached tcp_total_timeout");
                    }
                    return;
                }
                _ = self.cancel.cancelled(), if reading => {
                    reading = false;
                    drain_until = Some(Instant::now() + SHUTDOWN_DRAIN);
                }
                Some(frames) = answers.next() => {
                    let written = match frames {
                        Frames::Ready(frames) if frames.is_empty() => continue,
                        Frames::Ready(frames) => self.write(writer, &frames, end, drain_until).await,
                        Frames::Transfer(messages) => {
                            let mut written = true;
                            for message in messages {
                                // Shutting down: the rest of the transfer gets the drain's time.
                                if self.cancel.is_cancelled() && reading {
                                    reading = false;
                                    drain_until = Some(Instant::now() + SHUTDOWN_DRAIN);
                                }
                                if !self.write(writer, &message, end, drain_until).await {
                                    written = false;
                                    break;
                                }
                            }
                            written
                        }
                    };
                    if !written {
                        return;
                    }
                    idle_until = Instant::now() + self.limits.idle_timeout;
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
                    self.metrics.idle_timeouts.inc();
                    debug!(src = %self.src, "TCP connection idle for tcp_idle_timeout");
                    return;
                }
            }
        }
    }

    /// Writes `frames` within `tcp_write_timeout`, and before the connection's end (`end`,
    /// or the shutdown's drain); false when the connection is to be closed.
    async fn write<W: AsyncWrite + Unpin>(
        &self,
        writer: &mut W,
        frames: &[u8],
        end: Instant,
        drain_until: Option<Instant>,
    ) -> bool {
        let stop_at = drain_until.map_or(end, |d| d.min(end));
        let write_until = (Instant::now() + self.limits.write_timeout).min(stop_at);
        // A TLS stream may hold the bytes until flushed.
        let write = async {
            writer.write_all(frames).await?;
            writer.flush().await
        };
        match timeout_at(write_until, write).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                debug!(src = %self.src, error = %e, "TCP write failed");
                false
            }
            Err(_) => {
                if write_until >= end {
                    self.metrics.total_timeouts.inc();
                } else if drain_until.is_none() {
                    self.metrics.write_timeouts.inc();
                    debug!(src = %self.src, "TCP answer not written within tcp_write_timeout");
                }
                false
            }
        }
    }

    /// The future answering `message` with its framed reply, or None when nothing is to
    /// be sent: shorter than a header, or a response (answering those makes reflection
    /// loops).
    fn answer(&self, message: Vec<u8>) -> Option<Answer> {
        if let Some(transfer) = self.handler.transfer(&message, self.src) {
            return Some(Box::pin(std::future::ready(Frames::Transfer(transfer))));
        }
        let mut out = Vec::new();
        let reply = STORED.with_borrow_mut(|stored| {
            responder::respond(
                &self.handler,
                stored,
                &message,
                self.src,
                self.transport,
                &mut out,
            )
        });
        match reply {
            Reply::Sent => Some(Box::pin(std::future::ready(Frames::Ready(frame(out))))),
            Reply::Drop => None,
            Reply::Later(later) => Some(Box::pin(async move {
                let bytes = later.await;
                Frames::Ready(if bytes.is_empty() {
                    Vec::new()
                } else {
                    frame(bytes)
                })
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

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_slash_64s() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(source_of(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(source_of(ip("2001:db8:1:2:a:b:c:d")), ip("2001:db8:1:2::"));
        assert_eq!(
            source_of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            source_of(ip("2001:db8:1:2::1"))
        );
        assert_ne!(
            source_of(ip("2001:db8:1:3::1")),
            source_of(ip("2001:db8:1:2::1"))
        );
    }

    /// The tests' clock: every activity they set is before it.
    const NOW: u64 = 1_000_000;

    fn limits(max_connections: usize, max_connections_per_source: usize) -> TcpConfig {
        TcpConfig {
            max_connections,
            max_connections_per_source,
            ..TcpConfig::default()
        }
    }

    /// Admits a connection from `source` whose activity is `since`; returns its id and
    /// the ids evicted for it.
    fn add(table: &mut Table, limits: &TcpConfig, source: &str, since: u64) -> (u64, Vec<u64>) {
        let source: IpAddr = source.parse().unwrap();
        let before: Vec<u64> = table.open.keys().copied().collect();
        let mut tokens = Vec::new();
        let (id, activity) = table
            .admit(
                source_of(source),
                limits,
                CancellationToken::new(),
                &mut tokens,
                NOW,
            )
            .unwrap_or_else(|full| panic!("{source} refused: {full:?}"));
        activity.since.store(since, Ordering::Relaxed);
        let mut evicted: Vec<u64> = before
            .into_iter()
            .filter(|id| !table.open.contains_key(id))
            .collect();
        evicted.sort_unstable();
        assert_eq!(tokens.len(), evicted.len());
        (id, evicted)
    }

    fn set(table: &Table, id: u64, since: u64) {
        table.open[&id]
            .activity
            .since
            .store(since, Ordering::Relaxed);
    }

    #[test]
    fn a_source_at_its_limit_replaces_its_longest_idle_connection() {
        let l = limits(10, 3);
        let mut t = Table::new(Instant::now(), 1000);
        let (a, _) = add(&mut t, &l, "10.0.0.1", 100);
        let (b, _) = add(&mut t, &l, "10.0.0.1", 50);
        let (c, _) = add(&mut t, &l, "10.0.0.1", 200);
        let (other, _) = add(&mut t, &l, "10.0.0.2", 1);
        // b went idle first; the other source's older connection is not its to close.
        let (d, evicted) = add(&mut t, &l, "10.0.0.1", 300);
        assert_eq!(evicted, [b]);
        // A busy connection is never chosen, however old its last activity.
        set(&t, a, BUSY);
        let (_, evicted) = add(&mut t, &l, "10.0.0.1", 400);
        assert_eq!(evicted, [c]);
        assert!(t.open.contains_key(&a) && t.open.contains_key(&d));
        // All busy: refused, nothing closed.
        for id in t.by_source[&"10.0.0.1".parse::<IpAddr>().unwrap()].clone() {
            set(&t, id, BUSY);
        }
        let mut evicted = Vec::new();
        let r = t.admit(
            "10.0.0.1".parse().unwrap(),
            &l,
            CancellationToken::new(),
            &mut evicted,
            NOW,
        );
        assert_eq!(r.err(), Some(Full::Source));
        assert!(evicted.is_empty());
        assert_eq!(t.open.len(), 4);
        assert!(t.open.contains_key(&other));
    }

    #[test]
    fn a_full_server_replaces_its_longest_idle_connection() {
        let l = limits(4, 2);
        let mut t = Table::new(Instant::now(), 1000);
        let (a, _) = add(&mut t, &l, "10.0.0.1", 10);
        let (b, _) = add(&mut t, &l, "10.0.0.2", 5);
        let (c, _) = add(&mut t, &l, "10.0.0.3", 20);
        let (_, _) = add(&mut t, &l, "10.0.0.4", 30);
        let (_, evicted) = add(&mut t, &l, "10.0.0.5", 40);
        assert_eq!(evicted, [b], "the longest idle of all");
        // Equal activity: the first accepted goes.
        set(&t, c, 10);
        let (_, evicted) = add(&mut t, &l, "10.0.0.6", 50);
        assert_eq!(evicted, [a]);
        for id in t.open.keys().copied().collect::<Vec<_>>() {
            set(&t, id, BUSY);
        }
        let mut evicted = Vec::new();
        let r = t.admit(
            "10.0.0.7".parse().unwrap(),
            &l,
            CancellationToken::new(),
            &mut evicted,
            NOW,
        );
        assert_eq!(r.err(), Some(Full::Server));
        assert!(evicted.is_empty());
        assert_eq!(t.open.len(), 4);
    }

    #[test]
    fn the_table_holds_only_open_connections_and_their_sources() {
        let l = limits(8, 2);
        let mut t = Table::new(Instant::now(), 1000);
        for i in 0..1000u32 {
            let source = format!("2001:db8:{:x}:{:x}::1", i >> 8, i & 0xff);
            add(&mut t, &l, &source, u64::from(i));
            assert!(t.open.len() <= 8 && t.by_source.len() <= 8, "after {i}");
            let ids: usize = t.by_source.values().map(Vec::len).sum();
            assert_eq!(ids, t.open.len());
        }
        for id in t.open.keys().copied().collect::<Vec<_>>() {
            assert!(t.remove(id).is_some());
            assert!(t.remove(id).is_none(), "removed once");
        }
        assert!(t.open.is_empty() && t.by_source.is_empty());
        // One host rotating addresses within its /64 is one source.
        for i in 0..10u32 {
            add(&mut t, &l, &format!("2001:db8::{i:x}"), u64::from(i));
        }
        assert_eq!(t.open.len(), 2);
        assert_eq!(t.by_source.len(), 1);
    }

    #[test]
    fn a_fresh_connection_is_not_closed_for_room_before_its_grace() {
        let l = limits(10, 1);
        let mut t = Table::new(Instant::now(), 1000);
        let src: IpAddr = "10.0.0.1".parse().unwrap();
        let mut evicted = Vec::new();
        assert!(t
            .admit(src, &l, CancellationToken::new(), &mut evicted, NOW)
            .is_ok());
        // Its first query may still be on its way.
        let r = t.admit(src, &l, CancellationToken::new(), &mut evicted, NOW + 999);
        assert_eq!(r.err(), Some(Full::Source));
        assert!(evicted.is_empty());
        // Past the grace without a query: idle since it was accepted.
        assert!(t
            .admit(src, &l, CancellationToken::new(), &mut evicted, NOW + 1000)
            .is_ok());
        assert_eq!(evicted.len(), 1);
    }
}
