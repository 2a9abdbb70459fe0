//! Answer properties that a table cannot show: the question's spelling kept, names outside
//! the domain refused, answers shuffled. The table of names and records is in
//! `conformance.rs`.

use crate::common;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// Two healthy instances of `web`.
async fn catalog(consul: &str) {
    for i in 1..=2u8 {
        let body = web_instance(i, "passing");
        http_register(consul, &body).await;
    }
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
            &Instance::new("big", &format!("big{i}"))
                .on(&format!("n{i}"), &format!("192.168.1.{i}"))
                .at(&ip, 80)
                .json(),
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
