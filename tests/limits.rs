//! Answer limits and truncation: a UDP answer that is cut carries TC, and TCP has the rest.

mod common;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

async fn big_service(consul: &str, n: usize) {
    for i in 0..n {
        let ip = format!("10.2.{}.{}", 6 + i / 250, 1 + i % 250);
        let body = instance(
            &format!("n{i}"),
            &format!("192.168.{}.{}", i / 250, 1 + i % 250),
            "big",
            &format!("big{i}"),
            &ip,
            80,
            &[],
            "passing",
        );
        http_register(consul, &body).await;
    }
}

#[tokio::test]
async fn udp_answer_limit_sets_tc_and_tcp_has_all() {
    let consul = emulator().await;
    big_service(&consul.url(), 6).await;
    let running = server(&consul.url()).await;
    let dns = running.dns_addrs[0];

    let m = query(dns, "big.service.consul.", RecordType::A).await;
    assert_eq!(m.answers.len(), 3, "udp_answer_limit = 3 without EDNS");
    assert!(m.metadata.truncation, "a cut answer sets TC");

    let m = query(dns, "big.service.consul.", RecordType::SRV).await;
    assert_eq!(m.answers.len(), 3);
    assert!(m.metadata.truncation);
    // Additional holds exactly the addresses of the SRV targets kept.
    let targets: Vec<String> = m
        .answers
        .iter()
        .map(|r| {
            r.data
                .to_string()
                .split_whitespace()
                .last()
                .unwrap()
                .to_string()
        })
        .collect();
    let extra_a: Vec<String> = m
        .additionals
        .iter()
        .filter(|r| r.record_type() == RecordType::A)
        .map(|r| r.name.to_string())
        .collect();
    assert_eq!(extra_a.len(), 3);
    for name in &extra_a {
        assert!(targets.contains(name), "{name} is not a kept SRV target");
    }

    let tcp = Ask {
        transport: Transport::Tcp,
        ..Ask::default()
    };
    let m = query_with(dns, "big.service.consul.", RecordType::A, tcp).await;
    assert_eq!(m.answers.len(), 6);
    assert!(!m.metadata.truncation);

    let edns = Ask {
        edns: Some(1232),
        ..Ask::default()
    };
    let m = query_with(dns, "big.service.consul.", RecordType::A, edns).await;
    assert_eq!(m.answers.len(), 6, "with EDNS only the size limits");
    assert!(!m.metadata.truncation);
    running.shutdown().await;
}

#[tokio::test]
async fn oversized_udp_answer_is_cut_with_tc() {
    let consul = emulator().await;
    big_service(&consul.url(), 120).await;
    let running = server(&consul.url()).await;
    let dns = running.dns_addrs[0];

    let edns = Ask {
        edns: Some(1232),
        ..Ask::default()
    };
    let m = query_with(dns, "big.service.consul.", RecordType::SRV, edns).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(
        m.metadata.truncation,
        "120 SRV records do not fit in 1232 bytes"
    );
    assert!(m.answers.len() < 120);

    let tcp = Ask {
        transport: Transport::Tcp,
        ..Ask::default()
    };
    let m = query_with(dns, "big.service.consul.", RecordType::SRV, tcp).await;
    assert_eq!(m.answers.len(), 120);
    assert_eq!(
        m.additionals
            .iter()
            .filter(|r| r.record_type() == RecordType::A)
            .count(),
        120
    );
    assert!(!m.metadata.truncation);
    running.shutdown().await;
}

#[tokio::test]
async fn a_record_limit_caps_address_answers() {
    let consul = emulator().await;
    big_service(&consul.url(), 6).await;
    let running = server_with(&consul.url(), |c| c.dns.a_record_limit = 2).await;
    let tcp = Ask {
        transport: Transport::Tcp,
        ..Ask::default()
    };
    let m = query_with(
        running.dns_addrs[0],
        "big.service.consul.",
        RecordType::A,
        tcp,
    )
    .await;
    assert_eq!(m.answers.len(), 2);
    let m = query_with(
        running.dns_addrs[0],
        "big.service.consul.",
        RecordType::SRV,
        tcp,
    )
    .await;
    assert_eq!(m.answers.len(), 6, "a_record_limit does not apply to SRV");
    running.shutdown().await;
}

/// A server with the shipped example zone (cluster.internal.) and `allow_any` as given.
async fn with_example_zone(
    allow_any: bool,
) -> (consul_dns::dev::Emulator, consul_dns::app::Running) {
    let consul = emulator().await;
    let zones = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("zones");
    let running = server_with(&consul.url(), move |c| {
        c.zones = Some(zones);
        c.allow_any = allow_any;
    })
    .await;
    (consul, running)
}

#[tokio::test]
async fn any_for_static_zones_is_minimal_unless_allowed() {
    let (_consul, running) = with_example_zone(false).await;
    let m = query(
        running.dns_addrs[0],
        "node3.cluster.internal.",
        RecordType::ANY,
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_records(
        "RFC 8482",
        &m.answers,
        &["node3.cluster.internal. 3789 IN HINFO RFC8482"],
    );
    running.shutdown().await;

    let (_consul, running) = with_example_zone(true).await;
    let m = query(
        running.dns_addrs[0],
        "node3.cluster.internal.",
        RecordType::ANY,
    )
    .await;
    // The zone's own records, as hickory's zone handler answers ANY.
    let got = lines(&m.answers);
    assert!(
        got.contains(&"node3.cluster.internal. 300 IN A 192.168.56.13".to_string()),
        "{got:?}"
    );
    assert!(got.iter().all(|l| !l.contains("HINFO")), "{got:?}");
    running.shutdown().await;
}

#[tokio::test]
async fn queries_waiting_on_consul_are_capped() {
    // Consul hangs: every query for a cold service waits for its load. Past the cap, new
    // ones are dropped and counted instead of piling up.
    let consul = emulator().await;
    http_register(
        &consul.url(),
        &instance(
            "n1",
            "192.168.0.1",
            "cold",
            "cold1",
            "10.2.0.1",
            80,
            &[],
            "passing",
        ),
    )
    .await;
    let running = server(&consul.url()).await;
    let dns = running.dns_addrs[0];
    eventually(std::time::Duration::from_secs(5), || async {
        rcode(&query(dns, "nosuch.service.consul.", RecordType::A).await) == ResponseCode::NXDomain
    })
    .await;
    consul.set_fault(consul_dns::dev::Fault::Hang);
    let sock = tokio::net::UdpSocket::bind(LOCAL).await.unwrap();
    let mut msg = hickory_proto::op::Message::new(
        1,
        hickory_proto::op::MessageType::Query,
        hickory_proto::op::OpCode::Query,
    );
    msg.add_query(hickory_proto::op::Query::query(
        hickory_proto::rr::Name::from_ascii("cold.service.consul.").unwrap(),
        RecordType::A,
    ));
    let bytes = msg.to_vec().unwrap();
    let cap = consul_dns::dns::udp::MAX_WAITING;
    for i in 0..cap + 3000 {
        sock.send_to(&bytes, dns).await.unwrap();
        // Paced, so the kernel's receive buffer does not drop them before the server.
        if i % 100 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    let metrics = std::sync::Arc::clone(running.syncer().metrics());
    eventually(std::time::Duration::from_secs(5), || {
        let metrics = std::sync::Arc::clone(&metrics);
        async move {
            metrics
                .render()
                .lines()
                .any(|l| l.starts_with("consul_dns_udp_dropped_total ") && !l.ends_with(" 0"))
        }
    })
    .await;
    running.shutdown().await;
}
