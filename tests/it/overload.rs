//! Overload: bounded TCP (connection cap, idle, total and write timeouts, pipelining) and
//! response-rate limiting of UDP answers, over real sockets against `app::start`.

use crate::common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use consul_dns::app::Running;
use consul_dns::metrics::Metrics;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

fn query_bytes(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(
        Name::from_ascii(name).expect("valid name"),
        qtype,
    ));
    msg.to_vec().expect("encodes")
}

/// `query_bytes` with the TCP length prefix.
fn tcp_frame(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let q = query_bytes(id, name, qtype);
    let mut out = (q.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&q);
    out
}

async fn read_answer(s: &mut TcpStream) -> Message {
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut len))
        .await
        .expect("TCP answer within 5 s")
        .expect("TCP answer");
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).await.expect("whole TCP answer");
    decode(&buf)
}

/// Waits until the server closes `s` (EOF or reset); panics after `within`.
async fn closed_by_server(s: &mut TcpStream, within: Duration) {
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {within:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return,
            Ok(Ok(_)) => {}
        }
    }
}

fn metrics(running: &Running) -> Arc<Metrics> {
    Arc::clone(running.syncer().metrics())
}

/// The emulator with service `web` (one instance) and a server tweaked by `tweak`, ready
/// (the first sync done; checked over TCP so no UDP answer is spent).
async fn ready_server(
    tweak: impl FnOnce(&mut consul_dns::config::Config),
) -> (consul_emulator::Emulator, Running) {
    let (consul, running) = web_server(tweak).await;
    let dns = running.dns_addrs[0];
    let tcp = Ask {
        transport: Transport::Tcp,
        ..Ask::default()
    };
    eventually(Duration::from_secs(5), || async move {
        let m = query_with(dns, "web.service.consul.", RecordType::A, tcp).await;
        rcode(&m) == ResponseCode::NoError && m.answers.len() == 1
    })
    .await;
    (consul, running)
}

async fn tcp_query(dns: SocketAddr) -> Message {
    let tcp = Ask {
        transport: Transport::Tcp,
        ..Ask::default()
    };
    query_with(dns, "web.service.consul.", RecordType::A, tcp).await
}

#[tokio::test]
async fn tcp_connections_are_capped() {
    let (_consul, running) = ready_server(|c| c.tcp.max_connections = 4).await;
    let dns = running.dns_addrs[0];
    let m = metrics(&running);
    eventually(Duration::from_secs(5), || {
        let m = Arc::clone(&m);
        async move { m.tcp.connections.get() == 0 }
    })
    .await;

    // Four connections, each answered: all accepted and open.
    let mut open = Vec::new();
    for id in 0..4 {
        let mut s = TcpStream::connect(dns).await.unwrap();
        s.write_all(&tcp_frame(id, "web.service.consul.", RecordType::A))
            .await
            .unwrap();
        assert_eq!(read_answer(&mut s).await.metadata.id, id);
        open.push(s);
    }
    assert_eq!(m.tcp.connections.get(), 4);

    // Three more: each closes the longest-idle connection (the oldest here: all four are
    // idle) and is served; none is refused (refusals, when every connection is busy, are
    // in tests/tcp_sources.rs).
    for id in 10..13 {
        let mut s = TcpStream::connect(dns).await.unwrap();
        s.write_all(&tcp_frame(id, "web.service.consul.", RecordType::A))
            .await
            .unwrap();
        assert_eq!(read_answer(&mut s).await.metadata.id, id);
        open.push(s);
    }
    for s in &mut open[..3] {
        closed_by_server(s, Duration::from_secs(2)).await;
    }
    assert_eq!(m.tcp.evicted.get(), 3);
    assert_eq!(m.tcp.refused.get(), 0);
    eventually(Duration::from_secs(5), || {
        let m = Arc::clone(&m);
        async move { m.tcp.connections.get() == 4 }
    })
    .await;
    let text = m.render();
    assert!(text.contains("consul_dns_tcp_evicted_total 3"), "{text}");
    assert!(text.contains("consul_dns_tcp_connections 4"), "{text}");

    // UDP is unaffected.
    let a = query(dns, "web.service.consul.", RecordType::A).await;
    assert_eq!(a.answers.len(), 1);

    // Once two close, new connections are served without closing any other.
    open.truncate(5);
    open.drain(..3);
    eventually(Duration::from_secs(5), || {
        let m = Arc::clone(&m);
        async move { m.tcp.connections.get() == 2 }
    })
    .await;
    assert_eq!(tcp_query(dns).await.answers.len(), 1);
    assert_eq!(m.tcp.evicted.get(), 3);
    assert_eq!(m.tcp.refused.get(), 0);
    running.shutdown().await;
}

