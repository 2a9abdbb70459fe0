//! Negative answers of the Consul domain (NXDOMAIN, and NODATA) sent without being built.
//!
//! Unknown names are the one kind of question a client can vary without end, so their
//! answers cannot be stored per name (a flood of random names would only fill a table).
//! But a negative response is the question and the zone's SOA, nothing else, and the SOA
//! does not depend on the name asked: two names of the same length get the same bytes but
//! for the question's name (every offset after it is the same). So one response per
//! *shape* (the request's flags, EDNS payload, qtype, the name's length, the domain, the
//! rcode) serves every name: the query's ID and name are written over the stored ones.
//!
//! Whether a name gets a negative answer is still worked out per query, from the view (see
//! `responder`); only the building and encoding are saved. A stored response is used while
//! the SOA serial it carries is the current one. One is stored only if its SOA reads the
//! same with other names written in the question (hickory writes the SOA's names in full
//! or pointing within the SOA today; a pointer into the question, e.g. from `ns.<domain>`
//! to a question that is that very name, would make the response depend on the name).

use hickory_server::proto::op::{Header, Query, ResponseCode};
use hickory_server::proto::rr::{RData, Record};
use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder};
use rustc_hash::FxHashMap;

use super::response_cache::{write_for, Question, Shape, QNAME_AT};
use crate::view::DomainId;

/// Bound of the table; past it, it is emptied.
const MAX_SHAPES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    shape: Shape,
    name_len: u16,
    domain: DomainId,
    rcode: u16,
}

struct Template {
    bytes: Box<[u8]>,
    serial: u32,
}

/// The negative responses of one socket (or thread): no locking.
#[derive(Default)]
pub struct NegativeCache {
    templates: FxHashMap<Key, Template>,
}

impl NegativeCache {
    /// Writes into `out` the response to `request` (question `q`), a negative answer with
    /// `rcode` for a name under served domain `domain` whose SOA serial is now `serial`, if
    /// one of its shape is stored; false otherwise.
    pub fn answer(
        &self,
        q: &Question,
        domain: DomainId,
        rcode: ResponseCode,
        serial: u32,
        request: &[u8],
        out: &mut Vec<u8>,
    ) -> bool {
        let Some(template) = self.templates.get(&key(q, domain, rcode)) else {
            return false;
        };
        template.serial == serial
            && write_for(
                out,
                &template.bytes,
                request,
                q.name_len(),
                std::iter::empty(),
            )
            .is_some()
    }

    /// Keeps `response`, the full path's negative answer with `rcode` to `q` (a name under
    /// domain `domain`, whose labels are the last `domain_len` bytes of the name).
    pub fn store(
        &mut self,
        q: &Question,
        domain: DomainId,
        domain_len: usize,
        rcode: ResponseCode,
        response: Vec<u8>,
    ) {
        let Some(serial) = name_independent_serial(&response, q.name_len(), domain_len, rcode)
        else {
            return;
        };
        if self.templates.len() >= MAX_SHAPES {
            self.templates.clear();
        }
        let template = Template {
            bytes: response.into_boxed_slice(),
            serial,
        };
        self.templates.insert(key(q, domain, rcode), template);
    }
}

fn key(q: &Question, domain: DomainId, rcode: ResponseCode) -> Key {
    Key {
        shape: q.shape(),
        name_len: u16::try_from(q.name_len()).unwrap_or(u16::MAX),
        domain,
        rcode: u16::from(rcode),
    }
}

/// The SOA serial of `response` if it is a negative answer (`rcode`, one question, no
/// records but an SOA, at most an OPT) whose SOA reads the same whatever the question's
/// name left of the domain's `domain_len` bytes.
fn name_independent_serial(
    response: &[u8],
    name_len: usize,
    domain_len: usize,
    rcode: ResponseCode,
) -> Option<u32> {
    let (soa, serial) = read_soa(response, rcode)?;
    let relative = name_len.checked_sub(domain_len)?;
    for fill in [b'x', b'y'] {
        let mut other = response.to_vec();
        other
            .get_mut(QNAME_AT..QNAME_AT + relative)?
            .copy_from_slice(&labels_of_len(relative, fill)?);
        if read_soa(&other, rcode)?.0 != soa {
            return None;
        }
    }
    Some(serial)
}

