//! Prometheus metrics of one server instance (its own registry: several servers in one
//! process, as in the tests, do not mix their figures).
//!
//! Query counters are created up front and indexed by (qtype, rcode, name form): counting
//! a query is one atomic add at a computed address, with no lookup, lock or allocation.

mod connections;
mod form;
mod striped;

pub use connections::ConnectionMetrics;
pub use form::NameForm;
pub use striped::{StripedCounter, StripedCounters};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::RecordType;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

const QTYPES: [(RecordType, &str); 9] = [
    (RecordType::A, "A"),
    (RecordType::AAAA, "AAAA"),
    (RecordType::SRV, "SRV"),
    (RecordType::ANY, "ANY"),
    (RecordType::TXT, "TXT"),
    (RecordType::SOA, "SOA"),
    (RecordType::NS, "NS"),
    (RecordType::PTR, "PTR"),
    (RecordType::CNAME, "CNAME"),
];
const RCODES: [(ResponseCode, &str); 6] = [
    (ResponseCode::NoError, "NOERROR"),
    (ResponseCode::NXDomain, "NXDOMAIN"),
    (ResponseCode::ServFail, "SERVFAIL"),
    (ResponseCode::Refused, "REFUSED"),
    (ResponseCode::NotImp, "NOTIMP"),
    (ResponseCode::FormErr, "FORMERR"),
];
/// Label values past the known ones.
const OTHER: &str = "other";
const FORMS: usize = NameForm::ALL.len();
/// `dns_queries` counters: per qtype (and "other"), per rcode (and "other"), per form.
const QUERY_KINDS: usize = (QTYPES.len() + 1) * (RCODES.len() + 1) * FORMS;

/// A `dns_queries` counter: its qtype, rcode and name form as an index into counters
/// created up front. Worked out once where an answer is stored, counted at every hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryKind(u16);

impl QueryKind {
    pub fn new(qtype: RecordType, rcode: ResponseCode, form: NameForm) -> QueryKind {
        let t = QTYPES
            .iter()
            .position(|(q, _)| *q == qtype)
            .unwrap_or(QTYPES.len());
        let r = RCODES
            .iter()
            .position(|(c, _)| *c == rcode)
            .unwrap_or(RCODES.len());
        let i = (t * (RCODES.len() + 1) + r) * FORMS + form.index();
        QueryKind(u16::try_from(i).unwrap_or(u16::MAX))
    }

    /// Its name form.
    pub fn form(self) -> NameForm {
        NameForm::ALL
            .get(usize::from(self.0) % FORMS)
            .copied()
            .unwrap_or_default()
    }

    /// Its labels: qtype, rcode, form.
    fn labels(i: usize) -> [(&'static str, &'static str); 3] {
        let (t, rest) = (
            i / ((RCODES.len() + 1) * FORMS),
            i % ((RCODES.len() + 1) * FORMS),
        );
        let (r, f) = (rest / FORMS, rest % FORMS);
        let qtype = QTYPES.get(t).map_or(OTHER, |(_, name)| name);
        let rcode = RCODES.get(r).map_or(OTHER, |(_, name)| name);
        let form = NameForm::ALL.get(f).map_or(OTHER, |f| f.as_str());
        [("qtype", qtype), ("rcode", rcode), ("form", form)]
    }
}

/// The `dns_queries` family: a series per (qtype, rcode, form) counted at least once (of
/// 1,120, most never are).
#[derive(Debug, Clone)]
struct QueryFamily(StripedCounters);

