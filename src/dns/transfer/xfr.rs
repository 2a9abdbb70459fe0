//! Transfer requests and their responses on the wire: which requests are transfers of a
//! served zone, and the messages of a response (each within [`MESSAGE_BUDGET`], framed
//! for TCP).

use hickory_proto::op::{Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use tracing::debug;

use crate::dns::tsig::ResponseSigner;
use crate::view::DomainId;

/// Records go into a message until their size (without name compression) reaches this;
/// compression only makes the message smaller, well within the 65,535 bytes of TCP.
const MESSAGE_BUDGET: usize = 16 * 1024;

/// What kind of transfer a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Axfr,
    /// IXFR from the client's serial (the SOA in its Authority section).
    Ixfr(u32),
}

/// The kind of a transfer request of served zone `domains[d]`, and `d`; None when
/// `request` is not one (read from the header and question only, then in full).
pub fn transfer_question(request: &[u8], domains: &[Name]) -> Option<(Kind, DomainId)> {
    let mut decoder = BinDecoder::new(request);
    let header = Header::read(&mut decoder).ok()?;
    if header.metadata.message_type != MessageType::Query
        || header.metadata.op_code != OpCode::Query
        || header.counts.queries != 1
    {
        return None;
    }
    let query = Query::read(&mut decoder).ok()?;
    if !matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR)
        || query.query_class() != DNSClass::IN
    {
        return None;
    }
    let (d, _) = DomainId::all(domains.len())
        .zip(domains)
        .find(|(_, d)| *d == query.name())?;
    if query.query_type() == RecordType::AXFR {
        return Some((Kind::Axfr, d));
    }
    // RFC 1995 §3: the client's version is the SOA in Authority; without it, in full.
    let message = Message::from_vec(request).ok()?;
    let serial = message.authorities.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    });
    Some((serial.map_or(Kind::Axfr, Kind::Ixfr), d))
}

/// `soa` with `serial`.
pub fn with_serial(soa: &Record, serial: u32) -> Record {
    let mut record = soa.clone();
    if let RData::SOA(s) = &mut record.data {
        s.serial = serial;
    }
    record
}

/// The response to `request` carrying `records` in its Answer section, over as many
/// messages as they need, framed, each signed by `signer` when given; empty when
/// `request` does not read.
pub fn respond(
    request: &[u8],
    records: impl Iterator<Item = Record>,
    mut signer: Option<&mut ResponseSigner>,
) -> Vec<u8> {
    let Ok(request) = Message::from_vec(request) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut frame_into = |out: &mut Vec<u8>, message: &Message| match message.to_vec() {
        Ok(bytes) => {
            let bytes = match signer.as_deref_mut() {
                Some(signer) => match signer.sign(&bytes) {
                    Ok(signed) => signed,
                    Err(e) => {
                        debug!(error = %e, "transfer message not signed");
                        return;
                    }
                },
                None => bytes,
            };
            out.extend(framed(&bytes));
        }
        Err(e) => debug!(error = %e, "transfer message not encoded"),
    };
    let mut message = response(&request, ResponseCode::NoError);
    let mut size = 0;
    for record in records {
        let len = record_size(&record);
        if size > 0 && size + len > MESSAGE_BUDGET {
            frame_into(&mut out, &message);
            message = response(&request, ResponseCode::NoError);
            // RFC 5936 §2.2: the question goes in the first message only.
            message.queries.clear();
            size = 0;
        }
        message.answers.push(record);
        size += len;
    }
    frame_into(&mut out, &message);
    out
}

/// REFUSED, framed.
pub fn refused(request: &[u8]) -> Vec<u8> {
    error(request, ResponseCode::Refused)
}

/// An empty response with `rcode` (SERVFAIL: no version of the zone yet), framed.
pub fn error(request: &[u8], rcode: ResponseCode) -> Vec<u8> {
    let Ok(request) = Message::from_vec(request) else {
        return Vec::new();
    };
    match response(&request, rcode).to_vec() {
        Ok(bytes) => framed(&bytes),
        Err(_) => Vec::new(),
    }
}

/// An empty authoritative response to `request` with its question.
fn response(request: &Message, rcode: ResponseCode) -> Message {
    let mut message = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    message.metadata.authoritative = true;
    message.metadata.response_code = rcode;
    message.queries = request.queries.clone();
    message
}

/// `message` with its TCP length prefix; nothing when it is over 65,535 bytes.
pub fn framed(message: &[u8]) -> Vec<u8> {
    let Ok(len) = u16::try_from(message.len()) else {
        debug!(len = message.len(), "transfer message over 65,535 bytes");
        return Vec::new();
    };
    let mut out = Vec::with_capacity(message.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// A record's size on the wire without compression, roughly (names and fixed fields; the
/// variable RDATA of the types the zone holds).
fn record_size(record: &Record) -> usize {
    let rdata = match &record.data {
        RData::A(_) => 4,
        RData::AAAA(_) => 16,
        RData::SRV(srv) => 6 + srv.target.len(),
        RData::CNAME(c) => c.0.len(),
        RData::NS(n) => n.0.len(),
        RData::TXT(txt) => txt.txt_data.iter().map(|s| s.len() + 1).sum(),
        RData::SOA(soa) => soa.mname.len() + soa.rname.len() + 20,
        _ => 512,
    };
    record.name.len() + 10 + rdata
}
