//! Transfer requests and their responses on the wire: which requests are transfers of a
//! served zone, and the messages of a response (each within [`MESSAGE_BUDGET`], framed
//! for TCP, made one at a time as the connection takes them).

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

/// The messages of the response to a transfer request, carrying `records` in their
/// Answer sections: each made when it is taken (a record read, encoded and signed only
/// then), within [`MESSAGE_BUDGET`], framed, signed by `signer` when given.
pub struct Messages {
    request: Message,
    records: Box<dyn Iterator<Item = Record> + Send>,
    /// The record that did not fit in the previous message.
    held: Option<Record>,
    signer: Option<ResponseSigner>,
    first: bool,
    done: bool,
}

impl Messages {
    /// None when `request` does not read.
    pub fn new(
        request: &[u8],
        records: Box<dyn Iterator<Item = Record> + Send>,
        signer: Option<ResponseSigner>,
    ) -> Option<Messages> {
        Some(Messages {
            request: Message::from_vec(request).ok()?,
            records,
            held: None,
            signer,
            first: true,
            done: false,
        })
    }

    /// `message` encoded, signed and framed; None (the transfer ends) when it cannot be.
    fn frame(&mut self, message: &Message) -> Option<Vec<u8>> {
        let bytes = message
            .to_vec()
            .map_err(|e| debug!(error = %e, "transfer message not encoded"))
            .ok()?;
        let bytes = match self.signer.as_mut() {
            Some(signer) => signer
                .sign(&bytes)
                .map_err(|e| debug!(error = %e, "transfer message not signed"))
                .ok()?,
            None => bytes,
        };
        Some(framed(&bytes)).filter(|f| !f.is_empty())
    }
}

impl Iterator for Messages {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let mut message = response(&self.request, ResponseCode::NoError);
        if !self.first {
            // RFC 5936 §2.2: the question goes in the first message only.
            message.queries.clear();
        }
        self.first = false;
        let mut size = 0;
        while let Some(record) = self.held.take().or_else(|| self.records.next()) {
            let len = record_size(&record);
            if size > 0 && size + len > MESSAGE_BUDGET {
                self.held = Some(record);
                break;
            }
            message.answers.push(record);
            size += len;
        }
        self.done = self.held.is_none();
        let frame = self.frame(&message);
        if frame.is_none() {
            self.done = true;
        }
        frame
    }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use hickory_proto::rr::rdata::A;

    use super::*;

    #[test]
    fn each_message_is_made_when_it_is_taken() {
        let request = {
            let mut m = Message::new(7, MessageType::Query, OpCode::Query);
            m.add_query(Query::query(
                Name::from_ascii("consul.").unwrap(),
                RecordType::AXFR,
            ));
            m.to_vec().unwrap()
        };
        let name = Name::from_ascii("a-rather-long-name-for-a-test.service.consul.").unwrap();
        let pulled = Arc::new(AtomicUsize::new(0));
        let total = 10_000;
        let records = {
            let pulled = Arc::clone(&pulled);
            (0..total).map(move |i: u32| {
                pulled.fetch_add(1, Ordering::Relaxed);
                Record::from_rdata(
                    name.clone(),
                    0,
                    RData::A(A::from(std::net::Ipv4Addr::from(i))),
                )
            })
        };
        let mut messages = Messages::new(&request, Box::new(records), None).unwrap();
        let first = messages.next().expect("a first message");
        let in_first = Message::from_vec(&first[2..]).unwrap();
        assert_eq!(
            in_first.queries.len(),
            1,
            "the question, in the first message"
        );
        let n = in_first.answers.len();
        assert!(
            n > 100 && n < total as usize / 10,
            "{n} records in the first"
        );
        assert_eq!(
            pulled.load(Ordering::Relaxed),
            n + 1,
            "its records and the next one only"
        );

        let rest: Vec<Message> = messages
            .map(|f| Message::from_vec(&f[2..]).unwrap())
            .collect();
        assert!(
            rest.iter().all(|m| m.queries.is_empty()),
            "no question after the first"
        );
        let all = n + rest.iter().map(|m| m.answers.len()).sum::<usize>();
        assert_eq!(all, total as usize, "every record, once");
    }
}
