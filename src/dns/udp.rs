//! Our own UDP loop: receive, answer, send, on the socket's task. hickory's UDP server
//! spawns a task per packet and hands every answer through a channel to a sender task; the
//! two thread wake-ups per query cost more than answering from memory (see
//! bench/RESULTS.md). Per datagram, in order: response-rate limiting (`rrl`), the response
//! cache (`response_cache`: a positive answer about a local service sent again without
//! being built), then the handler. A query whose answer is ready (every name of the view)
//! is answered inline; one that must wait (the first load of a service, the first sync,
//! forwarding) continues on a task of its own, so it never holds up the others. Datagrams
//! are received in batches (`udp_batch`). hickory stays the protocol layer: its parser, its
//! `Request`, its response builder and encoder, and the same handler as TCP.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::proto::op::{Header, MessageType};
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_server::server::{Request, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::fast_path::{FastPath, Step};
use super::handler::DnsHandler;
use super::response_cache::Question;
use super::rrl::{Rrl, Verdict};
use super::udp_batch::{BatchReceiver, SendBatch};
use super::wire;
use crate::metrics::Metrics;

/// Queries waiting at once (for a cold service, the first sync, a recursor) per socket;
/// beyond, new ones that would wait are dropped and counted, so a flood of them cannot
/// grow memory without bound. Queries answered from memory are never waiting.
pub const MAX_WAITING: usize = 10_000;

/// Serves `socket` with `handler` until `cancel` fires; `rrl` limits the answers.
pub async fn serve(
    socket: UdpSocket,
    handler: Arc<DnsHandler>,
    metrics: Arc<Metrics>,
    rrl: Option<Arc<Rrl>>,
    cancel: CancellationToken,
) {
    let mut server = UdpServer::new(Arc::new(socket), handler, metrics, rrl);
    let mut rx = BatchReceiver::default();
    let mut tx = SendBatch::default();
    loop {
        let n = tokio::select! {
            _ = cancel.cancelled() => return,
            r = rx.recv(&server.socket) => match r {
                Ok(n) => n,
                Err(e) => {
                    // ICMP errors from earlier sends surface here; nothing to do with them.
                    debug!(error = %e, "UDP receive error");
                    continue;
                }
            },
        };
        for i in 0..n {
            if let (datagram, Some(src)) = rx.datagram(i) {
                if !datagram.is_empty() && answerable(src) {
                    server.answer(datagram, src, &mut tx).await;
                }
            }
        }
        tx.send(&server.socket).await;
    }
}

/// What the loop of one socket owns.
struct UdpServer {
    socket: Arc<UdpSocket>,
    handler: Arc<DnsHandler>,
    metrics: Arc<Metrics>,
    rrl: Option<Arc<Rrl>>,
    waiting: Arc<Semaphore>,
    fast: FastPath,
}

/// The per-datagram path of the socket loop, on its own: for the fuzz harness
/// (`crate::fuzzing`), which feeds it datagrams directly.
#[doc(hidden)]
pub struct DatagramPath(UdpServer);

impl DatagramPath {
    pub fn new(socket: Arc<UdpSocket>, handler: Arc<DnsHandler>, metrics: Arc<Metrics>) -> Self {
        DatagramPath(UdpServer::new(socket, handler, metrics, None))
    }

    /// Answers `datagram` from `src` as the loop does; the task answering it when the
    /// answer must wait.
    pub async fn answer(&mut self, datagram: &[u8], src: SocketAddr) -> Option<JoinHandle<()>> {
        let mut tx = SendBatch::default();
        let waiting = self.0.answer(datagram, src, &mut tx).await;
        tx.send(&self.0.socket).await;
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
            fast: FastPath::default(),
        }
    }

    /// Answers `datagram` from `src`: a stored response is queued in `tx`, others are
    /// sent as they are built.
    async fn answer(
        &mut self,
        datagram: &[u8],
        src: SocketAddr,
        tx: &mut SendBatch,
    ) -> Option<JoinHandle<()>> {
        if self.rate_limited(datagram, src).await {
            return None;
        }
        let handler = &self.handler;
        let question = Question::read(datagram, handler.max_udp_payload(), || {
            handler.recursion_available_to(src.ip())
        });
        let mut step = Step::Full(None);
        if let Some(q) = &question {
            if tx.is_full() {
                tx.send(&self.socket).await;
            }
            let (fast, metrics) = (&mut self.fast, &self.metrics);
            let written = tx.queue(src, |out| {
                step = fast.answer(handler, metrics, q, datagram, out);
                matches!(step, Step::Written)
            });
            if written {
                return None;
            }
        }
        let request = parse(datagram, src, &self.socket).await?;
        let kept = question.as_ref().map(|_| Kept::default());
        let responder = UdpResponder {
            socket: Arc::clone(&self.socket),
            dst: src,
            keep: kept.clone(),
        };
        let handler = Arc::clone(handler);
        let negative = step.negative();
        let mut answer = Box::pin(async move {
            let answered = step.answered().await;
            handler
                .handle::<_, TokioTime>(&request, responder, answered)
                .await
                .1
        });
        match (&mut answer).now_or_never() {
            Some(basis) => {
                if let (Some(q), Some(bytes)) = (question, kept.and_then(|k| k.take())) {
                    let handler = &self.handler;
                    self.fast
                        .keep(handler, &self.metrics, q, negative, bytes, basis);
                }
                None
            }
            None => match Arc::clone(&self.waiting).try_acquire_owned() {
                Ok(permit) => Some(tokio::spawn(async move {
                    answer.await;
                    drop(permit);
                })),
                Err(_) => {
                    self.metrics.udp_dropped.inc();
                    None
                }
            },
        }
    }

    /// Response-rate limiting, before anything else is done for the query: true when its
    /// answer is dropped, or slipped (an empty truncated response sent instead), and counted.
    async fn rate_limited(&self, datagram: &[u8], src: SocketAddr) -> bool {
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
                let request = parse(datagram, src, &self.socket).await;
                if let Some(bytes) = request.as_ref().and_then(wire::truncated) {
                    send(&self.socket, &bytes, src).await;
                }
                true
            }
        }
    }
}

