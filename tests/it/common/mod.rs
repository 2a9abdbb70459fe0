//! Test harness: the emulator and the server on loopback, a small DNS client over real UDP
//! and TCP sockets, and records compared as zone-file text.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use consul_dns::app::{self, Running};
use consul_dns::config::Config;
use consul_emulator::{Emulator, EmulatorConfig};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub mod case;
pub mod pki;
mod strict;
pub use strict::strict_counts;

pub const LOCAL: &str = "127.0.0.1:0";

pub async fn emulator() -> Emulator {
    Emulator::start(LOCAL.parse().unwrap(), EmulatorConfig::default())
        .await
        .expect("emulator starts")
}

/// Starts the server against `consul` with the test defaults, adjusted by `tweak`.
pub async fn server_with(consul: &str, tweak: impl FnOnce(&mut Config)) -> Running {
    // RUST_LOG=consul_dns=debug shows the server's logs in a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut config = Config::for_tests(consul);
    tweak(&mut config);
    app::start(&config).await.expect("server starts")
}

/// The emulator with service `web` (one instance, 10.2.0.1:80 on node n1 at 192.168.0.1)
/// and a server against it tweaked by `tweak`; not waited for.
pub async fn web_server(tweak: impl FnOnce(&mut Config)) -> (Emulator, Running) {
    let consul = emulator().await;
    http_register(
        &consul.url(),
        &Instance::new("web", "web1")
            .on("n1", "192.168.0.1")
            .at("10.2.0.1", 80)
            .json(),
    )
    .await;
    let running = server_with(&consul.url(), tweak).await;
    (consul, running)
}

pub async fn server(consul: &str) -> Running {
    server_with(consul, |_| {}).await
}

/// One instance as registrator registers it through `PUT /v1/catalog/register`: the
/// service `service` (instance `id`) on a node, with a service check. Defaults: node
/// `node1` at 192.168.56.11 with node meta `rack=r1`, no service address, port 80, no
/// tags, passing.
#[derive(Debug, Clone)]
pub struct Instance {
    node: String,
    node_addr: String,
    service: String,
    id: String,
    addr: String,
    port: u16,
    tags: Vec<String>,
    status: String,
}

impl Instance {
    pub fn new(service: &str, id: &str) -> Self {
        Instance {
            node: "node1".into(),
            node_addr: "192.168.56.11".into(),
            service: service.into(),
            id: id.into(),
            addr: String::new(),
            port: 80,
            tags: Vec::new(),
            status: "passing".into(),
        }
    }

    /// On node `node` at `addr`.
    pub fn on(mut self, node: &str, addr: &str) -> Self {
        (self.node, self.node_addr) = (node.into(), addr.into());
        self
    }

    /// Service address `addr` ("" for none: the node's answers) and `port`.
    pub fn at(mut self, addr: &str, port: u16) -> Self {
        (self.addr, self.port) = (addr.into(), port);
        self
    }

    pub fn tags(mut self, tags: &[&str]) -> Self {
        self.tags = tags.iter().map(|t| t.to_string()).collect();
        self
    }

    /// The service check's status: passing, warning or critical.
    pub fn status(mut self, status: &str) -> Self {
        self.status = status.into();
        self
    }

    /// The registration's body.
    pub fn json(&self) -> Value {
        json!({
            "Node": self.node,
            "Address": self.node_addr,
            "NodeMeta": {"rack": "r1"},
            "Service": {"ID": self.id, "Service": self.service, "Address": self.addr, "Port": self.port, "Tags": self.tags},
            "Check": {"CheckID": format!("service:{}", self.id), "Name": "check", "Status": self.status, "ServiceID": self.id}
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Options of one query.
#[derive(Debug, Clone, Copy)]
pub struct Ask {
    pub transport: Transport,
    /// EDNS UDP payload size to advertise, or None for no OPT record.
    pub edns: Option<u16>,
    pub rd: bool,
}

impl Default for Ask {
    fn default() -> Self {
        Ask {
            transport: Transport::Udp,
            edns: None,
            rd: true,
        }
    }
}

pub async fn query(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    query_with(server, name, qtype, Ask::default()).await
}

pub async fn query_with(server: SocketAddr, name: &str, qtype: RecordType, ask: Ask) -> Message {
    let (reply, _) = query_bytes(server, name, qtype, ask).await;
    reply
}

/// [`query_with`], also returning the reply as received.
pub async fn query_bytes(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    ask: Ask,
) -> (Message, Vec<u8>) {
    let mut msg = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = ask.rd;
    msg.add_query(Query::query(
        Name::from_ascii(name).expect("valid name"),
        qtype,
    ));
    if let Some(size) = ask.edns {
        let mut edns = Edns::new();
        edns.set_max_payload(size);
        msg.set_edns(edns);
    }
    exchange(server, &msg, ask.transport).await
}

/// Sends `msg` and returns the reply, decoded (strictly, see [`decode`]) and as received.
pub async fn exchange(
    server: SocketAddr,
    msg: &Message,
    transport: Transport,
) -> (Message, Vec<u8>) {
    let bytes = msg.to_vec().expect("encodes");
    let reply = match transport {
        Transport::Udp => {
            let sock = UdpSocket::bind(LOCAL).await.unwrap();
            sock.send_to(&bytes, server).await.unwrap();
            let mut buf = vec![0u8; 65535];
            let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
                .await
                .expect("UDP answer within 5 s")
                .unwrap();
            buf.truncate(n);
            buf
        }
        Transport::Tcp => {
            let mut s = TcpStream::connect(server).await.unwrap();
            s.write_all(&(bytes.len() as u16).to_be_bytes())
                .await
                .unwrap();
            s.write_all(&bytes).await.unwrap();
            let mut len = [0u8; 2];
            tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut len))
                .await
                .expect("TCP answer within 5 s")
                .unwrap();
            let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut buf).await.unwrap();
            buf
        }
    };
    let decoded = decode(&reply);
    assert_eq!(decoded.metadata.id, msg.metadata.id, "answer id matches");
    (decoded, reply)
}

/// A reply as a strict client reads it: decoded by hickory and, independently, by NLnet
/// Labs' `domain`, which must find every record the header counts, each record's data
/// well-formed, nothing after the last one, and the same counts as hickory. Panics
/// otherwise.
pub fn decode(bytes: &[u8]) -> Message {
    let reply = Message::from_vec(bytes).expect("the reply decodes (hickory)");
    let counts = strict_counts(bytes)
        .unwrap_or_else(|e| panic!("the reply does not decode strictly (domain): {e}"));
    let extra = usize::from(reply.edns.is_some()) + usize::from(reply.signature.is_some());
    let hickory = [
        reply.queries.len(),
        reply.answers.len(),
        reply.authorities.len(),
        reply.additionals.len() + extra,
    ];
    assert_eq!(
        counts, hickory,
        "the two decoders disagree on the section counts (domain, hickory)"
    );
    reply
}

/// A UDP query resent every 500 ms until answered (as a stub resolver does), for floods
/// where the kernel may drop a datagram.
pub async fn query_udp_retrying(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut msg = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(
        Name::from_ascii(name).expect("valid name"),
        qtype,
    ));
    let bytes = msg.to_vec().expect("encodes");
    let sock = UdpSocket::bind(LOCAL).await.unwrap();
    let mut buf = vec![0u8; 65535];
    for _ in 0..10 {
        sock.send_to(&bytes, server).await.unwrap();
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await
        {
            let reply = decode(&buf[..n]);
            assert_eq!(reply.metadata.id, msg.metadata.id);
            return reply;
        }
    }
    panic!("no answer to {name} after 10 tries");
}

