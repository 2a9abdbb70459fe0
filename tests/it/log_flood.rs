//! What a remote party can make the server log (issue 18, item 6): the binary at its default
//! log level, flooded with packets that each used to write a line (other opcodes, EDNS
//! versions above 0), and run against a Consul answering `X-Consul-Index: 0` to everything
//! or failing every other read. What it prints stays at a handful of lines, and it keeps
//! answering.

use crate::common;
use crate::program;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use program::{addresses_eventually, ConsulDns, TempDir, BIN};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// consul-dns as a user starts it, at its default log level (whatever `RUST_LOG` the tests
/// run with).
fn start(dir: &TempDir, consul: &str) -> ConsulDns {
    let mut cmd = Command::new(BIN);
    cmd.args(["--consul-addr", consul, "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG");
    ConsulDns::start_command("consul-dns", cmd)
}

/// The lines it printed after the line saying where it listens.
fn lines_after_listening(dns: &ConsulDns) -> Vec<String> {
    dns.program
        .output()
        .lines()
        .skip_while(|l| !l.contains("listening on "))
        .skip(1)
        .map(String::from)
        .collect()
}

/// The kinds of packet flooded, each a message a client can send from any address.
const KINDS: [&str; 4] = ["NOTIFY", "UPDATE", "STATUS", "EDNS version 1"];

/// A packet of kind `kind` (an index in [`KINDS`]) with message ID `id`, and the rcode the
/// server answers it with.
fn packet(kind: usize, id: u16) -> (Vec<u8>, ResponseCode) {
    let consul = Name::from_ascii("consul.").expect("name");
    let (msg, rcode) = match kind {
        0..=2 => {
            let op = [OpCode::Notify, OpCode::Update, OpCode::Status][kind];
            let mut msg = Message::new(id, MessageType::Query, op);
            msg.add_query(Query::query(consul, RecordType::SOA));
            (msg, ResponseCode::NotImp)
        }
        _ => {
            let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
            msg.metadata.recursion_desired = true;
            msg.add_query(Query::query(
                Name::from_ascii("web.service.consul.").expect("name"),
                RecordType::A,
            ));
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            edns.set_version(1);
            msg.set_edns(edns);
            (msg, ResponseCode::BADVERS)
        }
    };
    (msg.to_vec().expect("encodes"), rcode)
}

/// Sends `packet` until a reply with its ID comes back (5 s at most).
fn exchange(sock: &UdpSocket, server: SocketAddr, packet: &[u8]) -> Option<Message> {
    let id = u16::from_be_bytes([packet[0], packet[1]]);
    let start = Instant::now();
    let mut buf = vec![0u8; 65535];
    while start.elapsed() < Duration::from_secs(5) {
        sock.send_to(packet, server).expect("send");
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            let Ok((n, _)) = sock.recv_from(&mut buf) else {
                break;
            };
            if let Ok(reply) = Message::from_vec(&buf[..n]) {
                if reply.metadata.id == id {
                    return Some(reply);
                }
            }
        }
    }
    None
}

/// 5,000 packets of each kind: a few lines in all, and every kind still answered as before.
#[test]
fn packets_of_other_opcodes_and_edns_versions_write_no_line_each() {
    const EACH: usize = 5_000;
    let rt = runtime();
    let consul = rt.block_on(common::emulator());
    consul.seed_demo();
    let dir = TempDir::new("log-flood");
    let dns = start(&dir, &consul.url());
    addresses_eventually(dns.addr, "consul.service.consul.", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    let before = lines_after_listening(&dns).len();

    // The kind in the ID's top two bits.
    let packets: Vec<Vec<Vec<u8>>> = (0..KINDS.len())
        .map(|kind| {
            (0..EACH)
                .map(|i| packet(kind, ((kind as u16) << 14) | (i as u16 & 0x3FFF)).0)
                .collect()
        })
        .collect();
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let reader = sock.try_clone().expect("clone");
    // Replies by kind, read while the flood is sent.
    let counting = std::thread::spawn(move || {
        let mut answered = [0usize; KINDS.len()];
        let mut buf = vec![0u8; 65535];
        while let Ok((n, _)) = reader.recv_from(&mut buf) {
            if n >= 2 {
                let kind = usize::from(buf[0] >> 6);
                answered[kind] += 1;
            }
        }
        answered
    });
    for i in 0..EACH {
        for kind in &packets {
            sock.send_to(&kind[i], dns.addr).expect("send");
        }
        if i % 16 == 15 {
            // A pace the server keeps up with, so that the flood is received, not dropped.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let answered = counting.join().expect("reader");
    for (kind, n) in KINDS.iter().zip(answered) {
        assert!(
            n >= EACH / 5,
            "{kind}: only {n} of {EACH} answered: the flood did not reach the server"
        );
    }

    // Still answered as before the flood.
    for (kind, name) in KINDS.iter().enumerate() {
        let (bytes, rcode) = packet(kind, 0xFFFF);
        let reply = exchange(&sock, dns.addr, &bytes)
            .unwrap_or_else(|| panic!("no answer to {name} after the flood"));
        // BADVERS and BADSIG share 16: compare the numbers.
        assert_eq!(
            u16::from(reply.metadata.response_code),
            u16::from(rcode),
            "{name}: {}",
            reply.metadata.response_code
        );
    }

    std::thread::sleep(Duration::from_millis(300));
    let lines = lines_after_listening(&dns);
    let new = &lines[before..];
    assert!(
        new.len() < 20,
        "{} lines for {} packets, e.g.:\n{}",
        new.len(),
        EACH * KINDS.len(),
        new.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// An answer of the loopback Consul: status, extra headers, JSON body.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Answer {
    fn ok(body: &str, headers: Vec<(&'static str, String)>) -> Answer {
        Answer {
            status: 200,
            headers,
            body: body.to_string(),
        }
    }
}

/// The bodies of a one-service catalog (`web` on `node1` at 10.2.1.1), by path.
fn catalog(path: &str) -> &'static str {
    match path {
        "/v1/agent/self" => r#"{"Config": {"Datacenter": "dc1", "NodeName": "node1"}}"#,
        "/v1/catalog/datacenters" => r#"["dc1"]"#,
        "/v1/catalog/services" => r#"{"web": []}"#,
        "/v1/catalog/nodes" => {
            r#"[{"Node": "node1", "Address": "192.168.56.1", "Datacenter": "dc1"}]"#
        }
        "/v1/health/service/web" => {
            r#"[{"Node": {"Node": "node1", "Address": "192.168.56.1", "Datacenter": "dc1"},
                 "Service": {"ID": "web1", "Service": "web", "Address": "10.2.1.1", "Port": 80},
                 "Checks": []}]"#
        }
        _ => "[]",
    }
}

/// An HTTP/1.1 server on loopback acting as Consul: `answer` gets the request's number
/// (from 0) and its path. Returns its URL and the count of requests answered.
fn fake_consul(
    rt: &tokio::runtime::Runtime,
    answer: impl Fn(usize, &str) -> Answer + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let answer = Arc::new(answer);
    let counter = Arc::clone(&count);
    rt.spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (answer, counter) = (Arc::clone(&answer), Arc::clone(&counter));
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    // GETs only: a request is its head.
                    let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&pending[..end]).into_owned();
                    pending.drain(..end + 4);
                    let target = head.split_whitespace().nth(1).unwrap_or("/");
                    let path = target.split('?').next().unwrap_or(target);
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let a = answer(n, path);
                    let mut response = format!(
                        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
                        a.status,
                        a.body.len()
                    );
                    for (name, value) in &a.headers {
                        response.push_str(&format!("{name}: {value}\r\n"));
                    }
                    response.push_str("\r\n");
                    response.push_str(&a.body);
                    if sock.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), count)
}

