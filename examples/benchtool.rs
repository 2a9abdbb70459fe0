//! Measurements for `bench/run` that dnsperf cannot make. Each subcommand prints one JSON
//! object on stdout (the script parses it) and a human summary on stderr.
//!
//! - `freshness`: catalog changes through the emulator's HTTP API; for each, the time from
//!   the HTTP response to the first DNS answer that reflects it.
//! - `stampede`: many concurrent UDP queries of one cold service, each retried until
//!   answered (the script reads the emulator's request counter around it).
//! - `warm`: asks every `<prefix><i>` once, retrying until answered (starts the watches).
//! - `ready`: polls a name until it is answered NOERROR with records; prints the time.
//!
//! `cargo run --release --example benchtool -- freshness --consul http://127.0.0.1:18500 --dns 127.0.0.1:18600`

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use hickory_server::proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_server::proto::rr::{Name, RData, RecordType};
use serde_json::{json, Value};
use tokio::net::UdpSocket;

#[derive(Parser)]
#[command(about = "consul-dns benchmark helper (freshness, stampede, warm, ready)")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Time from a catalog change (HTTP response) to the first DNS answer reflecting it.
    Freshness {
        /// The emulator's HTTP API.
        #[arg(long)]
        consul: String,
        /// The DNS server.
        #[arg(long)]
        dns: SocketAddr,
        /// Number of changes: register, check critical, check passing, deregister, in turn.
        #[arg(long, default_value_t = 200)]
        changes: u32,
        /// Watched services the changes rotate over (`fresh-<n>`, registered first).
        #[arg(long, default_value_t = 20)]
        services: u32,
        /// Pause between two changes, in ms.
        #[arg(long, default_value_t = 10)]
        interval_ms: u64,
        /// A change not visible after this long counts as a timeout (and as this long).
        #[arg(long, default_value_t = 5000)]
        timeout_ms: u64,
        /// The Consul domain.
        #[arg(long, default_value = "consul")]
        domain: String,
    },
    /// Concurrent UDP queries of one name, each retried every 500 ms until answered.
    Stampede {
        #[arg(long)]
        dns: SocketAddr,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 1000)]
        concurrency: u32,
        /// Give up after this long.
        #[arg(long, default_value_t = 30)]
        timeout_s: u64,
    },
    /// Asks A for `<prefix><i>.service.<domain>`, i in [from, from+count), each until
    /// answered NOERROR; at most `concurrency` in flight.
    Warm {
        #[arg(long)]
        dns: SocketAddr,
        #[arg(long, default_value = "svc-")]
        prefix: String,
        #[arg(long, default_value_t = 0)]
        from: u32,
        #[arg(long)]
        count: u32,
        #[arg(long, default_value_t = 64)]
        concurrency: u32,
        #[arg(long, default_value = "consul")]
        domain: String,
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
    },
    /// CONNECTIONS TCP connections opened at once, each sending one query for NAME (A)
    /// and reading its answer: the time until every one is answered, and how many took
    /// a second or more (a SYN retransmitted: the listener's queue overflowed).
    TcpBurst {
        #[arg(long)]
        dns: SocketAddr,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 1000)]
        connections: u32,
        #[arg(long, default_value_t = 30)]
        timeout_s: u64,
    },
    /// Polls NAME (A) every ms until it is answered NOERROR with at least one record.
    Ready {
        #[arg(long)]
        dns: SocketAddr,
        #[arg(long)]
        name: String,
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let result = match args.cmd {
        Cmd::Freshness {
            consul,
            dns,
            changes,
            services,
            interval_ms,
            timeout_ms,
            domain,
        } => {
            freshness(FreshnessOpts {
                consul,
                dns,
                changes,
                services: services.max(1),
                interval: Duration::from_millis(interval_ms),
                timeout: Duration::from_millis(timeout_ms),
                domain,
            })
            .await
        }
        Cmd::Stampede {
            dns,
            name,
            concurrency,
            timeout_s,
        } => stampede(dns, &name, concurrency, Duration::from_secs(timeout_s)).await,
        Cmd::Warm {
            dns,
            prefix,
            from,
            count,
            concurrency,
            domain,
            timeout_s,
        } => {
            let names = (from..from.saturating_add(count))
                .map(|i| format!("{prefix}{i}.service.{domain}."))
                .collect();
            warm(dns, names, concurrency, Duration::from_secs(timeout_s)).await
        }
        Cmd::Ready {
            dns,
            name,
            timeout_s,
        } => ready(dns, &name, Duration::from_secs(timeout_s)).await,
        Cmd::TcpBurst {
            dns,
            name,
            connections,
            timeout_s,
        } => tcp_burst(dns, &name, connections, Duration::from_secs(timeout_s)).await,
    };
    match result {
        Ok(v) => {
            println!("{v}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("benchtool: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// A query for `name`/`qtype` with EDNS (payload 1232), so that consul-dns's
/// `udp_answer_limit` for clients without EDNS does not cut the answer.
fn query_bytes(name: &str, qtype: RecordType, id: u16) -> Result<Vec<u8>, String> {
    let name = Name::from_ascii(name).map_err(|e| format!("{name}: {e}"))?;
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(name, qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    msg.set_edns(edns);
    msg.to_vec().map_err(|e| e.to_string())
}

/// A UDP client sending one question at a time; `ask` resends every `retry` until an answer
/// with the right id arrives.
struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    buf: Vec<u8>,
    next_id: u16,
}

impl Client {
    async fn new(server: SocketAddr) -> Result<Self, String> {
        let local: SocketAddr = if server.is_ipv4() {
            "127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!())
        } else {
            "[::1]:0".parse().unwrap_or_else(|_| unreachable!())
        };
        let sock = UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
        Ok(Client {
            sock,
            server,
            buf: vec![0; 65535],
            next_id: rand::random(),
        })
    }

    async fn ask(
        &mut self,
        name: &str,
        qtype: RecordType,
        retry: Duration,
        deadline: Instant,
    ) -> Result<Message, String> {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let bytes = query_bytes(name, qtype, id)?;
        loop {
            if Instant::now() >= deadline {
                return Err(format!("no answer for {name} in time"));
            }
            self.sock
                .send_to(&bytes, self.server)
                .await
                .map_err(|e| e.to_string())?;
            let wait_until = (Instant::now() + retry).min(deadline);
            loop {
                let left = wait_until.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, self.sock.recv_from(&mut self.buf)).await {
                    Ok(Ok((n, _))) => {
                        if let Ok(m) = Message::from_vec(&self.buf[..n]) {
                            if m.metadata.id == id {
                                return Ok(m);
                            }
                        }
                        // A late answer to an earlier try: keep waiting.
                    }
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => break,
                }
            }
        }
    }
}

fn a_addresses(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut v: Vec<f64>) -> Value {
    v.sort_by(|a, b| a.total_cmp(b));
    json!({
        "n": v.len(),
        "p50_ms": percentile(&v, 50.0),
        "p99_ms": percentile(&v, 99.0),
        "max_ms": v.last().copied().unwrap_or(f64::NAN),
        "min_ms": v.first().copied().unwrap_or(f64::NAN),
    })
}

struct FreshnessOpts {
    consul: String,
    dns: SocketAddr,
    changes: u32,
    services: u32,
    interval: Duration,
    timeout: Duration,
    domain: String,
}

fn fresh_node(s: u32) -> String {
    format!("fresh-node-{s}")
}

/// Base instance `b` of service `s`: 10.250.<s>.<b+1>; the changing instance: 10.251.<s>.1.
fn fresh_ip(s: u32, second_octet: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, second_octet, (s % 256) as u8, host)
}

fn fresh_instance(s: u32, id: &str, ip: Ipv4Addr, status: &str) -> Value {
    json!({
        "Node": fresh_node(s),
        "Address": fresh_ip(s, 249, 1).to_string(),
        "Service": {"ID": id, "Service": format!("fresh-{s}"), "Address": ip.to_string(), "Port": 8080},
        "Check": {"CheckID": format!("service:{id}"), "Name": "bench", "Status": status, "ServiceID": id},
    })
}

async fn put(http: &reqwest::Client, url: &str, body: &Value) -> Result<(), String> {
    let resp = http
        .put(url)
        .json(body)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        return Err(format!("{url}: {status} {text}"));
    }
    // Read the body so the response is complete before the clock starts.
    resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    Ok(())
}

#[derive(Clone, Copy)]
enum Change {
    /// A new instance registered: its address must appear.
    Register,
    /// A base instance's check goes critical: its address must disappear.
    Critical,
    /// That check passes again: the address must reappear.
    Passing,
    /// The new instance deregistered: its address must disappear.
    Deregister,
}

impl Change {
    fn name(self) -> &'static str {
        match self {
            Change::Register => "register",
            Change::Critical => "check_critical",
            Change::Passing => "check_passing",
            Change::Deregister => "deregister",
        }
    }
}

