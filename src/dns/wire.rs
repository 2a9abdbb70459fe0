//! Encoding with hickory, shared by the UDP and TCP servers: the handler's answers, the
//! FORMERR of a message whose header is all that reads, and the empty truncated answer that
//! response-rate limiting "slips" to a UDP client.

use hickory_server::net::NetError;
use hickory_server::proto::op::{Edns, Header, MessageType, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::{BinDecoder, BinEncodable, BinEncoder};
use hickory_server::server::{Request, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use tracing::warn;

use super::handler::servfail_header;

/// The UDP payload advertised in a slipped response's OPT record.
const SLIP_EDNS_PAYLOAD: u16 = 1232;

/// Encodes within `max` bytes; what does not fit is cut and TC set (hickory's encoder). A
/// response that cannot be encoded becomes a bare SERVFAIL.
pub(super) fn encode<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    max: u16,
) -> Result<(ResponseInfo, Vec<u8>), NetError> {
    let id = response.metadata().id;
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max);
    match response.destructive_emit(&mut encoder) {
        Ok(info) => Ok((info, bytes)),
        Err(e) => {
            warn!(error = %e, "cannot encode a response: SERVFAIL");
            let header = servfail_header(Metadata::new(id, MessageType::Response, OpCode::Query));
            let mut bytes = Vec::with_capacity(12);
            let mut encoder = BinEncoder::new(&mut bytes);
            header
                .emit(&mut encoder)
                .map_err(|e| NetError::from(e.to_string()))?;
            Ok((ResponseInfo::from(header), bytes))
        }
    }
}

/// FORMERR answering a message whose header could be read but not the rest.
pub(super) fn formerr(header: &Header, max: u16) -> Option<Vec<u8>> {
    let mut metadata = Metadata::response_from_request(&header.metadata);
    metadata.response_code = ResponseCode::FormErr;
    let queries = Queries::read(&mut BinDecoder::new(&[]), 0).ok()?;
    let response = MessageResponseBuilder::new(&queries, None).build_no_records(metadata);
    encode(response, max).ok().map(|(_, bytes)| bytes)
}

/// An empty response with TC set and the question echoed: a real client retries over TCP,
/// where it is answered in full; a spoofed "client" gets a response no larger than the
/// query.
pub fn truncated(request: &Request) -> Option<Vec<u8>> {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::NoError;
    metadata.truncation = true;
    let edns = request.edns.as_ref().map(|_| {
        let mut e = Edns::new();
        e.set_max_payload(SLIP_EDNS_PAYLOAD);
        e.set_version(0);
        e
    });
    let response =
        MessageResponseBuilder::new(&request.queries, edns.as_ref()).build_no_records(metadata);
    encode(response, 512).ok().map(|(_, bytes)| bytes)
}
