//! The view's lifecycle under Consul faults, over real sockets: stale answers marked with an
//! Extended DNS Error within `max_stale`, SERVFAIL beyond it, data never wiped by errors or
//! ACL-filtered empty results, the watch cap, eager watching, and the metrics and health
//! endpoint that reports each of these.

use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use consul_emulator::{Emulator, Fault};
use futures_util::StreamExt;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

const WAIT: Duration = Duration::from_secs(5);
const EDNS: Ask = Ask {
    transport: Transport::Udp,
    edns: Some(1232),
    rd: true,
};

async fn ask_web(dns: SocketAddr) -> Message {
    query_with(dns, "web.service.consul.", RecordType::A, EDNS).await
}

/// GET on the server's HTTP endpoint: (status, body).
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("endpoint reachable");
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

/// The value of one metric line (exact name and labels as rendered).
async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let (_, body) = http_get(addr, "/metrics").await;
    body.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn setup(
    tweak: impl FnOnce(&mut consul_dns::config::Config),
) -> (Emulator, consul_dns::app::Running, SocketAddr, SocketAddr) {
    let consul = emulator().await;
    http_register(&consul.url(), &web_instance(1, "passing")).await;
    let running = server_with(&consul.url(), |c| {
        c.http_addr = Some("127.0.0.1:0".parse().unwrap());
        tweak(c);
    })
    .await;
    let dns = running.dns_addrs[0];
    let http = running.http_addr.expect("http endpoint bound");
    eventually(WAIT, || async { ask_web(dns).await.answers.len() == 1 }).await;
    (consul, running, dns, http)
}

