//! Our own UDP loop: receive, answer, send, on the socket's task. hickory's UDP server
//! spawns a task per packet and hands every answer through a channel to a sender task; the
//! two thread wake-ups per query cost more than answering from memory (see
//! bench/RESULTS.md). Here a query whose answer is ready (every name of the view) is
//! answered inline; one that must wait (the first load of a service, the first sync,
//! forwarding) continues on a task of its own, so it never holds up the others.
//! hickory stays the protocol layer: its parser, its `Request`, its response builder and
//! encoder, and the same `RequestHandler` as TCP.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use futures_util::FutureExt;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::proto::op::{Header, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::{
    BinDecodable, BinDecoder, BinEncodable, BinEncoder,
};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::handler::servfail_header;
use crate::metrics::Metrics;

/// The largest datagram read (the DNS maximum over UDP).
const MAX_DATAGRAM: usize = 65_535;
/// Queries waiting at once (for a cold service, the first sync, a recursor) per socket;
/// beyond, new ones that would wait are dropped and counted, so a flood of them cannot
/// grow memory without bound. Queries answered from memory are never waiting.
pub const MAX_WAITING: usize = 10_000;

/// Serves `socket` with `handler` until `cancel` fires.
pub async fn serve<H: RequestHandler>(
    socket: UdpSocket,
    handler: Arc<H>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let socket = Arc::new(socket);
    let waiting = Arc::new(Semaphore::new(MAX_WAITING));
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, src) = tokio::select! {
            _ = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors from earlier sends surface here; nothing to do with them.
                    debug!(error = %e, "UDP receive error");
                    continue;
                }
            },
        };
        if !answerable(src) {
            continue;
        }
        let Some(request) = parse(&buf[..len], src, &socket).await else {
            continue;
        };
        let responder = UdpResponder {
            socket: Arc::clone(&socket),
            dst: src,
        };
        let handler = Arc::clone(&handler);
        let mut answer = Box::pin(async move {
            handler
                .handle_request::<_, TokioTime>(&request, responder)
                .await;
        });
        if (&mut answer).now_or_never().is_none() {
            match Arc::clone(&waiting).try_acquire_owned() {
                Ok(permit) => {
                    tokio::spawn(async move {
                        answer.await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    metrics.udp_dropped.inc();
                }
            }
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
            let mut metadata = Metadata::response_from_request(&header.metadata);
            metadata.response_code = ResponseCode::FormErr;
            let Ok(queries) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
                return None;
            };
            let response = MessageResponseBuilder::new(&queries, None).build_no_records(metadata);
            if let Ok((_, bytes)) = encode(response, 512) {
                let _ = socket.send_to(&bytes, src).await;
            }
            None
        }
    }
}

/// Encodes within `max` bytes; what does not fit is cut and TC set (hickory's encoder).
fn encode<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    max: u16,
) -> Result<(ResponseInfo, Vec<u8>), NetError> {
    let id = response.metadata().id;
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max);
    match response.destructive_emit(&mut encoder) {
        Ok(info) => Ok((info, bytes)),
        Err(e) => {
            warn!(error = %e, "cannot encode a response: SERVFAIL");
            let header = servfail_header(Metadata::new(id, MessageType::Response, OpCode::Query));
            let mut bytes = Vec::with_capacity(12);
            let mut encoder = BinEncoder::new(&mut bytes);
            header
                .emit(&mut encoder)
                .map_err(|e| NetError::from(e.to_string()))?;
            Ok((ResponseInfo::from(header), bytes))
        }
    }
}

/// Sends the answer straight back on the socket it came in on.
#[derive(Clone)]
pub(crate) struct UdpResponder {
    pub(crate) socket: Arc<UdpSocket>,
    pub(crate) dst: SocketAddr,
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
        let (info, bytes) = encode(response, max)?;
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