#[tokio::test]
async fn idle_timeout_closes_a_silent_connection() {
    let (_consul, running) = ready_server(|c| {
        c.tcp.idle_timeout = Duration::from_secs(1);
        c.tcp.total_timeout = Duration::from_secs(30);
    })
    .await;
    let dns = running.dns_addrs[0];
    let m = metrics(&running);
    let idle_before = m.tcp.idle_timeouts.get();

    // Silent from the start.
    let start = Instant::now();
    let mut s = TcpStream::connect(dns).await.unwrap();
    closed_by_server(&mut s, Duration::from_secs(5)).await;
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(900), "closed after {took:?}");

    // Silent after an answer: the idle time counts from the answer.
    let mut s = TcpStream::connect(dns).await.unwrap();
    s.write_all(&tcp_frame(7, "web.service.consul.", RecordType::A))
        .await
        .unwrap();
    assert_eq!(read_answer(&mut s).await.answers.len(), 1);
    let start = Instant::now();
    closed_by_server(&mut s, Duration::from_secs(5)).await;
    assert!(start.elapsed() >= Duration::from_millis(900));

    assert_eq!(m.tcp.idle_timeouts.get() - idle_before, 2);
    assert_eq!(m.tcp.total_timeouts.get(), 0);
    running.shutdown().await;
}

#[tokio::test]
async fn slowloris_is_cut_at_the_total_timeout() {
    // The idle timeout alone would let it stay: here it is long, the lifetime short.
    let (_consul, running) = ready_server(|c| {
        c.tcp.idle_timeout = Duration::from_secs(30);
        c.tcp.total_timeout = Duration::from_secs(2);
    })
    .await;
    let dns = running.dns_addrs[0];
    let m = metrics(&running);
    let start = Instant::now();
    let s = TcpStream::connect(dns).await.unwrap();
    let (mut reader, mut writer) = s.into_split();
    // One byte a second, for as long as the server lets it.
    let trickle = tokio::spawn(async move {
        for b in tcp_frame(1, "web.service.consul.", RecordType::A) {
            if writer.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf))
        .await
        .expect("closed within 10 s");
    assert!(matches!(r, Ok(0) | Err(_)), "no answer expected: {r:?}");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
        "closed after {took:?}"
    );
    trickle.abort();
    assert_eq!(m.tcp.total_timeouts.get(), 1);
    assert_eq!(m.tcp.idle_timeouts.get(), 0);
    // Others are served meanwhile and after.
    assert_eq!(tcp_query(dns).await.answers.len(), 1);
    running.shutdown().await;
}

async fn big_service(consul: &str, n: usize) {
    for i in 0..n {
        let body = Instance::new("big", &format!("big{i}"))
            .on(
                &format!("n{i}"),
                &format!("192.168.{}.{}", i / 250, 1 + i % 250),
            )
            .at(&format!("10.2.{}.{}", 6 + i / 250, 1 + i % 250), 80)
            .json();
        http_register(consul, &body).await;
    }
}

