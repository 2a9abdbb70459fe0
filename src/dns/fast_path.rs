//! Answers that skip hickory's request parser and response builder: a query whose
//! question [`Question::read`] understands is answered from a stored response when one
//! fits, before the request is parsed. In order:
//! - the response cache (`response_cache`): the very response, for a positive answer about
//!   a local service whose data has not changed;
//! - the negative cache (`negative_cache`): the answer is worked out from the view, and if
//!   it is NXDOMAIN or NODATA, a stored response of its shape is written for it.
//!
//! Otherwise the query takes the full path, with the answer already worked out handed to
//! it, and its response is kept for the next ones.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hickory_server::proto::op::ResponseCode;

use super::handler::{Ahead, Answered, DnsHandler};
use super::negative_cache::NegativeCache;
use super::response_cache::{Question, ResponseCache};
use crate::metrics::Metrics;
use crate::view::freshness::ServiceBasis;

/// An answer still being worked out (a service loaded for the first time, the first sync).
pub type Pending = Pin<Box<dyn Future<Output = Answered> + Send>>;

/// What the fast path made of a query.
pub enum Step {
    /// The response is written.
    Written,
    /// Take the full path, with the answer if the question is under the Consul domain.
    Full(Option<Answered>),
    /// Take the full path once the answer is worked out; it must not be dropped before
    /// (it may be the load of a service that other queries share).
    Wait(Pending),
}

impl Step {
    /// The domain and rcode of a negative answer about to take the full path, whose
    /// response can then be kept as the negative response of its shape.
    pub fn negative(&self) -> Option<(usize, ResponseCode)> {
        match self {
            Step::Full(Some(a)) if a.answer.is_plain_negative() => Some((a.domain, a.answer.rcode)),
            _ => None,
        }
    }

    /// The answer worked out for the full path, once it is.
    pub async fn answered(self) -> Option<Answered> {
        match self {
            Step::Written => None,
            Step::Full(answered) => answered,
            Step::Wait(pending) => Some(pending.await),
        }
    }
}

/// The stored responses of one socket or thread (no locking).
#[derive(Default)]
pub struct FastPath {
    cache: ResponseCache,
    negatives: NegativeCache,
}

impl FastPath {
    /// Answers `request` (question `q`) into `out` if a stored response fits.
    pub fn answer(
        &mut self,
        handler: &Arc<DnsHandler>,
        metrics: &Metrics,
        q: &Question,
        request: &[u8],
        out: &mut Vec<u8>,
    ) -> Step {
        if self.cache.answer(q, request, out) {
            metrics.response_cache_hits.inc();
            return Step::Written;
        }
        let answered = match handler.answer_ahead(q.name(), q.qtype()) {
            None => return Step::Full(None),
            Some(Ahead::Pending(pending)) => return Step::Wait(pending),
            Some(Ahead::Ready(answered)) => answered,
        };
        if answered.answer.is_plain_negative() {
            let rcode = answered.answer.rcode;
            let serial = handler.soa_serial();
            let domain = answered.domain;
            if self
                .negatives
                .answer(q, domain, rcode, serial, request, out)
            {
                metrics.negative_cache_hits.inc();
                if let Some(counter) = metrics.query_counter(q.qtype(), rcode) {
                    counter.inc();
                }
                return Step::Written;
            }
        }
        Step::Full(Some(answered))
    }

    /// Keeps `response`, the full path's response to `q`: as the response to `q` while
    /// `basis` holds, or as the negative response of its shape.
    pub fn keep(
        &mut self,
        handler: &DnsHandler,
        metrics: &Metrics,
        q: Question,
        negative: Option<(usize, ResponseCode)>,
        response: Vec<u8>,
        basis: Option<ServiceBasis>,
    ) {
        if let Some(basis) = basis {
            if let Some(counter) = metrics.query_counter(q.qtype(), ResponseCode::NoError) {
                self.cache.store(q, response, basis, counter.clone());
            }
        } else if let Some((domain, rcode)) = negative {
            let domain_len = handler.domain_len(domain);
            self.negatives
                .store(&q, domain, domain_len, rcode, response);
        }
    }
}
