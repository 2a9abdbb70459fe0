//! Consul names and records, table-driven: each case is a question and the expected
//! sections as zone-file text, asked over real UDP and TCP sockets of the real server, which
//! reads the emulator's catalog over real HTTP.

mod common;

use common::*;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::json;

struct Case {
    qname: &'static str,
    qtype: RecordType,
    rcode: ResponseCode,
    answer: &'static [&'static str],
    authority: &'static [&'static str],
    additional: &'static [&'static str],
}

const SOA_LINE: &str = "consul. 0 IN SOA ns.consul. hostmaster.consul. * 3600 600 86400 0";
const NOERROR: ResponseCode = ResponseCode::NoError;
const NXDOMAIN: ResponseCode = ResponseCode::NXDomain;

fn case(
    qname: &'static str,
    qtype: RecordType,
    rcode: ResponseCode,
    answer: &'static [&'static str],
) -> Case {
    Case {
        qname,
        qtype,
        rcode,
        answer,
        authority: &[],
        additional: &[],
    }
}

fn nodata(qname: &'static str, qtype: RecordType) -> Case {
    Case {
        authority: &[SOA_LINE],
        ..case(qname, qtype, NOERROR, &[])
    }
}

fn nxdomain(qname: &'static str, qtype: RecordType) -> Case {
    Case {
        authority: &[SOA_LINE],
        ..case(qname, qtype, NXDOMAIN, &[])
    }
}

async fn catalog(consul: &str) {
    let regs = [
        instance(
            "node1",
            "192.168.56.11",
            "web",
            "web1",
            "10.2.1.1",
            80,
            &["v1", "http"],
            "passing",
        ),
        instance(
            "node2",
            "192.168.56.12",
            "web",
            "web2",
            "10.2.1.2",
            80,
            &["v1"],
            "passing",
        ),
        instance(
            "node3",
            "192.168.56.13",
            "web",
            "web3",
            "10.2.1.3",
            80,
            &["v2"],
            "critical",
        ),
        instance(
            "node3",
            "192.168.56.13",
            "api",
            "api1",
            "10.2.2.1",
            8080,
            &[],
            "warning",
        ),
        instance(
            "node1",
            "192.168.56.11",
            "db",
            "db1",
            "10.2.3.1",
            5432,
            &["primary"],
            "passing",
        ),
        instance(
            "node2",
            "192.168.56.12",
            "redis",
            "redis1",
            "",
            6379,
            &[],
            "passing",
        ),
        instance(
            "node2",
            "192.168.56.12",
            "multi",
            "multi1",
            "",
            8001,
            &[],
            "passing",
        ),
        instance(
            "node2",
            "192.168.56.12",
            "multi",
            "multi2",
            "",
            8002,
            &[],
            "passing",
        ),
        instance(
            "node1",
            "192.168.56.11",
            "v6svc",
            "v6svc1",
            "2001:db8::5",
            9000,
            &[],
            "passing",
        ),
        instance(
            "node3",
            "192.168.56.13",
            "dead",
            "dead1",
            "10.2.9.1",
            1,
            &[],
            "critical",
        ),
        instance(
            "server1",
            "127.0.0.2",
            "consul",
            "consul",
            "",
            8300,
            &[],
            "passing",
        ),
    ];
    for r in &regs {
        http_register(consul, r).await;
    }
    // A service with a virtual IP (transparent proxy).
    http_register(
        consul,
        &json!({"Node": "node1", "Address": "192.168.56.11", "SkipNodeUpdate": true,
                "Service": {"ID": "vip1", "Service": "vip", "Address": "10.2.8.1", "Port": 80,
                            "TaggedAddresses": {"consul-virtual": {"Address": "240.0.0.1", "Port": 20000}}}}),
    )
    .await;
    // A service registered with the whole web cluster as a hostname.
    http_register(
        consul,
        &json!({"Node": "ext", "Address": "ext.example.com",
                "Service": {"ID": "search", "Service": "search", "Address": "search.example.com", "Port": 443}}),
    )
    .await;
}

