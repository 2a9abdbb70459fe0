//! Our own UDP loop: receive, answer, send, on a thread of its own per socket. hickory's UDP
//! server spawns a task per packet and hands every answer through a channel to a sender
//! task; the two thread wake-ups per query cost more than answering from memory (see
//! bench/RESULTS.md). Per datagram, in order: response-rate limiting (`rrl`), then
//! `responder::respond`, as for TCP (stored responses, then the handler), with this
//! socket's own stored responses. A reply ready at once (every name of the view) is
//! queued; one that must wait (the first load of a service, the first sync, forwarding)
//! continues on a task of the runtime, so it never holds up the others. Datagrams are
//! received and sent in batches (`udp_batch`).
//!
//! Why a thread blocking in the receive call rather than a task on the runtime: a socket
//! registered with epoll keeps the poller on its wait queue for good, so the kernel calls
//! into epoll for every query that arrives and for every response sent (when the
//! response's buffer is released). A thread blocking in the receive call is on the queue
//! only while the socket is empty; under load, when it matters, nobody is.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::encoder;
use super::handler::DnsHandler;
use super::query_log::Transport;
use super::responder::{self, Reply, StoredResponses};
use super::rrl::{Rrl, Verdict};
use super::udp_batch::{BatchReceiver, SendBatch};
use crate::log_limit::LogLimit;
use crate::metrics::Metrics;

/// Queries waiting at once (for a cold service, the first sync, a recursor) per socket;
/// beyond, new ones that would wait are dropped and counted, so a flood of them cannot
/// grow memory without bound. Queries answered from memory are never waiting.
pub const MAX_WAITING: usize = 10_000;

/// How long the thread blocks in a receive before it looks whether it must stop.
pub const STOP_CHECK: Duration = Duration::from_millis(100);

/// A waiting answer whose send finds the socket's buffer full tries again this often, at
/// most [`SEND_TRIES`] times in all, then is dropped (as the kernel drops a datagram).
const SEND_RETRY: Duration = Duration::from_millis(2);
const SEND_TRIES: u32 = 50;

/// Serves `socket` with `handler` on a thread of its own (named after `worker`) until `cancel` fires or the
/// runtime this is called on shuts down; `rrl` limits the answers. Answers that must wait
/// continue on tasks of that runtime. The task returned ends when the thread has (the
/// socket is then closed).
pub fn spawn(
    worker: usize,
    socket: tokio::net::UdpSocket,
    handler: Arc<DnsHandler>,
    metrics: Arc<Metrics>,
    rrl: Option<Arc<Rrl>>,
    cancel: &CancellationToken,
) -> io::Result<JoinHandle<()>> {
    let socket = socket.into_std()?;
    socket.set_nonblocking(false)?;
    socket.set_read_timeout(Some(STOP_CHECK))?;
    let server = UdpServer::new(Arc::new(socket), handler, metrics, rrl);
    let runtime = tokio::runtime::Handle::current();
    let stop = cancel.child_token();
    let (done, finished) = oneshot::channel::<()>();
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("dns-udp-{worker}"))
        .spawn(move || {
            let _runtime = runtime.enter();
            server.run(&thread_stop);
            let _ = done.send(());
        })?;
    // Stops the thread when the runtime goes away (this task is then dropped).
    Ok(tokio::spawn(async move {
        let _stop = stop.drop_guard();
        if finished.await.is_err() {
            tracing::error!("the UDP loop panicked: UDP queries are no longer answered");
        }
        // The thread is past its loop; waiting for its exit makes "stopped" mean gone.
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }))
}

/// What the loop of one socket owns.
struct UdpServer {
    /// Blocking, with a receive timeout of [`STOP_CHECK`].
    socket: Arc<UdpSocket>,
    handler: Arc<DnsHandler>,
    metrics: Arc<Metrics>,
    rrl: Option<Arc<Rrl>>,
    waiting: Arc<Semaphore>,
    stored: StoredResponses,
}

#[cfg(feature = "fuzzing")]
/// The per-datagram path of the socket loop, on its own: for the fuzz harness
/// (`fuzzing.rs`), which feeds it datagrams directly.
#[doc(hidden)]
pub struct DatagramPath(UdpServer);

#[cfg(feature = "fuzzing")]
impl DatagramPath {
    pub fn new(socket: Arc<UdpSocket>, handler: Arc<DnsHandler>, metrics: Arc<Metrics>) -> Self {
        DatagramPath(UdpServer::new(socket, handler, metrics, None))
    }

    /// Answers `datagram` from `src` as the loop does; the task answering it when the
    /// answer must wait. Called within a runtime.
    pub fn answer(&mut self, datagram: &[u8], src: SocketAddr) -> Option<JoinHandle<()>> {
        let mut tx = SendBatch::default();
        let waiting = self.0.answer(datagram, src, &mut tx);
        tx.send(&self.0.socket);
        waiting
    }
}

