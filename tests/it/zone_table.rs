//! The Consul zone against a view built by hand, in-process: no emulator, no sockets, no
//! Consul side at all (a `view::Source` of fixed data stands in for it). A table of
//! questions and the records expected as zone-file text, as CoreDNS's kubernetes plugin
//! tests its lookups; what the DNS side does with a view, apart from how the view is kept.

use crate::common;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use common::assert_records;
use consul_dns::config::ServiceTtl;
use consul_dns::config::SoaConfig;
use consul_dns::dns::answer::Answer;
use consul_dns::dns::consul_zone::{ConsulZone, ZoneOptions};
use consul_dns::metrics::Metrics;
use consul_dns::model::{AgentService, CheckStatus, HealthCheck, Node, ServiceEntry};
use consul_dns::view::freshness::{ServiceBasis, ServiceData, WatchHealth, WatchStamp};
use consul_dns::view::records::{RecordSettings, ServiceRecords, Settings};
use consul_dns::view::{
    Directory, DomainId, NodeTable, RemoteLists, ServiceRef, Source, SourceError, View,
};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RecordType};

/// A view of fixed data: the local datacenter `dc1` only, every service in memory.
struct FixedSource {
    view: Arc<View>,
    services: HashMap<String, ServiceData>,
    health: Arc<WatchHealth>,
    ticks: Arc<std::sync::atomic::AtomicU64>,
}

#[async_trait::async_trait]
impl Source for FixedSource {
    fn view(&self) -> &Arc<View> {
        &self.view
    }
    fn directory_health(&self) -> &Arc<WatchHealth> {
        &self.health
    }
    fn nodes_health(&self) -> &Arc<WatchHealth> {
        &self.health
    }
    fn datacenter_known(&self, _dc: &str) -> bool {
        false
    }
    fn instances_in_memory(&self, service_ref: ServiceRef<'_>) -> Option<ServiceData> {
        service_ref
            .is_local_service()
            .then(|| self.services.get(service_ref.key).cloned())
            .flatten()
    }
    async fn instances(&self, service_ref: ServiceRef<'_>) -> Result<ServiceData, SourceError> {
        self.instances_in_memory(service_ref)
            .ok_or_else(|| missing(format!("no data for {}", service_ref.name)))
    }
    async fn remote(&self, dc: &str) -> Result<Arc<RemoteLists>, SourceError> {
        Err(missing(format!("no datacenter {dc}")))
    }
    async fn prepared_query(
        &self,
        _name: &str,
        _dc: Option<&str>,
    ) -> Result<Option<Arc<ServiceRecords>>, SourceError> {
        Ok(None)
    }
    fn basis(&self, directory_version: u64, data: &ServiceData) -> ServiceBasis {
        ServiceBasis::new(
            &self.view,
            directory_version,
            &self.health,
            data,
            &self.ticks,
        )
    }
    fn service_at(&self, _ip: &IpAddr) -> Option<String> {
        None
    }
}

fn missing(what: String) -> SourceError {
    Arc::new(std::io::Error::other(what))
}

fn node(name: &str, address: &str, meta: &[(&str, &str)]) -> Node {
    Node {
        node: name.into(),
        address: address.into(),
        datacenter: "dc1".into(),
        meta: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

fn entry(node: &Node, service: &str, id: &str, address: &str, tags: &[&str]) -> ServiceEntry {
    ServiceEntry {
        node: node.clone(),
        service: AgentService {
            id: id.into(),
            service: service.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            address: address.into(),
            port: 80,
            ..Default::default()
        },
        checks: vec![HealthCheck {
            check_id: format!("service:{id}"),
            status: if id.ends_with("-down") {
                CheckStatus::Critical
            } else {
                CheckStatus::Passing
            },
            service_id: id.into(),
            service_name: service.into(),
        }],
    }
}

fn zone() -> ConsulZone {
    let consul = Name::from_ascii("consul.").unwrap();
    let settings = Arc::new(RecordSettings::new(Settings {
        domains: vec![consul.clone()],
        datacenter: "dc1".into(),
        node_meta_txt: true,
        ..Settings::default()
    }));
    let n1 = node("node1", "192.168.56.11", &[("rack", "r1")]);
    let n2 = node("node2", "192.168.56.12", &[]);
    let web = vec![
        entry(&n1, "web", "web1", "10.2.1.1", &["v1"]),
        entry(&n2, "web", "web2", "10.2.1.2", &["v2"]),
        entry(&n2, "web", "web3-down", "10.2.1.3", &["v1"]),
    ];
    let redis = vec![entry(&n2, "redis", "redis1", "", &[])];
    let view = View::new();
    view.set_datacenter("dc1");
    let directory = [("web", vec!["v1", "v2"]), ("redis", vec![])]
        .into_iter()
        .map(|(s, tags)| (s.to_string(), tags.into_iter().map(String::from).collect()))
        .collect();
    view.set_directory(Directory::build(directory, 1));
    view.set_nodes(NodeTable::build(&[n1, n2], 1, false));
    let data = |entries: &[ServiceEntry]| {
        let records = Arc::new(ServiceRecords::build(entries, 0, 1, &settings));
        ServiceData::read(&Arc::new(WatchStamp::new(0)), &Arc::default(), || records)
    };
    let services = HashMap::from([
        ("web".to_string(), data(&web)),
        ("redis".to_string(), data(&redis)),
    ]);
    let source = FixedSource {
        view,
        services,
        health: Arc::default(),
        ticks: Arc::default(),
    };
    let options = ZoneOptions {
        domains: vec![consul],
        node_ttl: 0,
        service_ttl: ServiceTtl::default(),
        soa: SoaConfig {
            refresh: 3600,
            retry: 600,
            expire: 86400,
            min_ttl: 0,
        },
        a_record_limit: 0,
        node_meta_txt: true,
        startup_wait: Duration::ZERO,
        max_stale: Duration::from_secs(3600),
        complete: false,
    };
    ConsulZone::new(options, Arc::new(source), Arc::new(Metrics::new()), None)
}

struct Row {
    qname: &'static str,
    qtype: RecordType,
    rcode: ResponseCode,
    answer: &'static [&'static str],
    additional: &'static [&'static str],
}

