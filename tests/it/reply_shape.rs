//! Every reply well-formed, whatever its size: a property test over services of 1 to 600
//! instances (with and without service addresses, IPv4 and IPv6 mixed, nodes with up to
//! 40 meta keys), asked A, AAAA, SRV, ANY and TXT, without EDNS and with payloads from 512
//! to 65,535, over UDP and TCP. Each reply is decoded by hickory and by `domain`
//! (`common::decode`); a UDP reply fits what the client takes, carries an OPT when the
//! query had one, sets TC exactly when it holds fewer answers than the full set, and its
//! additional section holds only records of the SRV targets it answers.
//!
//! `PROPTEST_CASES=500 cargo test --test reply_shape` runs a longer sweep.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use consul_dns::app::Running;
use consul_emulator::Emulator;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_json::{json, Map, Value};

/// The most a UDP reply carries here (`max_udp_payload`, DNS Flag Day 2020).
const MAX_UDP: usize = 1232;
/// The default `udp_answer_limit`.
const UDP_ANSWER_LIMIT: usize = 3;

#[derive(Debug, Clone)]
struct Service {
    instances: usize,
    /// Instances have a service address (SRV targets `<hex>.addr…`); else the node's
    /// address is answered (targets `<node>.node…`, with the node's meta TXT).
    service_address: bool,
    /// Every `k`-th instance (or node) has an IPv6 address; None: IPv4 only.
    v6_every: Option<usize>,
    /// Instances per node (distinct ports).
    per_node: usize,
    meta_keys: usize,
}

impl Service {
    fn is_v6(&self, i: usize) -> bool {
        let unit = if self.service_address {
            i
        } else {
            i / self.per_node
        };
        self.v6_every.is_some_and(|k| unit % k == 0)
    }

    fn address(v6: bool, i: usize, v4_base: u8) -> String {
        if v6 {
            format!("fd00::{:x}:{:x}", v4_base, i + 1)
        } else {
            format!("10.{v4_base}.{}.{}", i / 250, 1 + i % 250)
        }
    }

    fn register(&self, emu: &Emulator, name: &str) {
        for i in 0..self.instances {
            let node = i / self.per_node;
            let (service, (node_address, _)) = self.addresses(i);
            let mut meta = Map::new();
            for k in 0..self.meta_keys {
                meta.insert(
                    format!("key{k}"),
                    json!(format!("value-{k}-of-node-{node}")),
                );
            }
            let id = format!("{name}-{i}");
            let address = service.map(|(a, _)| a).unwrap_or_default();
            let body = json!({
                "Node": format!("{name}-n{node}"),
                "Address": node_address,
                "NodeMeta": Value::Object(meta),
                "Service": {"ID": id, "Service": name, "Address": address, "Port": 1000 + i},
                "Check": {"CheckID": format!("service:{id}"), "Name": "c", "Status": "passing", "ServiceID": id}
            });
            emu.register(body).expect("registers");
        }
    }

    /// The addresses an instance is registered with: its service address (if any) and
    /// its node's, each with whether it is IPv6.
    fn addresses(&self, i: usize) -> (Option<(String, bool)>, (String, bool)) {
        let node = i / self.per_node;
        let node_v6 = !self.service_address && self.is_v6(i);
        let service = self
            .service_address
            .then(|| (Self::address(self.is_v6(i), i, 2), self.is_v6(i)));
        (service, (Self::address(node_v6, node, 3), node_v6))
    }

    /// Answers in the full reply to `qtype`: one per distinct address chosen as Consul
    /// chooses (the service address if its family fits, else the node's), one per instance
    /// for SRV (each has its own port), none for TXT.
    fn full(&self, qtype: RecordType) -> usize {
        if qtype == RecordType::SRV {
            return self.instances;
        }
        let fits = |v6: bool| match qtype {
            RecordType::A => !v6,
            RecordType::AAAA => v6,
            RecordType::ANY => true,
            _ => false,
        };
        let mut chosen: Vec<String> = (0..self.instances)
            .filter_map(|i| {
                let (service, node) = self.addresses(i);
                [service, Some(node)]
                    .into_iter()
                    .flatten()
                    .find(|(_, v6)| fits(*v6))
                    .map(|(a, _)| a)
            })
            .collect();
        chosen.sort();
        chosen.dedup();
        chosen.len()
    }
}

