//! The conformance battery: Consul's DNS interface case by case. Each row is a question and
//! the expected rcode and sections as zone-file text, citing the section of
//! `dns-spec.md` (Consul's behaviour, legacy server) it checks; rows marked "(RFC)" are
//! deliberate differences listed in the README. Every row is asked three ways (UDP with
//! EDNS, UDP without, TCP) of the real server, which reads the emulator's catalog (two
//! datacenters) over real HTTP.

use crate::common;

use common::case::*;
use common::*;
use consul_emulator::{Emulator, EmulatorConfig};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use serde_json::json;

async fn catalog(consul: &Emulator) {
    let url = consul.url();
    let regs = [
        Instance::new("web", "web1")
            .on("node1", "192.168.56.11")
            .at("10.2.1.1", 80)
            .tags(&["v1", "http"])
            .json(),
        Instance::new("web", "web2")
            .on("node2", "192.168.56.12")
            .at("10.2.1.2", 80)
            .tags(&["v1"])
            .json(),
        Instance::new("web", "web3")
            .on("node3", "192.168.56.13")
            .at("10.2.1.3", 80)
            .tags(&["v2"])
            .status("critical")
            .json(),
        Instance::new("api", "api1")
            .on("node3", "192.168.56.13")
            .at("10.2.2.1", 8080)
            .status("warning")
            .json(),
        Instance::new("db", "db1")
            .on("node1", "192.168.56.11")
            .at("10.2.3.1", 5432)
            .tags(&["primary"])
            .json(),
        Instance::new("db", "db2")
            .on("node2", "192.168.56.12")
            .at("10.2.3.2", 5432)
            .tags(&["v1.replica"])
            .json(),
        Instance::new("redis", "redis1")
            .on("node2", "192.168.56.12")
            .at("", 6379)
            .json(),
        Instance::new("multi", "multi1")
            .on("node2", "192.168.56.12")
            .at("", 8001)
            .json(),
        Instance::new("multi", "multi2")
            .on("node2", "192.168.56.12")
            .at("", 8002)
            .json(),
        Instance::new("v6svc", "v6svc1")
            .on("node1", "192.168.56.11")
            .at("2001:db8::5", 9000)
            .json(),
        Instance::new("dead", "dead1")
            .on("node3", "192.168.56.13")
            .at("10.2.9.1", 1)
            .status("critical")
            .json(),
        Instance::new("consul", "consul")
            .on("server1", "127.0.0.2")
            .at("", 8300)
            .json(),
    ];
    for r in &regs {
        http_register(&url, r).await;
    }
    for (id, ip) in [("pair1", "10.2.6.1"), ("pair2", "10.2.6.2")] {
        let body = Instance::new("pair", id)
            .on("node1", "192.168.56.11")
            .at(ip, 80)
            .json();
        http_register(&url, &body).await;
    }
    let extra = [
        // A service with a virtual IP (transparent proxy).
        json!({"Node": "node1", "Address": "192.168.56.11", "SkipNodeUpdate": true,
               "Service": {"ID": "vip1", "Service": "vip", "Address": "10.2.8.1", "Port": 80,
                           "TaggedAddresses": {"consul-virtual": {"Address": "240.0.0.1", "Port": 20000}}}}),
        // A service whose address is a hostname.
        json!({"Node": "ext", "Address": "ext.example.com",
               "Service": {"ID": "search", "Service": "search", "Address": "search.example.com", "Port": 443}}),
        // web's sidecar proxy (Connect).
        json!({"Node": "node1", "Address": "192.168.56.11", "SkipNodeUpdate": true,
               "Service": {"ID": "web1-sidecar", "Service": "web-sidecar-proxy", "Kind": "connect-proxy",
                           "Address": "10.2.1.1", "Port": 21000,
                           "Proxy": {"DestinationServiceName": "web", "DestinationServiceID": "web1"}}}),
        // A service whose virtual IP is only on its sidecar proxy.
        json!({"Node": "node2", "Address": "192.168.56.12", "SkipNodeUpdate": true,
               "Service": {"ID": "mesh1", "Service": "mesh", "Address": "10.2.7.1", "Port": 80}}),
        json!({"Node": "node2", "Address": "192.168.56.12", "SkipNodeUpdate": true,
               "Service": {"ID": "mesh1-sidecar", "Service": "mesh-sidecar-proxy", "Kind": "connect-proxy",
                           "Address": "10.2.7.1", "Port": 21000,
                           "TaggedAddresses": {"consul-virtual": {"Address": "240.0.0.2", "Port": 80}},
                           "Proxy": {"DestinationServiceName": "mesh", "DestinationServiceID": "mesh1"}}}),
        // An ingress gateway in front of api.
        json!({"Node": "gw1", "Address": "192.168.56.20",
               "Service": {"ID": "ingress1", "Service": "ingress-gw", "Kind": "ingress-gateway",
                           "Address": "10.2.9.9", "Port": 8080}}),
        // A node with IPv6 only.
        json!({"Node": "v6node", "Address": "2001:db8::99"}),
        // The second datacenter.
        json!({"Datacenter": "dc2", "Node": "remote1", "Address": "10.9.0.1",
               "TaggedAddresses": {"wan": "198.18.0.1"},
               "Service": {"ID": "web-dc2", "Service": "web", "Address": "10.9.1.1", "Port": 8080,
                           "TaggedAddresses": {"wan": {"Address": "198.18.1.1", "Port": 80}}}}),
    ];
    for r in &extra {
        http_register(&url, r).await;
    }
    consul
        .put_config_entry(json!({"Kind": "ingress-gateway", "Name": "ingress-gw",
                                 "Listeners": [{"Port": 8080, "Protocol": "tcp", "Services": [{"Name": "api"}]}]}))
        .unwrap();
    consul
        .create_query(
            json!({"Name": "primary-db", "Service": {"Service": "db", "Tags": ["primary"]},
                             "DNS": {"TTL": "7s"}}),
        )
        .unwrap();
}

