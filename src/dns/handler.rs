//! The request handler: a parsed request in, its reply's bytes out. Questions under the
//! Consul domain are answered by `ConsulZone`, reverse lookups of addresses it knows too;
//! names in a static zone go to hickory's `Catalog` (swapped whole when the zones are
//! reloaded), as do malformed and non-query messages; other names go to the recursors
//! (`forward`), for clients in `allow_recursion` only (REFUSED for the others), or are
//! REFUSED when there are none (a reverse name gets NXDOMAIN, as from Consul). RA is set
//! for clients that may recurse. Every reply is fitted to what its client takes
//! (`truncation`) and encoded here; the sockets only move bytes.
//!
//! The Consul domain is handled here rather than through a `ZoneHandler` in the Catalog so
//! that we control what a zone handler cannot: Consul's per-query shuffling and answer
//! limits, SRV additional records rebuilt after a cut, and the TC bit.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_server::proto::rr::rdata::HINFO;
use hickory_server::proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};
use hickory_server::proto::serialize::binary::BinDecoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{Catalog, MessageResponse, MessageResponseBuilder, Queries};
use ipnet::IpNet;
use tracing::debug;

use super::answer::{ede, Answer};
use super::consul_zone::ConsulZone;
use super::encoder::{self, Encoded};
use super::forward::Recursors;
use super::query_log::QueryLog;
use super::response_cache::ClientShape;
use super::transfer::{Framed, Transfers};
use super::truncation::{self, Frame, Limit};
use crate::metrics::{Metrics, NameForm};
use crate::view::freshness::ServiceBasis;
use crate::view::DomainId;

/// Limits applied when a response is written.
#[derive(Debug, Clone, Copy)]
pub struct ResponseLimits {
    /// `udp_answer_limit`: most answers in a UDP response to a client without EDNS.
    pub udp_answer_limit: usize,
    /// The largest UDP payload we send, whatever the client advertises.
    pub max_udp_payload: u16,
    /// `allow_any`: answer ANY for static zones in full; otherwise RFC 8482's minimal
    /// answer (the Consul domain keeps Consul's meaning of ANY).
    pub allow_any: bool,
}

/// TTL of the RFC 8482 synthesized HINFO (the RFC suggests 8482-ish; any sane value).
const RFC8482_TTL: u32 = 3789;

/// Who may have names forwarded to the recursors.
#[derive(Clone, Default)]
pub struct RecursionPolicy {
    /// The recursors, when configured.
    pub recursors: Option<Arc<Recursors>>,
    /// `allow_recursion`.
    pub allow: Vec<IpNet>,
}

impl RecursionPolicy {
    /// Recursion is available to a client at `ip` (RA set, other names forwarded).
    pub fn available_to(&self, ip: IpAddr) -> bool {
        self.recursors.is_some() && self.trusts(ip)
    }

    /// A client at `ip` is in `allow_recursion`: the networks the operator trusts (with
    /// recursion, and with UDP replies larger than their queries).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow.iter().any(|net| net.contains(&ip))
    }
}

/// A reply, encoded, with what it rests on when it may be sent again unchanged while its
/// data is (a positive answer about a local service).
pub struct Replied {
    pub bytes: Vec<u8>,
    pub basis: Option<ServiceBasis>,
    /// What the name asked is.
    pub form: NameForm,
    /// Served from data whose watch is failing.
    pub stale: bool,
}

/// A reply as built, before it is counted.
struct Built {
    encoded: Encoded,
    basis: Option<ServiceBasis>,
    form: NameForm,
    stale: bool,
}

impl Built {
    /// A reply that rests on nothing stored, to a name of `form`.
    fn plain(encoded: Encoded, form: NameForm) -> Built {
        Built {
            encoded,
            basis: None,
            form,
            stale: false,
        }
    }
}

/// The answer to a question under the Consul domain, worked out before the request was
/// parsed (see `responder`).
#[derive(Debug)]
pub struct Answered {
    /// The served domain the name is under (an index into the zone's domains).
    pub domain: DomainId,
    pub answer: Answer,
}

/// An answer still being worked out (a service loaded for the first time, the first sync).
pub type Pending = Pin<Box<dyn Future<Output = Answered> + Send>>;

