//! From a message's bytes to its reply's bytes, one way for UDP and TCP: the sockets only
//! move bytes. In order:
//! - a query whose question [`Question::read`] understands is answered from a stored
//!   response when one fits, before the request is parsed: the response cache
//!   (`response_cache`: the very response, for a positive answer about a local service
//!   whose data has not changed), else, once the answer is worked out from the view, the
//!   negative cache (`negative_cache`: a stored response of its shape for NXDOMAIN or
//!   NODATA);
//! - otherwise the request is parsed and the handler builds the reply, with the answer
//!   already worked out handed to it, and the reply is kept for the next ones.
//!
//! A reply ready at once (every name in memory) is written into the caller's buffer; one
//! that waits on Consul or a recursor is handed back as a future, and never kept.
//!
//! Every query answered, by whichever of these paths, is counted (`dns_queries`, by qtype,
//! rcode and name form) and, when the query log is on and the query is drawn for it,
//! logged (`query_log`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::FutureExt;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Header, MessageType, ResponseCode};
use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_server::server::Request;
use tracing::debug;

use super::encoder;
use super::handler::{Answering, DnsHandler, Replied};
use super::negative_cache::NegativeCache;
use super::query_log::{Logged, Transport};
use super::response_cache::{Question, ResponseCache};
use super::truncation::{TCP_MAX_SIZE, UDP_MIN_SIZE};
use crate::metrics::{NameForm, QueryKind};
use crate::view::DomainId;

/// A reply still being built; its bytes (empty: nothing to send).
pub type Later = Pin<Box<dyn Future<Output = Vec<u8>> + Send>>;

/// What became of a message.
pub enum Reply {
    /// The reply is in the caller's buffer.
    Sent,
    /// Nothing is sent: a response (answering those makes reflection loops), or a runt.
    Drop,
    /// The reply comes later: it waits on Consul or a recursor.
    Later(Later),
}

/// The stored responses of one UDP socket, or of one runtime thread for TCP (no locking).
#[derive(Default)]
pub struct StoredResponses {
    cache: ResponseCache,
    negatives: NegativeCache,
}

/// Answers `message` from `src` over `transport`, with `stored` responses first; a reply
/// ready at once is appended to `out`.
pub fn respond(
    handler: &Arc<DnsHandler>,
    stored: &mut StoredResponses,
    message: &[u8],
    src: SocketAddr,
    transport: Transport,
    out: &mut Vec<u8>,
) -> Reply {
    // The query log's one branch when it is off.
    let logged = match handler.query_log() {
        Some(log) if log.sampled() => Some(Logged::new(message, src, transport)),
        _ => None,
    };
    answer(
        handler,
        stored,
        message,
        src,
        transport.protocol(),
        out,
        logged,
    )
}

/// [`respond`], with `logged` the query's line of the query log when it is drawn for it.
fn answer(
    handler: &Arc<DnsHandler>,
    stored: &mut StoredResponses,
    message: &[u8],
    src: SocketAddr,
    protocol: Protocol,
    out: &mut Vec<u8>,
    logged: Option<Logged>,
) -> Reply {
    let Ok(header) = Header::read(&mut BinDecoder::new(message)) else {
        return Reply::Drop;
    };
    if header.metadata.message_type == MessageType::Response {
        return Reply::Drop;
    }
    let metrics = handler.metrics();
    let question = Question::read(message, handler.max_udp_payload(), || {
        handler.client_shape(src.ip(), protocol, message.len())
    });
    let mut ahead = None;
    if let Some(q) = &question {
        // A stored response is written over `out`'s bytes.
        if let Some(hit) = stored.cache.answer(q, message, out) {
            metrics.response_cache_hits.inc();
            metrics.count(hit);
            if let Some(logged) = logged {
                // A stored response is NOERROR, never stale.
                logged.answered(out, hit.form(), false);
            }
            return Reply::Sent;
        }
        ahead = handler.answer_ahead(q.name(), q.qtype());
        if let Some(Answering::Ready(answered)) = &ahead {
            if answered.answer.is_plain_negative() {
                let rcode = answered.answer.rcode;
                let serial = handler.soa_serial();
                if stored
                    .negatives
                    .answer(q, answered.domain, rcode, serial, message, out)
                {
                    let form = answered.answer.form;
                    metrics.negative_cache_hits.inc();
                    metrics.count_query(q.qtype(), rcode, form);
                    if let Some(logged) = logged {
                        logged.answered(out, form, false);
                    }
                    return Reply::Sent;
                }
            }
        }
    }
    let request = match Request::from_bytes(message.to_vec(), src, protocol) {
        Ok(request) => request,
        Err(e) => {
            debug!(%src, error = %e, "malformed request: FORMERR");
            let max = if protocol == Protocol::Udp {
                UDP_MIN_SIZE
            } else {
                TCP_MAX_SIZE
            };
            return match encoder::formerr(&header, max) {
                Some(bytes) => {
                    if let Some(logged) = logged {
                        logged.answered(&bytes, NameForm::Other, false);
                    }
                    out.extend_from_slice(&bytes);
                    Reply::Sent
                }
                None => Reply::Drop,
            };
        }
    };
    // The shape of a negative answer about to be built: its response is kept as the
    // negative response of its shape.
    let negative = match &ahead {
        Some(Answering::Ready(a)) if a.answer.is_plain_negative() => {
            Some((a.domain, a.answer.rcode))
        }
        _ => None,
    };
    let builder = Arc::clone(handler);
    let mut reply = Box::pin(async move {
        let answered = match ahead {
            None => None,
            Some(Answering::Ready(answered)) => Some(answered),
            Some(Answering::Pending(pending)) => Some(pending.await),
        };
        builder.reply(&request, answered).await
    });
    match (&mut reply).now_or_never() {
        Some(replied) if replied.bytes.is_empty() => Reply::Drop,
        Some(replied) => {
            if let Some(logged) = logged {
                logged.answered(&replied.bytes, replied.form, replied.stale);
            }
            out.extend_from_slice(&replied.bytes);
            if let Some(q) = question {
                stored.keep(handler, q, negative, replied);
            }
            Reply::Sent
        }
        None => Reply::Later(Box::pin(async move {
            let replied = reply.await;
            if let Some(logged) = logged.filter(|_| !replied.bytes.is_empty()) {
                logged.answered(&replied.bytes, replied.form, replied.stale);
            }
            replied.bytes
        })),
    }
}

impl StoredResponses {
    /// Keeps `replied`, the full path's reply to `q`: as the response to `q` while what
    /// it rests on holds, or as the negative response of its shape.
    fn keep(
        &mut self,
        handler: &DnsHandler,
        q: Question,
        negative: Option<(DomainId, ResponseCode)>,
        replied: Replied,
    ) {
        if let Some(basis) = replied.basis {
            let kind = QueryKind::new(q.qtype(), ResponseCode::NoError, replied.form);
            self.cache.store(q, replied.bytes, basis, kind);
        } else if let Some((domain, rcode)) = negative {
            let domain_len = handler.domain_len(domain);
            self.negatives
                .store(&q, domain, domain_len, rcode, replied.bytes);
        }
    }
}
