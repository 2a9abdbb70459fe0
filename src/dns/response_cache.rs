//! Responses sent again without being built: the encoded responses of positive answers
//! about local services, kept per UDP socket (and for TCP per thread) while the data they
//! came from is current.
//!
//! A service's data changes when the catalog does, not per query, so building the same
//! records and encoding them for every query is wasted work (most of a query's cost in the
//! benchmark). A response is stored as hickory encoded it, with what it rests on (a
//! [`ServiceBasis`]); a later query with the same question and the same request shape (the
//! header flags, the EDNS payload, whether the client may recurse) gets a copy with the
//! query's ID and the query's spelling of the name (RFC 4343; resolvers that randomise the
//! case, "0x20") written over the stored one wherever it occurs: in the question (the first
//! name of the message, at offset 12, uncompressed) and in the owner names of the records
//! (found once, with hickory's decoder, when the response is stored). Nothing else in a
//! response depends on the query.
//!
//! Consul shuffles the instances per query. Only answers that hold every instance asked
//! for, with equal weights, are stored (the handler decides: a cut answer, or weighted
//! instances, are a random draw that a stored response would freeze). An A or AAAA answer
//! is stored once and shuffled on every hit: its records differ only in their address
//! (same owner, type, TTL and length), so drawing a permutation of the address fields is
//! drawing a permutation of the records. SRV records differ in length; each entry keeps several
//! responses built with their own shuffles, sends one at random, and has one in
//! [`REFRESH`] hits rebuilt (RFC 2782 clients choose among SRV records by priority and
//! weight, not by their order).
//!
//! Only queries that the handler would answer from a local service's data are stored
//! (never unknown names, negative or stale answers, other datacenters, prepared queries,
//! static zones or forwarded names), and the table is bounded.

use std::hash::Hasher;

use hickory_server::proto::op::{Edns, Header, MessageType, OpCode, Query};
use hickory_server::proto::rr::rdata::opt::EdnsCode;
use hickory_server::proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rustc_hash::FxHashMap;

use crate::metrics::QueryKind;
use crate::view::freshness::ServiceBasis;

/// Responses kept per question, each with its own shuffle.
pub const VARIANTS: usize = 8;
/// One hit in this many rebuilds one of the responses (a new shuffle). A rebuild takes the
/// full path (its cost at other rates: bench/README.md); RFC 2782 clients read no meaning
/// into the order of SRV records anyway.
pub const REFRESH: u32 = 256;
/// Bounds of the table; past either it is emptied (it refills from the next queries).
const MAX_ENTRIES: usize = 20_000;
const MAX_BYTES: usize = 32 << 20;

/// Offset of the question's name: right after the 12-byte header.
pub const QNAME_AT: usize = 12;

/// What a response depends on besides the data. The name is in it as a hash of its
/// lower-cased wire form (a small key keeps the table compact: a hit touches little
/// memory); a hit compares the name itself with the stored response's question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    name_hash: u64,
    shape: Shape,
}

/// What a response depends on besides the data and the question's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shape {
    pub qtype: RecordType,
    /// The request's header flags word, echoed in part (RD, CD) in the response.
    pub flags: u16,
    /// The payload size the response advertises and fits in; 0 without EDNS.
    pub payload: u16,
    pub client: ClientShape,
}

/// What a response depends on of its client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ClientShape {
    pub recursion_available: bool,
    /// The size a UDP response to a client outside `allow_recursion` is held to (a
    /// multiple of its query's: `truncation::Limit::untrusted`); 0: none.
    pub cap: u16,
}

/// A cacheable question read from a datagram.
#[derive(Debug, Clone)]
pub struct Question {
    key: Key,
    name: Name,
    /// Length of the question's name on the wire.
    name_len: usize,
}

impl Question {
    /// The question of `bytes` if it is a plain query that a stored response could
    /// answer: one IN question with an uncompressed name, nothing else but an EDNS(0) OPT
    /// without a Client Subnet option.
    /// Read with hickory's decoders, as the request parser reads it; anything unusual is
    /// left to the full path. `max_payload` is the largest UDP response we send.
    pub fn read(
        bytes: &[u8],
        max_payload: u16,
        client: impl FnOnce() -> ClientShape,
    ) -> Option<Question> {
        let mut decoder = BinDecoder::new(bytes);
        let header = Header::read(&mut decoder).ok()?;
        let (m, c) = (&header.metadata, &header.counts);
        if m.message_type != MessageType::Query
            || m.op_code != OpCode::Query
            || c.queries != 1
            || c.answers != 0
            || c.authorities != 0
            || c.additionals > 1
        {
            return None;
        }
        let query = Query::read(&mut decoder).ok()?;
        let name_len = decoder.index().checked_sub(QNAME_AT + 4)?;
        if query.query_class() != DNSClass::IN || name_len != wire_len(query.name()) {
            return None;
        }
        let payload = if c.additionals == 1 {
            // The only additional record must be an EDNS(0) OPT (the request parser's rule).
            let opt = Record::read(&mut decoder).ok()?;
            if !matches!(opt.data, RData::OPT(_) | RData::Update0(RecordType::OPT)) {
                return None;
            }
            let edns = Edns::from(&opt);
            // A Client Subnet option is echoed in the reply, which a stored one lacks.
            if edns.version() != 0 || edns.option(EdnsCode::Subnet).is_some() {
                return None;
            }
            edns.max_payload().clamp(512, max_payload.max(512))
        } else {
            0
        };
        let flags = u16::from_be_bytes([*bytes.get(2)?, *bytes.get(3)?]);
        let qtype = query.query_type();
        let name_hash = hash_lowercase(bytes.get(QNAME_AT..QNAME_AT + name_len)?);
        Some(Question {
            name: query.name,
            key: Key {
                name_hash,
                shape: Shape {
                    qtype,
                    flags,
                    payload,
                    client: client(),
                },
            },
            name_len,
        })
    }