fn cases() -> Vec<Case> {
    use RecordType::*;
    let web = &[
        "web.service.consul. 0 IN A 10.2.1.1",
        "web.service.consul. 0 IN A 10.2.1.2",
    ];
    vec![
        // §3.4 standard service lookups, §7 critical instances left out.
        ok("§3.4 §7", "web.service.consul.", A, web),
        ok("§3.3 dc label", "web.service.dc1.consul.", A, &["web.service.dc1.consul. 0 IN A 10.2.1.1", "web.service.dc1.consul. 0 IN A 10.2.1.2"]),
        ok("§3.3 <dc>.dc pair", "web.service.dc1.dc.consul.", A, &["web.service.dc1.dc.consul. 0 IN A 10.2.1.1", "web.service.dc1.dc.consul. 0 IN A 10.2.1.2"]),
        ok("§3.4 tag", "v1.web.service.consul.", A, &["v1.web.service.consul. 0 IN A 10.2.1.1", "v1.web.service.consul. 0 IN A 10.2.1.2"]),
        ok("§4 case-insensitive, question's spelling", "HTTP.Web.service.consul.", A, &["HTTP.Web.service.consul. 0 IN A 10.2.1.1"]),
        ok("§3.4 dotted tag (legacy)", "v1.replica.db.service.consul.", A, &["v1.replica.db.service.consul. 0 IN A 10.2.3.2"]),
        nodata("§6 tag whose instances are all critical (RFC: NODATA)", "v2.web.service.consul.", A),
        nxdomain("§3.4 unknown tag", "nosuchtag.web.service.consul.", A),
        nxdomain("§3.4 extra tag (TS ExtraTags)", "dummy.primary.db.service.consul.", A),
        nodata("§12 no record of the type (TD NonExistentLookupEmptyAorAAAA)", "web.service.consul.", AAAA),
        nodata("§5 TXT of a service (RFC: no A records in a TXT answer)", "web.service.consul.", TXT),
        nodata("§5 MX of a service", "web.service.consul.", MX),
        ok("§5 ANY of a service: its addresses", "web.service.consul.", ANY, &["web.service.consul. 0 IN A 10.2.1.1", "web.service.consul. 0 IN A 10.2.1.2"]),
        // §6.3 SRV, §6.1 targets: service address -> <hex>.addr, node address -> <node>.node.
        with_extra(
            ok("§6.1 §6.3 SRV with .addr targets and node meta TXT", "web.service.consul.", SRV, &[
                "web.service.consul. 0 IN SRV 1 1 80 0a020101.addr.dc1.consul.",
                "web.service.consul. 0 IN SRV 1 1 80 0a020102.addr.dc1.consul.",
            ]),
            &["0a020101.addr.dc1.consul. 0 IN A 10.2.1.1", "0a020102.addr.dc1.consul. 0 IN A 10.2.1.2", "node1.node.dc1.consul. 0 IN TXT rack=r1", "node2.node.dc1.consul. 0 IN TXT rack=r1"],
        ),
        with_extra(
            ok("§3.4 RFC 2782 with a tag", "_web._http.service.consul.", SRV, &["_web._http.service.consul. 0 IN SRV 1 1 80 0a020101.addr.dc1.consul."]),
            &["0a020101.addr.dc1.consul. 0 IN A 10.2.1.1", "node1.node.dc1.consul. 0 IN TXT rack=r1"],
        ),
        with_extra(
            ok("§3.4 RFC 2782 _tcp: no tag filter", "_web._tcp.service.dc1.consul.", SRV, &[
                "_web._tcp.service.dc1.consul. 0 IN SRV 1 1 80 0a020101.addr.dc1.consul.",
                "_web._tcp.service.dc1.consul. 0 IN SRV 1 1 80 0a020102.addr.dc1.consul.",
            ]),
            &["0a020101.addr.dc1.consul. 0 IN A 10.2.1.1", "0a020102.addr.dc1.consul. 0 IN A 10.2.1.2", "node1.node.dc1.consul. 0 IN TXT rack=r1", "node2.node.dc1.consul. 0 IN TXT rack=r1"],
        ),
        with_extra(
            ok("§3.2 RFC 2782 without .service", "_db._primary.consul.", SRV, &["_db._primary.consul. 0 IN SRV 1 1 5432 0a020301.addr.dc1.consul."]),
            &["0a020301.addr.dc1.consul. 0 IN A 10.2.3.1", "node1.node.dc1.consul. 0 IN TXT rack=r1"],
        ),
        nxdomain("§3.4 too many parts for RFC 2782 (TS ServiceAddressWithTagLookup)", "banana._db._primary.service.dc1.consul.", SRV),
        ok("§6.1 no service address: the node's", "redis.service.consul.", A, &["redis.service.consul. 0 IN A 192.168.56.12"]),
        with_extra(
            ok("§6.1 node record target", "redis.service.consul.", SRV, &["redis.service.consul. 0 IN SRV 1 1 6379 node2.node.dc1.consul."]),
            &["node2.node.dc1.consul. 0 IN A 192.168.56.12", "node2.node.dc1.consul. 0 IN TXT rack=r1"],
        ),
        ok("§6.2 A deduplicated (TS ServiceLookup_Dedup)", "multi.service.consul.", A, &["multi.service.consul. 0 IN A 192.168.56.12"]),
        with_extra(
            ok("§6.3 SRV per port, one address (TS Dedup_SRV)", "multi.service.consul.", SRV, &[
                "multi.service.consul. 0 IN SRV 1 1 8001 node2.node.dc1.consul.",
                "multi.service.consul. 0 IN SRV 1 1 8002 node2.node.dc1.consul.",
            ]),
            &["node2.node.dc1.consul. 0 IN A 192.168.56.12", "node2.node.dc1.consul. 0 IN TXT rack=r1"],
        ),
        with_extra(
            ok("§6.3 two addresses on one node: its meta TXT once (syncExtra dedupe)", "pair.service.consul.", SRV, &[
                "pair.service.consul. 0 IN SRV 1 1 80 0a020601.addr.dc1.consul.",
                "pair.service.consul. 0 IN SRV 1 1 80 0a020602.addr.dc1.consul.",
            ]),
            &["0a020601.addr.dc1.consul. 0 IN A 10.2.6.1", "0a020602.addr.dc1.consul. 0 IN A 10.2.6.2", "node1.node.dc1.consul. 0 IN TXT rack=r1"],
        ),
        ok("§8 IPv6 service address for AAAA", "v6svc.service.consul.", AAAA, &["v6svc.service.consul. 0 IN AAAA 2001:db8::5"]),
        ok("§8 IPv6 service on an IPv4 node: A falls back to the node", "v6svc.service.consul.", A, &["v6svc.service.consul. 0 IN A 192.168.56.11"]),
        with_extra(
            ok("§6.1 IPv6 .addr target", "v6svc.service.consul.", SRV, &["v6svc.service.consul. 0 IN SRV 1 1 9000 20010db8000000000000000000000005.addr.dc1.consul."]),
            &["20010db8000000000000000000000005.addr.dc1.consul. 0 IN AAAA 2001:db8::5", "node1.node.dc1.consul. 0 IN TXT rack=r1"],
        ),
        ok("§7 warning is healthy by default (TS FilterCritical)", "api.service.consul.", A, &["api.service.consul. 0 IN A 10.2.2.1"]),
        with_extra(
            ok("§6.3 weight of a warning instance", "api.service.consul.", SRV, &["api.service.consul. 0 IN SRV 1 1 8080 0a020201.addr.dc1.consul."]),
            &["0a020201.addr.dc1.consul. 0 IN A 10.2.2.1", "node3.node.dc1.consul. 0 IN TXT rack=r1"],
        ),
        nodata("§7 all instances critical (RFC: NODATA, Consul NXDOMAIN; TS OnlyFailing)", "dead.service.consul.", A),
        nxdomain("§12 unknown service", "nosuch.service.consul.", A),
        nxdomain("§12 unknown service, SRV", "_nosuch._tcp.service.consul.", SRV),
        ok("§6.1 hostname address: CNAME", "search.service.consul.", A, &["search.service.consul. 0 IN CNAME search.example.com."]),
        // §3.3 datacenters.
        ok("§3.3 another datacenter", "web.service.dc2.consul.", A, &["web.service.dc2.consul. 0 IN A 10.9.1.1"]),
        with_extra(
            ok("§3.3 SRV in another datacenter", "web.service.dc2.consul.", SRV, &["web.service.dc2.consul. 0 IN SRV 1 1 8080 0a090101.addr.dc2.consul."]),
            &["0a090101.addr.dc2.consul. 0 IN A 10.9.1.1"],
        ),
        ok("§3.3 node in another datacenter", "remote1.node.dc2.consul.", A, &["remote1.node.dc2.consul. 0 IN A 10.9.0.1"]),
        nxdomain("§3.3 unknown name in another datacenter", "nosuch.service.dc2.consul.", A),
        nxdomain("§12 unknown datacenter (TD NonExistentDC)", "web.service.dc3.consul.", A),
        nxdomain("§3.3 unknown locality key", "web.service.dc1.foo.consul.", A),
        nxdomain("§3.3 three locality labels", "web.service.dc1.extra.more.consul.", A),
        nxdomain("§3.3 peers are not supported", "web.service.p1.peer.consul.", A),
        // §3.4 nodes, §5 node records.
        with_extra(
            ok("§5 node A with meta TXT in Additional", "node1.node.consul.", A, &["node1.node.consul. 0 IN A 192.168.56.11"]),
            &["node1.node.consul. 0 IN TXT rack=r1"],
        ),
        with_extra(
            ok("§4 node names case-insensitive (TN)", "NODE1.node.dc1.consul.", A, &["NODE1.node.dc1.consul. 0 IN A 192.168.56.11"]),
            &["NODE1.node.dc1.consul. 0 IN TXT rack=r1"],
        ),
        ok("§5 node TXT", "node1.node.dc1.consul.", TXT, &["node1.node.dc1.consul. 0 IN TXT rack=r1"]),
        ok("§5 node ANY: address and TXT", "node1.node.consul.", ANY, &["node1.node.consul. 0 IN A 192.168.56.11", "node1.node.consul. 0 IN TXT rack=r1"]),
        nodata("§5 node AAAA of an IPv4 node", "node1.node.consul.", AAAA),
        nodata("§5 node SRV (RFC: with SOA)", "node1.node.consul.", SRV),
        ok("§5 IPv6 node", "v6node.node.consul.", AAAA, &["v6node.node.consul. 0 IN AAAA 2001:db8::99"]),
        nxdomain("§12 unknown node", "nosuch.node.consul.", A),
        // §3.4 addr.
        ok("§3.4 addr IPv4", "0a020101.addr.dc1.consul.", A, &["0a020101.addr.dc1.consul. 0 IN A 10.2.1.1"]),
        ok("§3.4 addr without dc", "0a020101.addr.consul.", A, &["0a020101.addr.consul. 0 IN A 10.2.1.1"]),
        ok("§3.4 addr IPv6", "20010db8000000000000000000000005.addr.dc1.consul.", AAAA, &["20010db8000000000000000000000005.addr.dc1.consul. 0 IN AAAA 2001:db8::5"]),
        nodata("§5 addr of the other family", "0a020101.addr.dc1.consul.", AAAA),
        nxdomain("§3.4 addr bad hex", "zz020101.addr.dc1.consul.", A),
        nxdomain("§3.4 addr bad length (V1b)", "0a0201.addr.dc1.consul.", A),
        // §6.4 connect, ingress; §3.4 virtual.
        ok("§6.4 connect: the sidecar proxies", "web.connect.consul.", A, &["web.connect.consul. 0 IN A 10.2.1.1"]),
        with_extra(
            ok("§6.4 connect SRV: the proxy's port", "web.connect.consul.", SRV, &["web.connect.consul. 0 IN SRV 1 1 21000 0a020101.addr.dc1.consul."]),
            &["0a020101.addr.dc1.consul. 0 IN A 10.2.1.1", "node1.node.dc1.consul. 0 IN TXT rack=r1"],
        ),
        nxdomain("§6.4 connect with no proxy", "api.connect.consul.", A),
        ok("§6.4 ingress: the gateways in front of it (TS IngressServiceLookup)", "api.ingress.consul.", A, &["api.ingress.consul. 0 IN A 10.2.9.9"]),
        nxdomain("§6.4 ingress with no gateway", "web.ingress.consul.", A),
        ok("§3.4 virtual IP", "vip.virtual.consul.", A, &["vip.virtual.consul. 0 IN A 240.0.0.1"]),
        ok("§3.4 virtual IP carried by the sidecar proxy", "mesh.virtual.consul.", A, &["mesh.virtual.consul. 0 IN A 240.0.0.2"]),
        nodata("§3.4 service without a virtual IP (V1a: NOERROR)", "web.virtual.consul.", A),
        nxdomain("§3.4 virtual of an unknown service", "nosuch.virtual.consul.", A),
        // §6.5 prepared queries.
        ok("§6.5 prepared query, its TTL", "primary-db.query.consul.", A, &["primary-db.query.consul. 7 IN A 10.2.3.1"]),
        ok("§4 prepared query name case-insensitive", "PRIMARY-DB.query.dc1.consul.", A, &["PRIMARY-DB.query.dc1.consul. 7 IN A 10.2.3.1"]),
        with_extra(
            ok("§6.5 prepared query SRV", "primary-db.query.consul.", SRV, &["primary-db.query.consul. 7 IN SRV 1 1 5432 0a020301.addr.dc1.consul."]),
            &["0a020301.addr.dc1.consul. 7 IN A 10.2.3.1", "node1.node.dc1.consul. 7 IN TXT rack=r1"],
        ),
        with_extra(
            ok("§3.4 prepared query, RFC 2782 form", "_primary-db._tcp.query.consul.", SRV, &["_primary-db._tcp.query.consul. 7 IN SRV 1 1 5432 0a020301.addr.dc1.consul."]),
            &["0a020301.addr.dc1.consul. 7 IN A 10.2.3.1", "node1.node.dc1.consul. 7 IN TXT rack=r1"],
        ),
        nxdomain("§12 unknown prepared query", "nosuchquery.query.consul.", A),
        // §13 reverse lookups (the services above are in the view by now).
        ok("§13 PTR of a node address (TR)", "11.56.168.192.in-addr.arpa.", PTR, &["11.56.168.192.in-addr.arpa. 0 IN PTR node1.node.dc1.consul."]),
        ok("§13 PTR of a service (container) address", "2.1.2.10.in-addr.arpa.", PTR, &["2.1.2.10.in-addr.arpa. 0 IN PTR web.service.dc1.consul."]),
        ok("§13 PTR, node address wins (TR ServiceReverseLookupNodeAddress)", "2.0.0.127.in-addr.arpa.", PTR, &["2.0.0.127.in-addr.arpa. 0 IN PTR server1.node.dc1.consul."]),
        ok(
            "§13 PTR of an IPv6 service address",
            "5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
            PTR,
            &["5.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 0 IN PTR v6svc.service.dc1.consul."],
        ),
        ok(
            "§13 PTR of an IPv6 node",
            "9.9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
            PTR,
            &["9.9.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 0 IN PTR v6node.node.dc1.consul."],
        ),
        // §3.2 kinds and empty non-terminals (RFC 8020: NOERROR, for QNAME minimisation).
        nodata("§3.2 (RFC) empty non-terminal service", "service.consul.", A),
        nodata("§3.2 (RFC) empty non-terminal service.dc1", "service.dc1.consul.", A),
        nodata("§3.2 (RFC) empty non-terminal _tcp.service", "_tcp.service.consul.", A),
        nodata("§3.2 (RFC) empty non-terminal node", "node.consul.", A),
        nodata("§3.2 (RFC) empty non-terminal dc1", "dc1.consul.", A),
        nodata("§3.2 (RFC) empty non-terminal of another dc", "service.dc2.consul.", A),
        nxdomain("§3.2 empty non-terminal of an unknown dc", "service.dc3.consul.", A),
        nodata("§3.2 (RFC) empty non-terminal query", "query.consul.", A),
        nxdomain("§3.2 no kind (TD NonExistentLookup)", "foo.bar.baz.consul.", A),
        nxdomain("§3.2 unknown kind label", "web.services.consul.", A),
        // §2 apex, §12 SOA.
        Case {
            authority: &["consul. 0 IN NS server1.node.dc1.consul.", "consul. 0 IN NS consul-dev.node.dc1.consul."],
            additional: &["server1.node.dc1.consul. 0 IN A 127.0.0.2", "consul-dev.node.dc1.consul. 0 IN A 127.0.0.1"],
            ..ok("§2 SOA at the apex, the NS in Authority with glue", "consul.", SOA_T, &[SOA_LINE])
        },
        with_extra(
            ok("§12 NS: the consul servers, with glue", "consul.", NS, &["consul. 0 IN NS server1.node.dc1.consul.", "consul. 0 IN NS consul-dev.node.dc1.consul."]),
            &["server1.node.dc1.consul. 0 IN A 127.0.0.2", "consul-dev.node.dc1.consul. 0 IN A 127.0.0.1"],
        ),
        nodata("§2 A at the apex", "consul.", A),
        nodata("§2 (RFC) SOA below the apex: no data", "web.service.consul.", SOA_T),
        nodata("§2 (RFC) NS below the apex: no data", "web.service.consul.", NS),
        // §13 reverse lookups: the view's addresses; the rest, without recursors, NXDOMAIN.
        ok("§13 PTR of a node address", "11.56.168.192.in-addr.arpa.", PTR, &["11.56.168.192.in-addr.arpa. 0 IN PTR node1.node.dc1.consul."]),
        nxdomain("§13 PTR of an unknown address, no recursors (TR ReverseLookup_NotFound)", "9.9.9.10.in-addr.arpa.", PTR),
        nxdomain("§13 ANY of an unknown address, no recursors", "9.9.9.10.in-addr.arpa.", RecordType::ANY),
        nxdomain("§13 an unknown ip6.arpa name", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.", PTR),
        nodata("§13 (RFC) a known address asked A: no data", "11.56.168.192.in-addr.arpa.", A),
        nodata("§13 (RFC) a network's name: no data (RFC 8020, QNAME minimisation)", "56.168.192.in-addr.arpa.", PTR),
        nodata("§13 (RFC) in-addr.arpa itself: no data", "in-addr.arpa.", NS),
    ]
}

const SOA_T: RecordType = RecordType::SOA;

/// An emulator with datacenters dc1 (primary) and dc2; `translating`: it applies WAN
/// translation itself, as an agent with `translate_wan_addrs` does.
async fn two_datacenters(translating: bool) -> Emulator {
    let cfg = EmulatorConfig {
        extra_datacenters: vec!["dc2".into()],
        translate_wan_addrs: translating,
        ..EmulatorConfig::default()
    };
    Emulator::start(LOCAL.parse().unwrap(), cfg).await.unwrap()
}

async fn setup() -> (Emulator, consul_dns::app::Running) {
    let consul = two_datacenters(false).await;
    catalog(&consul).await;
    let running = server(&consul.url()).await;
    // The datacenter list is read at start; wait until dc2 is known.
    let dns = running.dns_addrs[0];
    eventually(std::time::Duration::from_secs(5), || async {
        rcode(&query(dns, "service.dc2.consul.", RecordType::A).await) == ResponseCode::NoError
    })
    .await;
    (consul, running)
}

#[tokio::test]
async fn conformance_battery() {
    let (_consul, running) = setup().await;
    let dns = running.dns_addrs[0];
    let all = cases();
    assert!(all.len() >= 80, "{} cases", all.len());
    check_cases(dns, &all, false).await;
    running.shutdown().await;
}

#[tokio::test]
async fn wan_translation_for_other_datacenters() {
    let consul = two_datacenters(false).await;
    catalog(&consul).await;
    let running = server_with(&consul.url(), |c| c.translate_wan_addrs = true).await;
    let dns = running.dns_addrs[0];
    eventually(std::time::Duration::from_secs(5), || async {
        rcode(&query(dns, "service.dc2.consul.", RecordType::A).await) == ResponseCode::NoError
    })
    .await;
    // §8: the service's wan address and port for the remote datacenter (TS WanTranslation).
    let m = query(dns, "web.service.dc2.consul.", RecordType::A).await;
    assert_records(
        "wan A",
        &m.answers,
        &["web.service.dc2.consul. 0 IN A 198.18.1.1"],
    );
    let m = query(dns, "web.service.dc2.consul.", RecordType::SRV).await;
    assert_records(
        "wan SRV",
        &m.answers,
        &["web.service.dc2.consul. 0 IN SRV 1 1 80 c6120101.addr.dc2.consul."],
    );
    let m = query(dns, "remote1.node.dc2.consul.", RecordType::A).await;
    assert_records(
        "wan node",
        &m.answers,
        &["remote1.node.dc2.consul. 0 IN A 198.18.0.1"],
    );
    // Never for the local datacenter.
    let m = query(dns, "db.service.consul.", RecordType::A).await;
    assert_eq!(m.answers.len(), 2);
    running.shutdown().await;
}

#[tokio::test]
async fn agent_translated_addresses_are_answered() {
    // The agent translates (X-Consul-Translate-Addresses): its addresses are answered.
    let consul = two_datacenters(true).await;
    consul
        .register(json!({"Datacenter": "dc2", "Node": "r1", "Address": "10.9.0.1",
                         "TaggedAddresses": {"wan": "198.18.0.1"},
                         "Service": {"ID": "s1", "Service": "svc", "Address": "10.9.1.1", "Port": 8080,
                                     "TaggedAddresses": {"wan": {"Address": "198.18.1.1", "Port": 80},
                                                         "wan_ipv4": {"Address": "198.18.1.2", "Port": 80}}}}))
        .unwrap();
    let running = server_with(&consul.url(), |c| c.translate_wan_addrs = true).await;
    let dns = running.dns_addrs[0];
    eventually(std::time::Duration::from_secs(5), || async {
        !query(dns, "svc.service.dc2.consul.", RecordType::A)
            .await
            .answers
            .is_empty()
    })
    .await;
    let m = query(dns, "svc.service.dc2.consul.", RecordType::A).await;
    let got = lines(&m.answers);
    // The agent already put a WAN address in Address; we answer it as given.
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("198.18.1."), "{got:?}");
    running.shutdown().await;
}

