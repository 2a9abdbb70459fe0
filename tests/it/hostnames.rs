//! Services and nodes whose address is a hostname (dns-spec.md §6.1, §14 `resolveCNAME`):
//! answered with a CNAME followed by what the hostname resolves to, from the view when it
//! is inside the Consul domain (chains followed, bounded), else through the recursors (A
//! and AAAA both; hashicorp/consul#16918); SRV answers carry the hostname as the target and
//! its records in Additional; a service whose address names itself answers its node.

use crate::common;
use crate::program;

use common::case::*;
use common::*;
use hickory_proto::rr::RecordType;
use program::TempDir;
use serde_json::json;

/// Registers `service` on `node` (`node_addr`, no node meta) with the service address
/// `addr`, passing.
async fn register(consul: &str, node: &str, node_addr: &str, service: &str, addr: &str, port: u16) {
    let body = json!({
        "Node": node,
        "Address": node_addr,
        "Service": {"ID": service, "Service": service, "Address": addr, "Port": port},
        "Check": {"CheckID": format!("service:{service}"), "Name": "c", "Status": "passing", "ServiceID": service}
    });
    http_register(consul, &body).await;
}

async fn catalog(consul: &str) {
    register(consul, "node1", "192.168.56.11", "web", "10.2.1.1", 80).await;
    let web2 = json!({
        "Node": "node2", "Address": "192.168.56.12",
        "Service": {"ID": "web2", "Service": "web", "Address": "10.2.1.2", "Port": 80},
    });
    http_register(consul, &web2).await;
    register(
        consul,
        "node3",
        "192.168.56.13",
        "alias",
        "web.service.consul",
        8080,
    )
    .await;
    register(
        consul,
        "foo",
        "127.0.0.1",
        "selfish",
        "selfish.service.consul",
        9000,
    )
    .await;
    register(
        consul,
        "node4",
        "192.168.56.14",
        "ping",
        "pong.service.consul",
        1,
    )
    .await;
    register(
        consul,
        "node5",
        "192.168.56.15",
        "pong",
        "ping.service.consul",
        2,
    )
    .await;
    register(
        consul,
        "node6",
        "192.168.56.16",
        "ext",
        "www.example.internal",
        80,
    )
    .await;
    register(
        consul,
        "hostnode",
        "web.service.consul",
        "hn",
        "10.2.9.9",
        1,
    )
    .await;
}

const WEB_A: &[&str] = &[
    "web.service.consul. 0 IN A 10.2.1.1",
    "web.service.consul. 0 IN A 10.2.1.2",
];

fn internal_cases() -> Vec<Case> {
    use RecordType::*;
    vec![
        ok(
            "§6.1 rule 6: a service address naming a service: CNAME, then its addresses",
            "alias.service.consul.",
            A,
            &[
                "alias.service.consul. 0 IN CNAME web.service.consul.",
                "web.service.consul. 0 IN A 10.2.1.1",
                "web.service.consul. 0 IN A 10.2.1.2",
            ],
        ),
        with_extra(
            ok(
                "§6.1 FQDN record SRV: the hostname as target, its records in Additional",
                "alias.service.consul.",
                SRV,
                &["alias.service.consul. 0 IN SRV 1 1 8080 web.service.consul."],
            ),
            WEB_A,
        ),
        ok(
            "§6.1 AAAA of an IPv4-only target: the CNAME alone",
            "alias.service.consul.",
            AAAA,
            &["alias.service.consul. 0 IN CNAME web.service.consul."],
        ),
        ok(
            "§6.1 rule 5: a service address naming itself answers the node (TS ServiceLookupWithInternalServiceAddress)",
            "selfish.service.consul.",
            A,
            &["selfish.service.consul. 0 IN A 127.0.0.1"],
        ),
        with_extra(
            ok(
                "§6.1 rule 5 SRV: the node as the target, not the service itself",
                "selfish.service.consul.",
                SRV,
                &["selfish.service.consul. 0 IN SRV 1 1 9000 foo.node.dc1.consul."],
            ),
            &["foo.node.dc1.consul. 0 IN A 127.0.0.1"],
        ),
        with_extra(
            ok(
                "§6.1 rule 5, asked in the RFC 2782 form: the hostname is the target, resolved to the node",
                "_selfish._tcp.service.consul.",
                SRV,
                &["_selfish._tcp.service.consul. 0 IN SRV 1 1 9000 selfish.service.consul."],
            ),
            &["selfish.service.consul. 0 IN A 127.0.0.1"],
        ),
        ok(
            "§6.1 services naming each other: the chain ends (TD InifiniteRecursion)",
            "ping.service.consul.",
            A,
            &[
                "ping.service.consul. 0 IN CNAME pong.service.consul.",
                "pong.service.consul. 0 IN CNAME ping.service.consul.",
            ],
        ),
        ok(
            "§14 an external hostname without recursors: the CNAME alone (TS ExternalServiceLookup)",
            "ext.service.consul.",
            A,
            &["ext.service.consul. 0 IN CNAME www.example.internal."],
        ),
        ok(
            "§14 external SRV without recursors: no Additional",
            "ext.service.consul.",
            SRV,
            &["ext.service.consul. 0 IN SRV 1 1 80 www.example.internal."],
        ),
        ok(
            "§5 a node whose address is a hostname: CNAME, then its addresses (node_ttl)",
            "hostnode.node.consul.",
            A,
            &[
                "hostnode.node.consul. 0 IN CNAME web.service.consul.",
                "web.service.consul. 0 IN A 10.2.1.1",
                "web.service.consul. 0 IN A 10.2.1.2",
            ],
        ),
    ]
}