/// The SOA record of a negative response, and its serial.
fn read_soa(response: &[u8], rcode: ResponseCode) -> Option<(Record, u32)> {
    let mut decoder = BinDecoder::new(response);
    let header = Header::read(&mut decoder).ok()?;
    let c = header.counts;
    let m = header.metadata;
    if c.queries != 1
        || c.answers != 0
        || c.authorities != 1
        || c.additionals > 1
        || m.truncation
        || m.response_code != rcode
    {
        return None;
    }
    Query::read(&mut decoder).ok()?;
    let soa = Record::read(&mut decoder).ok()?;
    let RData::SOA(data) = &soa.data else {
        return None;
    };
    let serial = data.serial;
    Some((soa, serial))
}

/// Labels `len` bytes long on the wire (length bytes included) filled with `fill`.
fn labels_of_len(len: usize, fill: u8) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    let mut left = len;
    while left > 0 {
        // A label takes at least 2 bytes; never leave 1.
        let mut label = left.checked_sub(1)?.min(63);
        if left - 1 - label == 1 {
            label -= 1;
        }
        if label == 0 {
            return None;
        }
        out.push(u8::try_from(label).ok()?);
        out.extend(std::iter::repeat_n(fill, label));
        left -= label + 1;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use hickory_server::proto::op::ResponseCode;
    use hickory_server::proto::rr::RData;

    use super::{labels_of_len, name_independent_serial, read_soa};

    fn bytes(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// consul-dns's NXDOMAIN for `ns.consul. A` (no EDNS): the SOA's owner is written in
    /// full at offset 27 and its names point there.
    const NS_CONSUL: &str = "123485030001000000010000026e7306636f6e73756c0000010001\
        06636f6e73756c0000060001000000000026026e73c01b0a686f73746d6173746572c01b\
        00000dba00000e10000002580001518000000000";

    #[test]
    fn a_soa_pointing_into_the_question_is_not_stored() {
        let own = bytes(NS_CONSUL);
        assert_eq!(
            name_independent_serial(&own, 11, 8, ResponseCode::NXDomain),
            Some(0x0dba)
        );
        assert_eq!(
            name_independent_serial(&own, 11, 8, ResponseCode::NoError),
            None,
            "another rcode"
        );
        // The same response with the SOA's `ns.consul.` a pointer to the question's name
        // (offset 12), its RDLENGTH 3 shorter.
        let pointing = bytes(&NS_CONSUL.replace("0026026e73c01b0a", "0023c00c0a"));
        assert_eq!(pointing.len(), own.len() - 3);
        let (soa, _) = read_soa(&pointing, ResponseCode::NXDomain).expect("decodes");
        match soa.data {
            RData::SOA(s) => assert_eq!(s.mname.to_ascii(), "ns.consul."),
            other => panic!("not a SOA: {other:?}"),
        }
        assert_eq!(
            name_independent_serial(&pointing, 11, 8, ResponseCode::NXDomain),
            None,
            "the SOA names the question"
        );
    }

    #[test]
    fn labels_fill_the_length_exactly() {
        for len in 2..300 {
            let labels = labels_of_len(len, b'x').expect("a length of 2 or more");
            assert_eq!(labels.len(), len);
            let mut at = 0;
            while at < labels.len() {
                let l = usize::from(labels[at]);
                assert!((1..=63).contains(&l), "label length {l} at {at} for {len}");
                at += l + 1;
            }
            assert_eq!(at, len);
        }
        assert!(labels_of_len(1, b'x').is_none());
    }
}