fn cases() -> Vec<Case> {
    use RecordType::*;
    vec![
        case(
            "web.service.consul.",
            A,
            NOERROR,
            &[
                "web.service.consul. 0 IN A 10.2.1.1",
                "web.service.consul. 0 IN A 10.2.1.2",
            ],
        ),
        case(
            "web.service.dc1.consul.",
            A,
            NOERROR,
            &[
                "web.service.dc1.consul. 0 IN A 10.2.1.1",
                "web.service.dc1.consul. 0 IN A 10.2.1.2",
            ],
        ),
        case(
            "web.service.dc1.dc.consul.",
            A,
            NOERROR,
            &[
                "web.service.dc1.dc.consul. 0 IN A 10.2.1.1",
                "web.service.dc1.dc.consul. 0 IN A 10.2.1.2",
            ],
        ),
        case(
            "v1.web.service.consul.",
            A,
            NOERROR,
            &[
                "v1.web.service.consul. 0 IN A 10.2.1.1",
                "v1.web.service.consul. 0 IN A 10.2.1.2",
            ],
        ),
        case(
            "HTTP.Web.service.consul.",
            A,
            NOERROR,
            &["HTTP.Web.service.consul. 0 IN A 10.2.1.1"],
        ),
        // The only v2 instance is critical: the tag exists, no healthy instance has it.
        nodata("v2.web.service.consul.", A),
        nxdomain("nosuchtag.web.service.consul.", A),
        nodata("web.service.consul.", AAAA),
        nodata("web.service.consul.", TXT),
        Case {
            additional: &[
                "0a020101.addr.dc1.consul. 0 IN A 10.2.1.1",
                "0a020102.addr.dc1.consul. 0 IN A 10.2.1.2",
                "node1.node.dc1.consul. 0 IN TXT rack=r1",
                "node2.node.dc1.consul. 0 IN TXT rack=r1",
            ],
            ..case(
                "web.service.consul.",
                SRV,
                NOERROR,
                &[
                    "web.service.consul. 0 IN SRV 1 1 80 0a020101.addr.dc1.consul.",
                    "web.service.consul. 0 IN SRV 1 1 80 0a020102.addr.dc1.consul.",
                ],
            )
        },
        Case {
            additional: &[
                "0a020101.addr.dc1.consul. 0 IN A 10.2.1.1",
                "node1.node.dc1.consul. 0 IN TXT rack=r1",
            ],
            ..case(
                "_web._http.service.consul.",
                SRV,
                NOERROR,
                &["_web._http.service.consul. 0 IN SRV 1 1 80 0a020101.addr.dc1.consul."],
            )
        },
        Case {
            additional: &[
                "0a020101.addr.dc1.consul. 0 IN A 10.2.1.1",
                "0a020102.addr.dc1.consul. 0 IN A 10.2.1.2",
                "node1.node.dc1.consul. 0 IN TXT rack=r1",
                "node2.node.dc1.consul. 0 IN TXT rack=r1",
            ],
            ..case(
                "_web._tcp.service.dc1.consul.",
                SRV,
                NOERROR,
                &[
                    "_web._tcp.service.dc1.consul. 0 IN SRV 1 1 80 0a020101.addr.dc1.consul.",
                    "_web._tcp.service.dc1.consul. 0 IN SRV 1 1 80 0a020102.addr.dc1.consul.",
                ],
            )
        },
        // No service address: the node's address, and the SRV target is the node's name.
        case(
            "redis.service.consul.",
            A,
            NOERROR,
            &["redis.service.consul. 0 IN A 192.168.56.12"],
        ),
        Case {
            additional: &[
                "node2.node.dc1.consul. 0 IN A 192.168.56.12",
                "node2.node.dc1.consul. 0 IN TXT rack=r1",
            ],
            ..case(
                "redis.service.consul.",
                SRV,
                NOERROR,
                &["redis.service.consul. 0 IN SRV 1 1 6379 node2.node.dc1.consul."],
            )
        },
        // Two instances on one node: one A, two SRV, one address in Additional.
        case(
            "multi.service.consul.",
            A,
            NOERROR,
            &["multi.service.consul. 0 IN A 192.168.56.12"],
        ),
        Case {
            additional: &[
                "node2.node.dc1.consul. 0 IN A 192.168.56.12",
                "node2.node.dc1.consul. 0 IN TXT rack=r1",
            ],
            ..case(
                "multi.service.consul.",
                SRV,
                NOERROR,
                &[
                    "multi.service.consul. 0 IN SRV 1 1 8001 node2.node.dc1.consul.",
                    "multi.service.consul. 0 IN SRV 1 1 8002 node2.node.dc1.consul.",
                ],
            )
        },
        // IPv6 service on an IPv4 node: AAAA is the service, A falls back to the node.
        case(
            "v6svc.service.consul.",
            AAAA,
            NOERROR,
            &["v6svc.service.consul. 0 IN AAAA 2001:db8::5"],
        ),
        case(
            "v6svc.service.consul.",
            A,
            NOERROR,
            &["v6svc.service.consul. 0 IN A 192.168.56.11"],
        ),
        // A warning check is healthy enough by default (only_passing = false).
        case(
            "api.service.consul.",
            A,
            NOERROR,
            &["api.service.consul. 0 IN A 10.2.2.1"],
        ),
        nodata("dead.service.consul.", A),
        nxdomain("nosuch.service.consul.", A),
        nxdomain("web.service.dc2.consul.", A),
        // A hostname address is a CNAME.
        case(
            "search.service.consul.",
            A,
            NOERROR,
            &["search.service.consul. 0 IN CNAME search.example.com."],
        ),
        Case {
            additional: &["node1.node.consul. 0 IN TXT rack=r1"],
            ..case(
                "node1.node.consul.",
                A,
                NOERROR,
                &["node1.node.consul. 0 IN A 192.168.56.11"],
            )
        },
        case(
            "node1.node.dc1.consul.",
            TXT,
            NOERROR,
            &["node1.node.dc1.consul. 0 IN TXT rack=r1"],
        ),
        nodata("node1.node.consul.", AAAA),
        nxdomain("nosuch.node.consul.", A),
        case(
            "0a020101.addr.dc1.consul.",
            A,
            NOERROR,
            &["0a020101.addr.dc1.consul. 0 IN A 10.2.1.1"],
        ),
        nodata("0a020101.addr.dc1.consul.", AAAA),
        nxdomain("zz020101.addr.dc1.consul.", A),
        // Empty non-terminals answer NOERROR/no data, so QNAME-minimising resolvers work.
        nodata("service.consul.", A),
        nodata("service.dc1.consul.", A),
        nodata("_tcp.service.consul.", A),
        nodata("node.consul.", A),
        nxdomain("service.dc2.consul.", A),
        // Virtual IPs.
        case(
            "vip.virtual.consul.",
            A,
            NOERROR,
            &["vip.virtual.consul. 0 IN A 240.0.0.1"],
        ),
        nodata("web.virtual.consul.", A),
        nxdomain("nosuch.virtual.consul.", A),
        // The apex.
        case("consul.", SOA, NOERROR, &[SOA_LINE]),
        Case {
            // The emulator's own agent node runs a Consul server too, as a real dev agent does.
            additional: &[
                "server1.node.dc1.consul. 0 IN A 127.0.0.2",
                "consul-dev.node.dc1.consul. 0 IN A 127.0.0.1",
            ],
            ..case(
                "consul.",
                NS,
                NOERROR,
                &[
                    "consul. 0 IN NS server1.node.dc1.consul.",
                    "consul. 0 IN NS consul-dev.node.dc1.consul.",
                ],
            )
        },
        nodata("consul.", A),
        nxdomain("foo.bar.baz.consul.", A),
    ]
}

