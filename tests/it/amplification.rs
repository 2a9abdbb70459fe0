//! A UDP reply to a client outside `allow_recursion` (whose address may be forged) is at
//! most four times the size of its query, and its answers are all or nothing (an empty TC
//! reply when they do not fit, as NSD and Knot answer); clients in `allow_recursion` keep
//! Consul's partial answers (issue 18, item 7). Every reply read strictly.

use crate::common;

use std::path::PathBuf;

use common::*;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

const AMPLIFICATION: usize = 4;

async fn register_catalog(consul: &str) {
    for i in 0..60u8 {
        let ip = format!("10.2.7.{i}");
        http_register(
            consul,
            &Instance::new("big", &format!("big-{i}"))
                .on(&format!("bignode{i}"), &format!("192.168.7.{i}"))
                .at(&ip, 80)
                .json(),
        )
        .await;
        // No service address: SRV targets are the nodes, with their A records.
        http_register(
            consul,
            &Instance::new("nodes", &format!("nodes-{i}"))
                .on(&format!("bignode{i}"), &format!("192.168.7.{i}"))
                .json(),
        )
        .await;
    }
    http_register(
        consul,
        &Instance::new("few", "few-1").at("10.2.8.1", 80).json(),
    )
    .await;
}

fn message(name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
    let mut msg = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        msg.set_edns(e);
    }
    msg
}

const NAMES: [&str; 9] = [
    "big.service.consul.",
    "nodes.service.consul.",
    "_nodes._tcp.service.consul.",
    "few.service.consul.",
    "bignode1.node.consul.",
    "consul.",
    "nope.service.consul.",
    "cluster.internal.",
    "node1.cluster.internal.",
];
const TYPES: [RecordType; 7] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::ANY,
    RecordType::SRV,
    RecordType::TXT,
    RecordType::SOA,
    RecordType::NS,
];
const PAYLOADS: [Option<u16>; 4] = [None, Some(512), Some(1232), Some(4096)];

async fn start(trusted: bool) -> (consul_emulator::Emulator, consul_dns::app::Running) {
    let consul = emulator().await;
    register_catalog(&consul.url()).await;
    let zones = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("zones");
    let running = server_with(&consul.url(), move |c| {
        c.zones = Some(zones);
        c.watch_all_services = true;
        if !trusted {
            // The tests' clients (127.0.0.1) are outside it.
            c.allow_recursion = vec!["10.99.0.0/16".parse().unwrap()];
        }
    })
    .await;
    let dns = running.dns_addrs[0];
    eventually(std::time::Duration::from_secs(10), || async {
        query(dns, "big.service.consul.", RecordType::A)
            .await
            .answers
            .len()
            == 3
    })
    .await;
    (consul, running)
}

#[tokio::test]
async fn untrusted_clients_get_at_most_four_times_their_query() {
    let (_consul, running) = start(false).await;
    let dns = running.dns_addrs[0];
    let mut worst = (0.0f64, String::new());
    let mut truncated = 0;
    // Twice: the second round is answered from the stored responses.
    for _round in 0..2 {
        for name in NAMES {
            for qtype in TYPES {
                for edns in PAYLOADS {
                    let msg = message(name, qtype, edns);
                    let sent = msg.to_vec().unwrap().len();
                    let (reply, bytes) = exchange(dns, &msg, Transport::Udp).await;
                    let what = format!("{name} {qtype} EDNS {edns:?}");
                    let ratio = bytes.len() as f64 / sent as f64;
                    assert!(
                        bytes.len() <= AMPLIFICATION * sent,
                        "{what}: {} bytes for a {sent}-byte query",
                        bytes.len()
                    );
                    // Cut by size: no records. (Without EDNS, `udp_answer_limit`, 3 by
                    // default, still applies first, as in Consul.)
                    if reply.metadata.truncation && (edns.is_some() || reply.answers.len() > 3) {
                        truncated += 1;
                        assert!(
                            reply.answers.is_empty() && reply.additionals.is_empty(),
                            "{what}: a cut answer has no records: {reply:?}"
                        );
                    }
                    if ratio > worst.0 {
                        worst = (ratio, what);
                    }
                }
            }
        }
    }
    assert!(truncated > 0, "nothing needed cutting");
    eprintln!("worst ratio {:.2} ({})", worst.0, worst.1);

    // What fits is answered whole.
    let (reply, _) = exchange(
        dns,
        &message("few.service.consul.", RecordType::A, Some(1232)),
        Transport::Udp,
    )
    .await;
    assert!(!reply.metadata.truncation);
    assert_eq!(reply.answers.len(), 1);
    // What does not is answered whole over TCP.
    let (reply, _) = exchange(
        dns,
        &message("big.service.consul.", RecordType::A, Some(1232)),
        Transport::Tcp,
    )
    .await;
    assert_eq!(reply.answers.len(), 60);
    running.shutdown().await;
}

#[tokio::test]
async fn trusted_clients_keep_consuls_partial_answers() {
    let (_consul, running) = start(true).await;
    let dns = running.dns_addrs[0];
    let (reply, bytes) = exchange(
        dns,
        &message("big.service.consul.", RecordType::A, Some(1232)),
        Transport::Udp,
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(
        reply.answers.len() > 3,
        "a partial answer, not the count limit"
    );
    assert!(bytes.len() > AMPLIFICATION * 60, "{} bytes", bytes.len());
    let (reply, _) = exchange(
        dns,
        &message("_nodes._tcp.service.consul.", RecordType::SRV, Some(512)),
        Transport::Udp,
    )
    .await;
    assert!(reply.metadata.truncation);
    assert!(!reply.answers.is_empty(), "a partial SRV answer");
    running.shutdown().await;
}