/// An answer worked out ahead of the request's parsing.
pub enum Answering {
    /// From memory, at once (the common case: no future, no allocation).
    Ready(Answered),
    /// It needs Consul or the first sync; it must not be dropped before it is done (it may
    /// be the load of a service that other queries share).
    Pending(Pending),
}

pub struct DnsHandler {
    zone: Arc<ConsulZone>,
    catalog: Arc<ArcSwap<Catalog>>,
    limits: ResponseLimits,
    recursion: RecursionPolicy,
    metrics: Arc<Metrics>,
    /// Zone transfers, when `allow_transfer` is set.
    transfers: Option<Arc<Transfers>>,
    /// The query log, when on.
    query_log: Option<QueryLog>,
}

impl DnsHandler {
    /// `catalog` is shared with whoever reloads the zones: they store a new Catalog there.
    pub fn new(
        zone: Arc<ConsulZone>,
        catalog: Arc<ArcSwap<Catalog>>,
        limits: ResponseLimits,
        recursion: RecursionPolicy,
        metrics: Arc<Metrics>,
        transfers: Option<Arc<Transfers>>,
    ) -> Self {
        DnsHandler {
            zone,
            catalog,
            limits,
            recursion,
            metrics,
            transfers,
            query_log: None,
        }
    }

    /// This handler with queries logged as `log` says (None: not logged).
    pub fn with_query_log(self, log: Option<QueryLog>) -> Self {
        DnsHandler {
            query_log: log,
            ..self
        }
    }

    /// The query log, when on.
    pub fn query_log(&self) -> Option<&QueryLog> {
        self.query_log.as_ref()
    }