#[tokio::test]
async fn outage_is_answered_stale_with_ede_then_fresh() {
    let (consul, running, dns, http) = setup(|c| c.dns.max_stale = Duration::from_secs(30)).await;
    let m = ask_web(dns).await;
    assert_eq!(ede(&m), None, "fresh answers carry no EDE");

    consul.stop().await;
    eventually(WAIT, || async { ede(&ask_web(dns).await) == Some(3) }).await;
    // Throughout the outage: the last good data, marked Stale Answer (EDE 3).
    for _ in 0..20 {
        let m = ask_web(dns).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(
            lines(&m.answers),
            vec!["web.service.consul. 0 IN A 10.2.1.1"]
        );
        assert_eq!(ede(&m), Some(3));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Without EDNS there is no OPT to carry the EDE, the answer is the same.
    assert_eq!(
        query(dns, "web.service.consul.", RecordType::A)
            .await
            .answers
            .len(),
        1
    );
    assert!(metric(http, "consul_dns_stale_answers_total").await >= 20.0);
    assert!(
        metric(
            http,
            r#"consul_dns_watch_stale_seconds{watch="catalog/services"}"#
        )
        .await
            > 0.0
    );

    consul.register(web_instance(2, "passing")).unwrap();
    consul.restart().await.unwrap();
    eventually(WAIT, || async {
        let m = ask_web(dns).await;
        m.answers.len() == 2 && ede(&m).is_none()
    })
    .await;
    assert_eq!(
        metric(
            http,
            r#"consul_dns_watch_stale_seconds{watch="catalog/services"}"#
        )
        .await,
        0.0
    );
    running.shutdown().await;
}

#[tokio::test]
async fn beyond_max_stale_is_servfail() {
    let (consul, running, dns, http) =
        setup(|c| c.dns.max_stale = Duration::from_millis(500)).await;
    consul.stop().await;
    eventually(WAIT, || async {
        ask_web(dns).await.metadata.response_code == ResponseCode::ServFail
    })
    .await;
    // Unknown names rest on the service list, just as stale: SERVFAIL too, not NXDOMAIN.
    let m = query_with(dns, "nosuch.service.consul.", RecordType::A, EDNS).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(ede(&m), Some(22), "says why: No Reachable Authority");
    assert!(metric(http, "consul_dns_max_stale_exceeded_total").await >= 2.0);
    consul.restart().await.unwrap();
    eventually(WAIT, || async { ask_web(dns).await.answers.len() == 1 }).await;
    running.shutdown().await;
}

#[tokio::test]
async fn forbidden_keeps_data() {
    let (consul, running, dns, http) = setup(|_| {}).await;
    consul.set_fault(Fault::Status(403, "ACL not found".into()));
    consul.register(web_instance(2, "passing")).unwrap(); // wakes the long polls; the next reads get 403
    eventually(WAIT, || async {
        metric(
            http,
            r#"consul_dns_consul_requests_total{endpoint="v1/health/service",status="403"}"#,
        )
        .await
            > 0.0
    })
    .await;
    let m = ask_web(dns).await;
    assert!(!m.answers.is_empty(), "a 403 must not remove known data");
    assert_eq!(
        ede(&m),
        Some(3),
        "served from a failing watch: marked stale"
    );
    consul.set_fault(Fault::None);
    eventually(WAIT, || async { ask_web(dns).await.answers.len() == 2 }).await;
    running.shutdown().await;
}

#[tokio::test]
async fn acl_filtered_empty_result_keeps_data() {
    let (consul, running, dns, http) = setup(|_| {}).await;
    consul.set_acl_filter_all(true);
    consul.register(web_instance(2, "passing")).unwrap(); // wakes the long polls with empty, ACL-filtered answers
    eventually(WAIT, || async {
        metric(http, "consul_dns_acl_filtered_ignored_total").await >= 1.0
    })
    .await;
    assert_eq!(
        lines(&ask_web(dns).await.answers),
        vec!["web.service.consul. 0 IN A 10.2.1.1"]
    );
    assert_eq!(
        rcode(&query(dns, "node1.node.consul.", RecordType::A).await),
        ResponseCode::NoError
    );
    consul.set_acl_filter_all(false);
    consul.register(web_instance(3, "passing")).unwrap();
    eventually(WAIT, || async { ask_web(dns).await.answers.len() == 3 }).await;
    running.shutdown().await;
}

#[tokio::test]
async fn leader_loss_is_measured() {
    let (consul, running, _dns, http) = setup(|_| {}).await;
    assert_eq!(metric(http, "consul_dns_consul_known_leader").await, 1.0);
    consul.set_known_leader(false);
    consul.register(web_instance(2, "passing")).unwrap();
    eventually(WAIT, || async {
        metric(http, "consul_dns_consul_known_leader").await == 0.0
    })
    .await;
    consul.set_known_leader(true);
    consul.register(web_instance(3, "passing")).unwrap();
    eventually(WAIT, || async {
        metric(http, "consul_dns_consul_known_leader").await == 1.0
    })
    .await;
    running.shutdown().await;
}

/// Instance `n` of service `api`, on its own node.
fn api_instance(n: u8) -> serde_json::Value {
    Instance::new("api", &format!("api{n}"))
        .on(&format!("node{}", 6 + n), &format!("192.168.56.{}", 6 + n))
        .at(&format!("10.2.2.{n}"), 80)
        .json()
}

/// How many A records `api.service.consul` has.
async fn api_answers(dns: SocketAddr) -> usize {
    query_with(dns, "api.service.consul.", RecordType::A, EDNS)
        .await
        .answers
        .len()
}

/// Blocking queries consul-dns sent for `api`.
fn api_long_polls(consul: &Emulator) -> usize {
    consul
        .request_log()
        .iter()
        .filter(|r| r.path == "/v1/health/service/api" && r.query.contains("index="))
        .count()
}

#[tokio::test]
async fn beyond_max_watches_services_are_polled() {
    let (consul, running, dns, http) = setup(|c| {
        c.max_watches = 1;
        c.watch_poll_interval = Duration::from_millis(300);
    })
    .await;
    http_register(&consul.url(), &api_instance(1)).await;
    eventually(WAIT, || async { api_answers(dns).await == 1 }).await;
    assert_eq!(metric(http, "consul_dns_watches_blocking").await, 1.0);
    assert_eq!(metric(http, "consul_dns_watches_polling").await, 1.0);
    // The polled service follows changes on its timer, with no long poll held for it.
    http_register(&consul.url(), &api_instance(2)).await;
    eventually(WAIT, || async { api_answers(dns).await == 2 }).await;
    assert_eq!(
        api_long_polls(&consul),
        0,
        "a polled service holds no blocking query"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn a_polled_service_gets_a_blocking_query_when_a_slot_frees() {
    let (consul, running, dns, http) = setup(|c| {
        c.max_watches = 1;
        c.watch_poll_interval = Duration::from_millis(200);
        c.watch_idle_timeout = Duration::from_secs(1);
    })
    .await;
    http_register(&consul.url(), &api_instance(1)).await;
    eventually(WAIT, || async { api_answers(dns).await == 1 }).await;
    // `web` (asked by the setup) holds the only slot: `api` is polled.
    assert_eq!(metric(http, "consul_dns_watches_polling").await, 1.0);
    assert_eq!(api_long_polls(&consul), 0);
    // `api` stays asked; `web` is not asked any more, idles out and frees its slot.
    eventually(WAIT, || async {
        api_answers(dns).await == 1
            && metric(http, "consul_dns_watches_polling").await == 0.0
            && metric(http, "consul_dns_watches_blocking").await == 1.0
    })
    .await;
    eventually(WAIT, || async { api_long_polls(&consul) >= 1 }).await;
    running.shutdown().await;
}

/// Registers services `names`, one passing instance each, at `<net>.1`, `<net>.2`, ….
async fn register_one_instance_each(consul: &Emulator, names: &[&str], net: &str) {
    for (i, name) in names.iter().enumerate() {
        let ip = format!("{net}.{}", i + 1);
        http_register(
            &consul.url(),
            &Instance::new(name, name)
                .on("node9", "192.168.56.9")
                .at(&ip, 80)
                .json(),
        )
        .await;
    }
}

#[tokio::test]
async fn max_services_bounds_the_services_kept_in_memory() {
    let (consul, running, dns, _http) = setup(|c| {
        c.max_watches = 1;
        c.max_services = 2;
    })
    .await;
    let names = ["b1", "b2", "b3", "b4"];
    register_one_instance_each(&consul, &names, "10.2.4").await;
    for name in names {
        let qname = format!("{name}.service.consul.");
        let m = query_with(dns, &qname, RecordType::A, EDNS).await;
        assert_eq!(m.answers.len(), 1, "{name} answered");
    }
    eventually(WAIT, || async { running.syncer().live_watches() <= 2 }).await;
    // One that left memory is read again when asked.
    let m = query_with(dns, "b1.service.consul.", RecordType::A, EDNS).await;
    assert_eq!(m.answers.len(), 1);
    running.shutdown().await;
}

/// Many services asked for at once, past `max_services`: the watches and polls left
/// running settle at the cap at once (each service beyond it was started, answered, and
/// ended), and none is left running past it.
#[tokio::test]
async fn max_services_holds_under_concurrent_cold_lookups() {
    let (consul, running, dns, http) = setup(|c| {
        c.max_watches = 10;
        c.max_services = 20;
        c.watch_idle_timeout = Duration::from_secs(600);
    })
    .await;
    let names: Vec<String> = (0..150).map(|i| format!("many{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    register_one_instance_each(&consul, &refs, "10.2.5").await;
    let lookups = names.iter().map(|name| async move {
        let qname = format!("{name}.service.consul.");
        query_with(dns, &qname, RecordType::A, EDNS).await
    });
    let answered = futures_util::stream::iter(lookups)
        .buffer_unordered(16)
        .filter(|m| futures_util::future::ready(m.answers.len() == 1))
        .count()
        .await;
    assert_eq!(answered, names.len(), "every service answered once");
    let held = || async {
        metric(http, "consul_dns_watches_blocking").await
            + metric(http, "consul_dns_watches_polling").await
    };
    // Within a second, not at the janitor's next tick (5 s here).
    eventually(Duration::from_secs(1), || async { held().await <= 20.0 }).await;
    // And it stays there: nothing held past the cap comes back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let now = held().await;
    assert!(now <= 20.0, "{now} services held, max_services is 20");
    running.shutdown().await;
}

#[tokio::test]
async fn polled_reads_in_flight_are_bounded_when_consul_hangs() {
    let (consul, running, dns, _http) = setup(|c| {
        c.max_watches = 2;
        c.watch_poll_interval = Duration::from_millis(200);
    })
    .await;
    let names = ["a1", "a2", "a3", "a4", "a5", "a6"];
    register_one_instance_each(&consul, &names, "10.2.3").await;
    // `web` holds one slot, `a1` the other; `a2`..`a6` are polled.
    for name in names {
        let qname = format!("{name}.service.consul.");
        eventually(WAIT, || async {
            query_with(dns, &qname, RecordType::A, EDNS)
                .await
                .answers
                .len()
                == 1
        })
        .await;
    }
    consul.set_fault(Fault::Hang);
    let hung_since = consul.request_log().len();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let polls = consul.request_log()[hung_since..]
        .iter()
        .filter(|r| r.path.starts_with("/v1/health/service/a") && !r.query.contains("index="))
        .count();
    assert!(
        (1..=2).contains(&polls),
        "{polls} re-reads sent to a hanging Consul; at most max_watches (2, under 32) may be in flight"
    );
    // Answers keep coming from memory meanwhile.
    let m = query_with(dns, "a6.service.consul.", RecordType::A, EDNS).await;
    assert_eq!(m.answers.len(), 1);
    consul.set_fault(Fault::None);
    running.shutdown().await;
}

#[tokio::test]
async fn watch_all_services_has_no_cold_misses() {
    let consul = emulator().await;
    http_register(&consul.url(), &web_instance(1, "passing")).await;
    let running = server_with(&consul.url(), |c| c.watch_all_services = true).await;
    eventually(WAIT, || async {
        consul.requests_to("/v1/health/service/web") > 0
    })
    .await;
    let loads = || {
        consul
            .request_log()
            .iter()
            .filter(|r| r.path == "/v1/health/service/web" && !r.query.contains("index="))
            .count()
    };
    let before = loads();
    assert_eq!(ask_web(running.dns_addrs[0]).await.answers.len(), 1);
    assert_eq!(
        loads(),
        before,
        "the first query found the service already loaded"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn health_endpoints_follow_the_first_sync() {
    let consul = emulator().await;
    http_register(&consul.url(), &web_instance(1, "passing")).await;
    consul.stop().await;
    let running = server_with(&consul.url(), |c| {
        c.http_addr = Some("127.0.0.1:0".parse().unwrap());
        c.startup_wait = Duration::from_millis(100);
    })
    .await;
    let http = running.http_addr.unwrap();
    assert_eq!(http_get(http, "/health/live").await.0, 200);
    assert_eq!(http_get(http, "/health/ready").await.0, 503);
    // Never reached: no value says all is well.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stale = r#"consul_dns_watch_stale_seconds{watch="catalog/services"}"#;
    assert_eq!(metric(http, "consul_dns_consul_known_leader").await, 0.0);
    assert!(metric(http, stale).await > 0.0, "stale since the start");
    consul.restart().await.unwrap();
    eventually(WAIT, || async {
        http_get(http, "/health/ready").await.0 == 200
    })
    .await;
    assert_eq!(metric(http, "consul_dns_consul_known_leader").await, 1.0);
    assert_eq!(metric(http, stale).await, 0.0);

    let dns = running.dns_addrs[0];
    ask_web(dns).await;
    query_with(dns, "nosuch.service.consul.", RecordType::A, EDNS).await;
    assert!(
        metric(
            http,
            r#"consul_dns_dns_queries_total{qtype="A",rcode="NOERROR",form="service"}"#
        )
        .await
            >= 1.0
    );
    assert!(
        metric(
            http,
            r#"consul_dns_dns_queries_total{qtype="A",rcode="NXDOMAIN",form="service"}"#
        )
        .await
            >= 1.0
    );
    assert!(metric(http, "consul_dns_answer_seconds_count").await >= 2.0);
    assert!(metric(http, "consul_dns_view_misses_total").await >= 1.0);
    running.shutdown().await;
}