    pub fn qtype(&self) -> RecordType {
        self.key.shape.qtype
    }

    /// The name as sent.
    pub fn name(&self) -> &Name {
        &self.name
    }

    pub fn shape(&self) -> Shape {
        self.key.shape
    }

    /// Length of the question's name on the wire (uncompressed).
    pub fn name_len(&self) -> usize {
        self.name_len
    }
}

/// A hash of a name's wire form, lower-cased (label lengths are below `A`, unchanged).
fn hash_lowercase(wire: &[u8]) -> u64 {
    let mut lower = [0u8; 255];
    let Some(lower) = lower.get_mut(..wire.len()) else {
        return 0;
    };
    for (l, b) in lower.iter_mut().zip(wire) {
        *l = b.to_ascii_lowercase();
    }
    let mut hasher = rustc_hash::FxHasher::default();
    hasher.write(lower);
    hasher.finish()
}

/// The uncompressed wire length of `name`: each label with its length byte, and the root.
pub fn wire_len(name: &Name) -> usize {
    name.iter().map(|label| label.len() + 1).sum::<usize>() + 1
}

/// An encoded response, where the question's name is written in it, and where the
/// addresses of its answer records are when they may be reordered.
struct Stored {
    bytes: Box<[u8]>,
    /// Offsets of the records' owner names that are the question's name written out
    /// (the first `owners`), then of the address fields when they may be reordered.
    offsets: Box<[u16]>,
    owners: usize,
    /// Length of each address field (4 or 16); 0 when they are not reordered.
    address_len: usize,
}

impl Stored {
    /// Reads `bytes` with hickory's decoder; None if it does not decode.
    fn new(bytes: Vec<u8>, name_len: usize, reorder: bool) -> Option<Stored> {
        let qname = bytes.get(QNAME_AT..QNAME_AT + name_len)?;
        let mut decoder = BinDecoder::new(&bytes);
        let header = Header::read(&mut decoder).ok()?;
        let c = header.counts;
        // A response the encoder cut to fit is a draw of the instances too.
        if c.queries != 1 || header.metadata.truncation {
            return None;
        }
        let question = Query::read(&mut decoder).ok()?;
        let total =
            usize::from(c.answers) + usize::from(c.authorities) + usize::from(c.additionals);
        let mut owners = Vec::new();
        let mut addresses: Vec<u16> = Vec::new();
        let mut address_len = None;
        let mut reorder = reorder && c.answers > 1;
        for i in 0..total {
            let at = decoder.index();
            let record = Record::read(&mut decoder).ok()?;
            let end = decoder.index();
            let owner = bytes.get(at..at + name_len);
            let is_qname = owner.is_some_and(|o| o.eq_ignore_ascii_case(qname));
            if is_qname {
                owners.push(u16::try_from(at).ok()?);
            }
            if i >= usize::from(c.answers) || !reorder {
                continue;
            }
            let octets: Vec<u8> = match &record.data {
                RData::A(a) => a.0.octets().to_vec(),
                RData::AAAA(a) => a.0.octets().to_vec(),
                _ => Vec::new(),
            };
            let field = end
                .checked_sub(octets.len())
                .and_then(|s| bytes.get(s..end));
            let same_len = *address_len.get_or_insert(octets.len()) == octets.len();
            let owned = record.name == question.name;
            if octets.is_empty() || !owned || !same_len || field != Some(&octets[..]) {
                reorder = false;
                continue;
            }
            addresses.push(u16::try_from(end - octets.len()).ok()?);
        }
        let n_owners = owners.len();
        let address_len = if reorder {
            owners.extend_from_slice(&addresses);
            address_len.unwrap_or(0)
        } else {
            0
        };
        Some(Stored {
            bytes: bytes.into_boxed_slice(),
            offsets: owners.into_boxed_slice(),
            owners: n_owners,
            address_len,
        })
    }
}

