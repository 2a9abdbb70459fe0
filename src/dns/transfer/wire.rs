//! Records kept as their wire form (uncompressed, canonical), for the zone and its
//! journal: a few times smaller than hickory `Record`s (whose names and data are held
//! inline at their largest), decoded again only when a transfer sends them.

use std::cmp::Ordering;

use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use tracing::debug;

/// Records, each as its wire form, sorted by those bytes and without duplicates.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WireRecords {
    bytes: Box<[u8]>,
    /// Where each record ends in `bytes`.
    ends: Box<[u32]>,
}

impl WireRecords {
    /// `records` encoded (a record that does not encode is left out, logged), sorted and
    /// without duplicates.
    pub fn encode(records: &[Record]) -> Self {
        let mut encoded: Vec<Vec<u8>> = records.iter().filter_map(encode).collect();
        encoded.sort_unstable();
        encoded.dedup();
        Self::from_sorted(encoded.iter().map(Vec::as_slice))
    }

    /// Records already encoded, sorted and without duplicates.
    fn from_sorted<'a>(records: impl Iterator<Item = &'a [u8]>) -> Self {
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for r in records {
            bytes.extend_from_slice(r);
            ends.push(bytes.len() as u32);
        }
        WireRecords {
            bytes: bytes.into(),
            ends: ends.into(),
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Memory held, in bytes.
    pub fn size(&self) -> usize {
        self.bytes.len() + self.ends.len() * 4 + std::mem::size_of::<Self>()
    }

    /// Each record's wire form, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .map(|(start, end)| &self.bytes[start as usize..end as usize])
    }

    /// The records, decoded.
    pub fn decode(&self) -> impl Iterator<Item = Record> + '_ {
        self.iter().filter_map(|bytes| {
            let mut decoder = BinDecoder::new(bytes);
            Record::read(&mut decoder)
                .map_err(|e| debug!(error = %e, "a kept record does not decode"))
                .ok()
        })
    }
}

/// `record`'s wire form: no name compression, names as written.
fn encode(record: &Record) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(64);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_canonical_form(true);
    match record.emit(&mut encoder) {
        Ok(()) => Some(bytes),
        Err(e) => {
            debug!(name = %record.name, error = %e, "a record of the zone does not encode");
            None
        }
    }
}

/// The records of `old` not in `new`, and of `new` not in `old`.
pub fn difference(old: &WireRecords, new: &WireRecords) -> (WireRecords, WireRecords) {
    let (mut removed, mut added) = (Vec::new(), Vec::new());
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => match x.cmp(y) {
                Ordering::Less => removed.extend(a.next()),
                Ordering::Greater => added.extend(b.next()),
                Ordering::Equal => {
                    a.next();
                    b.next();
                }
            },
            (Some(_), None) => removed.extend(a.next()),
            (None, Some(_)) => added.extend(b.next()),
            (None, None) => break,
        }
    }
    (
        WireRecords::from_sorted(removed.into_iter()),
        WireRecords::from_sorted(added.into_iter()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SRV};
    use hickory_proto::rr::{Name, RData};

    fn a(name: &str, last: u8, ttl: u32) -> Record {
        Record::from_rdata(
            Name::from_ascii(name).unwrap(),
            ttl,
            RData::A(A::new(10, 0, 0, last)),
        )
    }

    #[test]
    fn records_round_trip_sorted_without_duplicates() {
        let srv = Record::from_rdata(
            Name::from_ascii("_web._tcp.service.consul.").unwrap(),
            0,
            RData::SRV(SRV::new(
                1,
                1,
                80,
                Name::from_ascii("web.service.consul.").unwrap(),
            )),
        );
        let w = WireRecords::encode(&[
            a("b.consul.", 2, 0),
            srv.clone(),
            a("a.consul.", 1, 0),
            a("b.consul.", 2, 0),
        ]);
        assert_eq!(w.len(), 3);
        let back: Vec<Record> = w.decode().collect();
        assert!(back.contains(&srv) && back.contains(&a("a.consul.", 1, 0)));
        let again = WireRecords::encode(&back);
        assert_eq!(again, w, "the same records encode alike, in any order");
    }

    #[test]
    fn difference_finds_what_went_and_what_came_ttl_included() {
        let old = WireRecords::encode(&[a("a.consul.", 1, 0), a("b.consul.", 2, 0)]);
        let new = WireRecords::encode(&[a("b.consul.", 2, 30), a("c.consul.", 3, 0)]);
        let (removed, added) = difference(&old, &new);
        let names = |w: &WireRecords| -> Vec<String> {
            w.decode()
                .map(|r| format!("{} {}", r.name, r.ttl))
                .collect()
        };
        let mut gone = names(&removed);
        gone.sort();
        let mut came = names(&added);
        came.sort();
        assert_eq!(gone, ["a.consul. 0", "b.consul. 0"]);
        assert_eq!(came, ["b.consul. 30", "c.consul. 0"]);
        let (none, nothing) = difference(&new, &new);
        assert!(none.is_empty() && nothing.is_empty());
    }
}
