//! Soak test (issue 7): the release binary under a steady mixed load for minutes while the
//! catalog churns and Consul fails in every way the emulator can, with every answer checked
//! against the truth and the server's memory sampled. Not part of `cargo test` (ignored, and
//! kept with the benchmarks):
//! `bench/soak` builds in release, runs it and writes `bench/SOAK.md`.
//!
//! - Consul is the in-process emulator (so faults can be injected): 200 services × 3
//!   instances, `svc-<s>` instance `i` at 10.10.<s>.<i> (every fifth service IPv6,
//!   fd00:10::<s>:<i>, whose A answers are its nodes' addresses, as Consul), port 20000 + s,
//!   on 16 nodes `node-<n>` (192.168.100.<n+1>); and 10 services `eph-<k>` (10.11.<k>.<i>)
//!   that appear and disappear.
//! - consul-dns is the binary, a child process (its VmRSS is read from /proc), with
//!   `max_stale = "20s"`, `blocking_wait = "10s"` (a hung Consul is noticed after 20.6 s).
//! - Load: several UDP clients (half with EDNS) and one TCP client, one query in flight each,
//!   2 s timeout: A, AAAA and SRV of services, node names, unknown services and nodes.
//! - Churn: a change every 250 ms (instance registered or deregistered, a check critical or
//!   passing again), an `eph-<k>` registered or removed every 5 s.
//! - Faults on a schedule: 500s, a short stop/restart, a hang, a stop longer than
//!   `max_stale`, 503s, in turn.
//!
//! Every address answered for a service must have been one of its healthy instances' at some
//! time since shortly before the answer (since the start of the fault when a fault is on or
//! just ended: a stale answer is legal). EDE 3 only during or just after a fault, SERVFAIL
//! only once a fault has lasted `max_stale` (a cold `eph-<k>` also during any fault), NXDOMAIN
//! only for unknown names or an `eph-<k>` that was absent. Environment: `SOAK_MINUTES` (10,
//! fractions allowed), `SOAK_QPS` (3000), `SOAK_SEED`, `SOAK_REPORT` (write the summary there).

#[path = "../tests/it/common/mod.rs"]
mod common;
#[path = "../tests/it/common/program.rs"]
mod program;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use consul_emulator::{Emulator, EmulatorConfig, Fault};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use program::{ConsulDns, TempDir};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

const SERVICES: u16 = 200;
const INSTANCES: u16 = 3;
/// Highest instance index; new instances count up from `INSTANCES` and wrap.
const MAX_INSTANCE: u16 = 250;
/// Most extra instances a service has at once.
const MAX_EXTRAS: usize = 4;
const EPHEMERAL: u16 = 10;
const NODES: u16 = 16;

const MAX_STALE: Duration = Duration::from_secs(20);
const BLOCKING_WAIT: Duration = Duration::from_secs(10);
/// consul-dns's timeout of a blocking query: wait + wait/16 + 10 s. A hung Consul is only
/// noticed then.
const HUNG_BLOCKING_TIMEOUT: Duration = Duration::from_millis(20_625);
/// How far behind the catalog an answer may be when Consul is healthy.
const BASE_LAG: Duration = Duration::from_secs(3);
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
const CHURN_EVERY: Duration = Duration::from_millis(250);
/// Every this many churn ticks, one `eph-<k>` appears or goes.
const EPHEMERAL_EVERY: u64 = 20;
const UDP_CLIENTS: u64 = 6;
const TCP_QPS: u64 = 100;
/// Queries per TCP connection before it is closed and another opened.
const TCP_QUERIES_PER_CONN: u32 = 200;
const MAX_FAILURE_SAMPLES: usize = 30;
/// Memory is flat when the final VmRSS is at most this × the warm-up level + the slack.
const RSS_FACTOR: f64 = 1.2;
const RSS_SLACK_KIB: u64 = 8 * 1024;
/// Largest fraction of queries allowed to go unanswered.
const MAX_TIMEOUT_FRACTION: f64 = 0.001;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------- the catalog's scheme

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Svc {
    Base(u16),
    Eph(u16),
}

impl Svc {
    fn name(self) -> String {
        match self {
            Svc::Base(s) => format!("svc-{s}"),
            Svc::Eph(k) => format!("eph-{k}"),
        }
    }

    fn v6(self) -> bool {
        matches!(self, Svc::Base(s) if s % 5 == 4)
    }

    fn addr(self, i: u16) -> IpAddr {
        match self {
            Svc::Base(s) if self.v6() => IpAddr::V6(Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, s, i)),
            Svc::Base(s) => IpAddr::V4(Ipv4Addr::new(10, 10, s as u8, i as u8)),
            Svc::Eph(k) => IpAddr::V4(Ipv4Addr::new(10, 11, k as u8, i as u8)),
        }
    }

    fn port(self) -> u16 {
        match self {
            Svc::Base(s) => 20000 + s,
            Svc::Eph(k) => 30000 + k,
        }
    }

    fn node(self, i: u16) -> u16 {
        match self {
            Svc::Base(s) => (s * INSTANCES + i) % NODES,
            Svc::Eph(k) => (k + i) % NODES,
        }
    }

    fn id(self, i: u16) -> String {
        format!("{}-{i}", self.name())
    }
}

fn node_name(n: u16) -> String {
    format!("node-{n}")
}

fn node_addr(n: u16) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 100, n as u8 + 1)
}

fn instance_body(svc: Svc, i: u16, status: &str) -> Value {
    let (id, n) = (svc.id(i), svc.node(i));
    json!({
        "Node": node_name(n),
        "Address": node_addr(n).to_string(),
        "Service": {"ID": id, "Service": svc.name(), "Address": svc.addr(i).to_string(), "Port": svc.port()},
        "Check": {"CheckID": format!("service:{id}"), "Name": "soak", "Status": status, "ServiceID": id},
    })
}

fn check_body(svc: Svc, i: u16, status: &str) -> Value {
    let id = svc.id(i);
    json!({
        "Node": node_name(svc.node(i)),
        "SkipNodeUpdate": true,
        "Check": {"CheckID": format!("service:{id}"), "Name": "soak", "Status": status, "ServiceID": id},
    })
}

