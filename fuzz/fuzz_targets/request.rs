//! The whole UDP request path: datagram in, datagram out, through the code the socket loop
//! runs (header check, `Request::from_bytes`, FORMERR, the real handler with the demo
//! catalog synced from the in-tree Consul emulator, the UDP encoder). Whatever is answered
//! must read as a strict client reads it (NLnet Labs' `domain`, not hickory, which built
//! it): counts that match the records, nothing after them, within the size the query
//! allows, an OPT record exactly when the query had one, and addresses in the additional
//! section only for names the answer points at.
#![no_main]

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/it/common/strict.rs"]
mod strict;

/// The largest UDP reply the server sends (`max_udp_payload`).
const MAX_UDP: usize = 1232;

fuzz_target!(|data: &[u8]| {
    let responses = consul_dns::fuzzing::request_datagrams(data);
    assert!(responses.len() <= 1, "{} responses", responses.len());
    let Some(bytes) = responses.first() else {
        return;
    };
    if let Err(e) = strict::strict_counts(bytes) {
        panic!("the response does not parse strictly: {e}\n{bytes:02x?}");
    }
    let response = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(e) => panic!("the response does not parse: {e}\n{bytes:02x?}"),
    };
    // Anything answered had at least a header.
    let id = u16::from_be_bytes([data[0], data[1]]);
    assert_eq!(response.metadata.id, id, "response id");
    assert_eq!(response.metadata.message_type, MessageType::Response);
    let query = Message::from_vec(data).ok();
    let payload = query.as_ref().and_then(|q| q.edns.as_ref()).map(|e| e.max_payload());
    let max = payload.map_or(512, |p| usize::from(p).clamp(512, MAX_UDP));
    assert!(
        bytes.len() <= max,
        "{} bytes (EDNS payload {payload:?}) for {response:?}",
        bytes.len()
    );
    if query.is_some() && response.metadata.response_code != ResponseCode::FormErr {
        assert_eq!(
            response.edns.is_some(),
            payload.is_some(),
            "an OPT record exactly when the query had one: {response:?}"
        );
    }
    let targets: Vec<&Name> = response
        .answers
        .iter()
        .chain(&response.authorities)
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(&srv.target),
            RData::NS(ns) => Some(&ns.0),
            RData::MX(mx) => Some(&mx.exchange),
            RData::CNAME(c) => Some(&c.0),
            _ => None,
        })
        .collect();
    for r in &response.additionals {
        if matches!(r.record_type(), RecordType::A | RecordType::AAAA) {
            assert!(
                targets.contains(&&r.name),
                "additional {r} is not a target of the answer: {response:?}"
            );
        }
    }
});
