//! Answer preparation (`ServiceRecords::build`), run on every catalog change of a watched
//! service: for a 3-instance and a 100-instance service.
//!
//! `cargo bench --bench prepared`

use std::hint::black_box;
use std::time::Duration;

use consul_dns::model::{AgentService, CheckStatus, HealthCheck, Node, ServiceEntry};
use consul_dns::view::records::{RecordSettings, ServiceRecords, Settings};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use hickory_server::proto::rr::Name;

fn settings() -> Settings {
    Settings {
        domains: vec![Name::from_ascii("consul.").expect("valid domain")],
        datacenter: "dc1".into(),
        only_passing: false,
        node_ttl: 0,
        node_meta_txt: true,
        internal_cidrs: Vec::new(),
        wan: false,
    }
}

/// `n` instances of `web` as registrator registers containers: a service address on
/// 10.2.0.0/16, a port, two tags, the node's serfHealth and a service check (one in ten
/// critical), nodes with one meta key.
fn entries(n: u32) -> Vec<ServiceEntry> {
    (0..n)
        .map(|i| {
            let id = format!("web-{i}");
            let node = format!("node{}", i % 50);
            ServiceEntry {
                node: Node {
                    node: node.clone(),
                    address: format!("192.168.56.{}", i % 50 + 10),
                    datacenter: "dc1".into(),
                    meta: [("rack".to_string(), format!("r{}", i % 3))].into(),
                    ..Default::default()
                },
                service: AgentService {
                    id: id.clone(),
                    service: "web".into(),
                    tags: vec!["v1".into(), "http".into()],
                    address: format!("10.2.{}.{}", i / 250, i % 250 + 1),
                    port: 8080,
                    ..Default::default()
                },
                checks: vec![
                    HealthCheck {
                        check_id: "serfHealth".into(),
                        status: CheckStatus::Passing,
                        ..Default::default()
                    },
                    HealthCheck {
                        check_id: format!("service:{id}"),
                        status: if i % 10 == 9 {
                            CheckStatus::Critical
                        } else {
                            CheckStatus::Passing
                        },
                        service_id: id,
                        service_name: "web".into(),
                    },
                ],
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let settings = std::sync::Arc::new(RecordSettings::new(settings()));
    let mut g = c.benchmark_group("prepared_service_build");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for n in [3u32, 100] {
        let e = entries(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &e, |b, e| {
            b.iter(|| ServiceRecords::build(black_box(e), 0, 7, black_box(&settings)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