    /// The framed response to `request` over TCP from `src` if it asks for a zone
    /// transfer of the Consul domain (transfers configured); None otherwise.
    pub fn transfer(&self, request: &[u8], src: SocketAddr) -> Option<Framed> {
        self.transfers.as_ref()?.serve(request, src)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The largest UDP response sent.
    pub fn max_udp_payload(&self) -> u16 {
        self.limits.max_udp_payload
    }

    /// Whether a client at `ip` may recurse (RA is set in its answers).
    pub fn recursion_available_to(&self, ip: IpAddr) -> bool {
        self.recursion.available_to(ip)
    }

    /// What a response to a client at `src` over `protocol` whose query is `query_len`
    /// bytes depends on: RA, and for an untrusted UDP client the size it is held to.
    pub fn client_shape(&self, src: IpAddr, protocol: Protocol, query_len: usize) -> ClientShape {
        let trusted = self.recursion.trusts(src);
        ClientShape {
            recursion_available: trusted && self.recursion.recursors.is_some(),
            cap: if protocol == Protocol::Udp && !trusted {
                u16::try_from(truncation::untrusted_cap(query_len)).unwrap_or(u16::MAX)
            } else {
                0
            },
        }
    }

    /// The answer to a plain IN query for `name`/`qtype` when the name is under the Consul
    /// domain (None otherwise), as [`DnsHandler::reply`] would work it out. `name` as sent.
    pub fn answer_ahead(self: &Arc<Self>, name: &Name, qtype: RecordType) -> Option<Answering> {
        let domain = self.zone.domain_of(name)?;
        if let Some(answer) = self.zone.answer_now(name, qtype, domain) {
            return Some(Answering::Ready(Answered { domain, answer }));
        }
        let (handler, name) = (Arc::clone(self), name.clone());
        Some(Answering::Pending(Box::pin(async move {
            let answer = handler.zone.answer(&name, qtype, domain).await;
            Answered { domain, answer }
        })))
    }

    /// Length on the wire of served domain `domain`.
    pub fn domain_len(&self, domain: DomainId) -> usize {
        self.zone.domain_len(domain)
    }

    /// The SOA serial of the Consul domain now.
    pub fn soa_serial(&self) -> u32 {
        self.zone.serial()
    }

    /// The reply to `request`, counted (its type, rcode and time to answer) before it is
    /// returned, so before it is sent: a client that reads the metrics once it has its
    /// answer finds it counted. `answered`: the answer to its question, already worked
    /// out by the caller.
    pub async fn reply(&self, request: &Request, answered: Option<Answered>) -> Replied {
        let start = Instant::now();
        let qtype = request
            .queries
            .queries()
            .first()
            .map_or(RecordType::Unknown(0), |q| q.query_type());
        let built = self.build(request, answered).await;
        let rcode = built.encoded.info.response_code;
        self.metrics.count_query(qtype, rcode, built.form);
        self.metrics
            .answer_seconds
            .observe(start.elapsed().as_secs_f64());
        Replied {
            bytes: built.encoded.bytes,
            basis: built.basis,
            form: built.form,
            stale: built.stale,
        }
    }

    async fn build(&self, request: &Request, answered: Option<Answered>) -> Built {
        if question_points_into_header(request.queries.as_bytes(), request.queries.len()) {
            return Built::plain(self.format_error(request), NameForm::Other);
        }
        if request.metadata.op_code != OpCode::Query {
            // UPDATE, NOTIFY, STATUS, ...: one answer for every zone, as NSD gives, without
            // echoing the sections (an UPDATE's are not a question).
            debug!(client = %request.src(), op_code = ?request.metadata.op_code, "not a query: NOTIMP");
            let encoded = self.without_question(request, ResponseCode::NotImp);
            return Built::plain(encoded, NameForm::Other);
        }
        let plain_query = request.metadata.message_type == MessageType::Query
            && request.metadata.op_code == OpCode::Query
            && request.queries.len() == 1
            && request.edns.as_ref().is_none_or(|e| e.version() == 0);
        let recursion = self.recursion.available_to(request.src().ip());
        let query = request.queries.queries().first().filter(|_| plain_query);
        let Some(query) = query else {
            let (encoded, form) = self.other(request, recursion).await;
            return Built::plain(encoded, form);
        };
        if query.query_class() != DNSClass::IN {
            // Our zones are IN only: another class (CH, HS, ANY, ...) is refused, as NSD
            // and Knot do; a name we would forward goes on as asked.
            let ours = self.zone.domain_of(query.name()).is_some()
                || self.catalog.load().find(query.name()).is_some();
            if ours || self.recursion.recursors.is_none() {
                debug!(client = %request.src(), class = %query.query_class(), "query class is not IN: REFUSED");
                return Built::plain(self.refuse(request), NameForm::Other);
            }
            let (encoded, form) = self.other(request, recursion).await;
            return Built::plain(encoded, form);
        }
        // The Consul domain, else a reverse lookup of an address in the view, else the rest.
        let (mut answer, domain) = if let Some(d) = self.zone.domain_of(query.name()) {
            let answer = match answered.filter(|a| a.domain == d) {
                Some(a) => a.answer,
                None => {
                    let name = query.original().name();
                    let qtype = query.query_type();
                    self.zone.answer(name, qtype, d).await
                }
            };
            (answer, Some(d))
        } else if let Some(answer) = self
            .zone
            .reverse(query.original().name(), query.query_type())
            .await
        {
            (answer.of_form(NameForm::Reverse), Some(DomainId::PRIMARY))
        } else if let Some(answer) = self.unserved_reverse(query.name()) {
            (answer.of_form(NameForm::Reverse), Some(DomainId::PRIMARY))
        } else {
            let (encoded, form) = self.other(request, recursion).await;
            return Built::plain(encoded, form);
        };

        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = answer.rcode;
        metadata.authoritative =
            matches!(answer.rcode, ResponseCode::NoError | ResponseCode::NXDomain);
        metadata.recursion_available = recursion;
        if answer.stale.is_some() {
            self.metrics.stale_answers.inc();
        }
        if let Some(d) = domain.filter(|_| answer.with_soa) {
            answer.authority.push(self.zone.soa(d));
        }
        let mut edns = self.response_edns(request);
        if let (Some(e), Some(age)) = (edns.as_mut(), answer.stale) {
            e.options_mut().insert(stale_answer_option(age));
        }
        if let (Some(e), Some((code, text))) = (edns.as_mut(), &answer.error) {
            e.options_mut().insert(extended_error(*code, text));
        }
        let frame = Frame {
            queries: &request.queries,
            metadata,
            edns: edns.as_ref(),
        };
        let limit = self.limit(request, query.query_type());
        let fitted = truncation::fit(
            &frame,
            &answer.answers,
            &answer.authority,
            &answer.additionals,
            limit,
        );
        // A cut answer sets TC (Consul cuts silently unless `enable_truncate`): the client
        // retries over TCP for the whole set.
        metadata.truncation = fitted.truncated;
        // Sent again from the response cache only if every later answer could be this one
        // in another order: not when instances were drawn (a cut, weights).
        let reusable = answer.rcode == ResponseCode::NoError
            && !answer.answers.is_empty()
            && answer.authority.is_empty()
            && !answer.with_soa
            && answer.stale.is_none()
            && !answer.cut
            && !fitted.truncated
            && answer.basis.as_ref().is_some_and(|b| b.uniform_order);
        let basis = answer.basis.take().filter(|_| reusable).map(|b| *b);
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let response = builder.build(
            metadata,
            fitted.answers.iter(),
            fitted.authority.iter(),
            std::iter::empty(),
            fitted.additionals.iter().copied(),
        );
        Built {
            encoded: encoder::encode(response, limit),
            basis,
            form: answer.form,
            stale: answer.stale.is_some(),
        }
    }

    /// Everything outside the Consul domain: the static zones (the Catalog), else the
    /// recursors for clients that may recurse (REFUSED for the others), else REFUSED. With
    /// the form of the name.
    async fn other(&self, request: &Request, recursion: bool) -> (Encoded, NameForm) {
        let catalog = self.catalog.load_full();
        let is_query = request.metadata.message_type == MessageType::Query
            && request.metadata.op_code == OpCode::Query;
        let question = request.queries.queries().first();
        let in_static_zone = question.is_some_and(|q| catalog.find(q.name()).is_some());
        if is_query && !in_static_zone && request.queries.len() == 1 {
            if let Some(recursors) = &self.recursion.recursors {
                if !recursion {
                    debug!(client = %request.src(), "recursion not allowed for this client: REFUSED");
                    return (self.refuse(request), NameForm::Outside);
                }
                let forwarded = self.forward(request, recursors).await;
                return (forwarded, NameForm::Forwarded);
            }
        }
        let form = match (is_query && request.queries.len() == 1, in_static_zone) {
            (false, _) => NameForm::Other,
            (true, true) => NameForm::Static,
            (true, false) => NameForm::Outside,
        };
        let qtype = question.map(|q| q.query_type());
        if is_query && in_static_zone && qtype == Some(RecordType::ANY) && !self.limits.allow_any {
            return (self.minimal_any(request), form);
        }
        if in_static_zone && matches!(qtype, Some(RecordType::AXFR | RecordType::IXFR)) {
            // Static zones are not transferred (and never over UDP).
            return (self.refuse(request), form);
        }
        // The Catalog sizes UDP answers by the client's EDNS payload; keep our cap (no IP
        // fragmentation) by handing it a copy of the request with the payload lowered.
        let capped;
        let request = match self.capped_request(request) {
            Some(r) => {
                capped = r;
                &capped
            }
            None => request,
        };
        let capture = Capture {
            max: self.limit(request, RecordType::Unknown(0)),
            recursion_available: recursion,
            encoded: Arc::default(),
        };
        catalog
            .handle_request::<_, TokioTime>(request, capture.clone())
            .await;
        let encoded = capture
            .encoded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let encoded = encoded.unwrap_or_else(|| {
            debug!("the Catalog sent no response: SERVFAIL");
            encoder::header_only(encoder::servfail_header(Metadata::response_from_request(
                &request.metadata,
            )))
        });
        (encoded, form)
    }

    /// The recursors' reply to `request`, passed on as they gave it (RA set: the client
    /// may recurse; AA clear); SERVFAIL when every one failed. The OPT record is ours (it is
    /// hop-by-hop, RFC 6891 §6.1.1), with the upstream's DO bit and options.
    async fn forward(&self, request: &Request, recursors: &Recursors) -> Encoded {
        let max = self.limit(request, RecordType::Unknown(0));
        let mut edns = self.response_edns(request);
        let Some(reply) = recursors
            .forward(request, self.limits.max_udp_payload)
            .await
        else {
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            metadata.recursion_available = true;
            if let Some(e) = edns.as_mut() {
                e.options_mut().insert(extended_error(
                    ede::NO_REACHABLE_AUTHORITY,
                    "no recursor answered",
                ));
            }
            let response = MessageResponseBuilder::new(&request.queries, edns.as_ref())
                .build_no_records(metadata);
            return encoder::encode(response, max);
        };
        let mut metadata = reply.metadata;
        metadata.id = request.metadata.id;
        metadata.recursion_available = true;
        // The data is the upstream's, not ours to vouch for.
        metadata.authoritative = false;
        if let (Some(ours), Some(theirs)) = (edns.as_mut(), reply.edns.as_ref()) {
            ours.set_dnssec_ok(theirs.flags().dnssec_ok);
            for (code, option) in theirs.options().as_ref() {
                ours.options_mut().remove(*code);
                ours.options_mut().insert(option.clone());
            }
        }
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            reply.answers.iter(),
            reply.authorities.iter(),
            std::iter::empty(),
            reply.additionals.iter(),
        );
        encoder::encode(response, max)
    }

