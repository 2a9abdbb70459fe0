//! Answer limits and truncation: replies cut by whole records; a UDP answer that is cut
//! carries TC, and TCP has the rest.

use crate::common;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

async fn big_service(consul: &str, n: usize) {
    for i in 0..n {
        let ip = format!("10.2.{}.{}", 6 + i / 250, 1 + i % 250);
        let body = Instance::new("big", &format!("big{i}"))
            .on(
                &format!("n{i}"),
                &format!("192.168.{}.{}", i / 250, 1 + i % 250),
            )
            .at(&ip, 80)
            .json();
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

/// Instances of `service` without a service address, each on a node of its own with
/// `meta` node meta keys: SRV targets are node names, and Additional holds each node's
/// address and meta TXT.
async fn node_addressed_service(
    consul: &consul_emulator::Emulator,
    service: &str,
    n: usize,
    meta: usize,
) {
    for i in 0..n {
        let meta: serde_json::Map<String, serde_json::Value> = (0..meta)
            .map(|k| {
                (
                    format!("key{k}"),
                    serde_json::json!(format!("a-value-of-some-length-{k}")),
                )
            })
            .collect();
        let id = format!("{service}{i}");
        consul
            .register(serde_json::json!({
                "Node": format!("{service}-node{i}"),
                "Address": format!("192.168.{}.{}", 100 + i / 250, 1 + i % 250),
                "NodeMeta": meta,
                "Service": {"ID": id, "Service": service, "Address": "", "Port": 80},
            }))
            .unwrap();
    }
}

/// The examples: replies cut at a byte offset had counts that did not match their
/// bodies, lost their OPT record, or set TC when only Additional records were left out.
#[tokio::test]
async fn replies_are_cut_by_whole_records() {
    let consul = emulator().await;
    node_addressed_service(&consul, "many", 100, 0).await;
    node_addressed_service(&consul, "eight", 8, 1).await;
    node_addressed_service(&consul, "huge", 300, 40).await;
    let running = server(&consul.url()).await;
    let dns = running.dns_addrs[0];
    let udp = |edns| Ask {
        edns,
        ..Ask::default()
    };
    let tcp = Ask {
        transport: Transport::Tcp,
        edns: Some(1232),
        rd: true,
    };
    eventually(std::time::Duration::from_secs(5), || async {
        rcode(&query(dns, "huge.service.consul.", RecordType::SRV).await) == ResponseCode::NoError
    })
    .await;

    // 100 SRV over node names: at every payload the reply decodes strictly (`query_bytes`),
    // fits, keeps its OPT, and its Additional holds exactly the kept targets' addresses.
    for payload in [512u16, 1232, 1400, 2048, 65535] {
        let (m, bytes) = query_bytes(
            dns,
            "many.service.consul.",
            RecordType::SRV,
            udp(Some(payload)),
        )
        .await;
        assert!(
            bytes.len() <= usize::from(payload.min(1232)),
            "{payload}: {} bytes",
            bytes.len()
        );
        assert!(m.edns.is_some(), "{payload}: the OPT record is kept");
        assert!(m.metadata.truncation && m.answers.len() < 100, "{payload}");
        assert_eq!(
            m.additionals.len(),
            m.answers.len(),
            "{payload}: one A per SRV kept"
        );
    }
    // 8 SRV with their nodes' meta at EDNS 512: every answer fits, not every additional
    // record; the answer is complete, so no TC (RFC 2181 §9).
    let (m, bytes) = query_bytes(
        dns,
        "eight.service.consul.",
        RecordType::SRV,
        udp(Some(512)),
    )
    .await;
    assert!(bytes.len() <= 512);
    assert_eq!(m.answers.len(), 8);
    assert!(
        m.additionals.len() < 16,
        "some Additional records left out: {m:?}"
    );
    assert!(!m.metadata.truncation, "TC only when answers are left out");
    // udp_answer_limit (3) without EDNS: TC, and Additional only for the 3 kept.
    let m = query(dns, "eight.service.consul.", RecordType::SRV).await;
    assert_eq!(m.answers.len(), 3);
    assert!(m.metadata.truncation);

    // 300 SRV whose nodes have 40 meta keys each: over 64 KiB whole (12,000 TXT records).
    // Over TCP: cut to whole records within 65,523 bytes: every answer fits, Additional
    // as far as it goes, no TC (the answer is complete), the OPT kept.
    let (m, bytes) = query_bytes(dns, "huge.service.consul.", RecordType::SRV, tcp).await;
    assert!(bytes.len() <= 65_523, "{} bytes", bytes.len());
    assert_eq!(m.answers.len(), 300);
    assert!(!m.metadata.truncation);
    assert!(!m.additionals.is_empty() && m.additionals.len() < 300 * 41);
    assert!(m.edns.is_some());
    let targets: Vec<_> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::SRV(srv) => Some(srv.target.clone()),
            _ => None,
        })
        .collect();
    assert!(m.additionals.iter().all(|r| targets.contains(&r.name)));
    // 5,000 addresses: over TCP at most 4,096 answers, and fewer to fit 65,523 bytes; TC.
    for i in 0..5000 {
        let id = format!("wide{i}");
        consul
            .register(serde_json::json!({
                "Node": "wide-node", "Address": "192.168.200.1",
                "Service": {"ID": id, "Service": "wide", "Address": format!("10.{}.{}.{}", 50 + i / 65536, (i / 256) % 256, i % 256), "Port": 80},
            }))
            .unwrap();
    }
    eventually(std::time::Duration::from_secs(10), || async {
        rcode(&query(dns, "wide.service.consul.", RecordType::A).await) == ResponseCode::NoError
    })
    .await;
    let (m, bytes) = query_bytes(dns, "wide.service.consul.", RecordType::A, tcp).await;
    assert!(bytes.len() <= 65_523, "{} bytes", bytes.len());
    assert!(m.metadata.truncation);
    // hickory compresses names only in the first 16 KiB of a message: about 1,900 fit.
    assert!(m.answers.len() > 1500, "{}", m.answers.len());
    assert!(m.edns.is_some());
    // A and AAAA of the same: far from 64 KiB, whole.
    let m = query_with(dns, "huge.service.consul.", RecordType::A, tcp).await;
    assert_eq!(m.answers.len(), 300);
    assert!(!m.metadata.truncation);
    running.shutdown().await;
}

