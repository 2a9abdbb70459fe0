//! UDP answers sent again from the response cache (src/dns/response_cache.rs), seen from a
//! client: each name is asked well past the point where its responses are stored, then the
//! catalog or Consul changes and the answers must follow at once, keep the question's
//! spelling and ID, keep shuffling, and keep the service watched.

use crate::common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use consul_emulator::Fault;
use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;

const WAIT: Duration = Duration::from_secs(5);
/// More queries than the cache keeps responses per name (8), so later ones are hits.
const FILL: usize = 40;

fn addresses(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

async fn udp_a(dns: SocketAddr, name: &str) -> Message {
    query(dns, name, RecordType::A).await
}

fn cache_hits(running: &consul_dns::app::Running) -> u64 {
    metric(running, "consul_dns_response_cache_hits_total")
}

async fn setup(instances: u8) -> (consul_emulator::Emulator, consul_dns::app::Running) {
    let consul = emulator().await;
    for i in 1..=instances {
        http_register(&consul.url(), &web_instance(i, "passing")).await;
    }
    let running = server(&consul.url()).await;
    (consul, running)
}

#[tokio::test]
async fn a_change_replaces_every_cached_answer_at_once() {
    let (consul, running) = setup(3).await;
    let dns = running.dns_addrs[0];
    for _ in 0..FILL {
        let m = udp_a(dns, "web.service.consul.").await;
        assert_eq!(addresses(&m), ["10.2.1.1", "10.2.1.2", "10.2.1.3"]);
    }
    assert!(
        cache_hits(&running) > 0,
        "the later queries were cache hits"
    );

    http_register(&consul.url(), &web_instance(2, "critical")).await;
    eventually(WAIT, || async {
        addresses(&udp_a(dns, "web.service.consul.").await) == ["10.2.1.1", "10.2.1.3"]
    })
    .await;
    // Once the change shows, no stored response from before it is ever sent again.
    for _ in 0..FILL {
        let m = udp_a(dns, "web.service.consul.").await;
        assert_eq!(addresses(&m), ["10.2.1.1", "10.2.1.3"]);
    }

    consul
        .deregister(serde_json::json!({"Node": "node1", "ServiceID": "web1"}))
        .expect("deregisters");
    eventually(WAIT, || async {
        addresses(&udp_a(dns, "web.service.consul.").await) == ["10.2.1.3"]
    })
    .await;
    for _ in 0..FILL {
        assert_eq!(
            addresses(&udp_a(dns, "web.service.consul.").await),
            ["10.2.1.3"]
        );
    }
    running.shutdown().await;
}

#[tokio::test]
async fn cached_answers_keep_the_question_spelling_and_id() {
    let (_consul, running) = setup(3).await;
    let dns = running.dns_addrs[0];
    let srv = query(dns, "_web._tcp.service.consul.", RecordType::SRV).await;
    let mut extra = lines(&srv.additionals);
    extra.sort();
    for _ in 0..FILL {
        udp_a(dns, "web.service.consul.").await;
        query(dns, "_web._tcp.service.consul.", RecordType::SRV).await;
    }
    let hits = cache_hits(&running);
    // `query` checks that each answer carries its query's ID.
    for name in [
        "WeB.Service.CONSUL.",
        "web.SERVICE.consul.",
        "web.service.consul.",
    ] {
        let m = udp_a(dns, name).await;
        assert_eq!(m.queries[0].name().to_ascii(), name, "question as asked");
        assert_eq!(m.answers.len(), 3);
        for r in &m.answers {
            assert_eq!(r.name.to_ascii(), name, "owner names as asked");
        }
    }
    let m = query(dns, "_WEB._Tcp.service.Consul.", RecordType::SRV).await;
    assert_eq!(m.queries[0].name().to_ascii(), "_WEB._Tcp.service.Consul.");
    assert_eq!(m.answers.len(), 3);
    assert!(m
        .answers
        .iter()
        .all(|r| r.name.to_ascii() == "_WEB._Tcp.service.Consul."));
    let mut got = lines(&m.additionals);
    got.sort();
    assert_eq!(
        got, extra,
        "the same Additional section as built for the first query"
    );
    assert!(
        cache_hits(&running) > hits,
        "those were served from the cache"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn cached_answers_still_shuffle() {
    let (_consul, running) = setup(3).await;
    let dns = running.dns_addrs[0];
    let mut first: HashMap<String, usize> = HashMap::new();
    let rounds = 600;
    for _ in 0..rounds {
        let m = udp_a(dns, "web.service.consul.").await;
        *first.entry(m.answers[0].data.to_string()).or_default() += 1;
    }
    assert!(cache_hits(&running) > rounds as u64 / 2);
    for ip in ["10.2.1.1", "10.2.1.2", "10.2.1.3"] {
        let n = first.get(ip).copied().unwrap_or(0);
        // Uniform is 200 each; a fixed order would give 600 and 0.
        assert!(n > 100, "{ip} first in {n} of {rounds} answers: {first:?}");
    }
    running.shutdown().await;
}

#[tokio::test]
async fn an_outage_marks_cached_names_stale() {
    let (consul, running) = setup(2).await;
    let dns = running.dns_addrs[0];
    let edns = Ask {
        edns: Some(1232),
        ..Ask::default()
    };
    let ask = || query_with(dns, "web.service.consul.", RecordType::A, edns);
    for _ in 0..FILL {
        assert_eq!(ede(&ask().await), None);
    }
    consul.set_fault(Fault::Status(500, "rpc error: No cluster leader".into()));
    // Consul notices at its next request: the watches' long polls end after `blocking_wait`
    // in the test config; stop the emulator to cut them now.
    consul.stop().await;
    eventually(WAIT, || async { ede(&ask().await) == Some(3) }).await;
    for _ in 0..FILL {
        let m = ask().await;
        assert_eq!(
            ede(&m),
            Some(3),
            "never an unmarked answer during the outage"
        );
        assert_eq!(addresses(&m), ["10.2.1.1", "10.2.1.2"], "last known data");
    }
    consul.set_fault(Fault::None);
    consul.restart().await.expect("emulator restarts");
    eventually(Duration::from_secs(10), || async {
        ede(&ask().await).is_none()
    })
    .await;
    running.shutdown().await;
}

#[tokio::test]
async fn cache_hits_keep_the_service_watched() {
    let consul = emulator().await;
    http_register(&consul.url(), &web_instance(1, "passing")).await;
    let running = server_with(&consul.url(), |c| {
        c.watch_idle_timeout = Duration::from_millis(300)
    })
    .await;
    let dns = running.dns_addrs[0];
    let start = std::time::Instant::now();
    let mut asked = 0u64;
    while start.elapsed() < Duration::from_millis(1500) {
        assert_eq!(
            addresses(&udp_a(dns, "web.service.consul.").await),
            ["10.2.1.1"]
        );
        asked += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(cache_hits(&running) > asked / 2, "most were cache hits");
    assert_eq!(
        metric(&running, "consul_dns_service_loads_total"),
        1,
        "asked throughout: loaded once, never idled out and reloaded"
    );
    assert_eq!(running.syncer().live_watches(), 1);
    assert_eq!(
        metric(
            &running,
            r#"consul_dns_dns_queries_total{qtype="A",rcode="NOERROR",form="service"}"#
        ),
        asked,
        "every answer counted, cached or not"
    );
    // Not asked any more: it goes idle as before.
    eventually(WAIT, || async { running.syncer().live_watches() == 0 }).await;
    running.shutdown().await;
}

#[tokio::test]
async fn cut_answers_are_drawn_for_every_query() {
    let consul = emulator().await;
    for i in 1..=3 {
        http_register(&consul.url(), &web_instance(i, "passing")).await;
    }
    let running = server_with(&consul.url(), |c| c.dns.udp_answer_limit = 1).await;
    let dns = running.dns_addrs[0];
    let mut kept: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        // No EDNS: one record of three, TC set.
        let m = udp_a(dns, "web.service.consul.").await;
        assert_eq!(m.answers.len(), 1);
        assert!(m.metadata.truncation);
        *kept.entry(m.answers[0].data.to_string()).or_default() += 1;
    }
    for ip in ["10.2.1.1", "10.2.1.2", "10.2.1.3"] {
        let n = kept.get(ip).copied().unwrap_or(0);
        assert!(n > 50, "{ip} kept in {n} of 300 cut answers: {kept:?}");
    }
    assert_eq!(cache_hits(&running), 0, "a cut answer is never stored");
    running.shutdown().await;
}

/// Queries sent back to back, faster than they are answered, are received and answered in
/// batches (`recvmmsg`, `sendmmsg`): each gets exactly one answer, its own.
#[tokio::test]
async fn a_burst_of_queries_gets_one_answer_each() {
    let (_consul, running) = setup(3).await;
    let dns = running.dns_addrs[0];
    // Stored first, so that most of the burst is answered from the caches.
    for _ in 0..FILL {
        udp_a(dns, "web.service.consul.").await;
        udp_a(dns, "nothere.service.consul.").await;
    }
    // Waves of 100: more would overflow a default-sized receive buffer (the server's on
    // a machine whose `rmem_max` is the default, or this client's).
    const WAVE: u16 = 100;
    let sock = tokio::net::UdpSocket::bind(LOCAL).await.unwrap();
    let mut buf = vec![0u8; 2048];
    for wave in 0..10u16 {
        let mut names = HashMap::new();
        for id in wave * WAVE..(wave + 1) * WAVE {
            let name = match id % 3 {
                0 => "web.service.consul.".to_string(),
                1 => format!("gone{id:04}.service.consul."),
                _ => "WEB.service.consul.".to_string(),
            };
            let mut msg = Message::new(
                id,
                hickory_proto::op::MessageType::Query,
                hickory_proto::op::OpCode::Query,
            );
            msg.add_query(hickory_proto::op::Query::query(
                hickory_proto::rr::Name::from_ascii(&name).unwrap(),
                RecordType::A,
            ));
            sock.send_to(&msg.to_vec().unwrap(), dns).await.unwrap();
            names.insert(id, name);
        }
        let mut answered = HashMap::new();
        while answered.len() < usize::from(WAVE) {
            let (n, _) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("wave {wave}: {} of {WAVE} answered", answered.len()))
                .unwrap();
            let m = decode(&buf[..n]);
            let id = m.metadata.id;
            let name = names.get(&id).expect("an ID of this wave");
            assert_eq!(&m.queries[0].name().to_ascii(), name, "its own question");
            if name.starts_with("gone") {
                assert_eq!(
                    rcode(&m),
                    hickory_proto::op::ResponseCode::NXDomain,
                    "{name}"
                );
            } else {
                assert_eq!(
                    addresses(&m),
                    ["10.2.1.1", "10.2.1.2", "10.2.1.3"],
                    "{name}"
                );
            }
            assert!(answered.insert(id, ()).is_none(), "one answer for {id}");
        }
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(200), sock.recv_from(&mut buf))
            .await
            .is_err(),
        "no answer beyond one per query"
    );
    running.shutdown().await;
}

/// TCP answers go through stored responses too (TCP's own, never cut to fit a datagram):
/// a service too large for UDP is answered whole, a change shows at once, and unknown
/// names keep their own question.
#[tokio::test]
async fn tcp_answers_are_stored_whole_and_follow_changes() {
    let consul = emulator().await;
    for i in 1..=60 {
        http_register(&consul.url(), &web_instance(i, "passing")).await;
    }
    let running = server(&consul.url()).await;
    let dns = running.dns_addrs[0];
    let tcp = Ask {
        transport: Transport::Tcp,
        ..Ask::default()
    };
    let all: Vec<String> = {
        let mut v: Vec<String> = (1..=60).map(|i| format!("10.2.1.{i}")).collect();
        v.sort();
        v
    };
    for _ in 0..FILL {
        let m = query_with(dns, "web.service.consul.", RecordType::A, tcp).await;
        assert!(!m.metadata.truncation);
        assert_eq!(addresses(&m), all, "every instance over TCP");
    }
    assert!(cache_hits(&running) > 0, "TCP answers sent again");
    // UDP without EDNS still gets its own, cut, answer.
    let m = udp_a(dns, "web.service.consul.").await;
    assert!(m.metadata.truncation, "UDP: cut with TC");
    assert!(m.answers.len() < 60);

    http_register(&consul.url(), &web_instance(7, "critical")).await;
    eventually(WAIT, || async {
        let m = query_with(dns, "web.service.consul.", RecordType::A, tcp).await;
        m.answers.len() == 59
    })
    .await;
    for _ in 0..FILL {
        let m = query_with(dns, "web.service.consul.", RecordType::A, tcp).await;
        assert_eq!(m.answers.len(), 59, "no answer from before the change");
        assert!(!addresses(&m).contains(&"10.2.1.7".to_string()));
    }
    let negative = metric(&running, "consul_dns_negative_cache_hits_total");
    for i in 0..FILL {
        let name = format!("nope{i:03}.service.consul.");
        let m = query_with(dns, &name, RecordType::A, tcp).await;
        assert_eq!(rcode(&m), hickory_proto::op::ResponseCode::NXDomain);
        assert_eq!(m.queries[0].name().to_ascii(), name);
    }
    assert!(metric(&running, "consul_dns_negative_cache_hits_total") > negative);
    running.shutdown().await;
}