    /// RFC 8482: ANY gets one synthesized `HINFO "RFC8482" ""`, so it cannot be used to
    /// draw large answers (amplification) out of static zones.
    fn minimal_any(&self, request: &Request) -> Encoded {
        let Some(query) = request.queries.queries().first() else {
            return self.refuse(request);
        };
        let hinfo = Record::from_rdata(
            query.original().name().clone(),
            RFC8482_TTL,
            RData::HINFO(HINFO::new("RFC8482".to_string(), String::new())),
        );
        let edns = self.response_edns(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = ResponseCode::NoError;
        metadata.recursion_available = self.recursion.available_to(request.src().ip());
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            std::iter::once(&hinfo),
            std::iter::empty(),
            std::iter::empty(),
            std::iter::empty(),
        );
        encoder::encode(response, self.limit(request, RecordType::ANY))
    }

    fn refuse(&self, request: &Request) -> Encoded {
        let edns = self.response_edns(request);
        let mut response = MessageResponseBuilder::new(&request.queries, edns.as_ref())
            .error_msg(&request.metadata, ResponseCode::Refused);
        response.metadata_mut().recursion_available =
            self.recursion.available_to(request.src().ip());
        encoder::encode(response, self.limit(request, RecordType::Unknown(0)))
    }

    /// FORMERR without the question section.
    fn format_error(&self, request: &Request) -> Encoded {
        debug!(client = %request.src(), "question compressed into the header: FORMERR");
        self.without_question(request, ResponseCode::FormErr)
    }