impl UdpServer {
    fn new(
        socket: Arc<UdpSocket>,
        handler: Arc<DnsHandler>,
        metrics: Arc<Metrics>,
        rrl: Option<Arc<Rrl>>,
    ) -> Self {
        UdpServer {
            socket,
            handler,
            metrics,
            rrl,
            waiting: Arc::new(Semaphore::new(MAX_WAITING)),
            stored: StoredResponses::default(),
        }
    }

    /// Receives, answers and sends until `stop` fires.
    fn run(mut self, stop: &CancellationToken) {
        let mut rx = BatchReceiver::default();
        let mut tx = SendBatch::default();
        while !stop.is_cancelled() {
            let n = match rx.recv(&self.socket) {
                Ok(n) => n,
                Err(e) if quiet(&e) => continue,
                Err(e) => {
                    // Seen at warn: an error that repeats (a sandbox refusing recvmmsg)
                    // would otherwise leave UDP silent with nothing in the log.
                    static RECEIVE_ERRORS: LogLimit = LogLimit::every_interval();
                    match RECEIVE_ERRORS.allow() {
                        Some(suppressed) => warn!(error = %e, suppressed, "UDP receive error"),
                        None => debug!(error = %e, "UDP receive error"),
                    }
                    // Not a busy loop should an error repeat.
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            };
            for i in 0..n {
                if let (datagram, Some(src)) = rx.datagram(i) {
                    if !datagram.is_empty() && answerable(src) {
                        self.answer(datagram, src, &mut tx);
                    }
                }
            }
            tx.send(&self.socket);
        }
    }

    /// Answers `datagram` from `src`: a reply ready at once is queued in `tx`; one that
    /// waits goes on a task of the runtime, returned.
    fn answer(
        &mut self,
        datagram: &[u8],
        src: SocketAddr,
        tx: &mut SendBatch,
    ) -> Option<JoinHandle<()>> {
        if self.rate_limited(datagram, src) {
            return None;
        }
        if tx.is_full() {
            tx.send(&self.socket);
        }
        let mut reply = Reply::Drop;
        let (handler, stored) = (&self.handler, &mut self.stored);
        tx.queue(src, |out| {
            reply = responder::respond(handler, stored, datagram, src, Transport::Udp, out);
            matches!(reply, Reply::Sent)
        });
        let Reply::Later(later) = reply else {
            return None;
        };
        let Ok(permit) = Arc::clone(&self.waiting).try_acquire_owned() else {
            self.metrics.udp_dropped.inc();
            return None;
        };
        let socket = Arc::clone(&self.socket);
        Some(tokio::spawn(async move {
            let bytes = later.await;
            drop(permit);
            if !bytes.is_empty() {
                if let Err(e) = send_without_blocking(&socket, &bytes, src).await {
                    debug!(dst = %src, error = %e, "UDP send error");
                }
            }
        }))
    }

    /// Response-rate limiting, before anything else is done for the query: true when its
    /// answer is dropped, or slipped (an empty truncated response sent instead), and counted.
    fn rate_limited(&self, datagram: &[u8], src: SocketAddr) -> bool {
        let Some(rrl) = &self.rrl else {
            return false;
        };
        match rrl.check(src.ip()) {
            Verdict::Answer => false,
            Verdict::Drop => {
                self.metrics.rrl_dropped.inc();
                true
            }
            Verdict::Slip => {
                self.metrics.rrl_slipped.inc();
                let request = Request::from_bytes(datagram.to_vec(), src, Protocol::Udp);
                if let Some(bytes) = request.ok().as_ref().and_then(encoder::truncated) {
                    send(&self.socket, &bytes, src);
                }
                true
            }
        }
    }
}

/// Errors of a receive that are no error: the timeout, a signal.
fn quiet(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Sends `bytes` to `dst` from the socket's thread (blocking while the buffer is full).
fn send(socket: &UdpSocket, bytes: &[u8], dst: SocketAddr) {
    if let Err(e) = socket.send_to(bytes, dst) {
        debug!(%dst, error = %e, "UDP send error");
    }
}

/// Sends `bytes` to `dst` without blocking the thread it runs on: while the socket's
/// buffer is full, it waits and tries again a bounded number of times.
async fn send_without_blocking(
    socket: &UdpSocket,
    bytes: &[u8],
    dst: SocketAddr,
) -> io::Result<()> {
    let (socket, dst) = (socket2::SockRef::from(socket), socket2::SockAddr::from(dst));
    let mut tries = 1;
    loop {
        match socket.send_to_with_flags(bytes, &dst, libc::MSG_DONTWAIT) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && tries < SEND_TRIES => {
                tries += 1;
                tokio::time::sleep(SEND_RETRY).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a response can go back to `src` (hickory's rule: not port 0, not unspecified,
/// not broadcast).
fn answerable(src: SocketAddr) -> bool {
    if src.port() == 0 {
        return false;
    }
    match src.ip() {
        IpAddr::V4(ip) => !ip.is_unspecified() && !ip.is_broadcast(),
        IpAddr::V6(ip) => !ip.is_unspecified(),
    }
}