#[tokio::test]
async fn hostnames_inside_the_domain_are_followed_from_the_view() {
    let consul = emulator().await;
    catalog(&consul.url()).await;
    let running = server(&consul.url()).await;
    let dns = running.dns_addrs[0];
    eventually(std::time::Duration::from_secs(5), || async {
        rcode(&query(dns, "hostnode.node.consul.", RecordType::A).await)
            == hickory_proto::op::ResponseCode::NoError
    })
    .await;
    check_cases(dns, &internal_cases(), false).await;
    running.shutdown().await;
}

fn external_cases() -> Vec<Case> {
    use RecordType::*;
    const CHAIN: [&str; 2] = [
        "ext.service.consul. 0 IN CNAME www.example.internal.",
        "www.example.internal. 0 IN CNAME edge.example.internal.",
    ];
    vec![
        ok(
            "§14 resolveCNAME: the hostname's chain and addresses from the recursors, with the service TTL",
            "ext.service.consul.",
            A,
            &[CHAIN[0], CHAIN[1], "edge.example.internal. 0 IN A 192.0.2.10"],
        ),
        ok(
            "§14 AAAA is resolved too (Consul asks only A: hashicorp/consul#16918)",
            "ext.service.consul.",
            AAAA,
            &[CHAIN[0], CHAIN[1], "edge.example.internal. 0 IN AAAA 2001:db8::10"],
        ),
        with_extra(
            ok(
                "§6.1 SRV of an external hostname: its CNAME and addresses in Additional",
                "ext.service.consul.",
                SRV,
                &["ext.service.consul. 0 IN SRV 1 1 80 www.example.internal."],
            ),
            &[
                "www.example.internal. 0 IN CNAME edge.example.internal.",
                "edge.example.internal. 0 IN A 192.0.2.10",
                "edge.example.internal. 0 IN AAAA 2001:db8::10",
            ],
        ),
        ok(
            "§6.1 an internal chain still comes from the view",
            "alias.service.consul.",
            A,
            &[
                "alias.service.consul. 0 IN CNAME web.service.consul.",
                "web.service.consul. 0 IN A 10.2.1.1",
                "web.service.consul. 0 IN A 10.2.1.2",
            ],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostnames_outside_the_domain_are_resolved_by_the_recursors() {
    let consul = emulator().await;
    catalog(&consul.url()).await;
    // The recursor: consul-dns serving a static zone, on loopback.
    let zones = TempDir::new("hostnames");
    zones.write(
        "example.internal.zone",
        "$TTL 300\n@ IN SOA ns.example.internal. hostmaster.example.internal. 1 3600 600 86400 30\n\
         www IN CNAME edge\nedge IN A 192.0.2.10\nedge IN AAAA 2001:db8::10\n",
    );
    let dir = zones.path().to_path_buf();
    let upstream = server_with(&consul.url(), move |c| c.zones = Some(dir)).await;
    let up = upstream.dns_addrs[0];
    let running = server_with(&consul.url(), move |c| {
        c.recursors = vec![up];
        c.dns.recursor_timeout = std::time::Duration::from_millis(500);
    })
    .await;
    let dns = running.dns_addrs[0];
    eventually(std::time::Duration::from_secs(5), || async {
        query(dns, "ext.service.consul.", RecordType::A)
            .await
            .answers
            .len()
            == 3
    })
    .await;
    check_cases(dns, &external_cases(), true).await;
    // ANY holds four records: over UDP without EDNS, udp_answer_limit (3) cuts it (TC).
    for transport in [Transport::Udp, Transport::Tcp] {
        let ask = Ask {
            transport,
            edns: Some(1232),
            rd: true,
        };
        let m = query_with(dns, "ext.service.consul.", RecordType::ANY, ask).await;
        assert!(!m.metadata.truncation);
        assert_records(
            "§14 ANY: both families",
            &m.answers,
            &[
                "ext.service.consul. 0 IN CNAME www.example.internal.",
                "www.example.internal. 0 IN CNAME edge.example.internal.",
                "edge.example.internal. 0 IN A 192.0.2.10",
                "edge.example.internal. 0 IN AAAA 2001:db8::10",
            ],
        );
    }
    let cut = query(dns, "ext.service.consul.", RecordType::ANY).await;
    assert!(cut.metadata.truncation && cut.answers.len() == 3, "{cut:?}");
    running.shutdown().await;
    upstream.shutdown().await;
}