    /// `rcode` with the header (and OPT) alone: for a message whose question section we do
    /// not echo (it points into the header, or it is an UPDATE's zone section).
    fn without_question(&self, request: &Request, rcode: ResponseCode) -> Encoded {
        let edns = self.response_edns(request);
        let metadata = Metadata::response_from_request(&request.metadata);
        let Ok(no_queries) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
            return encoder::header_only(encoder::servfail_header(metadata));
        };
        let mut response = MessageResponseBuilder::new(&no_queries, edns.as_ref())
            .error_msg(&request.metadata, rcode);
        response.metadata_mut().recursion_available =
            self.recursion.available_to(request.src().ip());
        encoder::encode(response, self.limit(request, RecordType::Unknown(0)))
    }

    /// A UDP request advertising more than `max_udp_payload`, re-encoded advertising that.
    fn capped_request(&self, request: &Request) -> Option<Request> {
        let max = self.limits.max_udp_payload.max(512);
        if request.protocol() != Protocol::Udp
            || request.edns.as_ref().is_none_or(|e| e.max_payload() <= max)
        {
            return None;
        }
        let mut message = Message::from_vec(request.as_slice()).ok()?;
        message.edns.as_mut()?.set_max_payload(max);
        Request::from_bytes(message.to_vec().ok()?, request.src(), request.protocol()).ok()
    }

    /// The answer to a reverse name (under `arpa.`) that no static zone holds and no
    /// recursor could answer (none are configured): as Consul (dns-spec.md §13), NXDOMAIN
    /// for an address (or any other name), but NODATA for a network's name such as
    /// `2.10.in-addr.arpa.`, which addresses are below: an NXDOMAIN there would tell a
    /// QNAME-minimising resolver that none of them exists (RFC 8020). None otherwise.
    fn unserved_reverse(&self, name: &LowerName) -> Option<Answer> {
        static ARPA: std::sync::LazyLock<LowerName> = std::sync::LazyLock::new(|| {
            LowerName::from(Name::from_ascii("arpa.").unwrap_or_default())
        });
        if self.recursion.recursors.is_some()
            || !ARPA.zone_of(name)
            || self.catalog.load().find(name).is_some()
        {
            return None;
        }
        let name = Name::from(name);
        let network = match name.parse_arpa_name() {
            Ok(net) => net.prefix_len() < net.max_prefix_len(),
            Err(_) => matches!(
                name.to_ascii().as_str(),
                "arpa." | "in-addr.arpa." | "ip6.arpa."
            ),
        };
        Some(if network {
            Answer::nodata()
        } else {
            Answer::nxdomain()
        })
    }

    /// What a reply to `request` may carry.
    fn limit(&self, request: &Request, qtype: RecordType) -> Limit {
        match request.protocol() {
            Protocol::Udp => {
                let limit = Limit::udp(
                    request.edns.as_ref().map(Edns::max_payload),
                    self.limits.max_udp_payload,
                    self.limits.udp_answer_limit,
                );
                if self.recursion.trusts(request.src().ip()) {
                    limit
                } else {
                    limit.untrusted(request.as_slice().len())
                }
            }
            _ => Limit::tcp(qtype),
        }
    }

    /// The OPT record of a reply to `request` (None when it had none): our payload, and
    /// its Client Subnet echoed with scope 0 (RFC 7871 §7.2.1: the answer is the same for
    /// every network, as Consul says of its answers).
    fn response_edns(&self, request: &Request) -> Option<Edns> {
        request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(
                req.max_payload()
                    .clamp(512, self.limits.max_udp_payload.max(512)),
            );
            e.set_version(0);
            if let Some(EdnsOption::Subnet(subnet)) = req.option(EdnsCode::Subnet) {
                let mut echo = *subnet;
                echo.set_scope_prefix(0);
                e.options_mut().insert(EdnsOption::Subnet(echo));
            }
            e
        })
    }
}

