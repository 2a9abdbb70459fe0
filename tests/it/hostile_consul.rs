//! A broken or hostile Consul: invalid JSON, wrong types, bodies over the size limit, a
//! body sent a byte at a time. Each is an error with a metric and a log line, known data
//! stays, answers for known names are not slowed.

use crate::common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use consul_dns::consul::{ClientOptions, ConsulClient, ConsulError};
use consul_dns::metrics::Metrics;
use consul_dns::model::ServiceEntry;
use consul_emulator::Fault;
use hickory_proto::rr::RecordType;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A one-shot HTTP server on loopback answering every request with `response` (raw bytes).
async fn raw_http(response: Vec<u8>) -> String {
    let listener = TcpListener::bind(LOCAL).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(&response).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

fn client(url: &str, limit: usize) -> ConsulClient {
    client_with_budget(url, limit, 1 << 30)
}

fn client_with_budget(url: &str, limit: usize, budget: usize) -> ConsulClient {
    let options = ClientOptions {
        stale: true,
        wait: Duration::from_secs(1),
        max_response_bytes: limit,
        body_budget: budget,
        tls: Default::default(),
    };
    ConsulClient::new(url, None, options, Arc::new(Metrics::new())).unwrap()
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    // Declared too large.
    let declared =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
            .to_vec();
    let url = raw_http(declared).await;
    let err = client(&url, 1000)
        .get::<Vec<ServiceEntry>>(&["v1", "health", "service", "web"], 0)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConsulError::TooLarge { limit: 1000, .. }),
        "{err}"
    );
    // Not declared (read until close): refused once it passes the limit.
    let mut streamed =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n[".to_vec();
    streamed.extend(std::iter::repeat_n(b' ', 5000));
    let url = raw_http(streamed).await;
    let err = client(&url, 1000)
        .get::<Vec<ServiceEntry>>(&["v1", "health", "service", "web"], 0)
        .await
        .unwrap_err();
    assert!(matches!(err, ConsulError::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("larger than 1000 bytes"), "{err}");
}

/// A 200-instance health entry list of about `approx` bytes, as JSON.
fn health_list(approx: usize) -> (Vec<u8>, usize) {
    let entry = |i: usize| {
        serde_json::json!({
            "Node": { "Node": format!("node{i}"), "Address": format!("10.2.{}.{}", i / 250, i % 250),
                      "Meta": { "padding": "x".repeat(200) } },
            "Service": { "ID": format!("web-{i}"), "Service": "web", "Port": 80, "Tags": ["v1"] },
            "Checks": [],
        })
    };
    let one = entry(0).to_string().len() + 1;
    let n = approx / one + 1;
    let list: Vec<_> = (0..n).map(entry).collect();
    (serde_json::to_vec(&list).unwrap(), n)
}

/// Bodies past the in-place size are parsed as they stream in: the same result.
#[tokio::test]
async fn large_bodies_are_parsed_as_they_stream_in() {
    let (body, n) = health_list(3 << 20);
    let mut response =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n".to_vec();
    response.extend_from_slice(&body);
    let url = raw_http(response).await;
    let (entries, _) = client(&url, 64 << 20)
        .get::<Vec<ServiceEntry>>(&["v1", "health", "service", "web"], 0)
        .await
        .unwrap();
    assert_eq!(entries.len(), n);
    assert_eq!(entries[n - 1].service.id, format!("web-{}", n - 1));
    // Cut short: an error, not a partial list.
    let mut cut =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n".to_vec();
    cut.extend_from_slice(&body[..body.len() - 10]);
    let url = raw_http(cut).await;
    let err = client(&url, 64 << 20)
        .get::<Vec<ServiceEntry>>(&["v1", "health", "service", "web"], 0)
        .await
        .unwrap_err();
    assert!(matches!(err, ConsulError::Decode { .. }), "{err}");
}

/// Each endpoint has a limit of its own: a service list (names and tags) is refused at half
/// the size a health list may have.
#[tokio::test]
async fn the_service_list_has_a_limit_of_its_own() {
    let mut response =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{".to_vec();
    response.extend(b"\"svc\":[\"tag\"],".repeat(3 << 20 >> 4));
    response.extend_from_slice(b"\"last\":[]}");
    let url = raw_http(response).await;
    let err = client(&url, 4 << 20)
        .get::<std::collections::BTreeMap<String, Vec<String>>>(&["v1", "catalog", "services"], 0)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConsulError::TooLarge { limit, .. } if limit == 2 << 20),
        "{err}"
    );
}