/// Runs consul-dns against `consul` for `how_long` once `web.service.consul` is answered;
/// returns the lines printed after it said where it listens.
fn lines_against(consul: &str, how_long: Duration) -> Vec<String> {
    let dir = TempDir::new("log-flood");
    let dns = start(&dir, consul);
    let addrs = addresses_eventually(dns.addr, "web.service.consul.", Duration::from_secs(10));
    assert_eq!(addrs, ["10.2.1.1".parse::<std::net::IpAddr>().unwrap()]);
    std::thread::sleep(how_long);
    addresses_eventually(dns.addr, "web.service.consul.", Duration::from_secs(5));
    lines_after_listening(&dns)
}

fn listing(lines: &[String]) -> String {
    let mut by_message: BTreeMap<String, usize> = BTreeMap::new();
    for l in lines {
        // The message without the timestamp.
        let key = l
            .split_once(' ')
            .map_or(l.as_str(), |(_, rest)| rest)
            .to_string();
        *by_message.entry(key).or_default() += 1;
    }
    by_message
        .iter()
        .take(12)
        .map(|(l, n)| format!("{n:>5} x {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Consul answering `X-Consul-Index: 0` (a broken agent or proxy): every read resets the
/// watches, as fast as their rate limit lets them ask (dozens a second).
#[test]
fn a_consul_answering_index_0_writes_a_handful_of_lines() {
    let rt = runtime();
    let (url, requests) = fake_consul(&rt, |_, path| {
        Answer::ok(
            catalog(path),
            vec![
                ("X-Consul-Index", "0".into()),
                ("X-Consul-KnownLeader", "true".into()),
            ],
        )
    });
    let lines = lines_against(&url, Duration::from_secs(3));
    let asked = requests.load(Ordering::Relaxed);
    println!("{asked} reads of Consul; printed:\n{}", listing(&lines));
    assert!(
        asked >= 60,
        "only {asked} requests: Consul was not read in a loop"
    );
    assert!(
        lines.len() <= 6,
        "{} lines for {asked} reads of Consul:\n{}",
        lines.len(),
        listing(&lines)
    );
}

/// Consul failing every other read and losing its leader every other answer: each watch
/// fails for the first time, recovers and sees the leader come and go over and over.
#[test]
fn a_flapping_consul_writes_a_handful_of_lines() {
    let rt = runtime();
    let (url, requests) = fake_consul(&rt, |n, path| {
        if n % 2 == 1 && path != "/v1/agent/self" {
            return Answer {
                status: 500,
                headers: Vec::new(),
                body: "rpc error: No cluster leader".into(),
            };
        }
        Answer::ok(
            catalog(path),
            vec![
                ("X-Consul-Index", (n + 1).to_string()),
                ("X-Consul-KnownLeader", (n % 4 == 0).to_string()),
            ],
        )
    });
    let lines = lines_against(&url, Duration::from_secs(3));
    let asked = requests.load(Ordering::Relaxed);
    println!("{asked} reads of Consul; printed:\n{}", listing(&lines));
    assert!(
        asked >= 60,
        "only {asked} requests: Consul was not read in a loop"
    );
    // At most one line per interval for each of: a read failed, Consul answers again (of
    // the service list, the node list, the rest), the leader lost, found again; and the
    // one-offs (the datacenter learnt, the datacenters not listed).
    assert!(
        lines.len() <= 15,
        "{} lines for {asked} reads of Consul:\n{}",
        lines.len(),
        listing(&lines)
    );
}
