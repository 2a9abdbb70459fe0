//! How a reply is made to fit what its client takes (RFC 1035 §4.2.1, RFC 6891 §7,
//! RFC 7766 §8): whole records are left out, never bytes, so the header's counts are
//! those of the sections carried and the OPT record is there whenever the query had one.
//!
//! In order: the answer count limits (Consul's `udp_answer_limit` on UDP without EDNS;
//! 4096 answers, 1024 SRV, over TCP), then size. What is optional goes first and costs no
//! TC (RFC 2181 §9: TC means the answer is incomplete, not that extra information was left
//! out): the additional section is cut to what fits, and a positive answer's authority
//! section dropped. Only when the answers themselves do not fit are they cut, as few as
//! needed, with the additional section rebuilt to the targets of the answers kept
//! (Consul's `syncExtra`), and TC set.
//!
//! A UDP reply to a client outside `allow_recursion` (whose source address may be forged)
//! is also held to [`AMPLIFICATION`] times the size of its query, and its answers are all
//! or nothing: answers that do not fit are left out whole, with TC, as NSD and Knot do, so
//! a forged query cannot draw a large reply at a victim.
//!
//! hickory's encoder can cut a message at a size limit, but it rolls a record that does
//! not fit back without shortening its buffer and goes on with the next sections, so its
//! counts and bytes can disagree and the OPT record can be lost: nothing here lets it cut.
//! Sizes are measured by encoding with no limit in force.

use hickory_server::proto::op::{Edns, Metadata};
use std::collections::HashSet;

use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::proto::serialize::binary::BinEncoder;
use hickory_server::zone_handler::{MessageResponseBuilder, Queries};

/// The largest DNS message over TCP that Consul builds (its `trimTCPResponse`), below the
/// 65,535 bytes of the length prefix.
pub const TCP_MAX_SIZE: usize = 65_523;
/// Most answers over TCP (Consul's `trimTCPResponse`); SRV answers carry their targets'
/// records too, hence fewer.
const TCP_MAX_ANSWERS: usize = 4096;
const TCP_MAX_SRV_ANSWERS: usize = 1024;
/// A UDP message without EDNS (RFC 1035 §4.2.1), and the least an EDNS payload means
/// (RFC 6891 §6.2.5).
pub const UDP_MIN_SIZE: usize = 512;

/// The most bytes a UDP reply to an untrusted client carries per byte of its query.
pub const AMPLIFICATION: usize = 4;

/// What one reply may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Bytes of the whole message.
    pub size: usize,
    /// Answer records.
    pub answers: usize,
    /// Answers that do not all fit are all left out (else as many as fit are sent).
    pub whole: bool,
}

impl Limit {
    /// A UDP reply to a query advertising `payload` (None: no EDNS), sent no larger than
    /// `max_payload`; without EDNS at most `udp_answer_limit` answers.
    pub fn udp(payload: Option<u16>, max_payload: u16, udp_answer_limit: usize) -> Limit {
        match payload {
            Some(p) => Limit {
                size: usize::from(p.min(max_payload)).max(UDP_MIN_SIZE),
                answers: usize::MAX,
                whole: false,
            },
            None => Limit {
                size: UDP_MIN_SIZE,
                answers: udp_answer_limit,
                whole: false,
            },
        }
    }

    /// `size` bytes, nothing else.
    pub fn bytes(size: usize) -> Limit {
        Limit {
            size,
            answers: usize::MAX,
            whole: false,
        }
    }

    /// This limit for a client outside `allow_recursion` whose query is `query_len` bytes.
    pub fn untrusted(self, query_len: usize) -> Limit {
        Limit {
            size: self.size.min(untrusted_cap(query_len)),
            whole: true,
            ..self
        }
    }

    /// A TCP reply to a question of `qtype`.
    pub fn tcp(qtype: RecordType) -> Limit {
        Limit {
            size: TCP_MAX_SIZE,
            answers: if qtype == RecordType::SRV {
                TCP_MAX_SRV_ANSWERS
            } else {
                TCP_MAX_ANSWERS
            },
            whole: false,
        }
    }
}

