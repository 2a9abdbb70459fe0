//! The whole UDP request path: datagram in, datagram out, through the code the socket loop
//! runs (header check, `Request::from_bytes`, FORMERR, the real handler with the demo
//! catalog synced from the in-tree Consul emulator, the UDP encoder).
#![no_main]

use hickory_proto::op::{Message, MessageType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let responses = consul_dns::fuzzing::request_datagrams(data);
    assert!(responses.len() <= 1, "{} responses", responses.len());
    let Some(bytes) = responses.first() else {
        return;
    };
    let response = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(e) => panic!("the response does not parse: {e}\n{bytes:02x?}"),
    };
    // Anything answered had at least a header.
    let id = u16::from_be_bytes([data[0], data[1]]);
    assert_eq!(response.metadata.id, id, "response id");
    assert_eq!(response.metadata.message_type, MessageType::Response);
    let edns = Message::from_vec(data).ok().and_then(|q| q.edns).is_some();
    let max = if edns { 1232 } else { 512 };
    assert!(
        bytes.len() <= max,
        "{} bytes (EDNS: {edns}) for {response:?}",
        bytes.len()
    );
});