#[tokio::test]
async fn service_ttl_and_soa_settings() {
    let consul = two_datacenters(false).await;
    catalog(&consul).await;
    let running = server_with(&consul.url(), |c| {
        c.dns.node_ttl = 10;
        c.dns.service_ttl = consul_dns::config::ServiceTtl::new([
            ("web".to_string(), 30),
            ("d*".to_string(), 42),
            ("*".to_string(), 5),
        ]);
        c.dns.soa.min_ttl = 60;
        c.dns.soa.refresh = 100;
    })
    .await;
    let dns = running.dns_addrs[0];
    // §11: exact, longest prefix, "*"; node_ttl for nodes.
    let ttl = |m: &hickory_proto::op::Message| m.answers.first().map(|r| r.ttl);
    assert_eq!(
        ttl(&query(dns, "web.service.consul.", RecordType::A).await),
        Some(30)
    );
    assert_eq!(
        ttl(&query(dns, "db.service.consul.", RecordType::A).await),
        Some(42)
    );
    assert_eq!(
        ttl(&query(dns, "api.service.consul.", RecordType::A).await),
        Some(5)
    );
    assert_eq!(
        ttl(&query(dns, "node1.node.consul.", RecordType::A).await),
        Some(10)
    );
    // §12: SOA fields and its TTL (negative caching) from soa.
    let m = query(dns, "nosuch.service.consul.", RecordType::A).await;
    assert_records(
        "soa",
        &m.authorities,
        &["consul. 60 IN SOA ns.consul. hostmaster.consul. * 100 600 86400 60"],
    );
    running.shutdown().await;
}

