//! The user-space work of a UDP query before its response is written: reading the
//! question from the datagram (`Question::read`), then working the answer out from the
//! view (`DnsHandler::answer_ahead`), against a server synced with the emulator's demo
//! catalog. No socket: this is what the process spends per query besides the system calls.
//!
//! `cargo bench --bench answer_path`

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use consul_dns::app;
use consul_dns::config::Config;
use consul_dns::dns::handler::Answering;
use consul_dns::dns::response_cache::{ClientShape, Question};
use consul_emulator::{Emulator, EmulatorConfig};
use criterion::{criterion_group, criterion_main, Criterion};
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};

/// A query as dnsperf sends it (RD, EDNS 4096).
fn datagram(name: &str, qtype: RecordType) -> Vec<u8> {
    let name = Name::from_ascii(name).expect("a valid name");
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name, qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    m.set_edns(edns);
    m.to_vec().expect("encodes")
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let (emulator, running) = runtime.block_on(async {
        let emulator = Emulator::start(local, EmulatorConfig::default())
            .await
            .expect("emulator");
        emulator.seed_demo();
        let running = app::start(&Config::for_tests(&emulator.url()))
            .await
            .expect("server");
        let ready = running
            .syncer()
            .view()
            .wait_ready(Duration::from_secs(30))
            .await;
        assert!(ready, "synced with the emulator");
        (emulator, running)
    });
    let handler = Arc::clone(running.handler());

    let mut g = c.benchmark_group("answer_path");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (what, name, qtype) in [
        ("unknown A", "nosvc-42.service.consul.", RecordType::A),
        ("service A", "web.service.consul.", RecordType::A),
        ("service SRV", "web.service.consul.", RecordType::SRV),
    ] {
        let bytes = datagram(name, qtype);
        // The first answer loads the service; the benchmark measures the ones after.
        let ahead = Question::read(&bytes, 4096, ClientShape::default)
            .and_then(|q| handler.answer_ahead(q.name(), q.qtype()));
        if let Some(Answering::Pending(pending)) = ahead {
            runtime.block_on(pending);
        }
        g.bench_function(what, |b| {
            b.iter(|| {
                let q = Question::read(black_box(&bytes), 4096, ClientShape::default)
                    .expect("a question");
                match handler.answer_ahead(q.name(), q.qtype()) {
                    Some(Answering::Ready(answered)) => answered,
                    _ => panic!("{name} is not answered from memory"),
                }
            })
        });
    }
    g.finish();
    drop(running);
    drop(emulator);
}

criterion_group!(benches, bench);
criterion_main!(benches);