impl TypedMetric for QueryFamily {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for QueryFamily {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for i in 0..self.0.len() {
            let n = self.0.get(i);
            if n == 0 {
                continue;
            }
            let labels = QueryKind::labels(i);
            encoder
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&n, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

pub struct Metrics {
    registry: Registry,
    /// [`QUERY_KINDS`] counters, indexed by [`QueryKind`].
    queries: StripedCounters,
    /// Time from a query's arrival to its answer being handed to the socket.
    pub answer_seconds: Histogram,
    /// Service lookups answered from a live watch.
    pub view_hits: StripedCounter,
    /// Service lookups that found no live watch and waited for a load (shared or not).
    pub view_misses: Counter,
    /// Loads of a service from Consul (the first read of a watch).
    pub service_loads: Counter,
    /// Service watches holding a blocking query.
    pub watches_blocking: Gauge,
    /// Services beyond `max_watches`, re-read on a timer.
    pub watches_polling: Gauge,
    consul_requests: Family<Labels, Counter>,
    /// Seconds since each always-on watch last succeeded, while it is failing (0 when fine).
    pub watch_stale_seconds: Family<Labels, Gauge<f64, AtomicU64>>,
    /// Service watches currently failing.
    pub service_watches_failing: Gauge,
    /// Healthy instances left out because no address of theirs is in `internal_cidrs`.
    pub instances_outside_internal_cidrs: Gauge,
    /// Time from a Consul response arriving to the new data being in the view.
    pub view_update_seconds: Histogram,
    /// Answers served from data whose watch is failing (marked with EDE 3).
    pub stale_answers: Counter,
    /// SERVFAIL because data was older than `max_stale`.
    pub max_stale_exceeded: Counter,
    /// Empty results marked as filtered by ACLs that were not applied.
    pub acl_filtered_ignored: Counter,
    /// 1 when the last Consul response said it knows a leader, 0 when it said it does not
    /// (or no response said yet).
    pub consul_known_leader: Gauge,
    /// A Consul response has said whether it knows a leader.
    leader_reported: AtomicBool,
    /// Unix time up to which each always-on watch's data is known current (0: never).
    pub watch_last_success: Family<Labels, Gauge<f64, AtomicU64>>,
    /// Services and nodes of the local catalog, as last read.
    pub catalog_services: Gauge,
    pub catalog_nodes: Gauge,
    /// 1 once the first sync with Consul is done (Consul names answered).
    pub synced: Gauge,
    /// Watches reset because Consul's index went backwards.
    pub index_resets: Counter,
    /// Prepared-query names answered as unknown from the query list, without a request.
    pub query_names_unlisted: Counter,
    /// Prepared-query names the list cannot settle, not asked because over budget.
    pub query_names_over_budget: Counter,
    /// UDP queries dropped because too many were already waiting.
    pub udp_dropped: Counter,
    /// Answers sent from the response cache, without building them.
    pub response_cache_hits: StripedCounter,
    /// Negative answers written from a stored response of their shape, without building them.
    pub negative_cache_hits: StripedCounter,
    /// DNS over TCP: connections open, refused, evicted, timed out.
    pub tcp: ConnectionMetrics,
    /// DNS over TLS: the same, for its own listeners.
    pub tls: ConnectionMetrics,
    /// DNS-over-TLS handshakes not done within the handshake timeout.
    pub tls_handshake_timeouts: Counter,
    /// DNS-over-TLS handshakes that failed (a client that does not trust the certificate,
    /// speaks no TLS, offers no common version or cipher suite, or not ALPN "dot").
    pub tls_handshake_errors: Counter,
    /// UDP responses not sent because of response-rate limiting.
    pub rrl_dropped: Counter,
    /// UDP responses replaced by an empty truncated one because of response-rate limiting.
    pub rrl_slipped: Counter,
    /// Zone transfers served in full (AXFR, or IXFR from a serial no longer journaled).
    pub transfers_full: Counter,
    /// IXFRs served from the journal (or answered "up to date").
    pub transfers_incremental: Counter,
    /// Transfer requests refused (source outside `allow_transfer`, or TSIG).
    pub transfers_refused: Counter,
    /// The serial of the transferable zone (0 before its first version).
    pub zone_serial: Gauge,
    /// Records of the transferable zone (of the primary domain).
    pub zone_records: Gauge,
    /// Bytes the IXFR journal holds, roughly.
    pub transfer_journal_bytes: Gauge,
    /// NOTIFY messages sent, acknowledged, and given up on after every retry.
    pub notify_sent: Counter,
    pub notify_acknowledged: Counter,
    pub notify_failed: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("consul_dns");
        let queries = StripedCounters::new(QUERY_KINDS);
        registry.register(
            "dns_queries",
            "DNS queries answered, by qtype, rcode and name form",
            QueryFamily(queries.clone()),
        );
        let tcp = ConnectionMetrics::register(&mut registry, &connections::TCP);
        let tls = ConnectionMetrics::register(&mut registry, &connections::TLS);
        let handshake_failures = Family::<Labels, Counter>::default();
        let handshake_failure = |reason: &str| {
            handshake_failures
                .get_or_create(&vec![("reason", reason.to_string())])
                .clone()
        };
        let (tls_handshake_timeouts, tls_handshake_errors) =
            (handshake_failure("timeout"), handshake_failure("error"));
        registry.register(
            "tls_handshake_failures",
            "DNS-over-TLS handshakes that failed (error) or were not done in time (timeout)",
            handshake_failures,
        );
        let m = Metrics {
            queries,
            answer_seconds: Histogram::new(exponential_buckets(0.000_01, 2.0, 20)),
            view_hits: StripedCounter::default(),
            view_misses: Counter::default(),
            service_loads: Counter::default(),
            watches_blocking: Gauge::default(),
            watches_polling: Gauge::default(),
            consul_requests: Family::default(),
            watch_stale_seconds: Family::default(),
            service_watches_failing: Gauge::default(),
            instances_outside_internal_cidrs: Gauge::default(),
            view_update_seconds: Histogram::new(exponential_buckets(0.000_01, 2.0, 20)),
            stale_answers: Counter::default(),
            max_stale_exceeded: Counter::default(),
            acl_filtered_ignored: Counter::default(),
            consul_known_leader: Gauge::default(),
            leader_reported: AtomicBool::new(false),
            watch_last_success: Family::default(),
            catalog_services: Gauge::default(),
            catalog_nodes: Gauge::default(),
            synced: Gauge::default(),
            index_resets: Counter::default(),
            query_names_unlisted: Counter::default(),
            query_names_over_budget: Counter::default(),
            udp_dropped: Counter::default(),
            response_cache_hits: StripedCounter::default(),
            negative_cache_hits: StripedCounter::default(),
            tcp,
            tls,
            tls_handshake_timeouts,
            tls_handshake_errors,
            rrl_dropped: Counter::default(),
            rrl_slipped: Counter::default(),
            transfers_full: Counter::default(),
            transfers_incremental: Counter::default(),
            transfers_refused: Counter::default(),
            zone_serial: Gauge::default(),
            zone_records: Gauge::default(),
            transfer_journal_bytes: Gauge::default(),
            notify_sent: Counter::default(),
            notify_acknowledged: Counter::default(),
            notify_failed: Counter::default(),
            registry: Registry::default(),
        };
        // Not 1 before Consul has said so: a server that never reached Consul must not
        // look healthy.
        m.consul_known_leader.set(0);
        let r = &mut registry;
        r.register(
            "answer_seconds",
            "Time to answer a DNS query",
            m.answer_seconds.clone(),
        );
        r.register(
            "view_hits",
            "Service lookups answered from a live watch",
            m.view_hits.clone(),
        );
        r.register(
            "view_misses",
            "Service lookups that found no live watch and waited for a load",
            m.view_misses.clone(),
        );
        r.register(
            "service_loads",
            "Loads of a service from Consul (the first read of a watch)",
            m.service_loads.clone(),
        );
        r.register(
            "watches_blocking",
            "Service watches holding a blocking query",
            m.watches_blocking.clone(),
        );
        r.register(
            "watches_polling",
            "Services beyond max_watches, re-read on a timer",
            m.watches_polling.clone(),
        );
        r.register(
            "consul_requests",
            "Requests to Consul by endpoint and status",
            m.consul_requests.clone(),
        );
        r.register(
            "watch_stale_seconds",
            "Seconds since a failing watch last succeeded (0 while it succeeds)",
            m.watch_stale_seconds.clone(),
        );
        r.register(
            "service_watches_failing",
            "Service watches whose last read failed",
            m.service_watches_failing.clone(),
        );
        r.register(
            "instances_outside_internal_cidrs",
            "Healthy instances left out: none of their addresses is in internal_cidrs",
            m.instances_outside_internal_cidrs.clone(),
        );
        r.register(
            "view_update_seconds",
            "Time from a Consul response to the new data in the view",
            m.view_update_seconds.clone(),
        );
        r.register(
            "stale_answers",
            "Answers served from data whose watch is failing",
            m.stale_answers.clone(),
        );
        r.register(
            "max_stale_exceeded",
            "SERVFAIL answers because data was older than max_stale",
            m.max_stale_exceeded.clone(),
        );
        r.register(
            "acl_filtered_ignored",
            "Empty results marked filtered by ACLs that were not allowed to empty the view",
            m.acl_filtered_ignored.clone(),
        );
        r.register(
            "consul_known_leader",
            "1 when Consul last reported a known leader; 0 when it did not, or has not answered yet",
            m.consul_known_leader.clone(),
        );
        r.register(
            "watch_last_success_timestamp_seconds",
            "Unix time up to which a watch's data is known current: the scrape's while it \
             succeeds (a blocking query held counts), its last successful read once it fails, \
             0 before its first",
            m.watch_last_success.clone(),
        );
        r.register(
            "index_resets",
            "Watches reset because Consul's index went backwards",
            m.index_resets.clone(),
        );
        r.register(
            "response_cache_hits",
            "Answers sent again from the response cache (also counted in dns_queries)",
            m.response_cache_hits.clone(),
        );
        r.register(
            "negative_cache_hits",
            "NXDOMAIN and NODATA answers written from a stored response of their shape (also \
             counted in dns_queries)",
            m.negative_cache_hits.clone(),
        );
        r.register(
            "udp_dropped",
            "UDP queries dropped because too many were already waiting",
            m.udp_dropped.clone(),
        );
        r.register(
            "prepared_query_names_unlisted",
            "Prepared-query names answered as unknown from the query list, without asking Consul",
            m.query_names_unlisted.clone(),
        );
        r.register(
            "prepared_query_names_over_budget",
            "Prepared-query names the query list cannot settle, not asked because too many were",
            m.query_names_over_budget.clone(),
        );
        r.register(
            "rrl_dropped",
            "UDP responses dropped by response-rate limiting",
            m.rrl_dropped.clone(),
        );
        r.register(
            "rrl_slipped",
            "UDP responses sent as an empty truncated answer by response-rate limiting",
            m.rrl_slipped.clone(),
        );
        let counters = [
            (
                "transfers_full",
                "Zone transfers served in full (AXFR, or IXFR from an unjournaled serial)",
                &m.transfers_full,
            ),
            (
                "transfers_incremental",
                "IXFRs served from the journal",
                &m.transfers_incremental,
            ),
            (
                "transfers_refused",
                "Zone transfer requests refused (allow_transfer, TSIG)",
                &m.transfers_refused,
            ),
            (
                "notify_sent",
                "NOTIFY messages sent to secondaries",
                &m.notify_sent,
            ),
            (
                "notify_acknowledged",
                "NOTIFY messages acknowledged by secondaries",
                &m.notify_acknowledged,
            ),
            (
                "notify_failed",
                "NOTIFYs given up on after every retry",
                &m.notify_failed,
            ),
        ];
        for (name, help, counter) in counters {
            r.register(name, help, counter.clone());
        }
        let gauges = [
            (
                "zone_serial",
                "Serial of the transferable Consul zone",
                &m.zone_serial,
            ),
            (
                "zone_records",
                "Records of the transferable Consul zone",
                &m.zone_records,
            ),
            (
                "transfer_journal_bytes",
                "Bytes held by the IXFR journal, roughly",
                &m.transfer_journal_bytes,
            ),
            (
                "catalog_services",
                "Services of the local catalog, as last read from Consul",
                &m.catalog_services,
            ),
            (
                "catalog_nodes",
                "Nodes of the local catalog, as last read from Consul",
                &m.catalog_nodes,
            ),
            (
                "synced",
                "1 once the first sync with Consul is done (Consul names answered), else 0",
                &m.synced,
            ),
        ];
        for (name, help, gauge) in gauges {
            r.register(name, help, gauge.clone());
        }
        Metrics { registry, ..m }
    }

