//! Versions of a zone: the current records with their serial, and a journal of the
//! differences between consecutive versions for IXFR (RFC 1995), bounded in bytes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use hickory_proto::rr::{Name, Record};

use super::wire::WireRecords;

/// What a part of the zone is made from; each part's records are sorted and free of
/// duplicates. A name the zone holds belongs to one part (but for rare collisions of a
/// tag form with a dotted service name, whose records are then the same).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Part {
    /// The apex NS.
    Apex,
    /// A service's names.
    Service(String),
    /// A node's names.
    Node(String),
    /// An `addr` name an SRV record points at.
    Addr(Name),
}

/// The zone, by part.
pub type Parts = HashMap<Part, Arc<WireRecords>>;

/// One version of the zone.
#[derive(Debug, Clone)]
pub struct Version {
    pub serial: u32,
    /// Its records but the SOA, by part.
    pub parts: Arc<Parts>,
    /// How many.
    pub records: usize,
}

impl Version {
    /// Every record but the SOA, decoded a part at a time as they are taken (the
    /// iterator holds the parts, not the version).
    pub fn records(&self) -> impl Iterator<Item = Record> + Send + 'static {
        let parts: Vec<Arc<WireRecords>> = self.parts.values().cloned().collect();
        parts
            .into_iter()
            .flat_map(|part| part.decode().collect::<Vec<_>>())
    }
}

/// The difference from version `from` to version `to`, by part.
#[derive(Debug, Clone, Default)]
pub struct Delta {
    pub from: u32,
    pub to: u32,
    pub removed: Vec<WireRecords>,
    pub added: Vec<WireRecords>,
}

impl Delta {
    /// What it holds in memory.
    fn size(&self) -> usize {
        self.removed
            .iter()
            .chain(&self.added)
            .map(WireRecords::size)
            .sum::<usize>()
            + std::mem::size_of::<Delta>()
    }

    /// Whether nothing went and nothing came.
    pub fn is_empty(&self) -> bool {
        self.removed
            .iter()
            .chain(&self.added)
            .all(WireRecords::is_empty)
    }

    /// The records that went, decoded.
    pub fn removed(&self) -> impl Iterator<Item = Record> + '_ {
        self.removed.iter().flat_map(|w| w.decode())
    }

    /// The records that came, decoded.
    pub fn added(&self) -> impl Iterator<Item = Record> + '_ {
        self.added.iter().flat_map(|w| w.decode())
    }
}

/// What an IXFR from a serial gets.
pub enum Since {
    /// The client has the current version.
    Current,
    /// The differences from the client's version to the current one, oldest first.
    Deltas(Vec<Arc<Delta>>),
    /// Not in the journal: the whole zone.
    Unknown,
}

/// The current version and the journal behind it.
#[derive(Debug)]
pub struct Journal {
    current: Version,
    /// Shared with the transfers being written.
    deltas: VecDeque<Arc<Delta>>,
    bytes: usize,
    max_bytes: usize,
}

impl Journal {
    pub fn new(first: Version, max_bytes: usize) -> Self {
        Journal {
            current: first,
            deltas: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    pub fn current(&self) -> &Version {
        &self.current
    }

    /// Makes `next` current and journals what changed from the current one (nothing
    /// when only the serial moved: another served domain's zone changed).
    pub fn push(&mut self, next: Version, mut delta: Delta) {
        delta.from = self.current.serial;
        delta.to = next.serial;
        self.bytes += delta.size();
        self.deltas.push_back(Arc::new(delta));
        while self.bytes > self.max_bytes {
            match self.deltas.pop_front() {
                Some(old) => self.bytes -= old.size(),
                None => break,
            }
        }
        self.current = next;
    }

    /// Memory the journal holds, roughly.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// What a client at `serial` needs to reach the current version.
    pub fn since(&self, serial: u32) -> Since {
        if serial == self.current.serial {
            return Since::Current;
        }
        match self.deltas.iter().position(|d| d.from == serial) {
            Some(first) => Since::Deltas(self.deltas.range(first..).cloned().collect()),
            None => Since::Unknown,
        }
    }
}

/// RFC 1982: whether serial `a` is greater than `b`.
pub fn serial_gt(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 1 << 31
}

/// The serial of a version following one at `previous` (None: the first), whose data
/// comes from Consul indexes up to `index`: the index's low 32 bits when they move
/// forward (so a restart continues where the last run was), else one more.
pub fn next_serial(previous: Option<u32>, index: u64) -> u32 {
    let from_index = (index & u64::from(u32::MAX)) as u32;
    match previous {
        None => from_index.max(1),
        Some(p) if serial_gt(from_index, p) => from_index,
        Some(p) => p.wrapping_add(1).max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::transfer::wire::difference;
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{Name, RData};

    fn a(last: u8) -> Record {
        Record::from_rdata(
            Name::from_ascii("web.service.consul.").unwrap(),
            0,
            RData::A(A::new(10, 0, 0, last)),
        )
    }

    fn version(serial: u32, last: &[u8]) -> Version {
        let records: Vec<Record> = last.iter().map(|&l| a(l)).collect();
        let parts = [(Part::Apex, Arc::new(WireRecords::encode(&records)))]
            .into_iter()
            .collect();
        Version {
            serial,
            parts: Arc::new(parts),
            records: records.len(),
        }
    }

    /// `to` pushed onto `j`, with the difference from `j`'s current version.
    fn push(j: &mut Journal, to: Version) {
        let (removed, added) = difference(&j.current().parts[&Part::Apex], &to.parts[&Part::Apex]);
        let delta = Delta {
            removed: vec![removed],
            added: vec![added],
            ..Delta::default()
        };
        j.push(to, delta);
    }

    fn changes(d: &Delta) -> (Vec<Record>, Vec<Record>) {
        (d.removed().collect(), d.added().collect())
    }

    #[test]
    fn deltas_chain_from_a_known_serial_and_the_journal_is_bounded() {
        let mut j = Journal::new(version(1, &[1, 2]), 10_000);
        push(&mut j, version(2, &[1, 3]));
        push(&mut j, version(3, &[1, 3, 4]));
        let Since::Deltas(d) = j.since(1) else {
            panic!("serial 1 is journaled")
        };
        assert_eq!(d.len(), 2);
        assert_eq!(changes(&d[0]), (vec![a(2)], vec![a(3)]));
        assert_eq!(changes(&d[1]), (vec![], vec![a(4)]));
        assert!(matches!(j.since(3), Since::Current));
        assert!(matches!(j.since(7), Since::Unknown));

        let mut small = Journal::new(version(1, &[1]), 1);
        push(&mut small, version(2, &[2]));
        assert!(
            matches!(small.since(1), Since::Unknown),
            "dropped beyond its bytes"
        );
        assert_eq!(small.bytes(), 0);
    }

    #[test]
    fn serials_move_forward_with_the_index_and_wrap_as_rfc_1982_says() {
        assert_eq!(next_serial(None, 0), 1);
        assert_eq!(next_serial(None, 500), 500);
        assert_eq!(next_serial(Some(500), 800), 800);
        assert_eq!(next_serial(Some(800), 700), 801, "never backwards");
        assert_eq!(next_serial(Some(800), 800), 801);
        assert_eq!(next_serial(Some(u32::MAX), 5), 5, "5 follows u32::MAX");
        assert!(serial_gt(1, u32::MAX));
        assert!(!serial_gt(u32::MAX, 1));
    }
}