/// Writes into `out` the stored response `bytes` made the answer to `request`: its ID,
/// and its spelling of the question's name (`name_len` long) in the question and at
/// `owners`.
pub fn write_for(
    out: &mut Vec<u8>,
    bytes: &[u8],
    request: &[u8],
    name_len: usize,
    owners: impl Iterator<Item = usize>,
) -> Option<()> {
    let id = request.get(..2)?;
    let name = request.get(QNAME_AT..QNAME_AT + name_len)?;
    out.clear();
    out.extend_from_slice(bytes);
    out.get_mut(..2)?.copy_from_slice(id);
    for at in std::iter::once(QNAME_AT).chain(owners) {
        out.get_mut(at..at + name_len)?.copy_from_slice(name);
    }
    Some(())
}

/// Shuffles the `len`-byte fields at offsets `at` of `response` in place (Fisher-Yates).
fn shuffle_addresses(
    response: &mut [u8],
    at: &[u16],
    len: usize,
    rng: &mut SmallRng,
) -> Option<()> {
    let mut tmp = [0u8; 16];
    let tmp = tmp.get_mut(..len)?;
    for i in (1..at.len()).rev() {
        let j = rng.random_range(..=i);
        if i == j {
            continue;
        }
        let (x, y) = (usize::from(at[i]), usize::from(at[j]));
        tmp.copy_from_slice(response.get(x..x + len)?);
        response.copy_within(y..y + len, x);
        response.get_mut(y..y + len)?.copy_from_slice(tmp);
    }
    Some(())
}

struct Entry {
    /// One response when it is reshuffled on every hit, else up to [`VARIANTS`].
    responses: Vec<Stored>,
    reshuffled: bool,
    basis: ServiceBasis,
    /// The `dns_queries` counter a hit counts in; its name form is what the query log
    /// writes (nothing is parsed again at a hit).
    kind: QueryKind,
}

/// The stored responses of one UDP socket, or of TCP on one thread (no locking).
pub struct ResponseCache {
    entries: FxHashMap<Key, Entry>,
    bytes: usize,
    rng: SmallRng,
}

impl Default for ResponseCache {
    fn default() -> Self {
        ResponseCache {
            entries: FxHashMap::default(),
            bytes: 0,
            rng: SmallRng::from_os_rng(),
        }
    }
}

impl ResponseCache {
    /// Writes into `out` the response to the query in `request` (whose question is `q`),
    /// if one is stored, still current, and not due to be rebuilt; None otherwise.
    pub fn answer(&mut self, q: &Question, request: &[u8], out: &mut Vec<u8>) -> Option<QueryKind> {
        let entry = self.entries.get_mut(&q.key)?;
        let n = entry.responses.len();
        if !entry.reshuffled && (n < VARIANTS || self.rng.random_ratio(1, REFRESH)) {
            return None;
        }
        if !entry.basis.holds() {
            self.remove(&q.key);
            return None;
        }
        let stored = &entry.responses[self.rng.random_range(..n)];
        // The key holds a hash of the name: the name itself must match too.
        let name = QNAME_AT..QNAME_AT + q.name_len;
        if !stored
            .bytes
            .get(name.clone())?
            .eq_ignore_ascii_case(request.get(name)?)
        {
            return None;
        }
        let (owners, addresses) = stored.offsets.split_at(stored.owners);
        let owners = owners.iter().map(|&o| usize::from(o));
        write_for(out, &stored.bytes, request, q.name_len, owners)?;
        if stored.address_len > 0 {
            shuffle_addresses(out, addresses, stored.address_len, &mut self.rng)?;
        }
        Some(entry.kind)
    }

    /// Keeps `response`, the full path's answer to `q` (counted as `kind`), built from
    /// `basis`.
    pub fn store(&mut self, q: Question, response: Vec<u8>, basis: ServiceBasis, kind: QueryKind) {
        let size = response.len();
        let Some(response) = Stored::new(response, q.name_len, basis.uniform_order) else {
            return;
        };
        if self.entries.len() >= MAX_ENTRIES || self.bytes + size > MAX_BYTES {
            self.entries.clear();
            self.bytes = 0;
        }
        let name = QNAME_AT..QNAME_AT + q.name_len;
        let same_name = |e: &Entry| {
            let theirs = e.responses.first().and_then(|r| r.bytes.get(name.clone()));
            let ours = response.bytes.get(name.clone());
            theirs
                .zip(ours)
                .is_some_and(|(t, o)| t.eq_ignore_ascii_case(o))
        };
        match self.entries.get_mut(&q.key) {
            Some(entry)
                if entry.basis.same_data(&basis) && !entry.reshuffled && same_name(entry) =>
            {
                if entry.responses.len() < VARIANTS {
                    entry.responses.push(response);
                    self.bytes += size;
                } else {
                    let i = self.rng.random_range(..entry.responses.len());
                    let old = std::mem::replace(&mut entry.responses[i], response);
                    self.bytes = (self.bytes + size).saturating_sub(old.bytes.len());
                }
            }
            _ => {
                self.remove(&q.key);
                self.bytes += size;
                let entry = Entry {
                    reshuffled: response.address_len > 0,
                    responses: vec![response],
                    basis,
                    kind,
                };
                self.entries.insert(q.key, entry);
            }
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.entries.remove(key) {
            let size: usize = old.responses.iter().map(|r| r.bytes.len()).sum();
            self.bytes = self.bytes.saturating_sub(size);
        }
    }
}
