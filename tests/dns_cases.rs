//! Answer properties that a table cannot show: the question's spelling kept, names outside
//! the domain refused, answers shuffled. The table of names and records is in
//! `conformance.rs`.

mod common;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::json;

async fn catalog(consul: &str) {
    let regs = [
        instance(
            "node1",
            "192.168.56.11",
            "web",
            "web1",
            "10.2.1.1",
            80,
            &["v1", "http"],
            "passing",
        ),
        instance(
            "node2",
            "192.168.56.12",
            "web",
            "web2",
            "10.2.1.2",
            80,
            &["v1"],
            "passing",
        ),
        instance(
            "node3",
            "192.168.56.13",
            "web",
            "web3",
            "10.2.1.3",
            80,
            &["v2"],
            "critical",
        ),
        instance(
            "node3",
            "192.168.56.13",
            "api",
            "api1",
            "10.2.2.1",
            8080,
            &[],
            "warning",
        ),
        instance(
            "node1",
            "192.168.56.11",
            "db",
            "db1",
            "10.2.3.1",
            5432,
            &["primary"],
            "passing",
        ),
        instance(
            "node2",
            "192.168.56.12",
            "redis",
            "redis1",
            "",
            6379,
            &[],
            "passing",
        ),
        instance(
            "node2",
            "192.168.56.12",
            "multi",
            "multi1",
            "",
            8001,
            &[],
            "passing",
        ),
        instance(
            "node2",
            "192.168.56.12",
            "multi",
            "multi2",
            "",
            8002,
            &[],
            "passing",
        ),
        instance(
            "node1",
            "192.168.56.11",
            "v6svc",
            "v6svc1",
            "2001:db8::5",
            9000,
            &[],
            "passing",
        ),
        instance(
            "node3",
            "192.168.56.13",
            "dead",
            "dead1",
            "10.2.9.1",
            1,
            &[],
            "critical",
        ),
        instance(
            "server1",
            "127.0.0.2",
            "consul",
            "consul",
            "",
            8300,
            &[],
            "passing",
        ),
    ];
    for r in &regs {
        http_register(consul, r).await;
    }
    // A service with a virtual IP (transparent proxy).
    http_register(
        consul,
        &json!({"Node": "node1", "Address": "192.168.56.11", "SkipNodeUpdate": true,
                "Service": {"ID": "vip1", "Service": "vip", "Address": "10.2.8.1", "Port": 80,
                            "TaggedAddresses": {"consul-virtual": {"Address": "240.0.0.1", "Port": 20000}}}}),
    )
    .await;
    // A service registered with the whole web cluster as a hostname.
    http_register(
        consul,
        &json!({"Node": "ext", "Address": "ext.example.com",
                "Service": {"ID": "search", "Service": "search", "Address": "search.example.com", "Port": 443}}),
    )
    .await;
}

#[tokio::test]
async fn answer_keeps_the_question_spelling() {
    let consul = emulator().await;
    catalog(&consul.url()).await;
    let running = server(&consul.url()).await;
    let m = query(running.dns_addrs[0], "WeB.SeRvIcE.CoNsUl.", RecordType::A).await;
    assert_eq!(m.answers.len(), 2);
    for r in &m.answers {
        assert_eq!(r.name.to_string(), "WeB.SeRvIcE.CoNsUl.");
    }
    running.shutdown().await;
}

#[tokio::test]
async fn outside_the_domain_is_refused() {
    let consul = emulator().await;
    let running = server(&consul.url()).await;
    for transport in [Transport::Udp, Transport::Tcp] {
        let ask = Ask {
            transport,
            ..Ask::default()
        };
        let m = query_with(running.dns_addrs[0], "example.com.", RecordType::A, ask).await;
        assert_eq!(rcode(&m), ResponseCode::Refused);
        assert!(m.answers.is_empty());
    }
    running.shutdown().await;
}

#[tokio::test]
async fn answers_are_shuffled() {
    let consul = emulator().await;
    for i in 1..=6 {
        let ip = format!("10.2.5.{i}");
        http_register(
            &consul.url(),
            &instance(
                &format!("n{i}"),
                &format!("192.168.1.{i}"),
                "big",
                &format!("big{i}"),
                &ip,
                80,
                &[],
                "passing",
            ),
        )
        .await;
    }
    let running = server(&consul.url()).await;
    let mut orders = std::collections::HashSet::new();
    for _ in 0..20 {
        let ask = Ask {
            edns: Some(1232),
            ..Ask::default()
        };
        let m = query_with(
            running.dns_addrs[0],
            "big.service.consul.",
            RecordType::A,
            ask,
        )
        .await;
        assert_eq!(m.answers.len(), 6);
        orders.insert(m.answers.iter().map(|r| r.to_string()).collect::<Vec<_>>());
    }
    assert!(orders.len() >= 2, "20 answers, always the same order");
    running.shutdown().await;
}