/// `udp_answer_limit = 0`: Consul's "no answers on UDP without EDNS"; the client is told
/// (TC) and gets them over TCP or with EDNS.
#[tokio::test]
async fn udp_answer_limit_zero_means_no_answers_without_edns() {
    let consul = emulator().await;
    big_service(&consul.url(), 2).await;
    let running = server_with(&consul.url(), |c| c.dns.udp_answer_limit = 0).await;
    let dns = running.dns_addrs[0];
    let m = query(dns, "big.service.consul.", RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::NoError);
    assert!(m.answers.is_empty() && m.metadata.truncation, "{m:?}");
    let m = query(dns, "big.service.consul.", RecordType::SRV).await;
    assert!(m.answers.is_empty() && m.additionals.is_empty() && m.metadata.truncation);
    let edns = Ask {
        edns: Some(1232),
        ..Ask::default()
    };
    assert_eq!(
        query_with(dns, "big.service.consul.", RecordType::A, edns)
            .await
            .answers
            .len(),
        2
    );
    let tcp = Ask {
        transport: Transport::Tcp,
        ..Ask::default()
    };
    assert_eq!(
        query_with(dns, "big.service.consul.", RecordType::A, tcp)
            .await
            .answers
            .len(),
        2
    );
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
) -> (consul_emulator::Emulator, consul_dns::app::Running) {
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
        &Instance::new("cold", "cold1")
            .on("n1", "192.168.0.1")
            .at("10.2.0.1", 80)
            .json(),
    )
    .await;
    // The cap is per socket: one worker, so every datagram meets the same one.
    let running = server_with(&consul.url(), |c| c.workers = 1).await;
    let dns = running.dns_addrs[0];
    eventually(std::time::Duration::from_secs(5), || async {
        rcode(&query(dns, "nosuch.service.consul.", RecordType::A).await) == ResponseCode::NXDomain
    })
    .await;
    consul.set_fault(consul_emulator::Fault::Hang);
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
