//! Negative answers written from a stored response of their shape
//! (src/dns/negative_cache.rs), seen from a client: every unknown name gets its own
//! question, ID and the zone's SOA with the current serial; a name that comes to exist is
//! answered at once; and no entry is made per name.

use crate::common;

use std::time::Duration;

use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

const WAIT: Duration = Duration::from_secs(5);

fn negative_hits(running: &consul_dns::app::Running) -> u64 {
    metric(running, "consul_dns_negative_cache_hits_total")
}

/// The negative answer's SOA: owner, primary name server, mailbox, serial.
fn soa(m: &Message) -> (String, String, String, u32) {
    assert!(m.answers.is_empty(), "no answers: {:?}", m.answers);
    assert_eq!(m.authorities.len(), 1, "one SOA: {:?}", m.authorities);
    let r = &m.authorities[0];
    match &r.data {
        RData::SOA(s) => (
            r.name.to_ascii(),
            s.mname.to_ascii(),
            s.rname.to_ascii(),
            s.serial,
        ),
        other => panic!("not a SOA: {other:?}"),
    }
}

async fn serial(dns: std::net::SocketAddr) -> u32 {
    let m = query(dns, "consul.", RecordType::SOA).await;
    match &m.answers[0].data {
        RData::SOA(s) => s.serial,
        other => panic!("not a SOA: {other:?}"),
    }
}

#[tokio::test]
async fn unknown_names_get_their_own_question_and_the_current_soa() {
    let consul = emulator().await;
    http_register(&consul.url(), &web_instance(1, "passing")).await;
    let running = server(&consul.url()).await;
    let dns = running.dns_addrs[0];
    let current = serial(dns).await;

    // 200 names of one length (one shape), spelled in mixed case, then names of other
    // lengths and kinds, and NODATA for a name that exists.
    for i in 0..200 {
        let name = format!("NoSvc-{i:03}.Service.consul.");
        let m = query(dns, &name, RecordType::A).await;
        assert_eq!(rcode(&m), ResponseCode::NXDomain, "{name}");
        assert!(m.metadata.authoritative, "{name}: AA");
        assert_eq!(m.queries[0].name().to_ascii(), name, "question as asked");
        assert_eq!(m.queries[0].query_type(), RecordType::A);
        assert_eq!(
            soa(&m),
            (
                "consul.".into(),
                "ns.consul.".into(),
                "hostmaster.consul.".into(),
                current
            ),
            "{name}"
        );
    }
    assert!(
        negative_hits(&running) >= 190,
        "answered from the stored shape: {}",
        negative_hits(&running)
    );
    for (name, qtype, code) in [
        ("x.node.consul.", RecordType::A, ResponseCode::NXDomain),
        (
            "nosuch.query.consul.",
            RecordType::SRV,
            ResponseCode::NXDomain,
        ),
        (
            "web.service.consul.",
            RecordType::AAAA,
            ResponseCode::NoError,
        ),
        (
            "web.service.consul.",
            RecordType::TXT,
            ResponseCode::NoError,
        ),
    ] {
        for _ in 0..3 {
            let m = query(dns, name, qtype).await;
            assert_eq!(rcode(&m), code, "{name} {qtype}");
            assert_eq!(m.queries[0].query_type(), qtype, "{name} {qtype}");
            assert_eq!(soa(&m).0, "consul.", "{name} {qtype}");
        }
    }
    // `ns.consul.` and `ab.consul.` are of one shape; the SOA must not borrow the name.
    for name in ["ns.consul.", "ab.consul.", "ns.consul.", "hm.consul."] {
        let m = query(dns, name, RecordType::A).await;
        assert_eq!(soa(&m).1, "ns.consul.", "{name}");
        assert_eq!(soa(&m).2, "hostmaster.consul.", "{name}");
    }
    running.shutdown().await;
}

#[tokio::test]
async fn a_name_that_comes_to_exist_is_answered_and_the_serial_follows() {
    let consul = emulator().await;
    http_register(&consul.url(), &web_instance(1, "passing")).await;
    let running = server(&consul.url()).await;
    let dns = running.dns_addrs[0];
    for _ in 0..20 {
        let m = query(dns, "api.service.consul.", RecordType::A).await;
        assert_eq!(rcode(&m), ResponseCode::NXDomain);
        let m = query(dns, "zzz.service.consul.", RecordType::A).await;
        assert_eq!(rcode(&m), ResponseCode::NXDomain);
    }
    let before = serial(dns).await;
    let hits = negative_hits(&running);
    assert!(hits > 0, "stored shape used");

    http_register(
        &consul.url(),
        &Instance::new("api", "api1")
            .on("node2", "192.168.56.2")
            .at("10.2.2.2", 80)
            .json(),
    )
    .await;
    eventually(WAIT, || async {
        let m = query(dns, "api.service.consul.", RecordType::A).await;
        rcode(&m) == ResponseCode::NoError && lines(&m.answers).len() == 1
    })
    .await;
    let after = serial(dns).await;
    assert_ne!(after, before, "the catalog moved");
    // The same shape, still unknown: NXDOMAIN with the new serial, every time.
    for _ in 0..20 {
        let m = query(dns, "zzz.service.consul.", RecordType::A).await;
        assert_eq!(rcode(&m), ResponseCode::NXDomain);
        assert_eq!(soa(&m).3, after, "serial of the current catalog");
    }
    assert!(
        negative_hits(&running) > hits,
        "the new shape is stored again"
    );
    running.shutdown().await;
}