#[tokio::test]
async fn consul_names_over_udp_and_tcp() {
    let consul = emulator().await;
    catalog(&consul.url()).await;
    let running = server(&consul.url()).await;
    let dns = running.dns_addrs[0];
    for transport in [Transport::Udp, Transport::Tcp] {
        for c in cases() {
            let what = format!("{} {} over {transport:?}", c.qname, c.qtype);
            let ask = Ask {
                transport,
                edns: Some(1232),
                ..Ask::default()
            };
            let m = query_with(dns, c.qname, c.qtype, ask).await;
            assert_eq!(rcode(&m), c.rcode, "{what}: rcode");
            assert!(m.metadata.authoritative, "{what}: AA");
            assert!(!m.metadata.truncation, "{what}: TC");
            assert_records(&format!("{what}: answer"), &m.answers, c.answer);
            assert_records(&format!("{what}: authority"), &m.authorities, c.authority);
            assert_records(&format!("{what}: additional"), &m.additionals, c.additional);
        }
    }
    running.shutdown().await;
}

#[tokio::test]
async fn answer_keeps_the_question_spelling() {
    let consul = emulator().await;
    catalog(&consul.url()).await;
    let running = server(&consul.url()).await;
    let m = query(running.dns_addrs[0], "WeB.SeRvIcE.CoNsUl.", RecordType::A).await;
    assert_eq!(m.answers.len(), 2);
    for r in &m.answers {
        assert_eq!(r.name.to_string(), "WeB.SeRvIcE.CoNsUl.");
    }
    running.shutdown().await;
}

#[tokio::test]
async fn outside_the_domain_is_refused() {
    let consul = emulator().await;
    let running = server(&consul.url()).await;
    for transport in [Transport::Udp, Transport::Tcp] {
        let ask = Ask {
            transport,
            ..Ask::default()
        };
        let m = query_with(running.dns_addrs[0], "example.com.", RecordType::A, ask).await;
        assert_eq!(rcode(&m), ResponseCode::Refused);
        assert!(m.answers.is_empty());
    }
    running.shutdown().await;
}

#[tokio::test]
async fn answers_are_shuffled() {
    let consul = emulator().await;
    for i in 1..=6 {
        let ip = format!("10.2.5.{i}");
        http_register(
            &consul.url(),
            &instance(
                &format!("n{i}"),
                &format!("192.168.1.{i}"),
                "big",
                &format!("big{i}"),
                &ip,
                80,
                &[],
                "passing",
            ),
        )
        .await;
    }
    let running = server(&consul.url()).await;
    let mut orders = std::collections::HashSet::new();
    for _ in 0..20 {
        let ask = Ask {
            edns: Some(1232),
            ..Ask::default()
        };
        let m = query_with(
            running.dns_addrs[0],
            "big.service.consul.",
            RecordType::A,
            ask,
        )
        .await;
        assert_eq!(m.answers.len(), 6);
        orders.insert(m.answers.iter().map(|r| r.to_string()).collect::<Vec<_>>());
    }
    assert!(orders.len() >= 2, "20 answers, always the same order");
    running.shutdown().await;
}