#[tokio::test]
async fn a_client_that_does_not_read_is_cut_and_blocks_nobody() {
    let (consul, running) = ready_server(|c| {
        c.tcp.write_timeout = Duration::from_secs(1);
        c.tcp.idle_timeout = Duration::from_secs(30);
        c.tcp.total_timeout = Duration::from_secs(60);
    })
    .await;
    big_service(&consul.url(), 120).await;
    let dns = running.dns_addrs[0];
    let m = metrics(&running);
    let tcp = Ask {
        transport: Transport::Tcp,
        ..Ask::default()
    };
    eventually(Duration::from_secs(5), || async move {
        query_with(dns, "big.service.consul.", RecordType::SRV, tcp)
            .await
            .answers
            .len()
            == 120
    })
    .await;

    // Pipelines thousands of large answers (about 7 kB each) and reads none of them.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stubborn = socket.connect(dns).await.unwrap();
    let (_reader, mut writer) = stubborn.into_split();
    let flood = tokio::spawn(async move {
        for id in 0..3000u16 {
            let frame = tcp_frame(id, "big.service.consul.", RecordType::SRV);
            if writer.write_all(&frame).await.is_err() {
                return;
            }
        }
        // Keep the write side open until the test ends.
        tokio::time::sleep(Duration::from_secs(60)).await;
    });

    // Others keep being answered, over TCP and UDP, while it is stuck.
    for _ in 0..5 {
        let start = Instant::now();
        assert_eq!(tcp_query(dns).await.answers.len(), 1);
        assert_eq!(
            query(dns, "web.service.consul.", RecordType::A)
                .await
                .answers
                .len(),
            1
        );
        assert!(start.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually(Duration::from_secs(20), || {
        let m = Arc::clone(&m);
        async move { m.tcp.write_timeouts.get() == 1 }
    })
    .await;
    eventually(Duration::from_secs(5), || {
        let m = Arc::clone(&m);
        async move { m.tcp.connections.get() == 0 }
    })
    .await;
    flood.abort();
    running.shutdown().await;
}

#[tokio::test]
async fn pipelined_queries_are_all_answered() {
    let (consul, running) = ready_server(|_| {}).await;
    // A service not watched yet: its answer waits for a load from Consul.
    http_register(
        &consul.url(),
        &Instance::new("cold", "cold1")
            .on("n2", "192.168.0.2")
            .at("10.2.0.2", 80)
            .json(),
    )
    .await;
    let dns = running.dns_addrs[0];
    let names = [
        ("web.service.consul.", RecordType::A, ResponseCode::NoError),
        ("cold.service.consul.", RecordType::A, ResponseCode::NoError),
        (
            "nosuch.service.consul.",
            RecordType::A,
            ResponseCode::NXDomain,
        ),
        ("n1.node.consul.", RecordType::A, ResponseCode::NoError),
    ];
    let mut s = TcpStream::connect(dns).await.unwrap();
    let mut all = Vec::new();
    for id in 0..60u16 {
        let (name, qtype, _) = names[usize::from(id) % names.len()];
        all.extend_from_slice(&tcp_frame(id, name, qtype));
    }
    s.write_all(&all).await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let a = read_answer(&mut s).await;
        let (name, _, rcode) = names[usize::from(a.metadata.id) % names.len()];
        assert_eq!(a.metadata.response_code, rcode, "{name}");
        assert_eq!(
            a.queries[0].name().to_ascii(),
            name,
            "the answer to its own question"
        );
        assert!(seen.insert(a.metadata.id), "one answer per query");
    }
    assert_eq!(seen.len(), 60);
    running.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_stops_accepting() {
    let (_consul, running) = ready_server(|_| {}).await;
    let dns = running.dns_addrs[0];
    let m = query(dns, "web.service.consul.", RecordType::A).await;
    assert_eq!(m.answers.len(), 1, "answered over UDP before");
    let mut idle = TcpStream::connect(dns).await.unwrap();
    idle.write_all(&tcp_frame(3, "web.service.consul.", RecordType::A))
        .await
        .unwrap();
    assert_eq!(read_answer(&mut idle).await.metadata.id, 3);
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), running.shutdown())
        .await
        .expect("shutdown within 5 s");
    assert!(start.elapsed() < Duration::from_secs(2));
    closed_by_server(&mut idle, Duration::from_secs(1)).await;
    assert!(
        TcpStream::connect(dns).await.is_err(),
        "no longer accepting"
    );
    // The UDP socket is closed by the time shutdown returns: its port is free.
    std::net::UdpSocket::bind(dns).expect("the UDP port is free after shutdown");
}

#[test]
fn the_udp_socket_closes_when_its_runtime_goes_away() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (consul, running) = runtime.block_on(ready_server(|_| {}));
    let dns = running.dns_addrs[0];
    drop(running);
    drop(consul);
    drop(runtime);
    let start = Instant::now();
    while std::net::UdpSocket::bind(dns).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the UDP port is still taken 2 s after"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- response-rate limiting ----

struct Received {
    answered: usize,
    slipped: usize,
}

