//! One test per fuzzing finding (fuzz/README.md): the input that failed, through the same
//! library function the fuzz target calls, and where it matters the same case end to end.

use crate::common;

use consul_dns::dns::answer::Answer;
use consul_dns::fuzzing::{consul_body, Body};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};
use serde_json::json;

use common::*;

/// Every record of every answer encodes and decodes back (what the `consul_json` target
/// checks).
fn assert_encodable(answers: &[Answer]) {
    assert!(!answers.is_empty(), "the body decoded to answers");
    let mut records = 0;
    for a in answers {
        for r in a.answers.iter().chain(&a.authority).chain(&a.additionals) {
            let bytes = r
                .to_bytes()
                .unwrap_or_else(|e| panic!("{r:?} does not encode: {e}"));
            Record::from_bytes(&bytes).unwrap_or_else(|e| panic!("{r:?} does not decode: {e}"));
            records += 1;
        }
    }
    assert!(records > 0);
}

/// Finding 1 (consul_json): a node meta value longer than 255 bytes made a TXT
/// character-string that cannot be encoded, so every response carrying the node's meta
/// (its TXT, its A with `enable_additional_node_meta_txt`, SRV on it) was SERVFAIL.
#[test]
fn long_node_meta_encodes() {
    let nodes = include_bytes!("fuzz_regressions/consul_json-long-node-meta-nodes.json");
    let health = include_bytes!("fuzz_regressions/consul_json-long-node-meta-health.json");
    for variant in [0, 1] {
        assert_encodable(&consul_body(Body::Nodes, nodes, variant));
    }
    assert_encodable(&consul_body(Body::Health, health, 0));
}

#[tokio::test]
async fn long_node_meta_is_answered_end_to_end() {
    let consul = emulator().await;
    let value = "v".repeat(500);
    consul
        .register(json!({
            "Node": "bignode", "Address": "192.168.9.1", "NodeMeta": {"k": value},
            "Service": {"ID": "big1", "Service": "big", "Port": 80}
        }))
        .expect("registers");
    let server = server(&consul.url()).await;
    let addr = server.dns_addrs[0];
    let tcp = Ask {
        transport: Transport::Tcp,
        ..Ask::default()
    };
    let txt = query_with(addr, "bignode.node.consul", RecordType::TXT, tcp).await;
    assert_eq!(txt.metadata.response_code, ResponseCode::NoError);
    let RData::TXT(t) = &txt.answers[0].data else {
        panic!("{txt:?}");
    };
    assert!(t.txt_data.iter().all(|s| s.len() <= 255));
    assert_eq!(t.txt_data.concat(), format!("k={value}").into_bytes());
    for (name, qtype) in [
        ("bignode.node.consul", RecordType::A),
        ("big.service.consul", RecordType::SRV),
    ] {
        let m = query_with(addr, name, qtype, tcp).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        assert_eq!(m.answers.len(), 1, "{name}: {m:?}");
        assert!(
            m.additionals
                .iter()
                .any(|r| r.record_type() == RecordType::TXT),
            "{name}: meta TXT in Additional: {m:?}"
        );
    }
    server.shutdown().await;
}

/// Finding 2 (request): a question name compressed with a pointer into the header (here
/// to offset 2). hickory echoes the question section byte for byte, so the pointer landed
/// on the response's own flags: a response that does not parse. Now FORMERR without the
/// question.
#[test]
fn question_pointing_into_the_header_is_formerr() {
    let query = include_bytes!("fuzz_regressions/request-question-pointer-into-header.bin");
    let response = consul_dns::fuzzing::request(query).expect("answered");
    let m = Message::from_vec(&response).expect("the response parses");
    assert_eq!(m.metadata.id, u16::from_be_bytes([query[0], query[1]]));
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert!(m.queries.is_empty());
}

/// Finding 3 (request, after replies were fitted by whole records): a datagram of 16
/// questions (0x0010) without EDNS. hickory answers it FORMERR echoing every question: 517
/// bytes, over what a client without EDNS takes, and no record to leave out. Now the
/// header alone, with TC.
#[test]
fn a_question_section_over_512_bytes_is_answered_by_the_header() {
    let query = include_bytes!("fuzz_regressions/request-many-questions.bin");
    let response = consul_dns::fuzzing::request(query).expect("answered");
    assert!(response.len() <= 512, "{} bytes", response.len());
    strict_counts(&response).expect("the response parses strictly");
    let m = Message::from_vec(&response).expect("the response parses");
    assert_eq!(m.metadata.id, u16::from_be_bytes([query[0], query[1]]));
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert!(m.metadata.truncation);
}