fn deregister_body(svc: Svc, i: u16) -> Value {
    json!({"Node": node_name(svc.node(i)), "ServiceID": svc.id(i)})
}

// ---------------------------------------------------------------- the truth over time

#[derive(Debug, Clone, Copy)]
struct Interval {
    from: Instant,
    to: Option<Instant>,
}

impl Interval {
    fn overlaps(&self, lo: Instant, hi: Instant) -> bool {
        self.from <= hi && self.to.is_none_or(|to| to >= lo)
    }
}

/// When each address was answerable for its service (a healthy instance's), and when each
/// `eph-<k>` existed.
#[derive(Default)]
struct Truth {
    addrs: HashMap<(Svc, IpAddr), Vec<Interval>>,
    /// The service each instance address belongs to.
    owner: HashMap<IpAddr, Svc>,
    present: HashMap<Svc, Vec<Interval>>,
}

impl Truth {
    /// The addresses answerable for an instance: its own, and for an IPv6 instance the
    /// node's IPv4 address, which answers A questions (Consul's address choice: the service
    /// address if its family fits, else the node's).
    fn answerable(svc: Svc, i: u16) -> Vec<IpAddr> {
        let mut v = vec![svc.addr(i)];
        if svc.v6() {
            v.push(IpAddr::V4(node_addr(svc.node(i))));
        }
        v
    }

    fn open(&mut self, svc: Svc, i: u16, now: Instant) {
        self.owner.insert(svc.addr(i), svc);
        for ip in Truth::answerable(svc, i) {
            self.addrs.entry((svc, ip)).or_default().push(Interval {
                from: now,
                to: None,
            });
        }
    }

    /// Closes one open interval of each address (two instances of a service may share a
    /// node address: the union of the intervals stays right whichever is closed).
    fn close(&mut self, svc: Svc, i: u16, now: Instant) {
        for ip in Truth::answerable(svc, i) {
            if let Some(open) = self
                .addrs
                .get_mut(&(svc, ip))
                .and_then(|v| v.iter_mut().rev().find(|i| i.to.is_none()))
            {
                open.to = Some(now);
            }
        }
    }

    fn appear(&mut self, svc: Svc, now: Instant) {
        self.present.entry(svc).or_default().push(Interval {
            from: now,
            to: None,
        });
    }

    fn vanish(&mut self, svc: Svc, now: Instant) {
        if let Some(last) = self
            .present
            .get_mut(&svc)
            .and_then(|v| v.last_mut())
            .filter(|i| i.to.is_none())
        {
            last.to = Some(now);
        }
    }

    /// Ok if `ip` was answerable for `svc` at some time in [lo, hi].
    fn address_ok(&self, svc: Svc, ip: IpAddr, lo: Instant, hi: Instant) -> Result<(), String> {
        match (self.addrs.get(&(svc, ip)), self.owner.get(&ip)) {
            (Some(intervals), _) if intervals.iter().any(|i| i.overlaps(lo, hi)) => Ok(()),
            (Some(_), _) => Err(format!("{ip} was not healthy in {} then", svc.name())),
            (None, Some(owner)) => Err(format!(
                "{ip} belongs to {}, not {}",
                owner.name(),
                svc.name()
            )),
            (None, None) => Err(format!("{ip} was never an address of {}", svc.name())),
        }
    }

    /// True if `svc` was absent at some time in [lo, hi] (base services never are).
    fn absent_during(&self, svc: Svc, lo: Instant, hi: Instant) -> bool {
        match svc {
            Svc::Base(_) => false,
            Svc::Eph(_) => !self.present.get(&svc).is_some_and(|v| {
                v.iter()
                    .any(|i| i.from <= lo && i.to.is_none_or(|to| to >= hi))
            }),
        }
    }
}

// ---------------------------------------------------------------- faults

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    Status500,
    Status503,
    Hang,
    Stop,
}

impl FaultKind {
    fn describe(self) -> &'static str {
        match self {
            FaultKind::Status500 => "HTTP 500 \"No cluster leader\" on every request",
            FaultKind::Status503 => "HTTP 503 on every request",
            FaultKind::Hang => "hang: requests read, never answered",
            FaultKind::Stop => "stop(): listener and connections closed, then restart()",
        }
    }

    /// The earliest consul-dns can notice the fault after it starts.
    fn detect(self) -> Duration {
        match self {
            FaultKind::Hang => HUNG_BLOCKING_TIMEOUT,
            _ => Duration::ZERO,
        }
    }

    /// How long after the fault ends stale answers (and SERVFAIL past `max_stale`) may still
    /// be given: a watch retries within about a second, but a request hung when a hang ends
    /// stays hung until consul-dns times it out.
    fn grace(self) -> Duration {
        match self {
            FaultKind::Hang => HUNG_BLOCKING_TIMEOUT + Duration::from_secs(5),
            _ => Duration::from_secs(10),
        }
    }
}

struct FaultRecord {
    kind: FaultKind,
    planned: Duration,
    start: Instant,
    end: Option<Instant>,
}

/// The schedule: a cycle of faults with gaps, each only if it ends a calm tail before the
/// end of the run.
fn fault_plan(total: Duration) -> Vec<(Duration, FaultKind, Duration)> {
    let s = Duration::from_secs;
    let cycle = [
        (FaultKind::Status500, s(12)),
        (FaultKind::Stop, s(8)),
        (FaultKind::Hang, s(30)),
        (FaultKind::Stop, MAX_STALE + s(12)),
        (FaultKind::Status503, s(8)),
    ];
    let (first, gap, tail) = if total < s(240) {
        (s(10), s(10), s(15))
    } else {
        (s(20), s(25), s(30))
    };
    let mut plan = Vec::new();
    let (mut at, mut next, mut misses) = (first, 0, 0);
    while misses < cycle.len() {
        let (kind, len) = cycle[next % cycle.len()];
        next += 1;
        if at + len + tail <= total {
            plan.push((at, kind, len));
            at += len + gap;
            misses = 0;
        } else {
            misses += 1;
        }
    }
    plan
}

