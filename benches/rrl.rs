//! Response-rate limiting (`consul_dns::dns::rrl`), checked once per UDP query when on.
//!
//! `cargo bench --bench rrl`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use consul_dns::config::RrlConfig;
use consul_dns::dns::rrl::Rrl;
use criterion::{criterion_group, criterion_main, Criterion};

fn rrl() -> Rrl {
    let settings = RrlConfig {
        responses_per_second: 100,
        window: Duration::from_secs(5),
        slip: 2,
        ipv4_prefix_length: 24,
        ipv6_prefix_length: 56,
    };
    match Rrl::new(settings) {
        Some(r) => r,
        None => panic!("a rate of 100 enables RRL"),
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("rrl");
    g.warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let r = rrl();
    let client = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    g.bench_function("one client (limited)", |b| {
        b.iter(|| r.check(black_box(client)))
    });
    let r = rrl();
    let v6: IpAddr = IpAddr::V6(
        "2001:db8::1"
            .parse()
            .unwrap_or(std::net::Ipv6Addr::LOCALHOST),
    );
    g.bench_function("one IPv6 client", |b| b.iter(|| r.check(black_box(v6))));
    // A spoofed flood: a new /24 every query, many times the table (eviction each time).
    let r = rrl();
    let mut n = 0u32;
    g.bench_function("spoofed sources", |b| {
        b.iter(|| {
            n = n.wrapping_add(1 << 8);
            r.check(black_box(IpAddr::V4(Ipv4Addr::from(n))))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
