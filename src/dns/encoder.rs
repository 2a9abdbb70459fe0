//! Encoding with hickory: every reply (fitted to its client, see `truncation`), the FORMERR
//! of a message whose header is all that reads, and the empty truncated answer that
//! response-rate limiting "slips" to a UDP client.

use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::{BinDecoder, BinEncodable, BinEncoder};
use hickory_server::server::{Request, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use tracing::warn;

use super::truncation::{self, Frame, Limit};

/// The UDP payload advertised in a slipped response's OPT record.
const SLIP_EDNS_PAYLOAD: u16 = 1232;

/// A response, encoded.
#[derive(Debug)]
pub struct Encoded {
    pub info: ResponseInfo,
    pub bytes: Vec<u8>,
}

/// Encodes within `limit`. A response that does not fit is decoded again and fitted
/// record by record (`truncation`): only responses built elsewhere (the static zones, a
/// recursor's reply) can be that large, as the Consul zone fits its answers before they
/// get here. A response that cannot be encoded becomes a bare SERVFAIL.
pub fn encode<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
    limit: Limit,
) -> Encoded {
    let max = limit.size;
    let metadata = *response.metadata();
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    let emitted = response.destructive_emit(&mut encoder);
    let len = encoder.offset();
    match emitted {
        Ok(info) => {
            // hickory's encoder cuts at 65,535 bytes, leaving what it rolled back behind.
            bytes.truncate(len);
            let cut_by_encoder = info.truncation && !metadata.truncation;
            if len <= max && !cut_by_encoder {
                return Encoded { info, bytes };
            }
            match refit(&bytes, limit) {
                Some(fitted) if fitted.bytes.len() <= max => fitted,
                // Not even the question section fits (a query of many questions): the
                // header alone, cut (TC).
                _ => {
                    let mut metadata = metadata;
                    metadata.truncation = true;
                    header_only(Header {
                        metadata,
                        counts: HeaderCounts::default(),
                    })
                }
            }
        }
        Err(e) => {
            warn!(error = %e, "cannot encode a response: SERVFAIL");
            header_only(servfail_header(Metadata::new(
                metadata.id,
                MessageType::Response,
                OpCode::Query,
            )))
        }
    }
}

/// A response of `header` alone.
pub fn header_only(header: Header) -> Encoded {
    let mut bytes = Vec::with_capacity(12);
    let mut encoder = BinEncoder::new(&mut bytes);
    if let Err(e) = header.emit(&mut encoder) {
        warn!(error = %e, "cannot encode a header: nothing sent");
        bytes.clear();
    }
    Encoded {
        info: ResponseInfo::from(header),
        bytes,
    }
}

/// An encoded response over `limit`'s size, fitted to it record by record.
fn refit(bytes: &[u8], limit: Limit) -> Option<Encoded> {
    let message = Message::from_vec(bytes).ok()?;
    // The question section as sent (it follows the 12-byte header).
    let queries = Queries::read(
        &mut BinDecoder::new(bytes.get(12..)?),
        message.queries.len(),
    )
    .ok()?;
    let frame = Frame {
        queries: &queries,
        metadata: message.metadata,
        edns: message.edns.as_ref(),
    };
    let limit = Limit {
        answers: usize::MAX,
        ..limit
    };
    let fitted = truncation::fit(
        &frame,
        &message.answers,
        &message.authorities,
        &message.additionals,
        limit,
    );
    let mut metadata = message.metadata;
    metadata.truncation |= fitted.truncated;
    let response = MessageResponseBuilder::new(&queries, message.edns.as_ref()).build(
        metadata,
        fitted.answers.iter(),
        fitted.authority.iter(),
        std::iter::empty(),
        fitted.additionals.iter().copied(),
    );
    let mut out = Vec::with_capacity(limit.size.min(truncation::TCP_MAX_SIZE));
    let mut encoder = BinEncoder::new(&mut out);
    let info = response.destructive_emit(&mut encoder).ok()?;
    let len = encoder.offset();
    out.truncate(len);
    Some(Encoded { info, bytes: out })
}

/// FORMERR answering a message whose header could be read but not the rest.
pub(super) fn formerr(header: &Header, max: usize) -> Option<Vec<u8>> {
    let mut metadata = Metadata::response_from_request(&header.metadata);
    metadata.response_code = ResponseCode::FormErr;
    let queries = Queries::read(&mut BinDecoder::new(&[]), 0).ok()?;
    let response = MessageResponseBuilder::new(&queries, None).build_no_records(metadata);
    Some(encode(response, Limit::bytes(max)).bytes).filter(|b| !b.is_empty())
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
    Some(encode(response, Limit::bytes(truncation::UDP_MIN_SIZE)).bytes).filter(|b| !b.is_empty())
}

/// A bare SERVFAIL header answering `metadata`'s message.
pub fn servfail_header(mut metadata: Metadata) -> Header {
    metadata.response_code = ResponseCode::ServFail;
    Header {
        metadata,
        counts: HeaderCounts::default(),
    }
}