async fn freshness(o: FreshnessOpts) -> Result<Value, String> {
    if o.services > 256 {
        return Err("--services: at most 256".into());
    }
    let http = reqwest::Client::new();
    let register_url = format!("{}/v1/catalog/register", o.consul.trim_end_matches('/'));
    let deregister_url = format!("{}/v1/catalog/deregister", o.consul.trim_end_matches('/'));
    let qname = |s: u32| format!("fresh-{s}.service.{}.", o.domain);
    let mut client = Client::new(o.dns).await?;

    // Setup: 2 passing instances per service, then ask each service until both answer, so
    // that every service is watched before the first measured change.
    for s in 0..o.services {
        for b in 0..2u8 {
            let id = format!("fresh-{s}-base-{b}");
            put(
                &http,
                &register_url,
                &fresh_instance(s, &id, fresh_ip(s, 250, b + 1), "passing"),
            )
            .await?;
        }
    }
    let setup_deadline = Instant::now() + Duration::from_secs(30);
    for s in 0..o.services {
        loop {
            let m = client
                .ask(
                    &qname(s),
                    RecordType::A,
                    Duration::from_millis(200),
                    setup_deadline,
                )
                .await?;
            if a_addresses(&m).len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // Let the watches settle into their blocking queries.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let cycle = [
        Change::Register,
        Change::Critical,
        Change::Passing,
        Change::Deregister,
    ];
    let mut all = Vec::new();
    let mut by_kind: HashMap<&'static str, Vec<f64>> = HashMap::new();
    let mut timeouts = 0u32;
    let mut polls = 0u64;
    for c in 0..o.changes {
        let s = c % o.services;
        let kind = cycle[((c / o.services) % 4) as usize];
        let new_id = format!("fresh-{s}-new");
        let new_ip = fresh_ip(s, 251, 1);
        let base_id = format!("fresh-{s}-base-0");
        let base_ip = fresh_ip(s, 250, 1);
        let (watch_ip, must_be_present) = match kind {
            Change::Register => {
                put(
                    &http,
                    &register_url,
                    &fresh_instance(s, &new_id, new_ip, "passing"),
                )
                .await?;
                (new_ip, true)
            }
            Change::Critical | Change::Passing => {
                let status = if matches!(kind, Change::Critical) {
                    "critical"
                } else {
                    "passing"
                };
                let body = json!({
                    "Node": fresh_node(s),
                    "SkipNodeUpdate": true,
                    "Check": {"CheckID": format!("service:{base_id}"), "Name": "bench",
                              "Status": status, "ServiceID": base_id},
                });
                put(&http, &register_url, &body).await?;
                (base_ip, matches!(kind, Change::Passing))
            }
            Change::Deregister => {
                let body = json!({"Node": fresh_node(s), "ServiceID": new_id});
                put(&http, &deregister_url, &body).await?;
                (new_ip, false)
            }
        };
        let t0 = Instant::now();
        let deadline = t0 + o.timeout;
        let ms = loop {
            polls += 1;
            let m = match client
                .ask(
                    &qname(s),
                    RecordType::A,
                    Duration::from_millis(50),
                    deadline,
                )
                .await
            {
                Ok(m) => m,
                Err(_) => {
                    timeouts += 1;
                    break o.timeout.as_secs_f64() * 1000.0;
                }
            };
            let present = a_addresses(&m).contains(&watch_ip);
            if m.metadata.response_code == ResponseCode::NoError && present == must_be_present {
                break t0.elapsed().as_secs_f64() * 1000.0;
            }
            if Instant::now() >= deadline {
                timeouts += 1;
                break o.timeout.as_secs_f64() * 1000.0;
            }
        };
        all.push(ms);
        by_kind.entry(kind.name()).or_default().push(ms);
        tokio::time::sleep(o.interval).await;
    }
    let s = summary(all.clone());
    eprintln!(
        "freshness: {} changes over {} services: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} timeouts, {} polls",
        o.changes, o.services, s["p50_ms"], s["p99_ms"], s["max_ms"], timeouts, polls
    );
    let by_kind: serde_json::Map<String, Value> = by_kind
        .into_iter()
        .map(|(k, v)| (k.to_string(), summary(v)))
        .collect();
    Ok(json!({
        "changes": o.changes,
        "services": o.services,
        "interval_ms": o.interval.as_millis() as u64,
        "timeouts": timeouts,
        "polls": polls,
        "p50_ms": s["p50_ms"],
        "p99_ms": s["p99_ms"],
        "max_ms": s["max_ms"],
        "min_ms": s["min_ms"],
        "by_kind": by_kind,
    }))
}

async fn tcp_burst(
    dns: SocketAddr,
    name: &str,
    connections: u32,
    timeout: Duration,
) -> Result<Value, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut msg = Message::new(0, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(
        Name::from_ascii(name).map_err(|e| e.to_string())?,
        RecordType::A,
    ));
    let start = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|i| {
            let mut msg = msg.clone();
            msg.metadata.id = i as u16;
            tokio::spawn(async move {
                let one = async {
                    let bytes = msg.to_vec().map_err(|e| e.to_string())?;
                    let mut s = tokio::net::TcpStream::connect(dns)
                        .await
                        .map_err(|e| e.to_string())?;
                    let mut frame = (bytes.len() as u16).to_be_bytes().to_vec();
                    frame.extend_from_slice(&bytes);
                    s.write_all(&frame).await.map_err(|e| e.to_string())?;
                    let mut len = [0u8; 2];
                    s.read_exact(&mut len).await.map_err(|e| e.to_string())?;
                    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
                    Message::from_vec(&buf).map_err(|e| e.to_string())
                };
                let r = tokio::time::timeout(timeout, one).await;
                (r, start.elapsed().as_secs_f64() * 1000.0)
            })
        })
        .collect();
    let (mut times, mut failed, mut slow) = (Vec::new(), 0u32, 0u32);
    for t in tasks {
        match t.await {
            Ok((Ok(Ok(m)), ms)) if m.metadata.response_code == ResponseCode::NoError => {
                if ms >= 1000.0 {
                    slow += 1;
                }
                times.push(ms);
            }
            _ => failed += 1,
        }
    }
    let s = summary(times);
    Ok(json!({
        "connections": connections,
        "answered": connections - failed,
        "failed": failed,
        "over_1s": slow,
        "p50_ms": s["p50_ms"],
        "max_ms": s["max_ms"],
    }))
}