// ---------------------------------------------------------------- queries

#[derive(Debug, Clone, Copy)]
enum Q {
    Addr(Svc, RecordType),
    Srv(Svc),
    Node(u16),
    UnknownService(u32),
    UnknownNode(u32),
}

impl Q {
    fn pick(rng: &mut StdRng) -> Q {
        let base = |rng: &mut StdRng| Svc::Base(rng.random_range(0..SERVICES));
        let eph = |rng: &mut StdRng| Svc::Eph(rng.random_range(0..EPHEMERAL));
        match rng.random_range(0..100) {
            0..40 => Q::Addr(base(rng), RecordType::A),
            40..50 => Q::Addr(base(rng), RecordType::AAAA),
            50..65 => Q::Srv(base(rng)),
            65..70 => Q::Addr(eph(rng), RecordType::A),
            70..73 => Q::Srv(eph(rng)),
            73..83 => Q::Node(rng.random_range(0..NODES)),
            83..95 => Q::UnknownService(rng.random()),
            _ => Q::UnknownNode(rng.random()),
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Q::Addr(Svc::Base(_), RecordType::A) => "service A",
            Q::Addr(Svc::Base(_), _) => "service AAAA",
            Q::Addr(Svc::Eph(_), _) => "eph service A",
            Q::Srv(Svc::Base(_)) => "service SRV",
            Q::Srv(Svc::Eph(_)) => "eph service SRV",
            Q::Node(_) => "node A",
            Q::UnknownService(_) => "unknown service A",
            Q::UnknownNode(_) => "unknown node A",
        }
    }

    fn name_and_type(self) -> (String, RecordType) {
        match self {
            Q::Addr(svc, t) => (format!("{}.service.consul.", svc.name()), t),
            Q::Srv(svc) => (format!("{}.service.consul.", svc.name()), RecordType::SRV),
            Q::Node(n) => (format!("{}.node.consul.", node_name(n)), RecordType::A),
            Q::UnknownService(n) => (format!("nosvc-{n}.service.consul."), RecordType::A),
            Q::UnknownNode(n) => (format!("nonode-{n}.node.consul."), RecordType::A),
        }
    }

    fn message(self, id: u16, edns: bool) -> Message {
        let (name, qtype) = self.name_and_type();
        let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(
            Name::from_ascii(&name).expect("valid name"),
            qtype,
        ));
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(1232);
            msg.set_edns(e);
        }
        msg
    }
}

/// The A/AAAA addresses in the Additional section.
fn additional_addresses(m: &Message) -> Vec<IpAddr> {
    m.additionals
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// The address an SRV target `<hex>.addr.dc1.consul.` encodes.
fn addr_target(target: &Name) -> Option<IpAddr> {
    let labels: Vec<&[u8]> = target.iter().collect();
    if labels.len() < 2 || !labels[1].eq_ignore_ascii_case(b"addr") {
        return None;
    }
    let hex = std::str::from_utf8(labels[0]).ok()?;
    match hex.len() {
        8 => u32::from_str_radix(hex, 16)
            .ok()
            .map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        32 => u128::from_str_radix(hex, 16)
            .ok()
            .map(|v| IpAddr::V6(Ipv6Addr::from(v))),
        _ => None,
    }
}

// ---------------------------------------------------------------- outcomes

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    Fresh,
    FreshNoEdns,
    Stale,
    NxFresh,
    NxStale,
    ServFail,
}

const CLASSES: [(Class, &str); 6] = [
    (Class::Fresh, "NOERROR, fresh (EDNS, no EDE)"),
    (Class::FreshNoEdns, "NOERROR, no EDNS (staleness not shown)"),
    (Class::Stale, "NOERROR, stale-marked (EDE 3)"),
    (Class::NxFresh, "NXDOMAIN, fresh or no EDNS"),
    (Class::NxStale, "NXDOMAIN, stale-marked (EDE 3)"),
    (Class::ServFail, "SERVFAIL"),
];

#[derive(Default)]
struct Stats {
    sent_udp: u64,
    sent_udp_edns: u64,
    sent_tcp: u64,
    classes: BTreeMap<Class, u64>,
    /// Per fault (index in the timeline): answers by class while its window was open.
    per_fault: BTreeMap<usize, BTreeMap<Class, u64>>,
    per_kind: BTreeMap<&'static str, u64>,
    truncated: u64,
    timeouts_calm: u64,
    timeouts_fault: u64,
    io_errors: u64,
    failures: BTreeMap<&'static str, u64>,
    failure_samples: Vec<String>,
}

impl Stats {
    fn sent(&self) -> u64 {
        self.sent_udp + self.sent_tcp
    }

    fn failures(&self) -> u64 {
        self.failures.values().sum()
    }
}

#[derive(Default)]
struct Churn {
    registered: u64,
    deregistered: u64,
    critical: u64,
    passing: u64,
    eph_added: u64,
    eph_removed: u64,
}

struct Shared {
    t0: Instant,
    truth: Mutex<Truth>,
    faults: Mutex<Vec<FaultRecord>>,
    stats: Mutex<Stats>,
    churn: Mutex<Churn>,
}

struct Window {
    /// The fault (index) whose window started first among those overlapping.
    fault: usize,
    start: Instant,
}