#[tokio::test]
async fn alt_domain_is_served_identically() {
    let consul = two_datacenters(false).await;
    catalog(&consul).await;
    let running = server_with(&consul.url(), |c| {
        c.alt_domain = Some("consul.example.com.".into())
    })
    .await;
    let dns = running.dns_addrs[0];
    // §3.1: answers and generated names use the domain the question used.
    let m = query(dns, "web.service.consul.example.com.", RecordType::SRV).await;
    assert_records(
        "alt SRV",
        &m.answers,
        &[
            "web.service.consul.example.com. 0 IN SRV 1 1 80 0a020101.addr.dc1.consul.example.com.",
            "web.service.consul.example.com. 0 IN SRV 1 1 80 0a020102.addr.dc1.consul.example.com.",
        ],
    );
    let m = query(dns, "0a020101.addr.dc1.consul.example.com.", RecordType::A).await;
    assert_records(
        "alt addr",
        &m.answers,
        &["0a020101.addr.dc1.consul.example.com. 0 IN A 10.2.1.1"],
    );
    let m = query(dns, "nosuch.service.consul.example.com.", RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::NXDomain);
    assert_records(
        "alt SOA",
        &m.authorities,
        &["consul.example.com. 0 IN SOA ns.consul.example.com. hostmaster.consul.example.com. * 3600 600 86400 0"],
    );
    // The primary domain still answers.
    assert_eq!(
        query(dns, "web.service.consul.", RecordType::A)
            .await
            .answers
            .len(),
        2
    );
    running.shutdown().await;
}