/// The one `ResponseHandler`: hickory's Catalog sends its response through it, and it is
/// encoded to fit the client, with RA as the client may recurse (the Catalog never sets
/// it on its authoritative answers).
#[derive(Clone)]
struct Capture {
    max: Limit,
    recursion_available: bool,
    encoded: Arc<Mutex<Option<Encoded>>>,
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        mut response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        response.metadata_mut().recursion_available = self.recursion_available;
        let encoded = encoder::encode(response, self.max);
        let info = encoded.info;
        *self.encoded.lock().unwrap_or_else(PoisonError::into_inner) = Some(encoded);
        Ok(info)
    }
}

/// Length of the DNS header; the question section starts right after it.
const HEADER_LEN: usize = 12;

/// Whether a question name of `questions` (the question section as received, `count`
/// questions) is compressed with a pointer into the header, or the first one with any
/// pointer (nothing before it is a name). hickory echoes the question section byte for
/// byte, so such a pointer would point at the response's own header: a response no client
/// can parse. No real client writes one.
fn question_points_into_header(questions: &[u8], count: usize) -> bool {
    let mut rest = questions;
    for i in 0..count {
        loop {
            let Some((&len, after)) = rest.split_first() else {
                return false;
            };
            if len == 0 {
                rest = after;
                break;
            }
            if len & 0xC0 == 0xC0 {
                let Some((&low, after)) = after.split_first() else {
                    return false;
                };
                let target = (usize::from(len & 0x3F) << 8) | usize::from(low);
                if i == 0 || target < HEADER_LEN {
                    return true;
                }
                rest = after;
                break;
            }
            let Some(after) = after.get(usize::from(len)..) else {
                return false;
            };
            rest = after;
        }
        // QTYPE and QCLASS.
        let Some(after) = rest.get(4..) else {
            return false;
        };
        rest = after;
    }
    false
}

/// RFC 8914 Extended DNS Error 3 "Stale Answer", with the age in its text.
fn stale_answer_option(age: Duration) -> EdnsOption {
    let text = format!("Consul unreachable for {}s; last known data", age.as_secs());
    extended_error(ede::STALE_ANSWER, &text)
}

/// An RFC 8914 Extended DNS Error option: INFO-CODE and EXTRA-TEXT.
fn extended_error(code: u16, text: &str) -> EdnsOption {
    let mut data = code.to_be_bytes().to_vec();
    data.extend_from_slice(text.as_bytes());
    EdnsOption::Unknown(ede::OPTION, data)
}
