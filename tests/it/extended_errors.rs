//! Every SERVFAIL says why (RFC 8914 Extended DNS Errors, issue 21): 14 "Not Ready" before
//! the first sync, 22 "No Reachable Authority" when Consul cannot give a service never
//! loaded, past `max_stale` (`tests/resilience.rs`), or when no recursor answers; the text
//! never carries Consul's own error body. Clients without EDNS get the bare SERVFAIL.

use crate::common;

use std::time::Duration;

use common::*;
use consul_emulator::Fault;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const EDNS: Ask = Ask {
    transport: Transport::Udp,
    edns: Some(1232),
    rd: true,
};

#[tokio::test]
async fn not_synced_yet_is_not_ready() {
    // Nothing listens there: the first sync never happens.
    let running = server_with("http://127.0.0.1:1", |c| {
        c.startup_wait = Duration::ZERO;
    })
    .await;
    let dns = running.dns_addrs[0];
    let m = query_with(dns, "web.service.consul.", RecordType::A, EDNS).await;
    assert_eq!(rcode(&m), ResponseCode::ServFail);
    assert_eq!(ede(&m), Some(14), "{m:?}");
    assert!(ede_text(&m).contains("not synced"), "{}", ede_text(&m));
    let m = query(dns, "web.service.consul.", RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::ServFail);
    assert!(m.edns.is_none(), "no OPT for a client without EDNS");
    running.shutdown().await;
}

#[tokio::test]
async fn a_service_consul_cannot_give_is_no_reachable_authority() {
    let consul = emulator().await;
    http_register(&consul.url(), &web_instance(1, "passing")).await;
    http_register(
        &consul.url(),
        &Instance::new("cold", "cold1").at("10.2.9.1", 80).json(),
    )
    .await;
    let running = server(&consul.url()).await;
    let dns = running.dns_addrs[0];
    eventually(Duration::from_secs(5), || async {
        !query(dns, "web.service.consul.", RecordType::A)
            .await
            .answers
            .is_empty()
    })
    .await;
    let secret = "Permission denied: token with AccessorID 'f00d' lacks service:read";
    consul.set_fault(Fault::Status(500, secret.into()));
    // `cold` is in the service list, never loaded: its load fails.
    let m = query_with(dns, "cold.service.consul.", RecordType::A, EDNS).await;
    assert_eq!(rcode(&m), ResponseCode::ServFail);
    assert_eq!(ede(&m), Some(22), "{m:?}");
    let text = ede_text(&m);
    assert!(
        !text.contains("f00d") && !text.contains("Permission"),
        "{text}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn recursors_that_do_not_answer_are_no_reachable_authority() {
    let consul = emulator().await;
    // A UDP socket that reads and never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let recursor = silent.local_addr().unwrap();
    let running = server_with(&consul.url(), |c| {
        c.recursors = vec![recursor];
        c.dns.recursor_timeout = Duration::from_millis(300);
    })
    .await;
    let dns = running.dns_addrs[0];
    let m = query_with(dns, "example.org.", RecordType::A, EDNS).await;
    assert_eq!(rcode(&m), ResponseCode::ServFail);
    assert_eq!(ede(&m), Some(22), "{m:?}");
    drop(silent);
    running.shutdown().await;
}
