//! What NSD and Knot answer to messages that are not ordinary IN queries (issue 18, items 8
//! to 10): other classes are REFUSED for the zones we serve, ANY for a name outside them
//! is REFUSED to clients that may not recurse, every opcode but QUERY gets one NOTIMP
//! without echoing its sections, and static zones are not transferred. Over UDP and TCP,
//! each reply read strictly (`common::exchange`).

use crate::common;

use std::path::PathBuf;

use common::*;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RecordType};

fn message(name: &str, qtype: RecordType, class: DNSClass, op: OpCode) -> Message {
    let mut msg = Message::new(rand::random(), MessageType::Query, op);
    let mut q = Query::query(Name::from_ascii(name).unwrap(), qtype);
    q.set_query_class(class);
    msg.add_query(q);
    msg
}

async fn server_with_zones(
    tweak: impl FnOnce(&mut consul_dns::config::Config),
) -> (consul_emulator::Emulator, consul_dns::app::Running) {
    let consul = emulator().await;
    consul.seed_demo();
    let zones = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("zones");
    let running = server_with(&consul.url(), move |c| {
        c.zones = Some(zones);
        tweak(c);
    })
    .await;
    (consul, running)
}

#[tokio::test]
async fn classes_other_than_in_are_refused_for_our_zones() {
    let (_consul, running) = server_with_zones(|_| {}).await;
    let dns = running.dns_addrs[0];
    eventually(std::time::Duration::from_secs(5), || async {
        query(dns, "web.service.consul.", RecordType::A)
            .await
            .answers
            .len()
            == 3
    })
    .await;
    for transport in [Transport::Udp, Transport::Tcp] {
        for (name, qtype, class) in [
            ("web.service.consul.", RecordType::A, DNSClass::CH),
            ("web.service.consul.", RecordType::A, DNSClass::HS),
            ("web.service.consul.", RecordType::A, DNSClass::ANY),
            ("web.service.consul.", RecordType::A, DNSClass::Unknown(42)),
            ("node1.cluster.internal.", RecordType::A, DNSClass::CH),
            ("version.bind.", RecordType::TXT, DNSClass::CH),
            ("id.server.", RecordType::TXT, DNSClass::CH),
        ] {
            let (m, _) =
                exchange(dns, &message(name, qtype, class, OpCode::Query), transport).await;
            assert_eq!(
                rcode(&m),
                ResponseCode::Refused,
                "{name} {class} over {transport:?}"
            );
            assert!(m.answers.is_empty(), "{name} {class}: {m:?}");
        }
        // IN still answers.
        let (m, _) = exchange(
            dns,
            &message(
                "web.service.consul.",
                RecordType::A,
                DNSClass::IN,
                OpCode::Query,
            ),
            transport,
        )
        .await;
        assert_eq!(m.answers.len(), 3);
    }
    running.shutdown().await;
}

#[tokio::test]
async fn any_outside_our_zones_is_refused_to_clients_that_may_not_recurse() {
    // Without recursors, and with recursors but nobody allowed to use them.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let upstream = silent.local_addr().unwrap();
    for forwarding in [false, true] {
        let (_consul, running) = server_with_zones(|c| {
            if forwarding {
                c.recursors = vec![upstream];
                c.allow_recursion = Vec::new();
            }
        })
        .await;
        let dns = running.dns_addrs[0];
        for transport in [Transport::Udp, Transport::Tcp] {
            let (m, _) = exchange(
                dns,
                &message("example.org.", RecordType::ANY, DNSClass::IN, OpCode::Query),
                transport,
            )
            .await;
            assert_eq!(
                rcode(&m),
                ResponseCode::Refused,
                "forwarding {forwarding} {transport:?}"
            );
            assert!(m.answers.is_empty(), "no RFC 8482 HINFO: {m:?}");
            assert!(!m.metadata.recursion_available);
        }
        running.shutdown().await;
    }
}

#[tokio::test]
async fn other_opcodes_get_one_notimp_without_their_sections() {
    let (_consul, running) = server_with_zones(|_| {}).await;
    let dns = running.dns_addrs[0];
    for transport in [Transport::Udp, Transport::Tcp] {
        for (zone, op) in [
            ("consul.", OpCode::Update),
            ("cluster.internal.", OpCode::Update),
            ("consul.", OpCode::Notify),
            ("cluster.internal.", OpCode::Notify),
            ("consul.", OpCode::Status),
        ] {
            let (m, bytes) = exchange(
                dns,
                &message(zone, RecordType::SOA, DNSClass::IN, op),
                transport,
            )
            .await;
            assert_eq!(
                rcode(&m),
                ResponseCode::NotImp,
                "{op:?} {zone} over {transport:?}"
            );
            assert_eq!(m.metadata.op_code, op);
            assert!(m.queries.is_empty(), "the sections are not echoed: {m:?}");
            assert!(bytes.len() <= 512);
        }
    }
    running.shutdown().await;
}

#[tokio::test]
async fn static_zones_are_not_transferred() {
    let (_consul, running) = server_with_zones(|_| {}).await;
    let dns = running.dns_addrs[0];
    for (transport, qtype) in [
        (Transport::Udp, RecordType::IXFR),
        (Transport::Udp, RecordType::AXFR),
        (Transport::Tcp, RecordType::IXFR),
        (Transport::Tcp, RecordType::AXFR),
    ] {
        let (m, _) = exchange(
            dns,
            &message("cluster.internal.", qtype, DNSClass::IN, OpCode::Query),
            transport,
        )
        .await;
        assert_eq!(
            rcode(&m),
            ResponseCode::Refused,
            "{qtype} over {transport:?}"
        );
        assert!(m.answers.is_empty());
    }
    running.shutdown().await;
}

