//! One source must not deny TCP to the others (issue 18, item 5): a source at
//! `tcp_max_connections_per_source`, or a server at `tcp_max_connections`, makes room for a
//! new connection by closing the longest-idle one (of the source, or of all) rather than
//! refusing it; a connection with a query in flight, or active more recently, is kept over
//! an idle one; a new connection waits for room while every candidate is busy, and is
//! refused only once it waited (2 s). Over real
//! loopback sockets, the clients bound to distinct 127.0.0.0/8 addresses; every answer is
//! read strictly (`common::decode`).

use crate::common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::*;
use consul_dns::app::Running;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const CONNECTIONS: &str = "consul_dns_tcp_connections";
const EVICTED: &str = "consul_dns_tcp_evicted_total";
const REFUSED: &str = "consul_dns_tcp_refused_total";

/// The emulator with service `web` (one instance at 10.2.0.1) and a server with at most
/// `max` TCP connections, `per_source` from one source, tweaked further by `tweak`; ready
/// (first sync done) and with no TCP connection open.
async fn ready_server(
    max: usize,
    per_source: usize,
    tweak: impl FnOnce(&mut consul_dns::config::Config),
) -> (consul_emulator::Emulator, Running) {
    let (consul, running) = web_server(|c| {
        c.tcp.max_connections = max;
        c.tcp.max_connections_per_source = per_source;
        tweak(c);
    })
    .await;
    let dns = running.dns_addrs[0];
    eventually(Duration::from_secs(5), || async move {
        let m = query(dns, "web.service.consul.", RecordType::A).await;
        rcode(&m) == ResponseCode::NoError && m.answers.len() == 1
    })
    .await;
    wait_for(&running, CONNECTIONS, 0).await;
    (consul, running)
}

/// Waits until metric `series` is `value` (10 s at most: new connections count as busy
/// for half a second, so room is made in steps).
async fn wait_for(running: &Running, series: &str, value: u64) {
    let start = std::time::Instant::now();
    while metric(running, series) != value {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{series} is {}, not {value}",
            metric(running, series)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A TCP connection to `dns` from loopback address `from` (127.0.0.0/8 all work on Linux).
async fn connect_from(from: &str, dns: SocketAddr) -> TcpStream {
    try_connect_from(from, dns)
        .await
        .unwrap_or_else(|e| panic!("connect from {from}: {e}"))
}

/// [`connect_from`], which may fail when the server resets the connection at once.
async fn try_connect_from(from: &str, dns: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    let ip: IpAddr = from.parse().expect("an address");
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(dns).await
}

fn frame(id: u16, name: &str) -> Vec<u8> {
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(
        Name::from_ascii(name).expect("valid name"),
        RecordType::A,
    ));
    let bytes = msg.to_vec().expect("encodes");
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&bytes);
    out
}

/// The next answer on `s`, read strictly; None when the server closed the connection.
async fn read_answer(s: &mut TcpStream) -> Option<Message> {
    let mut len = [0u8; 2];
    match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut len)).await {
        Err(_) => panic!("no TCP answer within 5 s"),
        Ok(Err(_)) => return None,
        Ok(Ok(_)) => {}
    }
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await.ok()?;
    Some(decode(&buf))
}

/// Asks `web.service.consul. A` on `s` (query id `id`); panics unless it is answered with
/// the one instance.
async fn assert_answers(s: &mut TcpStream, id: u16, what: &str) {
    s.write_all(&frame(id, "web.service.consul."))
        .await
        .unwrap_or_else(|e| panic!("{what}: write failed: {e}"));
    let m = read_answer(s)
        .await
        .unwrap_or_else(|| panic!("{what}: closed instead of answered"));
    assert_eq!(m.metadata.id, id, "{what}");
    assert_eq!(rcode(&m), ResponseCode::NoError, "{what}");
    assert_records(what, &m.answers, &["web.service.consul. 0 IN A 10.2.0.1"]);
}

/// Whether the server has closed `s` (EOF or reset) within `within`, without writing to it.
async fn closed(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 512];
    match tokio::time::timeout(within, s.read(&mut buf)).await {
        Err(_) => false,
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!("{n} bytes nobody asked for"),
    }
}