#[tokio::test]
async fn soa_serial_moves_with_the_data() {
    let consul = two_datacenters(false).await;
    catalog(&consul).await;
    let running = server(&consul.url()).await;
    let dns = running.dns_addrs[0];
    let serial = || async {
        let m = query(dns, "consul.", RecordType::SOA).await;
        match &m.answers[0].data {
            hickory_proto::rr::RData::SOA(soa) => soa.serial,
            other => panic!("not a SOA: {other:?}"),
        }
    };
    let before = serial().await;
    http_register(
        &consul.url(),
        &Instance::new("fresh", "fresh1")
            .on("node9", "192.168.56.19")
            .at("10.2.9.19", 80)
            .json(),
    )
    .await;
    eventually(std::time::Duration::from_secs(5), || async {
        serial().await != before
    })
    .await;
    running.shutdown().await;
}

/// §15: an EDNS Client Subnet option is echoed with its family, address and source prefix,
/// and scope prefix 0 (the answer holds for every network), for services, nodes and
/// prepared queries, over UDP and TCP, also when the same question was answered before
/// without it (a stored response must not drop the option).
#[tokio::test]
async fn client_subnet_is_echoed_with_scope_zero() {
    use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
    use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
    use hickory_proto::rr::Name;

    let (_consul, running) = setup().await;
    let dns = running.dns_addrs[0];
    let ecs = |addr: &str, prefix: u8| ClientSubnet::new(addr.parse().unwrap(), prefix, 0);
    for (name, qtype) in [
        ("web.service.consul.", RecordType::A),
        ("web.service.consul.", RecordType::SRV),
        ("node1.node.consul.", RecordType::A),
        ("primary-db.query.consul.", RecordType::A),
        ("nosuch.service.consul.", RecordType::A),
    ] {
        // Answered and stored without the option first.
        for _ in 0..2 {
            query_with(
                dns,
                name,
                qtype,
                Ask {
                    edns: Some(1232),
                    ..Ask::default()
                },
            )
            .await;
        }
        for transport in [Transport::Udp, Transport::Tcp] {
            for subnet in [ecs("192.0.2.0", 24), ecs("2001:db8::", 56)] {
                let mut msg = Message::new(rand::random(), MessageType::Query, OpCode::Query);
                msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
                let mut edns = Edns::new();
                edns.set_max_payload(1232);
                edns.options_mut().insert(EdnsOption::Subnet(subnet));
                msg.set_edns(edns);
                let (reply, _) = exchange(dns, &msg, transport).await;
                let what = format!("{name} {qtype} over {transport:?}");
                let echoed = reply
                    .edns
                    .as_ref()
                    .and_then(|e| e.option(EdnsCode::Subnet).cloned());
                let Some(EdnsOption::Subnet(echoed)) = echoed else {
                    panic!("{what}: no Client Subnet echoed: {reply:?}");
                };
                assert_eq!(echoed.addr(), subnet.addr(), "{what}");
                assert_eq!(echoed.source_prefix(), subnet.source_prefix(), "{what}");
                assert_eq!(echoed.scope_prefix(), 0, "{what}");
            }
        }
    }
    running.shutdown().await;
}