impl Shared {
    fn secs(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.t0).as_secs_f64()
    }

    /// The faults whose window (start to end + grace) overlaps [lo, hi]: the earliest.
    fn window(&self, lo: Instant, hi: Instant) -> Option<Window> {
        let faults = lock(&self.faults);
        faults
            .iter()
            .enumerate()
            .filter(|(_, f)| f.start <= hi && f.end.is_none_or(|e| e + f.kind.grace() >= lo))
            .min_by_key(|(_, f)| f.start)
            .map(|(i, f)| Window {
                fault: i,
                start: f.start,
            })
    }

    /// SERVFAIL is legal once a fault may have made data older than `max_stale`.
    fn servfail_allowed(&self, lo: Instant, hi: Instant) -> bool {
        let margin = Duration::from_secs(1);
        lock(&self.faults).iter().any(|f| {
            f.start + f.kind.detect() + MAX_STALE <= hi + margin
                && f.end.is_none_or(|e| e + f.kind.grace() >= lo)
        })
    }

    fn timeout(&self, lo: Instant, hi: Instant) {
        let in_fault = self.window(lo, hi).is_some();
        let mut st = lock(&self.stats);
        if in_fault {
            st.timeouts_fault += 1;
        } else {
            st.timeouts_calm += 1;
        }
    }

    /// Checks one answer and counts it.
    fn check(&self, q: Q, m: &Message, edns: bool, lo: Instant, hi: Instant, tcp: bool) {
        let window = self.window(lo, hi);
        let outcome = self.judge(q, m, edns, lo, hi, window.as_ref());
        let mut st = lock(&self.stats);
        *st.per_kind.entry(q.kind()).or_default() += 1;
        if m.metadata.truncation {
            st.truncated += 1;
        }
        match outcome {
            Ok(class) => {
                *st.classes.entry(class).or_default() += 1;
                if let Some(w) = &window {
                    *st.per_fault
                        .entry(w.fault)
                        .or_default()
                        .entry(class)
                        .or_default() += 1;
                }
            }
            Err((kind, detail)) => {
                *st.failures.entry(kind).or_default() += 1;
                if st.failure_samples.len() < MAX_FAILURE_SAMPLES {
                    let (name, qtype) = q.name_and_type();
                    let fault = window.map_or("no fault".to_string(), |w| {
                        format!("during/after fault #{}", w.fault + 1)
                    });
                    st.failure_samples.push(format!(
                        "t={:.3}s {kind}: {name} {qtype} over {}{} ({fault}): {detail}; answer: {} {}",
                        self.secs(lo),
                        if tcp { "TCP" } else { "UDP" },
                        if edns { " with EDNS" } else { "" },
                        m.metadata.response_code,
                        m.answers
                            .iter()
                            .chain(&m.additionals)
                            .map(|r| r.to_string())
                            .collect::<Vec<_>>()
                            .join(" | "),
                    ));
                }
            }
        }
    }

    fn judge(
        &self,
        q: Q,
        m: &Message,
        edns: bool,
        lo: Instant,
        hi: Instant,
        window: Option<&Window>,
    ) -> Result<Class, (&'static str, String)> {
        if !edns && m.edns.is_some() {
            return Err(("OPT without EDNS", "the query had no OPT record".into()));
        }
        let stale = match common::ede(m) {
            None => false,
            Some(3) => true,
            Some(code) => return Err(("unexpected EDE", format!("EDE {code}"))),
        };
        if stale && window.is_none() {
            return Err(("stale outside a fault", "EDE 3 with Consul healthy".into()));
        }
        // Data may be as old as the start of the fault (a stale answer is legal), else a
        // few seconds.
        let since = window
            .map_or(lo, |w| w.start.min(lo))
            .checked_sub(BASE_LAG)
            .unwrap_or(self.t0);
        match m.metadata.response_code {
            ResponseCode::ServFail => {
                let cold_eph =
                    matches!(q, Q::Addr(Svc::Eph(_), _) | Q::Srv(Svc::Eph(_))) && window.is_some();
                if self.servfail_allowed(lo, hi) || cold_eph {
                    Ok(Class::ServFail)
                } else {
                    Err(("unexpected SERVFAIL", "no fault beyond max_stale".into()))
                }
            }
            ResponseCode::NXDomain => {
                let ok = match q {
                    Q::UnknownService(_) | Q::UnknownNode(_) => true,
                    Q::Addr(svc, _) | Q::Srv(svc) => {
                        lock(&self.truth).absent_during(svc, since, hi)
                    }
                    Q::Node(_) => false,
                };
                match (ok, stale) {
                    (true, false) => Ok(Class::NxFresh),
                    (true, true) => Ok(Class::NxStale),
                    (false, _) => Err(("wrong NXDOMAIN", "the name existed".into())),
                }
            }
            ResponseCode::NoError => {
                self.judge_records(q, m, since, hi)?;
                Ok(match (stale, edns) {
                    (true, _) => Class::Stale,
                    (false, true) => Class::Fresh,
                    (false, false) => Class::FreshNoEdns,
                })
            }
            other => Err(("unexpected rcode", other.to_string())),
        }
    }

    fn judge_records(
        &self,
        q: Q,
        m: &Message,
        since: Instant,
        hi: Instant,
    ) -> Result<(), (&'static str, String)> {
        let wrong = |d: String| ("wrong answer", d);
        let (qname, qtype) = q.name_and_type();
        let qname = Name::from_ascii(&qname).expect("valid name");
        for r in &m.answers {
            if r.record_type() != qtype {
                return Err(wrong(format!("a {} record", r.record_type())));
            }
            if r.name != qname {
                return Err(wrong(format!("owner {}", r.name)));
            }
        }
        let truth = lock(&self.truth);
        match q {
            Q::UnknownService(_) | Q::UnknownNode(_) => {
                Err(("NOERROR for an unknown name", String::new()))
            }
            Q::Node(n) => {
                let want = IpAddr::V4(node_addr(n));
                let got: Vec<IpAddr> = program::addresses(m);
                if got == [want] {
                    Ok(())
                } else {
                    Err(wrong(format!("node addresses {got:?}, want {want}")))
                }
            }
            Q::Addr(svc, qtype) => {
                let got = program::addresses(m);
                for ip in &got {
                    truth.address_ok(svc, *ip, since, hi).map_err(wrong)?;
                }
                // IPv4 services have no AAAA; IPv6 ones answer A with their nodes' addresses.
                let may_be_empty = qtype == RecordType::AAAA && !svc.v6();
                if got.is_empty() && !may_be_empty && !truth.absent_during(svc, since, hi) {
                    return Err(wrong(
                        "no address for a service with healthy instances".into(),
                    ));
                }
                Ok(())
            }
            Q::Srv(svc) => {
                for r in &m.answers {
                    let RData::SRV(srv) = &r.data else {
                        return Err(wrong("not an SRV record".into()));
                    };
                    if srv.port != svc.port() {
                        return Err(wrong(format!("port {}", srv.port)));
                    }
                    let ip = addr_target(&srv.target)
                        .ok_or_else(|| wrong(format!("target {}", srv.target)))?;
                    truth.address_ok(svc, ip, since, hi).map_err(wrong)?;
                }
                for ip in additional_addresses(m) {
                    truth.address_ok(svc, ip, since, hi).map_err(wrong)?;
                }
                if m.answers.is_empty() && !truth.absent_during(svc, since, hi) {
                    return Err(wrong("no SRV for a service with healthy instances".into()));
                }
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------- load

async fn udp_client(
    shared: Arc<Shared>,
    dns: SocketAddr,
    period: Duration,
    seed: u64,
    stop: CancellationToken,
) {
    let sock = UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind a UDP client socket");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 65535];
    while !stop.is_cancelled() {
        tick.tick().await;
        let q = Q::pick(&mut rng);
        let edns = rng.random_bool(0.5);
        let id: u16 = rng.random();
        let bytes = q.message(id, edns).to_vec().expect("query encodes");
        {
            let mut st = lock(&shared.stats);
            st.sent_udp += 1;
            st.sent_udp_edns += u64::from(edns);
        }
        let lo = Instant::now();
        if sock.send_to(&bytes, dns).await.is_err() {
            lock(&shared.stats).io_errors += 1;
            continue;
        }
        let deadline = tokio::time::Instant::from_std(lo + QUERY_TIMEOUT);
        let reply = loop {
            match tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
                Err(_) => break None,
                Ok(Err(_)) => {
                    lock(&shared.stats).io_errors += 1;
                    break None;
                }
                Ok(Ok((n, _))) => match Message::from_vec(&buf[..n]) {
                    Ok(m) if m.metadata.id == id => break Some(m),
                    // A late answer to an earlier query that timed out.
                    Ok(_) => continue,
                    Err(e) => {
                        let mut st = lock(&shared.stats);
                        *st.failures.entry("undecodable answer").or_default() += 1;
                        st.failure_samples
                            .push(format!("undecodable UDP answer: {e}"));
                        break None;
                    }
                },
            }
        };
        let hi = Instant::now();
        match reply {
            Some(m) => shared.check(q, &m, edns, lo, hi, false),
            None => shared.timeout(lo, hi),
        }
    }
}

async fn tcp_exchange(conn: &mut TcpStream, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    conn.write_all(&(bytes.len() as u16).to_be_bytes()).await?;
    conn.write_all(bytes).await?;
    let mut len = [0u8; 2];
    conn.read_exact(&mut len).await?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    conn.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn tcp_client(shared: Arc<Shared>, dns: SocketAddr, seed: u64, stop: CancellationToken) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / TCP_QPS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<(TcpStream, u32)> = None;
    while !stop.is_cancelled() {
        tick.tick().await;
        let q = Q::pick(&mut rng);
        let edns = rng.random_bool(0.5);
        let id: u16 = rng.random();
        let bytes = q.message(id, edns).to_vec().expect("query encodes");
        lock(&shared.stats).sent_tcp += 1;
        let lo = Instant::now();
        let result = tokio::time::timeout(QUERY_TIMEOUT, async {
            if conn.is_none() {
                conn = Some((TcpStream::connect(dns).await?, 0));
            }
            let (c, used) = conn.as_mut().expect("connected above");
            *used += 1;
            tcp_exchange(c, &bytes).await
        })
        .await;
        let hi = Instant::now();
        match result {
            Ok(Ok(reply)) => {
                if conn
                    .as_ref()
                    .is_some_and(|(_, n)| *n >= TCP_QUERIES_PER_CONN)
                {
                    conn = None;
                }
                match Message::from_vec(&reply) {
                    Ok(m) if m.metadata.id == id => shared.check(q, &m, edns, lo, hi, true),
                    Ok(m) => {
                        let mut st = lock(&shared.stats);
                        *st.failures.entry("TCP answer id mismatch").or_default() += 1;
                        st.failure_samples
                            .push(format!("TCP answer id {} for {id}", m.metadata.id));
                        conn = None;
                    }
                    Err(e) => {
                        let mut st = lock(&shared.stats);
                        *st.failures.entry("undecodable answer").or_default() += 1;
                        st.failure_samples
                            .push(format!("undecodable TCP answer: {e}"));
                        conn = None;
                    }
                }
            }
            Ok(Err(_)) => {
                lock(&shared.stats).io_errors += 1;
                conn = None;
            }
            Err(_) => {
                shared.timeout(lo, hi);
                conn = None;
            }
        }
    }
}

// ---------------------------------------------------------------- churn and faults

struct BaseState {
    extras: Vec<u16>,
    next: u16,
    critical: Option<u16>,
}

fn seed_catalog(emu: &Emulator, shared: &Shared) {
    let now = Instant::now();
    let mut truth = lock(&shared.truth);
    for s in 0..SERVICES {
        let svc = Svc::Base(s);
        for i in 0..INSTANCES {
            truth.open(svc, i, now);
            emu.register(instance_body(svc, i, "passing"))
                .expect("emulator registers a seed instance");
        }
    }
    for k in 0..EPHEMERAL / 2 {
        let svc = Svc::Eph(k);
        truth.appear(svc, now);
        for i in 0..2 {
            truth.open(svc, i, now);
            emu.register(instance_body(svc, i, "passing"))
                .expect("emulator registers an ephemeral instance");
        }
    }
}

async fn churn(shared: Arc<Shared>, emu: Emulator, seed: u64, stop: CancellationToken) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut base: Vec<BaseState> = (0..SERVICES)
        .map(|_| BaseState {
            extras: Vec::new(),
            next: INSTANCES,
            critical: None,
        })
        .collect();
    let mut eph_present: Vec<bool> = (0..EPHEMERAL).map(|k| k < EPHEMERAL / 2).collect();
    let mut tick = tokio::time::interval(CHURN_EVERY);
    let mut n: u64 = 0;
    while !stop.is_cancelled() {
        tick.tick().await;
        n += 1;
        if n.is_multiple_of(EPHEMERAL_EVERY) {
            let k = ((n / EPHEMERAL_EVERY) % u64::from(EPHEMERAL)) as u16;
            let svc = Svc::Eph(k);
            if eph_present[k as usize] {
                for i in 0..2 {
                    emu.deregister(deregister_body(svc, i))
                        .expect("emulator deregisters");
                    lock(&shared.truth).close(svc, i, Instant::now());
                }
                lock(&shared.truth).vanish(svc, Instant::now());
                lock(&shared.churn).eph_removed += 1;
            } else {
                lock(&shared.truth).appear(svc, Instant::now());
                for i in 0..2 {
                    lock(&shared.truth).open(svc, i, Instant::now());
                    emu.register(instance_body(svc, i, "passing"))
                        .expect("emulator registers");
                }
                lock(&shared.churn).eph_added += 1;
            }
            eph_present[k as usize] = !eph_present[k as usize];
            continue;
        }
        let s = rng.random_range(0..SERVICES);
        let svc = Svc::Base(s);
        let st = &mut base[s as usize];
        let op = rng.random_range(0..4);
        let room = st.extras.len() < MAX_EXTRAS;
        match op {
            // Register, or deregister when full; deregister, or register when none.
            0 | 1 if (op == 0 && room) || st.extras.is_empty() => {
                let i = st.next;
                st.next = if i >= MAX_INSTANCE { INSTANCES } else { i + 1 };
                if st.extras.contains(&i) {
                    continue;
                }
                lock(&shared.truth).open(svc, i, Instant::now());
                emu.register(instance_body(svc, i, "passing"))
                    .expect("emulator registers");
                st.extras.push(i);
                lock(&shared.churn).registered += 1;
            }
            0 | 1 => {
                let i = st.extras.remove(rng.random_range(0..st.extras.len()));
                emu.deregister(deregister_body(svc, i))
                    .expect("emulator deregisters");
                lock(&shared.truth).close(svc, i, Instant::now());
                lock(&shared.churn).deregistered += 1;
            }
            _ => match st.critical.take() {
                None => {
                    let i = rng.random_range(0..INSTANCES);
                    emu.register(check_body(svc, i, "critical"))
                        .expect("emulator updates the check");
                    lock(&shared.truth).close(svc, i, Instant::now());
                    st.critical = Some(i);
                    lock(&shared.churn).critical += 1;
                }
                Some(i) => {
                    lock(&shared.truth).open(svc, i, Instant::now());
                    emu.register(check_body(svc, i, "passing"))
                        .expect("emulator updates the check");
                    lock(&shared.churn).passing += 1;
                }
            },
        }
    }
}

async fn apply(emu: &Emulator, kind: FaultKind) {
    match kind {
        FaultKind::Status500 => emu.set_fault(Fault::Status(
            500,
            "rpc error making call: No cluster leader".into(),
        )),
        FaultKind::Status503 => emu.set_fault(Fault::Status(503, "Service Unavailable".into())),
        FaultKind::Hang => emu.set_fault(Fault::Hang),
        FaultKind::Stop => emu.stop().await,
    }
}

async fn heal(emu: &Emulator, kind: FaultKind) {
    match kind {
        FaultKind::Stop => emu.restart().await.expect("emulator listens again"),
        _ => emu.set_fault(Fault::None),
    }
}

async fn faults(
    shared: Arc<Shared>,
    emu: Emulator,
    plan: Vec<(Duration, FaultKind, Duration)>,
    stop: CancellationToken,
) {
    for (at, kind, len) in plan {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until((shared.t0 + at).into()) => {}
        }
        lock(&shared.faults).push(FaultRecord {
            kind,
            planned: len,
            start: Instant::now(),
            end: None,
        });
        apply(&emu, kind).await;
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(len) => {}
        }
        heal(&emu, kind).await;
        if let Some(f) = lock(&shared.faults).last_mut() {
            f.end = Some(Instant::now());
        }
        if stop.is_cancelled() {
            return;
        }
    }
}