#[tokio::test]
async fn one_source_cannot_keep_others_out() {
    let (_consul, running) = ready_server(20, 5, |_| {}).await;
    let dns = running.dns_addrs[0];

    // 127.0.0.1 opens as many connections as the server takes, and says nothing on them.
    let mut hog = Vec::new();
    for _ in 0..20 {
        hog.push(connect_from("127.0.0.1", dns).await);
    }
    wait_for(&running, EVICTED, 15).await;
    wait_for(&running, CONNECTIONS, 5).await;

    // Another source is answered at once.
    let mut other = connect_from("127.0.0.2", dns).await;
    assert_answers(&mut other, 1, "the other source").await;
    assert_eq!(metric(&running, REFUSED), 0);

    // The hog's first connections were closed (the others waited for room, and were
    // admitted in turn as those went idle); five of its connections still work.
    let mut open = 0;
    for (i, s) in hog.iter_mut().enumerate() {
        if closed(s, Duration::from_millis(300)).await {
            continue;
        }
        assert!(
            i >= 5,
            "the hog's connection {i}, among the first, is still open"
        );
        assert_answers(s, 100 + i as u16, &format!("the hog's connection {i}")).await;
        open += 1;
    }
    assert_eq!(open, 5);
    running.shutdown().await;
}

#[tokio::test]
async fn a_full_server_closes_the_longest_idle_connection() {
    let (_consul, running) = ready_server(20, 5, |_| {}).await;
    let dns = running.dns_addrs[0];

    // Four sources, each within its limit, fill the server; each connection is answered.
    let mut open = Vec::new();
    for i in 0..20u16 {
        let from = format!("127.0.0.{}", 1 + i / 5);
        let mut s = connect_from(&from, dns).await;
        assert_answers(&mut s, i, &format!("connection {i} from {from}")).await;
        open.push(s);
    }
    assert_eq!(metric(&running, CONNECTIONS), 20);

    // All but one are active again: that one (neither the first accepted nor from the
    // first source) is now the longest idle.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let idle = 12;
    for (i, s) in open.iter_mut().enumerate() {
        if i != idle {
            assert_answers(s, 100 + i as u16, &format!("connection {i}, again")).await;
        }
    }

    // A fifth source is answered, in the room of that connection.
    let mut newcomer = connect_from("127.0.0.9", dns).await;
    assert_answers(&mut newcomer, 999, "the newcomer").await;
    assert!(
        closed(&mut open[idle], Duration::from_secs(2)).await,
        "the longest-idle connection is still open"
    );
    assert_eq!(metric(&running, EVICTED), 1);
    assert_eq!(metric(&running, REFUSED), 0);
    for (i, s) in open.iter_mut().enumerate() {
        if i != idle {
            assert_answers(s, 200 + i as u16, &format!("connection {i} is kept")).await;
        }
    }
    wait_for(&running, CONNECTIONS, 20).await;
    running.shutdown().await;
}

/// Sends a query forwarded to the silent upstream: in flight until the recursor timeout.
async fn hang(s: &mut TcpStream, id: u16) {
    s.write_all(&frame(id, "example.org.")).await.unwrap();
}