/// Sends `bytes` to `dst`, waiting for the socket only when its buffer is full.
async fn send(socket: &UdpSocket, bytes: &[u8], dst: SocketAddr) {
    let sent = match socket.try_send_to(bytes, dst) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket.send_to(bytes, dst).await,
        r => r,
    };
    if let Err(e) = sent {
        debug!(%dst, error = %e, "UDP send error");
    }
}

/// A copy of the response the handler sent, for the response cache.
#[derive(Clone, Default)]
struct Kept(Arc<Mutex<Option<Vec<u8>>>>);

impl Kept {
    fn put(&self, bytes: &[u8]) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(bytes.to_vec());
    }

    fn take(&self) -> Option<Vec<u8>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
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

/// The request in `bytes`; None when there is nothing to answer: shorter than a header, a
/// response (answering those makes reflection loops), or malformed (then FORMERR is sent).
pub(crate) async fn parse(bytes: &[u8], src: SocketAddr, socket: &UdpSocket) -> Option<Request> {
    let header = Header::read(&mut BinDecoder::new(bytes)).ok()?;
    if header.metadata.message_type == MessageType::Response {
        return None;
    }
    match Request::from_bytes(bytes.to_vec(), src, Protocol::Udp) {
        Ok(request) => Some(request),
        Err(e) => {
            debug!(%src, error = %e, "malformed request: FORMERR");
            if let Some(bytes) = wire::formerr(&header, 512) {
                send(socket, &bytes, src).await;
            }
            None
        }
    }
}

/// Sends the answer straight back on the socket it came in on; keeps a copy of the
/// response when asked to.
#[derive(Clone)]
struct UdpResponder {
    socket: Arc<UdpSocket>,
    dst: SocketAddr,
    keep: Option<Kept>,
}

#[async_trait::async_trait]
impl ResponseHandler for UdpResponder {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let max = response.edns().map_or(512, |e| e.max_payload().max(512));
        let (info, bytes) = wire::encode(response, max)?;
        if let Some(keep) = &self.keep {
            keep.put(&bytes);
        }
        match self.socket.try_send_to(&bytes, self.dst) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.socket
                    .send_to(&bytes, self.dst)
                    .await
                    .map_err(NetError::from)?;
            }
            Err(e) => return Err(NetError::from(e)),
        }
        Ok(info)
    }
}