// ---------------------------------------------------------------- the child's resources

struct Sample {
    at: Duration,
    rss_kib: u64,
    fds: usize,
    threads: u64,
}

fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

fn sample(pid: u32, at: Duration) -> Sample {
    Sample {
        at,
        rss_kib: status_field(pid, "VmRSS:").unwrap_or(0),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()),
        threads: status_field(pid, "Threads:").unwrap_or(0),
    }
}

/// utime + stime of the process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command.
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) as f64 / hz
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------- the test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak test, minutes long: run bench/soak (or SOAK_MINUTES=1 cargo test --release --test soak -- --ignored --nocapture)"]
async fn soak() {
    let minutes: f64 = env_or("SOAK_MINUTES", 10.0);
    let qps: u64 = env_or("SOAK_QPS", 3000);
    let seed: u64 = env_or("SOAK_SEED", 7);
    let total = Duration::from_secs_f64(minutes * 60.0);
    let warmup = (total / 3).min(Duration::from_secs(120));
    let plan = fault_plan(total);

    let emu = Emulator::start(
        "127.0.0.1:0".parse().expect("valid address"),
        EmulatorConfig::default(),
    )
    .await
    .expect("emulator starts");
    let shared = Arc::new(Shared {
        t0: Instant::now(),
        truth: Mutex::new(Truth::default()),
        faults: Mutex::new(Vec::new()),
        stats: Mutex::new(Stats::default()),
        churn: Mutex::new(Churn::default()),
    });
    seed_catalog(&emu, &shared);

    let dir = TempDir::new("soak");
    let config = dir.write(
        "consul-dns.toml",
        &format!(
            "consul_addr = \"{}\"\nlisten = [\"127.0.0.1:0\"]\nmax_stale = \"{}s\"\n\
             blocking_wait = \"{}s\"\nmax_watches = 1000\nzones = \"\"\n",
            emu.url(),
            MAX_STALE.as_secs(),
            BLOCKING_WAIT.as_secs(),
        ),
    );
    let config = config.to_str().expect("utf-8 temp path");
    let started = Instant::now();
    let mut server = ConsulDns::start(&["--config", config], dir.path());
    let pid = server.program.pid();
    let dns = server.addr;

    // Cold start: SERVFAIL until the first sync, then answers.
    let mut cold_servfails = 0u64;
    let ready = loop {
        let m = program::ask(dns, "svc-0.service.consul.", RecordType::A);
        match m.metadata.response_code {
            ResponseCode::NoError if !m.answers.is_empty() => break started.elapsed(),
            ResponseCode::ServFail => cold_servfails += 1,
            other => panic!("cold start: {other} for svc-0"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "consul-dns not answering 30 s after start:\n{}",
            server.program.output()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "soak: {minutes} min, {qps} qps, seed {seed}; consul-dns pid {pid} on {dns}, ready after {ready:?}; {} faults planned",
        plan.len()
    );

    let stop = CancellationToken::new();
    let load_start = Instant::now();
    let cpu_start = cpu_seconds(pid);
    let mut tasks = tokio::task::JoinSet::new();
    let udp_qps = qps.saturating_sub(TCP_QPS).max(UDP_CLIENTS);
    let period = Duration::from_micros(1_000_000 * UDP_CLIENTS / udp_qps);
    for c in 0..UDP_CLIENTS {
        tasks.spawn(udp_client(
            Arc::clone(&shared),
            dns,
            period,
            seed ^ ((c + 1) * 0x9e37_79b9),
            stop.clone(),
        ));
    }
    tasks.spawn(tcp_client(
        Arc::clone(&shared),
        dns,
        seed ^ 0x7c9,
        stop.clone(),
    ));
    tasks.spawn(churn(
        Arc::clone(&shared),
        emu.clone(),
        seed ^ 0xc4,
        stop.clone(),
    ));
    // Fault offsets count from the start of the load.
    let plan_from_load: Vec<_> = plan
        .iter()
        .map(|&(at, k, len)| (at + load_start.duration_since(shared.t0), k, len))
        .collect();
    tasks.spawn(faults(
        Arc::clone(&shared),
        emu.clone(),
        plan_from_load,
        stop.clone(),
    ));

    let mut samples = vec![sample(pid, Duration::ZERO)];
    let mut crashed: Option<String> = None;
    let end = load_start + total;
    while Instant::now() < end {
        let next = (load_start + samples.len() as u32 * SAMPLE_EVERY).min(end);
        tokio::time::sleep_until(next.into()).await;
        if let Some(status) = server.program.try_exit() {
            crashed = Some(format!("consul-dns exited during the soak: {status}"));
            break;
        }
        let s = sample(pid, load_start.elapsed());
        {
            let st = lock(&shared.stats);
            let faults = lock(&shared.faults);
            let fault = faults
                .last()
                .filter(|f| f.end.is_none())
                .map_or("-".to_string(), |f| format!("{:?}", f.kind));
            println!(
                "t={:>4.0}s sent={} fresh={} stale={} nx={} servfail={} timeouts={} wrong={} rss={:.1}MiB fds={} fault={fault}",
                s.at.as_secs_f64(),
                st.sent(),
                st.classes.get(&Class::Fresh).unwrap_or(&0) + st.classes.get(&Class::FreshNoEdns).unwrap_or(&0),
                st.classes.get(&Class::Stale).unwrap_or(&0),
                st.classes.get(&Class::NxFresh).unwrap_or(&0) + st.classes.get(&Class::NxStale).unwrap_or(&0),
                st.classes.get(&Class::ServFail).unwrap_or(&0),
                st.timeouts_calm + st.timeouts_fault,
                st.failures(),
                mib(s.rss_kib),
                s.fds,
            );
        }
        samples.push(s);
    }
    let load_time = load_start.elapsed();
    stop.cancel();
    while let Some(r) = tasks.join_next().await {
        r.expect("a soak task panicked");
    }
    let cpu = cpu_seconds(pid) - cpu_start;
    if crashed.is_none() {
        if let Some(status) = server.program.try_exit() {
            crashed = Some(format!("consul-dns exited during the soak: {status}"));
        }
    }
    let exit = if crashed.is_none() {
        server.program.signal(libc::SIGTERM);
        let asked = Instant::now();
        loop {
            if let Some(status) = server.program.try_exit() {
                break Some(status.code());
            }
            if asked.elapsed() > Duration::from_secs(15) {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    } else {
        None
    };
    // Let the output readers drain.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let output = server.program.output();
    let log_count = |level: &str| output.lines().filter(|l| l.contains(level)).count();
    let panics: Vec<&str> = output.lines().filter(|l| l.contains("panicked")).collect();

    // Memory: flat after the warm-up.
    let warm = samples
        .iter()
        .find(|s| s.at >= warmup)
        .or(samples.last())
        .map_or(0, |s| s.rss_kib);
    let last = samples.last().map_or(0, |s| s.rss_kib);
    let peak = samples.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    let rss_limit = (warm as f64 * RSS_FACTOR) as u64 + RSS_SLACK_KIB;
    let rss_flat = last <= rss_limit;

    let st = lock(&shared.stats);
    let sent = st.sent();
    let timeouts = st.timeouts_calm + st.timeouts_fault;
    let timeouts_ok = (timeouts as f64) <= (sent as f64) * MAX_TIMEOUT_FRACTION;
    let mut problems = Vec::new();
    if st.failures() > 0 {
        problems.push(format!("{} wrong or unexpected answers", st.failures()));
    }
    if !timeouts_ok {
        problems.push(format!(
            "{timeouts} timeouts, more than {}% of {sent} queries",
            MAX_TIMEOUT_FRACTION * 100.0
        ));
    }
    if !rss_flat {
        problems.push(format!(
            "memory grew: VmRSS {:.1} MiB at the end, limit {:.1} MiB ({RSS_FACTOR} x {:.1} MiB at {}s + {} MiB)",
            mib(last),
            mib(rss_limit),
            mib(warm),
            warmup.as_secs(),
            RSS_SLACK_KIB / 1024
        ));
    }
    if let Some(c) = &crashed {
        problems.push(c.clone());
    } else {
        match exit {
            Some(Some(0)) => {}
            Some(code) => problems.push(format!("exit code {code:?} on SIGTERM, want 0")),
            None => problems.push("still running 15 s after SIGTERM".to_string()),
        }
    }
    if !panics.is_empty() {
        problems.push(format!("the server panicked: {}", panics.join(" / ")));
    }

    // The summary.
    let mut r = String::new();
    let verdict = if problems.is_empty() { "PASS" } else { "FAIL" };
    r += &format!("## Result: {verdict}\n\n");
    for p in &problems {
        r += &format!("- **{p}**\n");
    }
    if !problems.is_empty() {
        r += "\n";
    }
    let churn = lock(&shared.churn);
    r += "| | |\n|---|---|\n";
    r += &format!(
        "| load | {:.0} s ({minutes} min asked), target {qps} qps, seed {seed} |\n",
        load_time.as_secs_f64()
    );
    r += &format!(
        "| catalog | {SERVICES} services x {INSTANCES} instances (every fifth IPv6), {EPHEMERAL} ephemeral services, {NODES} nodes |\n"
    );
    r += &format!(
        "| consul-dns | release binary, `max_stale = \"{}s\"`, `blocking_wait = \"{}s\"`; ready {:.0} ms after spawn ({cold_servfails} SERVFAIL before the first sync) |\n",
        MAX_STALE.as_secs(),
        BLOCKING_WAIT.as_secs(),
        ready.as_secs_f64() * 1000.0
    );
    r += &format!(
        "| queries sent | {sent} ({:.0} qps): UDP {} ({} with EDNS), TCP {} |\n",
        sent as f64 / load_time.as_secs_f64(),
        st.sent_udp,
        st.sent_udp_edns,
        st.sent_tcp
    );
    for (class, label) in CLASSES {
        r += &format!("| {label} | {} |\n", st.classes.get(&class).unwrap_or(&0));
    }
    r += &format!(
        "| timeouts (no answer in {} s) | {timeouts} ({:.4}%): {} with Consul healthy, {} during or just after a fault |\n",
        QUERY_TIMEOUT.as_secs(),
        100.0 * timeouts as f64 / sent.max(1) as f64,
        st.timeouts_calm,
        st.timeouts_fault
    );
    r += &format!(
        "| **wrong or unexpected answers** | **{}** |\n",
        st.failures()
    );
    r += &format!(
        "| UDP answers with TC (no EDNS, > 3 records) | {} |\n",
        st.truncated
    );
    r += &format!("| client socket errors | {} |\n", st.io_errors);
    r += &format!(
        "| catalog changes | {} registered, {} deregistered, {} checks critical, {} passing again; ephemeral services {} added, {} removed |\n",
        churn.registered, churn.deregistered, churn.critical, churn.passing, churn.eph_added, churn.eph_removed
    );
    r += &format!(
        "| consul-dns CPU | {cpu:.1} s over the load ({:.1}% of one core) |\n",
        100.0 * cpu / load_time.as_secs_f64()
    );
    r += &format!(
        "| VmRSS | {:.1} MiB at {}s (warm-up), {:.1} MiB at the end, peak {:.1} MiB; limit {:.1} MiB: {} |\n",
        mib(warm),
        warmup.as_secs(),
        mib(last),
        mib(peak),
        mib(rss_limit),
        if rss_flat { "flat" } else { "GREW" }
    );
    r += &format!(
        "| process | {}; {} WARN and {} ERROR log lines, {} panics |\n",
        match (&crashed, exit) {
            (Some(c), _) => c.clone(),
            (None, Some(Some(0))) => "never exited during the soak; exit 0 on SIGTERM".to_string(),
            (None, Some(code)) => format!("exit {code:?} on SIGTERM"),
            (None, None) => "still running 15 s after SIGTERM".to_string(),
        },
        log_count(" WARN "),
        log_count(" ERROR "),
        panics.len()
    );

    r += "\n### Answers by query\n\n| query | answered |\n|---|---:|\n";
    for (kind, n) in &st.per_kind {
        r += &format!("| {kind} | {n} |\n");
    }
    if !st.failures.is_empty() {
        r += "\n### Failures\n\n| kind | count |\n|---|---:|\n";
        for (kind, n) in &st.failures {
            r += &format!("| {kind} | {n} |\n");
        }
        r += "\nFirst ones:\n\n```\n";
        for s in &st.failure_samples {
            r += &format!("{s}\n");
        }
        r += "```\n";
    }

    r += "\n### Faults injected\n\nAnswers counted from the fault's start until its grace after the end (10 s; for a hang, consul-dns's blocking timeout + 5 s), \
          fresh = NOERROR without EDE (with or without EDNS).\n\n\
          | # | at (s) | length (s) | fault | fresh | stale-marked | NXDOMAIN | SERVFAIL |\n|---|---:|---:|---|---:|---:|---:|---:|\n";
    for (i, f) in lock(&shared.faults).iter().enumerate() {
        let c = st.per_fault.get(&i).cloned().unwrap_or_default();
        let n = |k: Class| c.get(&k).copied().unwrap_or(0);
        r += &format!(
            "| {} | {:.0} | {:.1} (planned {}) | {} | {} | {} | {} | {} |\n",
            i + 1,
            f.start.duration_since(load_start).as_secs_f64(),
            f.end
                .map_or(f64::NAN, |e| e.duration_since(f.start).as_secs_f64()),
            f.planned.as_secs(),
            f.kind.describe(),
            n(Class::Fresh) + n(Class::FreshNoEdns),
            n(Class::Stale),
            n(Class::NxFresh) + n(Class::NxStale),
            n(Class::ServFail)
        );
    }

    r += "\n### consul-dns resources, every 10 s\n\n| t (s) | VmRSS (MiB) | open fds | threads |\n|---:|---:|---:|---:|\n";
    for s in &samples {
        r += &format!(
            "| {:.0} | {:.1} | {} | {} |\n",
            s.at.as_secs_f64(),
            mib(s.rss_kib),
            s.fds,
            s.threads
        );
    }
    println!("\n{r}");
    if let Ok(path) = std::env::var("SOAK_REPORT") {
        std::fs::write(&path, &r).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }
    assert!(problems.is_empty(), "soak failed: {}", problems.join("; "));
}
