//! What Consul's DNS never got right, over real sockets: reverse lookups of container
//! addresses, several tags at once, hierarchical application names, weights that decide
//! which instances a cut answer keeps, and the overlay address filter.

use crate::common;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::json;

fn sorted_data(m: &hickory_proto::op::Message) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

async fn a(dns: std::net::SocketAddr, name: &str) -> (ResponseCode, Vec<String>) {
    let m = query_with(
        dns,
        name,
        RecordType::A,
        Ask {
            transport: Transport::Tcp,
            ..Ask::default()
        },
    )
    .await;
    (m.metadata.response_code, sorted_data(&m))
}

#[tokio::test]
async fn reverse_lookups_of_nodes_and_containers() {
    let consul = emulator().await;
    let url = consul.url();
    http_register(
        &url,
        &Instance::new("web", "web1")
            .on("node1", "192.168.56.11")
            .at("10.2.1.1", 80)
            .json(),
    )
    .await;
    let running = server(&url).await;
    let dns = running.dns_addrs[0];
    eventually(std::time::Duration::from_secs(5), || async {
        a(dns, "web.service.consul.").await.1.len() == 1
    })
    .await;

    let m = query(dns, "11.56.168.192.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(rcode(&m), ResponseCode::NoError);
    assert_records(
        "node PTR",
        &m.answers,
        &["11.56.168.192.in-addr.arpa. 0 IN PTR node1.node.dc1.consul."],
    );
    // The container's own address names its service (the service is in the view).
    let m = query(dns, "1.1.2.10.in-addr.arpa.", RecordType::PTR).await;
    assert_records(
        "container PTR",
        &m.answers,
        &["1.1.2.10.in-addr.arpa. 0 IN PTR web.service.dc1.consul."],
    );
    assert!(m.metadata.authoritative);
    // Unknown addresses, without recursors: NXDOMAIN with the Consul domain's SOA, as
    // Consul (dns-spec.md §13), whatever the type.
    for qtype in [RecordType::PTR, RecordType::ANY, RecordType::A] {
        let m = query(dns, "9.9.9.10.in-addr.arpa.", qtype).await;
        assert_eq!(rcode(&m), ResponseCode::NXDomain, "{qtype}");
        assert!(m.answers.is_empty());
        assert_records(
            "unknown address",
            &m.authorities,
            &["consul. 0 IN SOA ns.consul. hostmaster.consul. * 3600 600 86400 0"],
        );
    }
    // A known address asked another type: it exists, with no record of that type.
    let m = query(dns, "11.56.168.192.in-addr.arpa.", RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities.len(), 1, "NODATA carries the SOA");
    running.shutdown().await;
}

#[tokio::test]
async fn several_tags_at_once() {
    let consul = emulator().await;
    let url = consul.url();
    http_register(
        &url,
        &Instance::new("db", "db1")
            .on("n1", "192.168.0.1")
            .at("10.2.3.1", 5432)
            .tags(&["primary", "v2"])
            .json(),
    )
    .await;
    http_register(
        &url,
        &Instance::new("db", "db2")
            .on("n2", "192.168.0.2")
            .at("10.2.3.2", 5432)
            .tags(&["primary", "v1"])
            .json(),
    )
    .await;
    http_register(
        &url,
        &Instance::new("db", "db3")
            .on("n3", "192.168.0.3")
            .at("10.2.3.3", 5432)
            .tags(&["secondary", "v2"])
            .json(),
    )
    .await;
    http_register(
        &url,
        &Instance::new("db", "db4")
            .on("n4", "192.168.0.4")
            .at("10.2.3.4", 5432)
            .tags(&["v1.primary"])
            .json(),
    )
    .await;
    let running = server(&url).await;
    let dns = running.dns_addrs[0];
    assert_eq!(
        a(dns, "primary.v2.db.service.consul.").await.1,
        vec!["10.2.3.1"]
    );
    assert_eq!(
        a(dns, "v2.primary.db.service.consul.").await.1,
        vec!["10.2.3.1"]
    );
    assert_eq!(
        a(dns, "secondary.v1.db.service.consul.").await,
        (ResponseCode::NoError, vec![])
    );
    assert_eq!(
        a(dns, "primary.v3.db.service.consul.").await.0,
        ResponseCode::NXDomain
    );
    // Consul's meaning first: a tag with a dot in it, when the catalog has one.
    assert_eq!(
        a(dns, "v1.primary.db.service.consul.").await.1,
        vec!["10.2.3.4"]
    );
    running.shutdown().await;
}

#[tokio::test]
async fn hierarchical_application_names() {
    let consul = emulator().await;
    let url = consul.url();
    http_register(
        &url,
        &Instance::new("/web/customer1/site1", "site1-a")
            .on("n1", "192.168.0.1")
            .at("10.2.4.1", 80)
            .tags(&["canary"])
            .json(),
    )
    .await;
    http_register(
        &url,
        &Instance::new("/web/customer1/site2", "site2-a")
            .on("n2", "192.168.0.2")
            .at("10.2.4.2", 80)
            .json(),
    )
    .await;
    let running = server(&url).await;
    let dns = running.dns_addrs[0];
    assert_eq!(
        a(dns, "site1.customer1.web.service.consul.").await.1,
        vec!["10.2.4.1"]
    );
    assert_eq!(
        a(dns, "site2.customer1.web.service.dc1.consul.").await.1,
        vec!["10.2.4.2"]
    );
    assert_eq!(
        a(dns, "canary.site1.customer1.web.service.consul.").await.1,
        vec!["10.2.4.1"]
    );
    assert_eq!(
        a(dns, "site3.customer1.web.service.consul.").await.0,
        ResponseCode::NXDomain
    );
    running.shutdown().await;
}

#[tokio::test]
async fn cut_answers_keep_instances_by_weight() {
    let consul = emulator().await;
    let url = consul.url();
    let reg = |i: u8, status: &str| {
        json!({"Node": format!("n{i}"), "Address": format!("192.168.0.{i}"),
               "Service": {"ID": format!("api{i}"), "Service": "api", "Address": format!("10.2.2.{i}"), "Port": 80,
                           "Weights": {"Passing": 10, "Warning": 1}},
               "Check": {"CheckID": format!("c{i}"), "Name": "c", "Status": status, "ServiceID": format!("api{i}")}})
    };
    http_register(&url, &reg(1, "passing")).await;
    http_register(&url, &reg(2, "warning")).await;
    let running = server_with(&url, |c| c.dns.udp_answer_limit = 1).await;
    let dns = running.dns_addrs[0];
    let mut passing = 0;
    for _ in 0..300 {
        let m = query(dns, "api.service.consul.", RecordType::A).await;
        assert_eq!(m.answers.len(), 1);
        if m.answers[0].data.to_string() == "10.2.2.1" {
            passing += 1;
        }
    }
    // Weights 10 : 1 -> about 273 of 300; uniformly it would be about 150.
    assert!(
        passing > 230,
        "the passing instance was kept {passing} times out of 300"
    );
    running.shutdown().await;
}

#[tokio::test]
async fn internal_cidrs_answer_only_overlay_addresses() {
    let consul = emulator().await;
    let url = consul.url();
    // On the overlay.
    http_register(
        &url,
        &Instance::new("app", "app1")
            .on("n1", "192.168.0.1")
            .at("10.2.1.1", 80)
            .json(),
    )
    .await;
    // Registered with a bridge address, the overlay one in a tagged address.
    http_register(
        &url,
        &json!({"Node": "n2", "Address": "192.168.0.2",
                "Service": {"ID": "app2", "Service": "app", "Address": "172.17.0.2", "Port": 80,
                            "TaggedAddresses": {"weave": {"Address": "10.2.1.2", "Port": 80}}}}),
    )
    .await;
    // No overlay address at all: left out.
    http_register(
        &url,
        &Instance::new("app", "app3")
            .on("n3", "192.168.0.3")
            .at("172.17.0.3", 80)
            .json(),
    )
    .await;
    let running = server_with(&url, |c| {
        c.internal_cidrs = vec!["10.2.0.0/16".parse().unwrap()]
    })
    .await;
    let dns = running.dns_addrs[0];
    assert_eq!(
        a(dns, "app.service.consul.").await.1,
        vec!["10.2.1.1", "10.2.1.2"]
    );
    let tcp = Ask {
        transport: Transport::Tcp,
        ..Ask::default()
    };
    let srv = query_with(dns, "app.service.consul.", RecordType::SRV, tcp).await;
    assert_eq!(srv.answers.len(), 2);
    assert!(srv
        .additionals
        .iter()
        .all(|r| r.record_type() != RecordType::A || r.data.to_string().starts_with("10.2.")));
    let metrics = running.syncer().metrics();
    running.syncer().refresh_gauges();
    assert!(metrics
        .render()
        .contains("consul_dns_instances_outside_internal_cidrs 1\n"));
    running.shutdown().await;
}
