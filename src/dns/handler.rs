//! The request handler: questions under the Consul domain are answered by `ConsulZone`;
//! everything else (other zones, forwarding, malformed or non-query messages) goes to
//! hickory's `Catalog`, which answers REFUSED for names it does not serve.
//!
//! The Consul domain is handled here rather than through a `ZoneHandler` in the Catalog so
//! that we control what a zone handler cannot: Consul's per-query shuffling and answer
//! limits, SRV additional records rebuilt after a cut, and the TC bit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::opt::EdnsOption;
use hickory_server::proto::rr::{RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{Catalog, MessageResponseBuilder};
use tracing::warn;

use super::zone::{Answer, ConsulZone};
use crate::metrics::Metrics;

/// Limits applied when a response is written.
#[derive(Debug, Clone, Copy)]
pub struct ResponseLimits {
    /// `udp_answer_limit`: most answers in a UDP response to a client without EDNS.
    pub udp_answer_limit: usize,
    /// The largest UDP payload we send, whatever the client advertises.
    pub max_udp_payload: u16,
    /// RA flag: set when forwarding is configured.
    pub recursion_available: bool,
}

/// RFC 8914 Extended DNS Error option code.
const EDE_OPTION: u16 = 15;
/// RFC 8914 INFO-CODE "Stale Answer".
const EDE_STALE_ANSWER: u16 = 3;

pub struct DnsHandler {
    zone: Arc<ConsulZone>,
    catalog: Catalog,
    limits: ResponseLimits,
    metrics: Arc<Metrics>,
}

impl DnsHandler {
    pub fn new(
        zone: Arc<ConsulZone>,
        catalog: Catalog,
        limits: ResponseLimits,
        metrics: Arc<Metrics>,
    ) -> Self {
        DnsHandler {
            zone,
            catalog,
            limits,
            metrics,
        }
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        let start = Instant::now();
        let info = self.respond::<R, T>(request, response_handle).await;
        let qtype = request
            .queries
            .queries()
            .first()
            .map_or(RecordType::Unknown(0), |q| q.query_type());
        self.metrics.count_query(qtype, info.response_code);
        self.metrics
            .answer_seconds
            .observe(start.elapsed().as_secs_f64());
        info
    }
}

impl DnsHandler {
    async fn respond<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let plain_query = request.metadata.message_type == MessageType::Query
            && request.metadata.op_code == OpCode::Query
            && request.queries.len() == 1
            && request.edns.as_ref().is_none_or(|e| e.version() == 0);
        let query = request.queries.queries().first().filter(|_| plain_query);
        let Some(query) = query else {
            return self
                .catalog
                .handle_request::<R, T>(request, response_handle)
                .await;
        };
        // The Consul domain, else a reverse lookup of an address in the view, else the rest.
        let (mut answer, domain) = if let Some(d) = self.zone.domain_of(query.name()) {
            let name = query.original().name();
            let answer = self
                .zone
                .answer(name, query.name(), query.query_type(), d)
                .await;
            (answer, Some(d))
        } else if let Some(answer) = self
            .zone
            .reverse(query.original().name(), query.query_type())
        {
            (answer, None)
        } else {
            return self
                .catalog
                .handle_request::<R, T>(request, response_handle)
                .await;
        };

        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = answer.rcode;
        metadata.authoritative =
            matches!(answer.rcode, ResponseCode::NoError | ResponseCode::NXDomain);
        metadata.recursion_available = self.limits.recursion_available;
        if request.protocol() == Protocol::Udp
            && request.edns.is_none()
            && answer.answers.len() > self.limits.udp_answer_limit
        {
            // Consul cuts silently; a cut answer without TC is a wrong answer, so we set it
            // and the client can retry over TCP for the whole set.
            answer.answers.truncate(self.limits.udp_answer_limit);
            sync_additionals(&mut answer);
            metadata.truncation = true;
        }
        if answer.stale.is_some() {
            self.metrics.stale_answers.inc();
        }
        let soa = domain.filter(|_| answer.with_soa).map(|d| self.zone.soa(d));
        let edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(
                req.max_payload()
                    .clamp(512, self.limits.max_udp_payload.max(512)),
            );
            e.set_version(0);
            if let Some(age) = answer.stale {
                e.options_mut().insert(stale_answer_option(age));
            }
            e
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let response = builder.build(
            metadata,
            answer.answers.iter(),
            answer.authority.iter(),
            soa.iter(),
            answer.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(error) => {
                warn!(%error, "failed to send a response");
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}

/// RFC 8914 Extended DNS Error 3 "Stale Answer", with the age in its text.
fn stale_answer_option(age: Duration) -> EdnsOption {
    let mut data = EDE_STALE_ANSWER.to_be_bytes().to_vec();
    let text = format!("Consul unreachable for {}s; last known data", age.as_secs());
    data.extend_from_slice(text.as_bytes());
    EdnsOption::Unknown(EDE_OPTION, data)
}

/// After answers were cut, keeps only the additional records that a remaining SRV answer
/// points at (Consul's `syncExtra`).
fn sync_additionals(answer: &mut Answer) {
    let targets: Vec<_> = answer
        .answers
        .iter()
        .filter_map(|r: &Record| match &r.data {
            RData::SRV(srv) => Some(srv.target.clone()),
            _ => None,
        })
        .collect();
    answer.additionals.retain(|r| targets.contains(&r.name));
}