/// The demo catalog and a server answering its prepared query `primary-db`.
async fn with_prepared_query() -> (
    consul_emulator::Emulator,
    consul_dns::app::Running,
    std::net::SocketAddr,
) {
    let consul = emulator().await;
    consul.seed_demo();
    let running = server(&consul.url()).await;
    let dns = running.dns_addrs[0];
    eventually(std::time::Duration::from_secs(5), || async {
        query(dns, "primary-db.query.consul.", RecordType::A)
            .await
            .answers
            .len()
            == 1
    })
    .await;
    (consul, running, dns)
}

/// Prepared-query names come from the network (issue 18, items 1 and 2): a name that is not
/// a valid query name (a control byte, an escaped dot) is NXDOMAIN without a request to
/// Consul (before, `pri\tmary` executed `primary`, a label `.` became `/v1/query/execute`),
/// and the names asked never become metric labels.
#[tokio::test]
async fn prepared_query_names_from_the_network_are_bounded() {
    let (consul, running, dns) = with_prepared_query().await;
    let ask = |labels: Vec<&[u8]>| {
        let name = Name::from_labels(labels).unwrap();
        let mut msg = Message::new(rand::random(), MessageType::Query, OpCode::Query);
        msg.add_query(Query::query(name, RecordType::A));
        async move { exchange(dns, &msg, Transport::Udp).await.0 }
    };
    let before = consul.requests_to("/v1/query");
    for labels in [
        vec![&b"pri\tmary-db"[..], b"query", b"consul"],
        vec![&b"primary-db\r"[..], b"query", b"consul"],
        vec![&b"."[..], b"query", b"consul"],
        vec![&b".."[..], b"query", b"consul"],
        vec![&b"a/b"[..], b"query", b"consul"],
        vec![&b"%41"[..], b"query", b"consul"],
        vec![&b"has space"[..], b"query", b"consul"],
    ] {
        let what = format!("{labels:?}");
        let m = ask(labels).await;
        assert_eq!(rcode(&m), ResponseCode::NXDomain, "{what}");
    }
    assert_eq!(
        consul.requests_to("/v1/query"),
        before,
        "no request for those names"
    );

    // Distinct valid names: no metric series of their own.
    for i in 0..200 {
        query(dns, &format!("flood-{i}.query.consul."), RecordType::A).await;
    }
    let text = running.syncer().metrics().render();
    assert!(
        !text.contains("flood-"),
        "a name from the network became a label"
    );
    assert!(
        text.contains(r#"endpoint="v1/query/*""#),
        "requests are counted by kind"
    );
    running.shutdown().await;
}

/// Distinct names of queries that do not exist are answered from the watched query list:
/// no request to Consul however many are asked, and a query created meanwhile is answered
/// as soon as the list says so.
#[tokio::test]
async fn unknown_prepared_queries_are_answered_without_asking_consul() {
    let (consul, running, dns) = with_prepared_query().await;
    let executed = || consul.requests_to("/v1/query/");
    let before = executed();
    for i in 0..2_000 {
        let name = format!("flood-{i:x}-{}.query.consul.", rand::random::<u32>());
        let m = query(dns, &name, RecordType::A).await;
        assert_eq!(rcode(&m), ResponseCode::NXDomain, "{name}");
    }
    assert_eq!(executed(), before, "unknown names were asked of Consul");
    assert!(metric(&running, "consul_dns_prepared_query_names_unlisted_total") >= 2_000);

    // Asked before it exists, then created: answered once the list has it.
    let m = query(dns, "late.query.consul.", RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::NXDomain);
    consul
        .create_query(serde_json::json!({ "Name": "late", "Service": { "Service": "web" } }))
        .unwrap();
    let took = eventually(std::time::Duration::from_secs(2), || async {
        !query(dns, "late.query.consul.", RecordType::A)
            .await
            .answers
            .is_empty()
    })
    .await;
    assert!(took < std::time::Duration::from_secs(1), "took {took:?}");
    running.shutdown().await;
}

/// A template (`name_prefix_match`) answers every name it matches; names that only a
/// request can settle are asked within a budget, so a flood of them is not a flood of
/// requests.
#[tokio::test]
async fn template_matches_are_asked_within_a_budget() {
    let consul = emulator().await;
    consul.seed_demo();
    consul
        .create_query(serde_json::json!({
            "Name": "geo-",
            "Template": { "Type": "name_prefix_match" },
            "Service": { "Service": "${name.suffix}" },
        }))
        .unwrap();
    let running = server(&consul.url()).await;
    let dns = running.dns_addrs[0];
    eventually(std::time::Duration::from_secs(5), || async {
        !query(dns, "geo-web.query.consul.", RecordType::A)
            .await
            .answers
            .is_empty()
    })
    .await;
    let before = consul.requests_to("/v1/query/");
    let started = std::time::Instant::now();
    let mut refused = 0;
    for i in 0..500 {
        let m = query(dns, &format!("geo-x{i}.query.consul."), RecordType::A).await;
        match rcode(&m) {
            ResponseCode::NXDomain => {}
            ResponseCode::ServFail => refused += 1,
            other => panic!("geo-x{i}: {other:?}"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let asked = consul.requests_to("/v1/query/") - before;
    let budget = 20.0 + 10.0 * secs;
    assert!(
        (asked as f64) <= budget + 1.0,
        "{asked} requests in {secs:.1} s (budget {budget:.0})"
    );
    assert!(refused > 0, "the budget never ran out");
    assert!(
        metric(
            &running,
            "consul_dns_prepared_query_names_over_budget_total"
        ) > 0
    );
    running.shutdown().await;
}