fn service() -> impl Strategy<Value = Service> {
    (
        prop_oneof![1usize..=10, 11usize..=100, 101usize..=600],
        any::<bool>(),
        prop_oneof![Just(None), (1usize..=3).prop_map(Some)],
        1usize..=3,
        prop_oneof![Just(0usize), 1usize..=5, 6usize..=40],
    )
        .prop_map(
            |(instances, service_address, v6_every, per_node, meta_keys)| Service {
                instances,
                service_address,
                v6_every,
                per_node,
                meta_keys,
            },
        )
}

fn qtype() -> impl Strategy<Value = RecordType> {
    prop::sample::select(vec![
        RecordType::A,
        RecordType::AAAA,
        RecordType::SRV,
        RecordType::ANY,
        RecordType::TXT,
    ])
}

fn edns() -> impl Strategy<Value = Option<u16>> {
    prop::sample::select(vec![
        None,
        Some(512),
        Some(1232),
        Some(1400),
        Some(4096),
        Some(65535),
    ])
}

/// The SRV targets a reply answers with.
fn srv_targets(m: &Message) -> Vec<Name> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(srv.target.clone()),
            _ => None,
        })
        .collect()
}

/// Every A/AAAA of the additional section is the address of an SRV target answered.
fn additionals_belong(m: &Message) -> Result<(), TestCaseError> {
    let targets = srv_targets(m);
    for r in &m.additionals {
        if matches!(r.record_type(), RecordType::A | RecordType::AAAA) {
            prop_assert!(
                targets.contains(&r.name),
                "additional {} is not an SRV target answered",
                r
            );
        }
    }
    Ok(())
}

async fn check(
    emu: &Emulator,
    dns: SocketAddr,
    svc: &Service,
    qtype: RecordType,
    edns: Option<u16>,
    name: &str,
) -> Result<(), TestCaseError> {
    svc.register(emu, name);
    let qname = format!("{name}.service.consul.");
    let tcp_ask = Ask {
        transport: Transport::Tcp,
        edns,
        rd: true,
    };
    // The service list is watched: wait until the new service is known.
    let mut tcp = query_with(dns, &qname, qtype, tcp_ask).await;
    for _ in 0..500 {
        if rcode(&tcp) != ResponseCode::NXDomain {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        tcp = query_with(dns, &qname, qtype, tcp_ask).await;
    }
    prop_assert_eq!(rcode(&tcp), ResponseCode::NoError);
    let full = svc.full(qtype);

    // TCP carries everything, but for Consul's cut at 65,523 bytes.
    prop_assert_eq!(tcp.metadata.truncation, tcp.answers.len() < full);
    if tcp.metadata.truncation {
        prop_assert!(!tcp.answers.is_empty(), "a cut TCP reply keeps answers");
    } else {
        prop_assert_eq!(tcp.answers.len(), full);
    }
    prop_assert_eq!(tcp.edns.is_some(), edns.is_some());
    additionals_belong(&tcp)?;

    let udp_ask = Ask {
        transport: Transport::Udp,
        edns,
        rd: true,
    };
    let (udp, bytes) = query_bytes(dns, &qname, qtype, udp_ask).await;
    let limit = edns.map_or(512, |p| usize::from(p).clamp(512, MAX_UDP));
    prop_assert!(
        bytes.len() <= limit,
        "UDP reply of {} bytes over {}",
        bytes.len(),
        limit
    );
    prop_assert_eq!(
        udp.edns.is_some(),
        edns.is_some(),
        "OPT iff the query had one"
    );
    prop_assert_eq!(
        udp.metadata.truncation,
        udp.answers.len() < full,
        "TC exactly when answers were left out ({} of {})",
        udp.answers.len(),
        full
    );
    if edns.is_none() {
        prop_assert!(udp.answers.len() <= UDP_ANSWER_LIMIT);
    }
    if full > 0 && edns.is_some() {
        prop_assert!(!udp.answers.is_empty(), "a cut reply keeps what fits");
    }
    additionals_belong(&udp)?;
    Ok(())
}

#[test]
fn every_reply_fits_and_parses() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (emu, running): (Emulator, Running) = runtime.block_on(async {
        let emu = emulator().await;
        let running = server(&emu.url()).await;
        (emu, running)
    });
    let dns = running.dns_addrs[0];
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(48);
    let mut runner = TestRunner::new(RunnerConfig {
        cases,
        failure_persistence: None,
        ..RunnerConfig::default()
    });
    let n = AtomicUsize::new(0);
    let result = runner.run(&(service(), qtype(), edns()), |(svc, qtype, edns)| {
        let name = format!("s{}", n.fetch_add(1, Ordering::Relaxed));
        runtime.block_on(check(&emu, dns, &svc, qtype, edns, &name))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    drop(running);
}
