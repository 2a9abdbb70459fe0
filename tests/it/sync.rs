//! The view follows the catalog: changes answerable within milliseconds, blocking-query rules
//! under faults, and the load the server puts on Consul, counted at the emulator.

use crate::common;

use std::time::Duration;

use common::*;
use consul_emulator::Fault;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(5);
const STAMPEDE: usize = 1000;

async fn a_records(dns: std::net::SocketAddr, name: &str) -> Vec<String> {
    let tcp = Ask {
        transport: Transport::Tcp,
        ..Ask::default()
    };
    let m = query_with(dns, name, RecordType::A, tcp).await;
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

async fn answers_are(dns: std::net::SocketAddr, name: &str, want: &[&str]) -> Duration {
    let name = name.to_string();
    let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    eventually(WAIT, || {
        let (name, want) = (name.clone(), want.clone());
        async move { a_records(dns, &name).await == want }
    })
    .await
}

#[tokio::test]
async fn catalog_changes_show_without_restart() {
    let consul = emulator().await;
    let url = consul.url();
    http_register(&url, &web_instance(1, "passing")).await;
    let running = server(&url).await;
    let dns = running.dns_addrs[0];
    answers_are(dns, "web.service.consul.", &["10.2.1.1"]).await;

    http_register(&url, &web_instance(2, "passing")).await;
    let took = answers_are(dns, "web.service.consul.", &["10.2.1.1", "10.2.1.2"]).await;
    println!("registration visible after {took:?}");

    // A check going critical removes the instance.
    http_register(&url, &web_instance(2, "critical")).await;
    answers_are(dns, "web.service.consul.", &["10.2.1.1"]).await;

    // Deregistering the last instance: the service is gone from the catalog.
    http_deregister(&url, &json!({"Node": "node1", "ServiceID": "web1"})).await;
    http_deregister(&url, &json!({"Node": "node2"})).await;
    eventually(WAIT, || async {
        rcode(&query(dns, "web.service.consul.", RecordType::A).await) == ResponseCode::NXDomain
    })
    .await;

    // A service that did not exist appears.
    assert_eq!(
        rcode(&query(dns, "fresh.service.consul.", RecordType::A).await),
        ResponseCode::NXDomain
    );
    http_register(
        &url,
        &Instance::new("fresh", "fresh1")
            .on("node9", "192.168.56.9")
            .at("10.2.9.9", 80)
            .json(),
    )
    .await;
    answers_are(dns, "fresh.service.consul.", &["10.2.9.9"]).await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_service_stampede_costs_one_request() {
    let consul = emulator().await;
    http_register(&consul.url(), &web_instance(1, "passing")).await;
    let running = server(&consul.url()).await;
    let dns = running.dns_addrs[0];
    // Wait for the first sync through another name, so the stampede is the service's first query.
    eventually(WAIT, || async {
        rcode(&query(dns, "nosuch.service.consul.", RecordType::A).await) == ResponseCode::NXDomain
    })
    .await;
    assert_eq!(consul.requests_to("/v1/health/service/web"), 0);

    let tasks: Vec<_> = (0..STAMPEDE)
        .map(|_| {
            tokio::spawn(async move {
                query_udp_retrying(dns, "web.service.consul.", RecordType::A).await
            })
        })
        .collect();
    for t in tasks {
        let m = t.await.unwrap();
        assert_eq!(m.answers.len(), 1);
    }
    let loads = consul
        .request_log()
        .iter()
        .filter(|r| r.path == "/v1/health/service/web" && !r.query.contains("index="))
        .count();
    assert_eq!(
        loads, 1,
        "1000 concurrent queries of a cold service load it once"
    );
    // Plus, at most, the watch's one long poll.
    assert!(consul.requests_to("/v1/health/service/web") <= 2);
    // The server's own metrics say the same: one load.
    let metrics = running.syncer().metrics().render();
    assert!(
        metrics.contains("consul_dns_service_loads_total 1\n"),
        "{metrics}"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn unknown_names_cost_consul_nothing() {
    let consul = emulator().await;
    http_register(&consul.url(), &web_instance(1, "passing")).await;
    let running = server(&consul.url()).await;
    let dns = running.dns_addrs[0];
    answers_are(dns, "web.service.consul.", &["10.2.1.1"]).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = consul.requests();
    for i in 0..5000 {
        let name = format!("random{i}.service.consul.");
        assert_eq!(
            rcode(&query(dns, &name, RecordType::A).await),
            ResponseCode::NXDomain
        );
        let name = format!("node-x{i}.node.consul.");
        assert_eq!(
            rcode(&query(dns, &name, RecordType::A).await),
            ResponseCode::NXDomain
        );
    }
    assert_eq!(
        consul.requests() - before,
        0,
        "unknown names sent requests to Consul"
    );
    let metrics = running.syncer().metrics().render();
    for form in ["service", "node"] {
        let series = format!(
            r#"consul_dns_dns_queries_total{{qtype="A",rcode="NXDOMAIN",form="{form}"}} 5000"#
        );
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
    running.shutdown().await;
}

#[tokio::test]
async fn index_going_backwards_resets_the_watch() {
    let consul = emulator().await;
    let url = consul.url();
    for i in 1..=20 {
        http_register(
            &url,
            &Instance::new("other", &format!("o{i}"))
                .on(&format!("other{i}"), "192.168.0.1")
                .at("10.9.0.1", 1)
                .json(),
        )
        .await;
    }
    http_register(&url, &web_instance(1, "passing")).await;
    let running = server(&url).await;
    let dns = running.dns_addrs[0];
    answers_are(dns, "web.service.consul.", &["10.2.1.1"]).await;
    // The service's long poll is waiting at the emulator.
    eventually(WAIT, || async {
        consul
            .request_log()
            .iter()
            .any(|r| r.path == "/v1/health/service/web" && r.query.contains("index="))
    })
    .await;

    // A snapshot restore: the index drops far below what the watch holds. Without the reset
    // rule the watch would block until the index passed its old value and miss this change.
    consul.restore_snapshot(2);
    http_register(&url, &web_instance(2, "passing")).await;
    answers_are(dns, "web.service.consul.", &["10.2.1.1", "10.2.1.2"]).await;
    running.shutdown().await;
}

#[tokio::test]
async fn errors_keep_the_last_good_data_and_recover() {
    let consul = emulator().await;
    let url = consul.url();
    http_register(&url, &web_instance(1, "passing")).await;
    let running = server(&url).await;
    let dns = running.dns_addrs[0];
    answers_are(dns, "web.service.consul.", &["10.2.1.1"]).await;

    // Consul answers 500: the change wakes the long polls, the next reads fail.
    consul.set_fault(Fault::Status(500, "rpc error: No cluster leader".into()));
    consul.register(web_instance(2, "passing")).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = a_records(dns, "web.service.consul.").await;
    assert!(!during.is_empty(), "a 500 must not empty the answer");
    assert!(a_records(dns, "node1.node.consul.").await == vec!["192.168.56.1".to_string()]);

    consul.set_fault(Fault::None);
    consul.register(web_instance(3, "passing")).unwrap();
    answers_are(
        dns,
        "web.service.consul.",
        &["10.2.1.1", "10.2.1.2", "10.2.1.3"],
    )
    .await;

    // Consul goes away altogether, then comes back.
    consul.stop().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        a_records(dns, "web.service.consul.").await.len(),
        3,
        "answers from memory while Consul is down"
    );
    consul.register(web_instance(4, "passing")).unwrap();
    consul.restart().await.unwrap();
    let took = answers_are(
        dns,
        "web.service.consul.",
        &["10.2.1.1", "10.2.1.2", "10.2.1.3", "10.2.1.4"],
    )
    .await;
    println!("change made while Consul was down visible {took:?} after its return");
    running.shutdown().await;
}

#[tokio::test]
async fn a_hanging_consul_does_not_slow_known_names() {
    let consul = emulator().await;
    let url = consul.url();
    http_register(&url, &web_instance(1, "passing")).await;
    let running = server(&url).await;
    let dns = running.dns_addrs[0];
    answers_are(dns, "web.service.consul.", &["10.2.1.1"]).await;
    consul.set_fault(Fault::Hang);
    consul.register(web_instance(2, "passing")).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = std::time::Instant::now();
    for _ in 0..50 {
        assert!(!a_records(dns, "web.service.consul.").await.is_empty());
    }
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "50 answers took {:?}",
        start.elapsed()
    );
    running.shutdown().await;
}

#[tokio::test]
async fn servfail_until_first_sync_never_nxdomain() {
    let consul = emulator().await;
    let url = consul.url();
    http_register(&url, &web_instance(1, "passing")).await;
    consul.stop().await;
    let running = server_with(&url, |c| c.startup_wait = Duration::from_millis(200)).await;
    let dns = running.dns_addrs[0];
    for name in [
        "web.service.consul.",
        "nosuch.service.consul.",
        "node1.node.consul.",
    ] {
        let m = query(dns, name, RecordType::A).await;
        assert_eq!(
            rcode(&m),
            ResponseCode::ServFail,
            "{name} before the first sync"
        );
    }
    consul.restart().await.unwrap();
    answers_are(dns, "web.service.consul.", &["10.2.1.1"]).await;
    assert_eq!(
        rcode(&query(dns, "nosuch.service.consul.", RecordType::A).await),
        ResponseCode::NXDomain
    );
    running.shutdown().await;
}

#[tokio::test]
async fn token_is_sent_to_consul() {
    let consul = emulator().await;
    let url = consul.url();
    http_register(&url, &web_instance(1, "passing")).await;
    consul.set_required_token(Some("s3cret-token".into()));
    let running = server_with(&url, |c| c.token = Some("s3cret-token".to_string().into())).await;
    answers_are(running.dns_addrs[0], "web.service.consul.", &["10.2.1.1"]).await;
    let reads: Vec<_> = consul
        .request_log()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert!(!reads.is_empty());
    assert!(reads
        .iter()
        .all(|r| r.token.as_deref() == Some("s3cret-token")));
    running.shutdown().await;
}

#[tokio::test]
async fn idle_service_watches_end() {
    let consul = emulator().await;
    http_register(&consul.url(), &web_instance(1, "passing")).await;
    let running = server_with(&consul.url(), |c| {
        c.watch_idle_timeout = Duration::from_millis(300)
    })
    .await;
    let dns = running.dns_addrs[0];
    answers_are(dns, "web.service.consul.", &["10.2.1.1"]).await;
    eventually(WAIT, || async { running.syncer().live_watches() == 1 }).await;
    let blocking = || {
        running
            .syncer()
            .metrics()
            .render()
            .contains("consul_dns_watches_blocking 1")
    };
    assert!(
        blocking(),
        "one blocking watch while the service is asked for"
    );
    eventually(WAIT, || async { running.syncer().live_watches() == 0 }).await;
    // Its long poll is given back.
    eventually(WAIT, || async {
        running
            .syncer()
            .metrics()
            .render()
            .contains("consul_dns_watches_blocking 0")
    })
    .await;
    // Asked again, it is loaded again.
    answers_are(dns, "web.service.consul.", &["10.2.1.1"]).await;
    running.shutdown().await;
}

/// The janitor goes through the watches in chunks (yielding to queries between them):
/// with several chunks of watches, every one still asked for stays watched (loaded once),
/// and all end once nobody asks. (The idle timeout leaves room for this test's own
/// pauses: the emulator shares its thread, and a round of 200 names in a debug build on a
/// busy 2-core machine has been seen to take over a second.)
#[tokio::test]
async fn many_watches_asked_for_stay_and_idle_ones_end() {
    const SERVICES: u8 = 200;
    let consul = emulator().await;
    for i in 0..SERVICES {
        let body = Instance::new(&format!("s{i}"), &format!("s{i}-1"))
            .on(&format!("node{i}"), &format!("192.168.57.{i}"))
            .at(&format!("10.2.3.{i}"), 80)
            .json();
        http_register(&consul.url(), &body).await;
    }
    let running = server_with(&consul.url(), |c| {
        c.watch_idle_timeout = Duration::from_secs(4);
        // Every service gets a blocking watch (beyond, they would be re-read on a timer).
        c.max_watches = 500;
    })
    .await;
    let dns = running.dns_addrs[0];
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        for i in 0..SERVICES {
            let name = format!("s{i}.service.consul.");
            assert_eq!(a_records(dns, &name).await, [format!("10.2.3.{i}")]);
        }
    }
    assert_eq!(
        metric(&running, "consul_dns_service_loads_total"),
        u64::from(SERVICES),
        "each loaded once: none idled out while asked for"
    );
    // The idle timeout, then a janitor round.
    eventually(Duration::from_secs(15), || async {
        running.syncer().live_watches() == 0
    })
    .await;
    running.shutdown().await;
}

/// The README's "register a container" request, against the demo catalog: the new service
/// answers at once, and node1 keeps its node meta (without `SkipNodeUpdate` the request
/// would replace node1's registration, meta and tagged addresses with it).
#[tokio::test]
async fn the_readmes_registration_keeps_the_nodes_meta() {
    let consul = emulator().await;
    consul.seed_demo();
    let running = server(&consul.url()).await;
    let dns = running.dns_addrs[0];
    let txt = || async {
        query(dns, "node1.node.consul.", RecordType::TXT)
            .await
            .answers
            .len()
    };
    eventually(std::time::Duration::from_secs(5), || async {
        txt().await > 0
    })
    .await;
    let before = txt().await;
    http_register(
        &consul.url(),
        &serde_json::json!({"Node":"node1","Address":"192.168.56.11","SkipNodeUpdate":true,
            "Service":{"ID":"app1","Service":"app","Address":"10.2.7.1","Port":8080}}),
    )
    .await;
    eventually(std::time::Duration::from_secs(2), || async {
        query(dns, "app.service.consul.", RecordType::A)
            .await
            .answers
            .len()
            == 1
    })
    .await;
    assert_eq!(txt().await, before, "node1's meta is kept");
    running.shutdown().await;
}