async fn stampede(
    dns: SocketAddr,
    name: &str,
    concurrency: u32,
    timeout: Duration,
) -> Result<Value, String> {
    let name = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    // Every socket is bound before the first query is sent, so they go out together.
    let mut clients = Vec::with_capacity(concurrency as usize);
    for _ in 0..concurrency {
        clients.push(Client::new(dns).await?);
    }
    let sends = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + timeout;
    let mut tasks = Vec::with_capacity(clients.len());
    for mut client in clients {
        let name = name.clone();
        let sends = Arc::clone(&sends);
        tasks.push(tokio::spawn(async move {
            sends.fetch_add(1, Ordering::Relaxed);
            let r = client
                .ask(&name, RecordType::A, Duration::from_millis(500), deadline)
                .await;
            (r, start.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut rcodes: HashMap<String, u32> = HashMap::new();
    let mut times = Vec::new();
    let mut unanswered = 0u32;
    let mut with_records = 0u32;
    for t in tasks {
        match t.await {
            Ok((Ok(m), ms)) => {
                *rcodes
                    .entry(m.metadata.response_code.to_string())
                    .or_default() += 1;
                if !m.answers.is_empty() {
                    with_records += 1;
                }
                times.push(ms);
            }
            _ => unanswered += 1,
        }
    }
    let s = summary(times);
    eprintln!(
        "stampede: {concurrency} queries of {name}: {} answered with records, {unanswered} unanswered, rcodes {rcodes:?}, last answer after {:.1} ms",
        with_records, s["max_ms"]
    );
    Ok(json!({
        "name": name,
        "concurrency": concurrency,
        "answered_with_records": with_records,
        "unanswered": unanswered,
        "rcodes": rcodes,
        "p50_ms": s["p50_ms"],
        "max_ms": s["max_ms"],
    }))
}

async fn warm(
    dns: SocketAddr,
    names: Vec<String>,
    concurrency: u32,
    timeout: Duration,
) -> Result<Value, String> {
    let start = Instant::now();
    let deadline = start + timeout;
    let total = names.len();
    let queue = Arc::new(std::sync::Mutex::new(names));
    let not_noerror = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let queue = Arc::clone(&queue);
        let not_noerror = Arc::clone(&not_noerror);
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(dns).await?;
            loop {
                let next = queue.lock().map_err(|e| e.to_string())?.pop();
                let Some(name) = next else {
                    return Ok::<(), String>(());
                };
                // SERVFAIL (a load that failed) is asked again.
                loop {
                    let m = client
                        .ask(&name, RecordType::A, Duration::from_millis(500), deadline)
                        .await?;
                    if m.metadata.response_code == ResponseCode::NoError {
                        break;
                    }
                    not_noerror.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!("warm: {total} names answered in {secs:.2} s");
    Ok(json!({
        "names": total,
        "seconds": secs,
        "retried_not_noerror": not_noerror.load(Ordering::Relaxed),
    }))
}

async fn ready(dns: SocketAddr, name: &str, timeout: Duration) -> Result<Value, String> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut client = Client::new(dns).await?;
    let mut polls = 0u64;
    let mut rcodes: HashMap<String, u64> = HashMap::new();
    loop {
        polls += 1;
        // An unbound port answers ICMP unreachable: the recv fails; wait and retry.
        match client
            .ask(name, RecordType::A, Duration::from_millis(5), deadline)
            .await
        {
            Ok(m) => {
                if m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty() {
                    return Ok(json!({
                        "ready_unix_ms": unix_ms(),
                        "polled_ms": start.elapsed().as_secs_f64() * 1000.0,
                        "polls": polls,
                        "before": rcodes,
                        "addresses": a_addresses(&m).iter().map(|a| IpAddr::V4(*a).to_string()).collect::<Vec<_>>(),
                    }));
                }
                *rcodes
                    .entry(m.metadata.response_code.to_string())
                    .or_default() += 1;
            }
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            return Err(format!("{name}: not answered within {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
