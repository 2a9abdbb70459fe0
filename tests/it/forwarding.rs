//! Forwarding to the recursors: replies passed on as the upstream gives them (sections,
//! TTLs, TC) with RA, Consul's recursor order and timeouts, SERVFAIL when every recursor
//! fails, and recursion only for `allow_recursion` clients. The upstreams are other consul-dns servers with a
//! static zone, on loopback.

use crate::common;
use crate::program;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use consul_dns::app::Running;
use consul_dns::config::{Config, RecursorStrategy};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use program::{ask_from, is_root, tool, NetNs, TempDir};

const EXAMPLE_ZONE: &str = include_str!("../../zones/cluster.internal.zone");
const NODE1: &str = "node1.cluster.internal. 300 IN A 192.168.56.11";

/// An upstream: consul-dns serving the example zone.
async fn upstream(consul: &str, zones: &TempDir) -> Running {
    zones.write("cluster.internal.zone", EXAMPLE_ZONE);
    let dir = zones.path().to_path_buf();
    common::server_with(consul, move |c| c.zones = Some(dir)).await
}

async fn forwarder(
    consul: &str,
    recursors: Vec<SocketAddr>,
    tweak: impl FnOnce(&mut Config),
) -> Running {
    common::server_with(consul, move |c| {
        c.recursors = recursors;
        c.dns.recursor_timeout = Duration::from_millis(300);
        tweak(c);
    })
    .await
}

/// A query from `from` (any 127/8 address is local on Linux), off the async runtime.
async fn ask(
    from: Ipv4Addr,
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    rd: bool,
) -> Message {
    let name = name.to_string();
    tokio::task::spawn_blocking(move || {
        ask_from(
            IpAddr::V4(from),
            server,
            &name,
            qtype,
            rd,
            Duration::from_secs(5),
        )
    })
    .await
    .expect("query task")
    .expect("an answer")
}