const fn row(
    qname: &'static str,
    qtype: RecordType,
    rcode: ResponseCode,
    answer: &'static [&'static str],
) -> Row {
    Row {
        qname,
        qtype,
        rcode,
        answer,
        additional: &[],
    }
}

#[test]
fn the_zone_answers_from_a_view_built_by_hand() {
    use RecordType::*;
    const OK: ResponseCode = ResponseCode::NoError;
    const NX: ResponseCode = ResponseCode::NXDomain;
    let rows = [
        row(
            "web.service.consul.",
            A,
            OK,
            &[
                "web.service.consul. 0 IN A 10.2.1.1",
                "web.service.consul. 0 IN A 10.2.1.2",
            ],
        ),
        row(
            "web.service.dc1.consul.",
            A,
            OK,
            &[
                "web.service.dc1.consul. 0 IN A 10.2.1.1",
                "web.service.dc1.consul. 0 IN A 10.2.1.2",
            ],
        ),
        row(
            "v1.web.service.consul.",
            A,
            OK,
            &["v1.web.service.consul. 0 IN A 10.2.1.1"],
        ),
        row("v3.web.service.consul.", A, NX, &[]),
        row("web.service.consul.", AAAA, OK, &[]),
        row("nosuch.service.consul.", A, NX, &[]),
        row("web.service.dc2.consul.", A, NX, &[]),
        row("service.consul.", A, OK, &[]),
        Row {
            additional: &[
                "0a020101.addr.dc1.consul. 0 IN A 10.2.1.1",
                "0a020102.addr.dc1.consul. 0 IN A 10.2.1.2",
                "node1.node.dc1.consul. 0 IN TXT rack=r1",
            ],
            ..row(
                "_web._tcp.service.consul.",
                SRV,
                OK,
                &[
                    "_web._tcp.service.consul. 0 IN SRV 1 1 80 0a020101.addr.dc1.consul.",
                    "_web._tcp.service.consul. 0 IN SRV 1 1 80 0a020102.addr.dc1.consul.",
                ],
            )
        },
        Row {
            additional: &["node2.node.dc1.consul. 0 IN A 192.168.56.12"],
            ..row(
                "redis.service.consul.",
                SRV,
                OK,
                &["redis.service.consul. 0 IN SRV 1 1 80 node2.node.dc1.consul."],
            )
        },
        Row {
            additional: &["node1.node.consul. 0 IN TXT rack=r1"],
            ..row(
                "node1.node.consul.",
                A,
                OK,
                &["node1.node.consul. 0 IN A 192.168.56.11"],
            )
        },
        row("node9.node.consul.", A, NX, &[]),
        row(
            "0a020101.addr.consul.",
            A,
            OK,
            &["0a020101.addr.consul. 0 IN A 10.2.1.1"],
        ),
        row(
            "consul.",
            SOA,
            OK,
            &["consul. 0 IN SOA ns.consul. hostmaster.consul. 2 3600 600 86400 0"],
        ),
    ];
    let zone = zone();
    for r in rows {
        let what = format!("{} {}", r.qname, r.qtype);
        let name = Name::from_ascii(r.qname).unwrap();
        let answer: Answer = zone
            .answer_now(&name, r.qtype, DomainId::PRIMARY)
            .unwrap_or_else(|| panic!("{what}: not answerable from memory"));
        assert_eq!(answer.rcode, r.rcode, "{what}");
        assert_records(&format!("{what}: answer"), &answer.answers, r.answer);
        assert_records(
            &format!("{what}: additional"),
            &answer.additionals,
            r.additional,
        );
        // Negative answers carry the SOA (the handler adds it).
        assert_eq!(answer.with_soa, r.answer.is_empty(), "{what}: SOA");
    }
}