/// Sends queries from `socket` as fast as `per_ms` a millisecond for `span`, counting
/// what comes back: full answers and slipped ones (TC, no answers, the question echoed).
async fn flood(socket: UdpSocket, dns: SocketAddr, per_ms: usize, span: Duration) -> Received {
    let socket = Arc::new(socket);
    let rx = Arc::clone(&socket);
    let counter = tokio::spawn(async move {
        let mut got = Received {
            answered: 0,
            slipped: 0,
        };
        let mut buf = vec![0u8; 4096];
        while let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_secs(1), rx.recv_from(&mut buf)).await
        {
            let m = decode(&buf[..n]);
            if m.metadata.truncation {
                assert!(m.answers.is_empty(), "a slipped answer is empty");
                assert_eq!(m.queries.len(), 1, "with the question");
                assert_eq!(m.metadata.response_code, ResponseCode::NoError);
                got.slipped += 1;
            } else {
                assert_eq!(m.answers.len(), 1);
                got.answered += 1;
            }
        }
        got
    });
    let start = Instant::now();
    let mut id = 0u16;
    while start.elapsed() < span {
        for _ in 0..per_ms {
            id = id.wrapping_add(1);
            let q = query_bytes(id, "web.service.consul.", RecordType::A);
            socket.send_to(&q, dns).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    counter.await.unwrap()
}

#[tokio::test]
async fn rrl_limits_a_flooding_client_and_no_one_else() {
    const RATE: u32 = 20;
    let (_consul, running) = ready_server(|c| {
        c.rrl.responses_per_second = RATE;
        c.rrl.window = Duration::from_secs(1);
        c.rrl.slip = 2;
        c.rrl.ipv4_prefix_length = 32;
    })
    .await;
    let dns = running.dns_addrs[0];
    let m = metrics(&running);

    let flooder = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let start = Instant::now();
    let span = Duration::from_secs(2);
    let flooding = tokio::spawn(flood(flooder, dns, 2, span));

    // Meanwhile another client (127.0.0.2) under the rate is answered in full...
    let other = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let mut buf = vec![0u8; 4096];
    for id in 0..15u16 {
        other
            .send_to(&query_bytes(id, "web.service.consul.", RecordType::A), dns)
            .await
            .unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), other.recv_from(&mut buf))
            .await
            .expect("127.0.0.2 is answered")
            .unwrap();
        let a = decode(&buf[..n]);
        assert_eq!(a.metadata.id, id);
        assert!(!a.metadata.truncation);
        assert_eq!(a.answers.len(), 1);
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    // ...and TCP from the flooding address too: TCP is never limited.
    for _ in 0..10 {
        let a = tcp_query(dns).await;
        assert!(!a.metadata.truncation);
        assert_eq!(a.answers.len(), 1);
    }

    let got = flooding.await.unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    // A burst of one window (RATE), then RATE a second.
    let most = RATE as f64 * (1.0 + elapsed) + 2.0;
    assert!(
        got.answered >= RATE as usize && got.answered as f64 <= most,
        "{} answered in {elapsed:.2}s (at most {most:.0})",
        got.answered
    );
    let (slipped, dropped) = (m.rrl_slipped.get(), m.rrl_dropped.get());
    eprintln!(
        "flood from 127.0.0.1: {} answered, {} slipped received; server: {slipped} slipped, {dropped} dropped, in {elapsed:.2}s",
        got.answered, got.slipped
    );
    assert!(dropped > 300, "{dropped} dropped");
    // slip = 2: every other limited answer is slipped.
    assert!(
        slipped.abs_diff(dropped) <= 1,
        "{slipped} slipped, {dropped} dropped"
    );
    assert!(
        got.slipped as u64 <= slipped && got.slipped as u64 * 10 >= slipped * 9,
        "{} slipped answers received, {slipped} sent",
        got.slipped
    );
    running.shutdown().await;
}

#[tokio::test]
async fn rrl_slip_zero_drops_and_one_slips_all() {
    for slip in [0u32, 1] {
        let (_consul, running) = ready_server(|c| {
            c.rrl.responses_per_second = 10;
            c.rrl.window = Duration::from_secs(1);
            c.rrl.slip = slip;
        })
        .await;
        let dns = running.dns_addrs[0];
        let m = metrics(&running);
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let got = flood(socket, dns, 1, Duration::from_millis(500)).await;
        assert!(got.answered <= 10 + 6, "{} answered", got.answered);
        if slip == 0 {
            assert_eq!(got.slipped, 0);
            assert_eq!(m.rrl_slipped.get(), 0);
            assert!(m.rrl_dropped.get() > 50);
        } else {
            assert_eq!(m.rrl_dropped.get(), 0);
            assert!(m.rrl_slipped.get() > 50);
            assert!(got.slipped as u64 * 10 >= m.rrl_slipped.get() * 9);
        }
        running.shutdown().await;
    }
}

#[tokio::test]
async fn rrl_off_limits_nothing() {
    let (_consul, running) = ready_server(|_| {}).await;
    let dns = running.dns_addrs[0];
    let m = metrics(&running);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = vec![0u8; 4096];
    for id in 0..500u16 {
        socket
            .send_to(&query_bytes(id, "web.service.consul.", RecordType::A), dns)
            .await
            .unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf))
            .await
            .expect("answered")
            .unwrap();
        let a = decode(&buf[..n]);
        assert_eq!(a.metadata.id, id);
        assert_eq!(a.answers.len(), 1);
    }
    assert_eq!(m.rrl_dropped.get(), 0);
    assert_eq!(m.rrl_slipped.get(), 0);
    running.shutdown().await;
}