/// The size of a UDP reply to an untrusted client whose query is `query_len` bytes.
pub fn untrusted_cap(query_len: usize) -> usize {
    AMPLIFICATION.saturating_mul(query_len)
}

/// The parts of a reply besides its records: they are measured with them.
pub struct Frame<'q> {
    pub queries: &'q Queries,
    pub metadata: Metadata,
    pub edns: Option<&'q Edns>,
}

/// The records a reply carries, and whether answers were left out (TC).
#[derive(Debug)]
pub struct Fitted<'a> {
    pub answers: &'a [Record],
    pub authority: &'a [Record],
    pub additionals: Vec<&'a Record>,
    pub truncated: bool,
}

/// The sections of a reply, fitted to `limit`.
pub fn fit<'a>(
    frame: &Frame<'_>,
    answers: &'a [Record],
    authority: &'a [Record],
    additionals: &'a [Record],
    limit: Limit,
) -> Fitted<'a> {
    let capped = &answers[..answers.len().min(limit.answers)];
    let mut fitted = Fitted {
        answers: capped,
        authority,
        additionals: additionals.iter().collect(),
        truncated: capped.len() < answers.len(),
    };
    if fitted.truncated {
        fitted.additionals = targets_of(capped, additionals);
    }
    if frame.upper_bound(&fitted) <= limit.size || frame.fits(&fitted, limit.size) {
        return fitted;
    }
    // An answer's authority section (NS) is optional; a negative answer's (SOA) is not.
    let required: &[Record] = if capped.is_empty() { authority } else { &[] };
    let bare = |n: usize| Fitted {
        answers: &capped[..n],
        authority: required,
        additionals: Vec::new(),
        truncated: n < answers.len(),
    };
    let all = bare(capped.len());
    if frame.fits(&all, limit.size) {
        let mut best = all;
        let with_authority = Fitted {
            authority,
            ..bare(capped.len())
        };
        if frame.fits(&with_authority, limit.size) {
            best = with_authority;
        }
        let extra = fitted.additionals;
        let kept = largest(extra.len(), |k| {
            let trial = Fitted {
                additionals: extra[..k].to_vec(),
                ..best.clone_sections()
            };
            frame.fits(&trial, limit.size)
        });
        best.additionals = extra[..kept].to_vec();
        return best;
    }
    if limit.whole {
        return Fitted {
            answers: &[],
            authority: &[],
            additionals: Vec::new(),
            truncated: true,
        };
    }
    // The answers do not all fit: as many as fit with their targets' records, else as many
    // as fit alone (else none).
    let with_targets = |k: usize| Fitted {
        additionals: targets_of(&capped[..k], additionals),
        ..bare(k)
    };
    let k = largest(capped.len(), |k| frame.fits(&with_targets(k), limit.size));
    if k > 0 {
        return with_targets(k);
    }
    bare(largest(capped.len(), |k| frame.fits(&bare(k), limit.size)))
}

impl Fitted<'_> {
    fn clone_sections(&self) -> Self {
        Fitted {
            answers: self.answers,
            authority: self.authority,
            additionals: self.additionals.clone(),
            truncated: self.truncated,
        }
    }
}