#[tokio::test]
async fn busy_and_recently_active_connections_are_kept_over_idle_ones() {
    // An upstream that takes connections (the kernel's backlog) and never answers: a
    // forwarded query stays in flight for the recursor timeout.
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let (_consul, running) = ready_server(20, 3, |c| {
        c.recursors = vec![upstream_addr];
        c.dns.recursor_timeout = Duration::from_secs(3);
    })
    .await;
    let dns = running.dns_addrs[0];

    // Accepted in this order: busy (a query in flight), recent (active after idle's
    // accept), idle (nothing since it was accepted).
    let mut busy = connect_from("127.0.0.1", dns).await;
    let mut recent = connect_from("127.0.0.1", dns).await;
    let mut idle = connect_from("127.0.0.1", dns).await;
    hang(&mut busy, 1).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_answers(&mut recent, 2, "recent").await;
    wait_for(&running, CONNECTIONS, 3).await;
    // Past the half second a new connection counts as busy while its query may be on
    // its way.
    tokio::time::sleep(Duration::from_millis(600)).await;

    // The source is at its limit: a fourth connection closes `idle`, though `busy` was
    // accepted first and has been silent since its query, and `recent` was accepted first.
    let mut fourth = connect_from("127.0.0.1", dns).await;
    assert_answers(&mut fourth, 4, "the fourth connection").await;
    assert!(
        closed(&mut idle, Duration::from_secs(2)).await,
        "the idle connection is still open"
    );
    assert_eq!(metric(&running, EVICTED), 1);
    // `busy` still works (its query still unanswered), and `recent` too.
    assert_answers(&mut busy, 11, "busy").await;
    assert_answers(&mut recent, 12, "recent").await;

    // Every connection of the source busy: a new one is refused, and all three are kept.
    hang(&mut recent, 21).await;
    hang(&mut fourth, 22).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    // (The reset may come before the connect is seen to complete.)
    if let Ok(mut refused) = try_connect_from("127.0.0.1", dns).await {
        assert!(
            closed(&mut refused, Duration::from_secs(4)).await,
            "a connection past the limit with every other busy is refused once it waited"
        );
    }
    assert_eq!(metric(&running, REFUSED), 1);
    assert_eq!(metric(&running, EVICTED), 1);
    for (s, what) in [
        (&mut busy, "busy"),
        (&mut recent, "recent"),
        (&mut fourth, "fourth"),
    ] {
        assert_answers(s, 30, &format!("{what} is kept")).await;
    }
    // Another source is not affected by that one's limit.
    let mut other = connect_from("127.0.0.2", dns).await;
    assert_answers(&mut other, 40, "another source").await;
    drop(upstream);
    running.shutdown().await;
}

#[tokio::test]
async fn a_source_never_has_more_than_its_limit_open() {
    let (_consul, running) = ready_server(50, 5, |_| {}).await;
    let dns = running.dns_addrs[0];
    let mut mine = Vec::new();
    for i in 0..30u16 {
        let mut s = connect_from("127.0.0.1", dns).await;
        assert_answers(&mut s, i, &format!("connection {i}")).await;
        mine.push(s);
        let start = std::time::Instant::now();
        while metric(&running, CONNECTIONS) > 5 {
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "{} connections open from one source after {} opened",
                metric(&running, CONNECTIONS),
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    assert_eq!(metric(&running, EVICTED), 25);
    assert_eq!(metric(&running, REFUSED), 0);
    let mut answering = Vec::new();
    for (i, s) in mine.iter_mut().enumerate() {
        if !closed(s, Duration::from_millis(200)).await {
            assert_answers(s, 100 + i as u16, &format!("connection {i}")).await;
            answering.push(i);
        }
    }
    assert_eq!(answering, [25, 26, 27, 28, 29], "the newest five are open");
    running.shutdown().await;
}

#[tokio::test]
async fn a_server_full_of_busy_connections_refuses_new_ones() {
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let (_consul, running) = ready_server(4, 2, |c| {
        c.recursors = vec![upstream_addr];
        c.dns.recursor_timeout = Duration::from_secs(3);
    })
    .await;
    let dns = running.dns_addrs[0];
    // Two sources, two connections each, each with a query in flight: the server is full
    // and nothing in it is idle.
    let mut open = Vec::new();
    for (i, from) in ["127.0.0.1", "127.0.0.1", "127.0.0.2", "127.0.0.2"]
        .into_iter()
        .enumerate()
    {
        let mut s = connect_from(from, dns).await;
        hang(&mut s, i as u16).await;
        open.push(s);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(metric(&running, CONNECTIONS), 4);
    if let Ok(mut refused) = try_connect_from("127.0.0.3", dns).await {
        assert!(
            closed(&mut refused, Duration::from_secs(4)).await,
            "a connection past the limit with every other busy is refused once it waited"
        );
    }
    assert_eq!(metric(&running, REFUSED), 1);
    assert_eq!(metric(&running, EVICTED), 0);
    for (i, s) in open.iter_mut().enumerate() {
        assert_answers(s, 10 + i as u16, &format!("busy connection {i} is kept")).await;
    }
    drop(upstream);
    running.shutdown().await;
}
