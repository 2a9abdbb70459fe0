//! Query-name parsing (`consul_dns::dns::name::parse`), once per query on the hot path.
//!
//! `cargo bench --bench name_parse`

use std::hint::black_box;
use std::time::Duration;

use consul_dns::dns::name::parse;
use criterion::{criterion_group, criterion_main, Criterion};

/// Typical names, as labels without the domain (lower-cased, as the zone passes them).
const NAMES: &[(&str, &[&str], bool)] = &[
    ("svc A", &["web", "service"], false),
    ("svc.dc A", &["web", "service", "dc1"], false),
    ("tag.svc A", &["primary", "db", "service"], false),
    ("svc SRV", &["svc-123", "service"], true),
    ("rfc2782 SRV", &["_web", "_tcp", "service", "dc1"], true),
    ("node A", &["node1", "node", "dc1"], false),
    ("addr A", &["0a020001", "addr", "dc1"], false),
    ("unknown A", &["nosvc-42", "service"], false),
    ("invalid A", &["foo", "bar", "baz"], false),
];

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("name_parse");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for (what, labels, srv) in NAMES {
        g.bench_function(*what, |b| {
            b.iter(|| parse(black_box(labels), black_box(*srv)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