/// The RFC 8914 INFO-CODE of the answer's Extended DNS Error, if any.
pub fn ede(m: &Message) -> Option<u16> {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    match m.edns.as_ref()?.options().get(EdnsCode::Unknown(15))? {
        EdnsOption::Unknown(_, data) if data.len() >= 2 => {
            Some(u16::from_be_bytes([data[0], data[1]]))
        }
        _ => None,
    }
}

/// The Extended DNS Error's text (EXTRA-TEXT); empty without one.
pub fn ede_text(m: &Message) -> String {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    match m
        .edns
        .as_ref()
        .and_then(|e| e.options().get(EdnsCode::Unknown(15)))
    {
        Some(EdnsOption::Unknown(_, data)) if data.len() >= 2 => {
            String::from_utf8_lossy(&data[2..]).into_owned()
        }
        _ => String::new(),
    }
}

/// Records as sorted zone-file lines.
pub fn lines(records: &[Record]) -> Vec<String> {
    let mut v: Vec<String> = records.iter().map(|r| r.to_string()).collect();
    v.sort();
    v
}

/// Compares records with expected zone-file lines; a `*` token in an expected line matches
/// any one token (e.g. the SOA serial). Order does not matter (answers are shuffled).
pub fn assert_records(section: &str, got: &[Record], want: &[&str]) {
    let got = lines(got);
    let mut want: Vec<String> = want
        .iter()
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    want.sort();
    let matches = |g: &str, w: &str| {
        let (g, w): (Vec<&str>, Vec<&str>) = (
            g.split_whitespace().collect(),
            w.split_whitespace().collect(),
        );
        g.len() == w.len()
            && g.iter()
                .zip(&w)
                .all(|(a, b)| *b == "*" || a.eq_ignore_ascii_case(b))
    };
    let mut unmatched = got.clone();
    for w in &want {
        match unmatched.iter().position(|g| matches(g, w)) {
            Some(i) => {
                unmatched.remove(i);
            }
            None => panic!("{section}: expected {w:?}\n  got {got:#?}"),
        }
    }
    assert!(
        unmatched.is_empty(),
        "{section}: unexpected records {unmatched:#?}"
    );
}

/// Polls `check` every 2 ms until it holds or `timeout` passes; returns the time it took.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

pub fn rcode(m: &Message) -> ResponseCode {
    m.metadata.response_code
}

/// `PUT /v1/catalog/register` over HTTP, as registrator or `curl` would.
pub async fn http_register(consul: &str, body: &Value) {
    http_put(consul, "/v1/catalog/register", body).await
}

pub async fn http_deregister(consul: &str, body: &Value) {
    http_put(consul, "/v1/catalog/deregister", body).await
}

async fn http_put(consul: &str, path: &str, body: &Value) {
    let resp = reqwest::Client::new()
        .put(format!("{consul}{path}"))
        .json(body)
        .send()
        .await
        .expect("emulator reachable");
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
}

/// Instance `web<i>` of service `web` on node `node<i>`, at 10.2.1.<i>:80.
pub fn web_instance(i: u8, status: &str) -> Value {
    Instance::new("web", &format!("web{i}"))
        .on(&format!("node{i}"), &format!("192.168.56.{i}"))
        .at(&format!("10.2.1.{i}"), 80)
        .status(status)
        .json()
}

/// The value of one series of the server's metrics (0 when absent).
pub fn metric(running: &Running, series: &str) -> u64 {
    let text = running.syncer().metrics().render();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}
