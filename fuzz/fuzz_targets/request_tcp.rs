//! The TCP request path: a stream of bytes in (any framing: lengths that lie, frames cut
//! short, zero lengths, several queries pipelined), the server's stream out, through the
//! real listener (`dns::tcp`) of a server synced from the in-tree Consul emulator. What the
//! server writes must be whole length-prefixed frames, each a message that reads as a
//! strict client reads it (NLnet Labs' `domain`), answering a query the stream carried,
//! with no more answers than whole queries sent.
#![no_main]

use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;

#[path = "../../tests/it/common/strict.rs"]
mod strict;

/// The whole frames at the start of `bytes`: (message) each, stopping at a zero length
/// (the server closes there) or a frame cut short.
fn frames(mut bytes: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut out = Vec::new();
    while bytes.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
        if len == 0 || bytes.len() < 2 + len {
            break;
        }
        out.push(&bytes[2..2 + len]);
        bytes = &bytes[2 + len..];
    }
    (out, bytes)
}

fuzz_target!(|data: &[u8]| {
    let Some(written) = consul_dns::fuzzing::request_stream(data) else {
        return;
    };
    let (queries, _) = frames(data);
    let (answers, rest) = frames(&written);
    assert!(rest.is_empty(), "a frame cut short: {rest:02x?}");
    assert!(
        answers.len() <= queries.len(),
        "{} answers to {} queries",
        answers.len(),
        queries.len()
    );
    for bytes in answers {
        if let Err(e) = strict::strict_counts(bytes) {
            panic!("an answer does not parse strictly: {e}\n{bytes:02x?}");
        }
        let response = match Message::from_vec(bytes) {
            Ok(m) => m,
            Err(e) => panic!("an answer does not parse: {e}\n{bytes:02x?}"),
        };
        assert_eq!(response.metadata.message_type, MessageType::Response);
        let id = response.metadata.id.to_be_bytes();
        assert!(
            queries.iter().any(|q| q.len() >= 2 && q[..2] == id),
            "answer id {:?} matches no query",
            response.metadata.id
        );
    }
});