const LO: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// A UDP port where nothing answers (bound, never read).
fn silent_port() -> (UdpSocket, SocketAddr) {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = sock.local_addr().expect("addr");
    (sock, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_names_are_passed_through_from_the_recursors() {
    let emu = common::emulator().await;
    emu.seed_demo();
    let zones = TempDir::new("fwd-up");
    let up = upstream(&emu.url(), &zones).await;
    let upstream_addr = up.dns_addrs[0];
    let fwd = forwarder(&emu.url(), vec![upstream_addr], |_| {}).await;
    let s = fwd.dns_addrs[0];

    // As the upstream gave it: every section, owner names and TTLs (Consul sets forwarded
    // TTLs to 0, hashicorp/consul#14703), with RA; not authoritative (the data is not ours).
    for (name, qtype) in [
        ("node1.cluster.internal", RecordType::A),
        ("gateway.cluster.internal", RecordType::A),
        ("nope.cluster.internal", RecordType::A),
        ("cluster.internal", RecordType::NS),
        ("cluster.internal", RecordType::ANY),
    ] {
        let direct = ask(LO, upstream_addr, name, qtype, true).await;
        let m = ask(LO, s, name, qtype, true).await;
        assert_eq!(
            m.metadata.response_code, direct.metadata.response_code,
            "{name} {qtype}"
        );
        assert!(m.metadata.recursion_available, "RA on forwarded answers");
        assert!(
            !m.metadata.authoritative,
            "forwarded answers are not authoritative"
        );
        assert_eq!(
            common::lines(&m.answers),
            common::lines(&direct.answers),
            "{name} {qtype}"
        );
        assert_eq!(
            common::lines(&m.authorities),
            common::lines(&direct.authorities),
            "{name} {qtype}"
        );
        assert_eq!(
            common::lines(&m.additionals),
            common::lines(&direct.additionals),
            "{name} {qtype}"
        );
    }
    let m = ask(LO, s, "node1.cluster.internal", RecordType::A, true).await;
    common::assert_records("forwarded", &m.answers, &[NODE1]);
    let m = ask(LO, s, "nope.cluster.internal", RecordType::A, true).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    common::assert_records(
        "NXDOMAIN authority",
        &m.authorities,
        &["cluster.internal. 300 IN SOA ns.cluster.internal. hostmaster.cluster.internal. 2024060101 3600 600 86400 60"],
    );

    // Consul names are still ours: authoritative, and now with RA for this client.
    let m = ask(LO, s, "web.service.consul", RecordType::A, true).await;
    assert!(m.metadata.authoritative && m.metadata.recursion_available);
    assert_eq!(program::addresses(&m).len(), 3);

    // RD=0 is forwarded as asked (as Consul does); the upstream decides.
    let m = ask(LO, s, "node1.cluster.internal", RecordType::A, false).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    common::assert_records("RD=0", &m.answers, &[NODE1]);

    // Nothing is cached here: with the upstream gone, SERVFAIL (RA set), within the
    // recursor's timeout.
    up.shutdown().await;
    let start = Instant::now();
    let m = ask(LO, s, "node1.cluster.internal", RecordType::A, true).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(m.metadata.recursion_available);
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    fwd.shutdown().await;
}

/// A reply the upstream cut for a UDP client (TC) reaches the client cut, so it retries
/// over TCP, which is forwarded over TCP and carries everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_upstream_reply_is_passed_on_and_tcp_gets_it_whole() {
    let emu = common::emulator().await;
    let zones = TempDir::new("fwd-tc");
    let many: String = (1..=60)
        .map(|i| format!("many IN A 10.9.0.{i}\n"))
        .collect();
    zones.write(
        "big.internal.zone",
        &format!("$TTL 120\n@ IN SOA ns.big.internal. hostmaster.big.internal. 1 3600 600 86400 30\n{many}"),
    );
    let dir = zones.path().to_path_buf();
    let up = common::server_with(&emu.url(), move |c| c.zones = Some(dir)).await;
    let fwd = forwarder(&emu.url(), vec![up.dns_addrs[0]], |_| {}).await;
    let s = fwd.dns_addrs[0];
    let udp = common::query(s, "many.big.internal.", RecordType::A).await;
    assert!(udp.metadata.truncation, "TC passed on: {udp:?}");
    assert!(udp.metadata.recursion_available);
    assert!(udp.answers.len() < 60);
    let tcp = common::query_with(
        s,
        "many.big.internal.",
        RecordType::A,
        common::Ask {
            transport: common::Transport::Tcp,
            ..Default::default()
        },
    )
    .await;
    assert!(!tcp.metadata.truncation, "{tcp:?}");
    assert_eq!(tcp.answers.len(), 60);
    assert!(tcp.answers.iter().all(|r| r.ttl == 120), "TTLs as given");
    fwd.shutdown().await;
    up.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursors_are_tried_in_order_skipping_silent_and_refusing_ones() {
    let emu = common::emulator().await;
    emu.seed_demo();
    let zones = TempDir::new("fwd-order");
    let up = upstream(&emu.url(), &zones).await;
    // A consul-dns without recursors or zones answers REFUSED for the name.
    let refusing = common::server(&emu.url()).await;
    let (_silent, silent) = silent_port();
    let recursors = vec![silent, refusing.dns_addrs[0], up.dns_addrs[0]];

    for strategy in [RecursorStrategy::Sequential, RecursorStrategy::Random] {
        let fwd = forwarder(&emu.url(), recursors.clone(), |c| {
            c.dns.recursor_strategy = strategy
        })
        .await;
        // Different names each time, so that no answer comes from the cache.
        for i in 1..=3 {
            let name = format!("node{i}.cluster.internal");
            let start = Instant::now();
            let m = ask(LO, fwd.dns_addrs[0], &name, RecordType::A, true).await;
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::NoError,
                "{strategy} {name}"
            );
            assert_eq!(m.answers.len(), 1, "{strategy} {name}");
            // At worst: the silent one's timeout (300 ms), then REFUSED, then the answer.
            assert!(
                start.elapsed() < Duration::from_millis(1500),
                "{:?}",
                start.elapsed()
            );
        }
        fwd.shutdown().await;
    }
    up.shutdown().await;
    refusing.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recursor_failing_is_servfail_within_their_timeouts() {
    let emu = common::emulator().await;
    let refusing = common::server(&emu.url()).await;
    let (_a, silent_a) = silent_port();
    let (_b, silent_b) = silent_port();
    let fwd = forwarder(
        &emu.url(),
        vec![silent_a, silent_b, refusing.dns_addrs[0]],
        |_| {},
    )
    .await;
    let start = Instant::now();
    let m = ask(LO, fwd.dns_addrs[0], "example.com", RecordType::A, true).await;
    let took = start.elapsed();
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(m.metadata.recursion_available);
    // Two silent recursors at 300 ms each, then one that refuses at once.
    assert!(took >= Duration::from_millis(550), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    fwd.shutdown().await;
    refusing.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursion_only_for_allowed_clients() {
    let emu = common::emulator().await;
    emu.seed_demo();
    let up_zones = TempDir::new("fwd-acl-up");
    let up = upstream(&emu.url(), &up_zones).await;
    // The forwarder serves a static zone of its own too.
    let own = TempDir::new("fwd-acl-own");
    own.write(
        "own.example.zone",
        "$TTL 60\n@ IN SOA ns hostmaster 1 3600 600 86400 30\nhost IN A 10.8.0.1\n",
    );
    let own_dir = own.path().to_path_buf();
    let fwd = forwarder(&emu.url(), vec![up.dns_addrs[0]], move |c| {
        c.allow_recursion = vec!["127.0.0.1/32".parse().expect("cidr")];
        c.zones = Some(own_dir);
    })
    .await;
    let s = fwd.dns_addrs[0];
    let other = Ipv4Addr::new(127, 0, 0, 2);

    // Not allowed: forwarded names are REFUSED, without RA; our own zones are answered.
    let m = ask(other, s, "node1.cluster.internal", RecordType::A, true).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(!m.metadata.recursion_available);
    assert!(m.answers.is_empty());
    let m = ask(other, s, "web.service.consul", RecordType::A, true).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative && !m.metadata.recursion_available);
    let m = ask(other, s, "host.own.example", RecordType::A, true).await;
    common::assert_records(
        "own zone",
        &m.answers,
        &["host.own.example. 60 IN A 10.8.0.1"],
    );
    assert!(m.metadata.authoritative && !m.metadata.recursion_available);

    // Allowed: forwarded, and RA on every answer.
    let m = ask(LO, s, "node1.cluster.internal", RecordType::A, true).await;
    common::assert_records("allowed", &m.answers, &[NODE1]);
    assert!(m.metadata.recursion_available);
    let m = ask(LO, s, "host.own.example", RecordType::A, true).await;
    assert!(m.metadata.authoritative && m.metadata.recursion_available);
    let m = ask(LO, s, "web.service.consul", RecordType::A, true).await;
    assert!(m.metadata.authoritative && m.metadata.recursion_available);

    // A cached answer is not given to a client that may not recurse either.
    let m = ask(other, s, "node1.cluster.internal", RecordType::A, true).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    fwd.shutdown().await;
    up.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_recursors_other_names_are_refused_and_ra_is_never_set() {
    let emu = common::emulator().await;
    emu.seed_demo();
    let s = common::server(&emu.url()).await;
    let m = ask(LO, s.dns_addrs[0], "example.com", RecordType::A, true).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(!m.metadata.recursion_available);
    let m = ask(
        LO,
        s.dns_addrs[0],
        "web.service.consul",
        RecordType::A,
        true,
    )
    .await;
    assert!(m.metadata.authoritative && !m.metadata.recursion_available);
    s.shutdown().await;
}

/// The default `allow_recursion` (loopback) against a real non-loopback client: inside a
/// network namespace without any interface but `lo` (so nothing can leave it), a query from
/// 192.0.2.1 is REFUSED while the same query from 127.0.0.1 is forwarded.
#[test]
fn by_default_only_loopback_clients_may_recurse() {
    let test = "by_default_only_loopback_clients_may_recurse";
    if !is_root() {
        skip!(test, "needs root (ip netns add); CI runs as root");
    }
    if tool("ip").is_none() {
        skip!(test, "needs ip (apt-get install iproute2)");
    }
    let ns = NetNs::new(&[]);
    // A non-loopback address on the namespace's own `lo`: the namespace has no other
    // interface, so nothing can leave it.
    ns.exec_ok(&["ip", "addr", "add", "192.0.2.1/32", "dev", "lo"]);
    let rt = ns.runtime();
    let emu = NetNs::block_on(&rt, async {
        let emu = common::emulator().await;
        emu.seed_demo();
        emu
    });
    let zones = TempDir::new("fwd-netns");
    zones.write("cluster.internal.zone", EXAMPLE_ZONE);
    let url = emu.url();
    let zones_dir = zones.path().to_string_lossy().into_owned();
    let up = ns.consul_dns(
        "upstream (netns)",
        &[
            "--consul-addr",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--zones",
            &zones_dir,
        ],
        zones.path(),
    );
    let upstream = up.addr.to_string();
    let fwd = ns.consul_dns(
        "forwarder (netns)",
        &[
            "--consul-addr",
            &url,
            "--listen",
            "192.0.2.1:5300",
            "--listen",
            "127.0.0.1:5300",
            "--zones",
            "",
            "--recursor",
            &upstream,
        ],
        zones.path(),
    );
    let ask_in_ns = |from: [u8; 4], to: [u8; 4], name: &'static str| {
        NetNs::block_on(&rt, async move {
            tokio::task::spawn_blocking(move || {
                ask_from(
                    IpAddr::from(from),
                    SocketAddr::from((to, 5300)),
                    name,
                    RecordType::A,
                    true,
                    Duration::from_secs(5),
                )
            })
            .await
            .expect("query task")
            .expect("an answer")
        })
    };
    let m = ask_in_ns([192, 0, 2, 1], [192, 0, 2, 1], "node1.cluster.internal");
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(!m.metadata.recursion_available);
    let m = ask_in_ns([192, 0, 2, 1], [192, 0, 2, 1], "web.service.consul");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(!m.metadata.recursion_available);
    let m = ask_in_ns([127, 0, 0, 1], [127, 0, 0, 1], "node1.cluster.internal");
    common::assert_records("loopback client", &m.answers, &[NODE1]);
    assert!(m.metadata.recursion_available);
    drop(fwd);
    drop(up);
    drop(rt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_lookups_of_unknown_addresses_go_to_the_recursors() {
    let emu = common::emulator().await;
    emu.seed_demo();
    let zones = TempDir::new("fwd-ptr");
    zones.write(
        "7.10.in-addr.arpa.zone",
        "$TTL 60\n@ IN SOA ns.cluster.internal. hostmaster.cluster.internal. 1 3600 600 86400 30\n5.0 IN PTR printer.cluster.internal.\n",
    );
    let dir = zones.path().to_path_buf();
    let up = common::server_with(&emu.url(), move |c| c.zones = Some(dir)).await;
    let fwd = forwarder(&emu.url(), vec![up.dns_addrs[0]], |_| {}).await;
    let s = fwd.dns_addrs[0];
    // An address the view knows: answered here, authoritatively.
    let m = ask(LO, s, "11.56.168.192.in-addr.arpa", RecordType::PTR, true).await;
    assert!(m.metadata.authoritative && m.metadata.recursion_available);
    common::assert_records(
        "node PTR",
        &m.answers,
        &["11.56.168.192.in-addr.arpa. 0 IN PTR node1.node.dc1.consul."],
    );
    // One it does not: forwarded (Consul sends PTR misses to its recursors).
    let m = ask(LO, s, "5.0.7.10.in-addr.arpa", RecordType::PTR, true).await;
    assert!(!m.metadata.authoritative && m.metadata.recursion_available);
    common::assert_records(
        "forwarded PTR",
        &m.answers,
        &["5.0.7.10.in-addr.arpa. * IN PTR printer.cluster.internal."],
    );
    fwd.shutdown().await;
    up.shutdown().await;
}