/// All bodies being read at once share a budget: past it a body is refused (and counted),
/// and the budget is given back once bodies are read.
#[tokio::test]
async fn bodies_read_at_once_share_a_budget() {
    let (body, _) = health_list(1500 << 10);
    let mut head =
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n".to_vec();
    head.extend_from_slice(&body[..1200 << 10]);
    let rest = body[1200 << 10..].to_vec();
    // Sends most of the body, pauses, then the rest.
    let listener = TcpListener::bind(LOCAL).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (head, rest) = (head.clone(), rest.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let _ = sock.write_all(&head).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
                let _ = sock.write_all(&rest).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    let url = format!("http://{addr}");
    let client = client_with_budget(&url, 64 << 20, 2 << 20);
    let path = ["v1", "health", "service", "web"];
    let (a, b) = tokio::join!(
        client.get::<Vec<ServiceEntry>>(&path, 0),
        client.get::<Vec<ServiceEntry>>(&path, 0)
    );
    let refused = [&a, &b]
        .iter()
        .filter(|r| matches!(r, Err(ConsulError::OverBodyBudget { .. })))
        .count();
    assert_eq!(
        refused,
        1,
        "{:?} / {:?}",
        a.as_ref().err(),
        b.as_ref().err()
    );
    assert!(a.is_ok() || b.is_ok(), "one body fits the budget");
    let text = client.metrics().render();
    assert!(text.contains(r#"status="over_budget""#), "{text}");
    // Given back: one at a time, both fit.
    assert!(client.get::<Vec<ServiceEntry>>(&path, 0).await.is_ok());
}

#[tokio::test]
async fn invalid_json_and_wrong_types_are_errors() {
    for body in [
        "not json",
        r#"{"Node": 1}"#,
        r#"[{"Service": {"Port": "eighty"}}]"#,
    ] {
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let url = raw_http(response.into_bytes()).await;
        let err = client(&url, 1 << 20)
            .get::<Vec<ServiceEntry>>(&["v1", "health", "service", "web"], 0)
            .await
            .unwrap_err();
        assert!(matches!(err, ConsulError::Decode { .. }), "{body}: {err}");
    }
}

#[tokio::test]
async fn garbage_from_consul_keeps_known_data() {
    let consul = emulator().await;
    let url = consul.url();
    http_register(
        &url,
        &Instance::new("web", "web1")
            .on("node1", "192.168.56.1")
            .at("10.2.1.1", 80)
            .json(),
    )
    .await;
    let running = server(&url).await;
    let dns = running.dns_addrs[0];
    web_answered(dns, 1).await;
    // Every read from now on gets an unreadable body; a change wakes the long polls.
    consul.set_fault(Fault::Body("{\"truncated\": [".into()));
    consul
        .register(
            Instance::new("web", "web2")
                .on("node2", "192.168.56.2")
                .at("10.2.1.2", 80)
                .json(),
        )
        .unwrap();
    let metrics = Arc::clone(running.syncer().metrics());
    eventually(Duration::from_secs(5), || {
        let metrics = Arc::clone(&metrics);
        async move { metrics.render().contains(r#"status="invalid""#) }
    })
    .await;
    let start = std::time::Instant::now();
    for _ in 0..20 {
        let m = query(dns, "web.service.consul.", RecordType::A).await;
        assert!(!m.answers.is_empty(), "known data kept");
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "known names answered without delay"
    );
    consul.set_fault(Fault::None);
    web_answered(dns, 2).await;
    running.shutdown().await;
}

#[tokio::test]
async fn a_consul_trickling_its_answers_does_not_slow_known_names() {
    let consul = emulator().await;
    let url = consul.url();
    http_register(&url, &web_instance(1, "passing")).await;
    // The HTTP timeout of a blocking query is blocking_wait + blocking_wait/16 + 10 s.
    let running = server_with(&url, |c| c.blocking_wait = Duration::from_secs(1)).await;
    let dns = running.dns_addrs[0];
    web_answered(dns, 1).await;
    // From now on every response is sent one byte every 200 ms; a change ends the long
    // polls, so every watch is soon reading a trickle.
    consul.set_fault(Fault::Trickle {
        body: "[]".repeat(1000),
        every: Duration::from_millis(200),
    });
    consul.register(web_instance(2, "passing")).unwrap();
    eventually(Duration::from_secs(5), || async {
        consul
            .request_log()
            .iter()
            .filter(|r| r.path == "/v1/health/service/web")
            .count()
            >= 2
    })
    .await;
    for _ in 0..50 {
        let start = std::time::Instant::now();
        let m = query(dns, "web.service.consul.", RecordType::A).await;
        assert!(
            !m.answers.is_empty(),
            "the known data, while Consul trickles"
        );
        assert!(
            start.elapsed() < Duration::from_millis(200),
            "answered in {:?}",
            start.elapsed()
        );
        let m = query(dns, "nosuch.service.consul.", RecordType::A).await;
        assert_eq!(rcode(&m), hickory_proto::op::ResponseCode::NXDomain);
    }
    // The trickle is cut at the HTTP timeout (about 11 s here), counted, and the watch
    // reads again.
    consul.set_fault(Fault::None);
    consul.register(web_instance(3, "passing")).unwrap();
    eventually(Duration::from_secs(30), || async {
        query(dns, "web.service.consul.", RecordType::A)
            .await
            .answers
            .len()
            == 3
    })
    .await;
    let metrics = running.syncer().metrics().render();
    assert!(
        metrics.contains(r#"endpoint="v1/health/service",status="timeout""#),
        "the cut trickle is counted: {metrics}"
    );
    running.shutdown().await;
}

/// Waits until `web.service.consul.` is answered with `instances` instances.
async fn web_answered(dns: std::net::SocketAddr, instances: usize) {
    eventually(Duration::from_secs(5), || async {
        query(dns, "web.service.consul.", RecordType::A)
            .await
            .answers
            .len()
            == instances
    })
    .await;
}