    /// Counts one answered query.
    pub fn count_query(&self, qtype: RecordType, rcode: ResponseCode, form: NameForm) {
        self.count(QueryKind::new(qtype, rcode, form));
    }

    /// Counts one answered query of a kind worked out before.
    pub fn count(&self, kind: QueryKind) {
        self.queries.inc(usize::from(kind.0));
    }

    /// Records whether Consul knows a leader, as a response said; returns what the one
    /// before said (None: none had).
    pub fn set_known_leader(&self, known: bool) -> Option<bool> {
        let before = self.consul_known_leader.set(i64::from(known)) == 1;
        self.leader_reported
            .swap(true, Ordering::Relaxed)
            .then_some(before)
    }

    /// Counts one request to Consul; `status` is the HTTP status or `timeout`/`error`.
    pub fn consul_request(&self, endpoint: &str, status: &str) {
        let labels = vec![
            ("endpoint", endpoint.to_string()),
            ("status", status.to_string()),
        ];
        self.consul_requests.get_or_create(&labels).inc();
    }

    pub fn set_watch_stale(&self, watch: &'static str, seconds: f64) {
        self.watch_stale_seconds
            .get_or_create(&vec![("watch", watch.to_string())])
            .set(seconds);
    }

    /// `watch`'s data is known current up to `unix_seconds` (0: never read; None: there
    /// is no such watch, no series).
    pub fn set_watch_last_success(&self, watch: &'static str, unix_seconds: Option<f64>) {
        let labels = vec![("watch", watch.to_string())];
        match unix_seconds {
            Some(at) => {
                self.watch_last_success.get_or_create(&labels).set(at);
            }
            None => {
                self.watch_last_success.remove(&labels);
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_counter_and_labels() {
        let mut seen = std::collections::HashSet::new();
        let qtypes = QTYPES.iter().copied().chain([(RecordType::MX, OTHER)]);
        for (qtype, qtype_name) in qtypes {
            let rcodes = RCODES
                .iter()
                .copied()
                .chain([(ResponseCode::BADVERS, OTHER)]);
            for (rcode, rcode_name) in rcodes {
                for form in NameForm::ALL {
                    let kind = QueryKind::new(qtype, rcode, form);
                    assert!(usize::from(kind.0) < QUERY_KINDS);
                    assert!(seen.insert(kind.0), "{qtype} {rcode} {form:?}");
                    assert_eq!(kind.form(), form);
                    let labels = QueryKind::labels(usize::from(kind.0));
                    assert_eq!(
                        labels,
                        [
                            ("qtype", qtype_name),
                            ("rcode", rcode_name),
                            ("form", form.as_str())
                        ]
                    );
                }
            }
        }
        assert_eq!(seen.len(), QUERY_KINDS);
    }

    #[test]
    fn renders_counted_queries() {
        let m = Metrics::new();
        m.count_query(RecordType::A, ResponseCode::NoError, NameForm::Service);
        m.count(QueryKind::new(
            RecordType::A,
            ResponseCode::NoError,
            NameForm::Service,
        ));
        m.count_query(RecordType::MX, ResponseCode::BADVERS, NameForm::Other);
        m.count_query(RecordType::CNAME, ResponseCode::FormErr, NameForm::Outside);
        m.consul_request("v1/health/service", "200");
        let text = m.render();
        let series = |labels: &str| format!("consul_dns_dns_queries_total{{{labels}}} ");
        let count = |labels: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&series(labels)))
                .unwrap_or_else(|| panic!("no {labels} in {text}"))
                .to_string()
        };
        assert_eq!(count(r#"qtype="A",rcode="NOERROR",form="service""#), "2");
        assert_eq!(count(r#"qtype="other",rcode="other",form="other""#), "1");
        assert_eq!(
            count(r#"qtype="CNAME",rcode="FORMERR",form="outside""#),
            "1"
        );
        let listed = text
            .lines()
            .filter(|l| l.starts_with("consul_dns_dns_queries_total{"))
            .count();
        assert_eq!(listed, 3, "only the series counted: {text}");
        assert!(text.contains(
            r#"consul_dns_consul_requests_total{endpoint="v1/health/service",status="200"} 1"#
        ));
    }
}