/// The largest `k` in `0..=n` for which `fits(k)` holds, given that it holds for every
/// smaller `k` if it holds at all (0 is taken to fit).
fn largest(n: usize, fits: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

impl Frame<'_> {
    /// Whether the message with `f`'s records encodes, whole, within `size` bytes.
    fn fits(&self, f: &Fitted<'_>, size: usize) -> bool {
        self.encoded_len(f, size).is_some()
    }

    /// The length of the message with `f`'s records if it encodes whole within `size`
    /// bytes. The encoder stops at `size` (what it leaves behind is thrown away here), so
    /// a trial costs no more than the bytes that fit, however many records are tried.
    fn encoded_len(&self, f: &Fitted<'_>, size: usize) -> Option<usize> {
        let mut bytes = Vec::with_capacity(UDP_MIN_SIZE);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(u16::try_from(size).unwrap_or(u16::MAX));
        let response = MessageResponseBuilder::new(self.queries, self.edns).build(
            self.metadata,
            f.answers.iter(),
            f.authority.iter(),
            std::iter::empty(),
            f.additionals.iter().copied(),
        );
        let counts = response.destructive_emit(&mut encoder).ok()?.counts();
        let whole = usize::from(counts.answers) == f.answers.len()
            && usize::from(counts.authorities) == f.authority.len()
            && usize::from(counts.additionals)
                == f.additionals.len() + usize::from(self.edns.is_some());
        let len = encoder.offset();
        (whole && len <= size).then_some(len)
    }

    /// At least the encoded length of the message with `f`'s records, worked out without
    /// encoding (names as if uncompressed); large for record types it does not know.
    fn upper_bound(&self, f: &Fitted<'_>) -> usize {
        let opt = self.edns.map_or(0, |e| {
            11 + e
                .options()
                .as_ref()
                .iter()
                .map(|(_, o)| 4 + usize::from(o.len()))
                .sum::<usize>()
        });
        let records = f
            .answers
            .iter()
            .chain(f.authority)
            .chain(f.additionals.iter().copied())
            .map(record_len)
            .fold(0usize, usize::saturating_add);
        (12 + self.queries.as_bytes().len() + opt).saturating_add(records)
    }
}

/// A name's length on the wire, uncompressed (`Name::len` counts a dot per label).
fn name_len(name: &Name) -> usize {
    name.len() + 1
}

/// At least a record's length on the wire: owner, type, class, TTL, length, data.
fn record_len(r: &Record) -> usize {
    let data = match &r.data {
        RData::A(_) => 4,
        RData::AAAA(_) => 16,
        RData::SRV(srv) => 6 + name_len(&srv.target),
        RData::CNAME(n) => name_len(&n.0),
        RData::NS(n) => name_len(&n.0),
        RData::PTR(n) => name_len(&n.0),
        RData::MX(mx) => 2 + name_len(&mx.exchange),
        RData::SOA(soa) => name_len(&soa.mname) + name_len(&soa.rname) + 20,
        RData::TXT(txt) => txt.txt_data.iter().map(|s| 1 + s.len()).sum(),
        _ => return usize::MAX / 4,
    };
    name_len(&r.name) + 10 + data
}

/// The records of `additionals` that the answers point at (SRV, NS, MX and CNAME targets,
/// following CNAMEs found among the additionals), in their order: Consul's `syncExtra`.
/// Linear in the records: it runs for each trial of a cut.
pub fn targets_of<'a>(answers: &[Record], additionals: &'a [Record]) -> Vec<&'a Record> {
    let mut targets: HashSet<LowerName> = answers
        .iter()
        .filter_map(target)
        .map(LowerName::from)
        .collect();
    let cnames: Vec<(LowerName, LowerName)> = additionals
        .iter()
        .filter_map(|r| match &r.data {
            RData::CNAME(c) => Some((LowerName::from(&r.name), LowerName::from(&c.0))),
            _ => None,
        })
        .collect();
    // A chain of n CNAMEs is followed in at most n rounds.
    for _ in 0..cnames.len() {
        let before = targets.len();
        for (from, to) in &cnames {
            if targets.contains(from) {
                targets.insert(to.clone());
            }
        }
        if targets.len() == before {
            break;
        }
    }
    additionals
        .iter()
        .filter(|r| targets.contains(&LowerName::from(&r.name)))
        .collect()
}

/// The name a record points at, whose records belong in the additional section.
fn target(r: &Record) -> Option<&Name> {
    match &r.data {
        RData::SRV(srv) => Some(&srv.target),
        RData::NS(n) => Some(&n.0),
        RData::MX(mx) => Some(&mx.exchange),
        RData::CNAME(n) => Some(&n.0),
        _ => None,
    }
}
