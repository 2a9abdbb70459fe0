//! Query-name parser: turns the labels of a question name (lower-cased, with the Consul
//! domain already stripped) into a typed [`ConsulName`], once per query.
//!
//! # Grammar (Consul legacy DNS server, CE; spec §3)
//!
//! Labels are scanned **right to left**. The first label equal to one of `service`,
//! `connect`, `virtual`, `ingress`, `node`, `query`, `addr` decides the kind; labels to its
//! left are the *parts*, labels to its right the *suffixes*. If the query type is SRV and a
//! label starting with `_` is met before any kind label, the kind is `service` and that label
//! is the last part (`_db._tcp.consul`, `_db._primary.dc1.consul`).
//!
//! * Locality suffixes (service, connect, ingress, node, virtual): 0 labels; 1 label =
//!   datacenter (for `virtual`: peer); 2 or 4 labels = `<value>.<key>` pairs with key `dc` or
//!   `peer` (a repeated key: the last one wins); `dc` and `peer` together, another key
//!   (including the Enterprise `ns`/`ap`/`sg` and the newest-only `port`) or 3, 5, 6+ labels
//!   → invalid. `query`: 0 or 1 label (= datacenter). `addr`: suffixes are ignored.
//! * `service`: RFC 2782 form when there are exactly 2 parts and both start with `_`:
//!   `_svc._tag`, `_tcp` (and a bare `_`) = no tag, `_udp` is an ordinary tag. Otherwise the
//!   service is the last part and the tag all earlier parts joined by `.`; so
//!   `banana._db._primary.service.dc1` is service `_primary`, tag `banana._db` (legacy
//!   behaviour, which matches nothing downstream → NXDOMAIN, TS `ServiceAddressWithTagLookup`).
//! * `connect`, `ingress`, `virtual`: the last part is the service; earlier parts are ignored
//!   (legacy). Legacy ignores a peer for connect/ingress (it looks in the local datacenter)
//!   and ignores a datacenter for virtual; [`Locality`] still reports what was written.
//! * `node`: all parts joined by `.`.
//! * `query`: all parts joined by `.`; if there are ≥ 2 parts and the first and the last
//!   start with `_`, the last part (protocol) is dropped and the leading `_` stripped.
//! * `addr`: exactly one part of 8 (IPv4) or 32 (IPv6) hex digits; anything else is
//!   invalid (newest Consul; V1a answered other even lengths with an empty NOERROR).
//!
//! Deviations, both safe for real names: any empty label, an RFC 2782 service of `_`
//! (empty name) and a prepared-query name that is empty after stripping `_` are [`Invalid`].
//!
//! # Empty non-terminals (deliberate difference from Consul)
//!
//! Consul answers NXDOMAIN for everything it cannot look up, including `service.consul` and
//! `dc1.consul`. That breaks resolvers that minimise query names (RFC 9156) and treat
//! NXDOMAIN as "nothing below here" (RFC 8020). Here the rule is: **a name is [`Invalid`]
//! only if no query type could make it, or any name below it, exist.** Otherwise, if it is
//! not itself a lookup for the query type asked, it is an [`EmptyNonTerminal`]. Concretely, a
//! name that is not a lookup is an ENT when any of these holds:
//!
//! 1. **Kind label with nothing left of it** and a suffix valid for that kind:
//!    `service`, `node.dc1`, `connect.p1.peer`, `virtual.p1`, `query`, `query.dc1`,
//!    `addr.dc1` (for this rule `addr` takes the service-style locality, not "anything", so
//!    that an ENT is never below an NXDOMAIN: `addr.a.b.c` is invalid because `a.b.c` is).
//! 2. **A single `_`-part service**, explicit or SRV-implicit: `_tcp.service[.loc]`,
//!    `_tcp[.loc]` — ancestors of `_web._tcp…`. This is asked with qtype A by minimising
//!    resolvers, and stays an ENT with qtype SRV too (deviation: legacy would look up a
//!    service named `_tcp`; such a service is still reachable as `__tcp._tcp.service`).
//! 3. **The name is a lookup for the other query-type reading**: e.g. `_web._tcp` asked with
//!    qtype A (a Service for SRV), or `web.service._x.dc.b.dc` asked with SRV (whose SRV
//!    reading has an invalid locality but which is a Service for A).
//! 4. **No kind label and the whole name is the tail of a locality** (the part a descendant
//!    `<svc>.service.<tail>` would put right of its kind label): one label `x`; `x.dc`;
//!    `x.peer`; `dc.x.dc` / `peer.x.peer`; a full 4-label locality such as `a.dc.b.dc`.
//!    `foo.bar.baz`, `a.b`, `x.dc.y.peer` are invalid. Arbitrary `addr` suffixes
//!    (`<hex>.addr.a.b.c`, answered by legacy) do not make their suffixes ENTs.
//!
//! The ENT carries `datacenter: Some(dc)` when every reading that makes it an ENT needs that
//! datacenter (a lone label `dc1`, `dc1.dc`, `service.dc1`, `_tcp.dc1`): the caller answers
//! NOERROR only if `dc` exists and NXDOMAIN otherwise, matching Consul for unknown
//! datacenters. A lone locality label is a *peer* for `virtual`; a caller that knows its
//! peers may also accept a peer name there (otherwise `p1.consul` is NXDOMAIN even though
//! `web.virtual.p1.consul` exists). `datacenter: None` means unconditional (no datacenter
//! named, only a peer named, the datacenter is ignored by the kind, or readings disagree).
//!
//! Every proper suffix of a lookup name built from the grammar above with a canonical
//! locality (including `<hex>.addr.<dc>`) is Apex, an ENT or a lookup — never Invalid;
//! the tests check this by generation.
//!
//! [`Invalid`]: ConsulName::Invalid
//! [`EmptyNonTerminal`]: ConsulName::EmptyNonTerminal

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::Name;

use crate::metrics::NameForm;

/// A parsed query name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsulName<'a> {
    /// The domain apex itself (no labels).
    Apex,
    /// `[tag.]svc.service[.loc]` or RFC 2782 `_svc._tag|_tcp[.service][.loc]`.
    /// `tag`: `None` for no filter (and for `_tcp`); dotted tags are joined (`v1.primary`).
    /// `rfc2782`: the `_svc._tag` form was used (underscores stripped).
    Service {
        service: &'a str,
        tag: Option<Cow<'a, str>>,
        locality: Locality<'a>,
        rfc2782: bool,
    },
    /// `<svc>.connect[.loc]`. Legacy ignores `locality.peer` (looks in the local DC).
    Connect {
        service: &'a str,
        locality: Locality<'a>,
    },
    /// `<svc>.ingress[.loc]`. Legacy ignores `locality.peer` (looks in the local DC).
    Ingress {
        service: &'a str,
        locality: Locality<'a>,
    },
    /// `<svc>.virtual[.<peer>|.<peer>.peer|.<dc>.dc]`; a datacenter is ignored.
    Virtual {
        service: &'a str,
        peer: Option<&'a str>,
    },
    /// `<node>.node[.loc]`; node = all parts joined by `.`.
    Node {
        node: Cow<'a, str>,
        locality: Locality<'a>,
    },
    /// `<hex>.addr[.anything]`; 8 hex → V4, 32 hex → V6.
    Addr { ip: IpAddr },
    /// `<name-or-id>.query[.dc]` or `_<name>._<proto>.query[.dc]`; name may contain dots.
    PreparedQuery {
        name: Cow<'a, str>,
        datacenter: Option<&'a str>,
    },
    /// A proper ancestor of names that can exist (see the module doc): NOERROR, no data,
    /// provided `datacenter` (if any) exists.
    EmptyNonTerminal { datacenter: Option<&'a str> },
    /// Anything else: NXDOMAIN.
    Invalid,
}

impl ConsulName<'_> {
    /// The form it is counted and logged as.
    pub fn form(&self) -> NameForm {
        match self {
            ConsulName::Apex => NameForm::Apex,
            ConsulName::Service { .. } => NameForm::Service,
            ConsulName::Connect { .. } => NameForm::Connect,
            ConsulName::Ingress { .. } => NameForm::Ingress,
            ConsulName::Virtual { .. } => NameForm::Virtual,
            ConsulName::Node { .. } => NameForm::Node,
            ConsulName::Addr { .. } => NameForm::Addr,
            ConsulName::PreparedQuery { .. } => NameForm::Query,
            ConsulName::EmptyNonTerminal { .. } => NameForm::Ancestor,
            ConsulName::Invalid => NameForm::Invalid,
        }
    }
}

/// Locality suffix of a lookup. At most one of the two is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Locality<'a> {
    pub datacenter: Option<&'a str>,
    pub peer: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Service,
    Connect,
    Virtual,
    Ingress,
    Node,
    Query,
    Addr,
}

impl Kind {
    #[inline]
    fn from_label(label: &str) -> Option<Kind> {
        Some(match label {
            "service" => Kind::Service,
            "connect" => Kind::Connect,
            "virtual" => Kind::Virtual,
            "ingress" => Kind::Ingress,
            "node" => Kind::Node,
            "query" => Kind::Query,
            "addr" => Kind::Addr,
            _ => return None,
        })
    }
}

/// Result of reading the labels one way.
enum Reading<'a> {
    Name(ConsulName<'a>),
    /// An ancestor of a lookup; the datacenter it depends on.
    Ent(Option<&'a str>),
    Invalid,
}

/// Whether `name` (a prepared query's name or ID as asked, labels joined by dots) can
/// name a query: labels of letters, digits, `-` and `_`. Anything else (control bytes,
/// spaces, `/`, `%`, an empty label from an escaped dot) would be altered or reinterpreted
/// on its way into the URL `/v1/query/<name>/execute`, and Consul's names are DNS-safe
/// anyway: such a name is answered NXDOMAIN without asking Consul.
pub fn valid_query_name(name: &str) -> bool {
    name.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The labels of `name` left of its last `domain_labels` labels (the served domain),
/// lower-cased into `buf`, as [`parse`] takes them; None when one is not UTF-8 (no such
/// name can exist).
#[inline]
pub fn relative_labels<'b>(
    name: &Name,
    domain_labels: u8,
    buf: &'b mut [u8; 255],
) -> Option<Labels<'b>> {
    let keep = usize::from(name.num_labels().saturating_sub(domain_labels));
    let mut ends = smallvec::SmallVec::<[usize; 8]>::new();
    let mut end = 0;
    for label in name.iter().take(keep) {
        let to = buf.get_mut(end..end + label.len())?;
        for (l, b) in to.iter_mut().zip(label) {
            *l = b.to_ascii_lowercase();
        }
        end += label.len();
        ends.push(end);
    }
    let buf: &'b [u8] = buf;
    let mut labels = Labels::new();
    let mut start = 0;
    for end in ends {
        labels.push(std::str::from_utf8(buf.get(start..end)?).ok()?);
        start = end;
    }
    Some(labels)
}

/// The labels of a name, on the stack for the usual number of them.
pub type Labels<'a> = smallvec::SmallVec<[&'a str; 8]>;

/// Parse the labels (lower-cased, left to right, without the domain) of a query name.
pub fn parse<'a>(labels: &[&'a str], qtype_is_srv: bool) -> ConsulName<'a> {
    if labels.is_empty() {
        return ConsulName::Apex;
    }
    // One right-to-left scan: `kind` = rightmost kind label, `under` = rightmost `_` label
    // right of it (the SRV-implicit service position).
    let mut kind: Option<(usize, Kind)> = None;
    let mut under: Option<usize> = None;
    for (i, label) in labels.iter().enumerate().rev() {
        if let Some(k) = Kind::from_label(label) {
            kind = Some((i, k));
            break;
        }
        match label.as_bytes().first() {
            None => return ConsulName::Invalid,
            Some(b'_') if under.is_none() => under = Some(i),
            _ => {}
        }
    }
    if kind.is_some_and(|(k, _)| labels[..k].iter().any(|l| l.is_empty())) {
        return ConsulName::Invalid;
    }

    let srv_reading = |u: usize| read_service(&labels[..=u], &labels[u + 1..]);
    let kind_reading = |(k, kind): (usize, Kind)| read_kind(kind, &labels[..k], &labels[k + 1..]);

    let srv_first = qtype_is_srv && under.is_some();
    let actual = match (srv_first, under, kind) {
        (true, Some(u), _) => srv_reading(u),
        (_, _, Some(k)) => kind_reading(k),
        _ => Reading::Invalid,
    };

    // Not a lookup for this query type: is it a lookup for another, or an ancestor of one?
    let mut ent = EntAcc::default();
    match actual {
        Reading::Name(name) => return name,
        Reading::Ent(dc) => ent.add(dc),
        Reading::Invalid => {}
    }
    let other = match (srv_first, under, kind) {
        (true, _, Some(k)) => kind_reading(k),
        (false, Some(u), _) => srv_reading(u),
        _ => Reading::Invalid,
    };
    match other {
        Reading::Name(name) => ent.add(name_datacenter(&name)),
        Reading::Ent(dc) => ent.add(dc),
        Reading::Invalid => {}
    }
    if kind.is_none() {
        if let Some(dc) = locality_tail(labels) {
            ent.add(dc);
        }
    }
    match ent.0 {
        Some(datacenter) => ConsulName::EmptyNonTerminal { datacenter },
        None => ConsulName::Invalid,
    }
}

/// Combines the datacenters of the readings that make a name an ENT: `Some(dc)` only if all
/// of them need the same datacenter.
#[derive(Default)]
struct EntAcc<'a>(Option<Option<&'a str>>);

impl<'a> EntAcc<'a> {
    fn add(&mut self, dc: Option<&'a str>) {
        match self.0 {
            None => self.0 = Some(dc),
            Some(prev) if prev != dc => self.0 = Some(None),
            Some(_) => {}
        }
    }
}

fn name_datacenter<'a>(name: &ConsulName<'a>) -> Option<&'a str> {
    match name {
        ConsulName::Service { locality, .. }
        | ConsulName::Connect { locality, .. }
        | ConsulName::Ingress { locality, .. }
        | ConsulName::Node { locality, .. } => locality.datacenter,
        ConsulName::PreparedQuery { datacenter, .. } => *datacenter,
        _ => None,
    }
}

/// CE `parseLocality`; a single label is returned as the datacenter.
fn parse_locality<'a>(suffix: &[&'a str]) -> Option<Locality<'a>> {
    let mut loc = Locality::default();
    match suffix.len() {
        0 => {}
        1 => loc.datacenter = Some(suffix[0]),
        2 | 4 => {
            for pair in suffix.chunks_exact(2) {
                match pair[1] {
                    "dc" => loc.datacenter = Some(pair[0]),
                    "peer" => loc.peer = Some(pair[0]),
                    _ => return None,
                }
            }
            if loc.datacenter.is_some() && loc.peer.is_some() {
                return None;
            }
        }
        _ => return None,
    }
    Some(loc)
}

/// ENT rule 4: `labels` (no kind label) is a suffix of a valid locality. Returns the
/// datacenter the ENT depends on.
fn locality_tail<'a>(labels: &[&'a str]) -> Option<Option<&'a str>> {
    match *labels {
        ["dc" | "peer"] => Some(None),
        [v] => Some(Some(v)),
        [v, "dc"] => Some(Some(v)),
        [_, "peer"] => Some(None),
        ["dc", v, "dc"] => Some(Some(v)),
        ["peer", _, "peer"] => Some(None),
        [_, _, _, _] => parse_locality(labels).map(|l| l.datacenter),
        _ => None,
    }
}

fn join<'a>(parts: &[&'a str]) -> Cow<'a, str> {
    match parts {
        [one] => Cow::Borrowed(one),
        _ => Cow::Owned(parts.join(".")),
    }
}

fn read_service<'a>(parts: &[&'a str], suffix: &[&'a str]) -> Reading<'a> {
    let Some(locality) = parse_locality(suffix) else {
        return Reading::Invalid;
    };
    match parts {
        [] => Reading::Ent(locality.datacenter),
        [svc, tag] if svc.starts_with('_') && tag.starts_with('_') => {
            let service = &svc[1..];
            if service.is_empty() {
                return Reading::Invalid;
            }
            let tag = match &tag[1..] {
                "tcp" | "" => None,
                t => Some(Cow::Borrowed(t)),
            };
            Reading::Name(ConsulName::Service {
                service,
                tag,
                locality,
                rfc2782: true,
            })
        }
        // `_tcp.service`, `_tcp` (SRV): ancestor of `_svc._tcp…` (ENT rule 2).
        [one] if one.starts_with('_') => Reading::Ent(locality.datacenter),
        [tags @ .., service] => Reading::Name(ConsulName::Service {
            service,
            tag: if tags.is_empty() {
                None
            } else {
                Some(join(tags))
            },
            locality,
            rfc2782: false,
        }),
    }
}

fn read_kind<'a>(kind: Kind, parts: &[&'a str], suffix: &[&'a str]) -> Reading<'a> {
    match kind {
        Kind::Service => read_service(parts, suffix),
        Kind::Query => {
            if suffix.len() > 1 {
                return Reading::Invalid;
            }
            let datacenter = suffix.first().copied();
            let name = match parts {
                [] => return Reading::Ent(datacenter),
                [first, .., last] if first.starts_with('_') && last.starts_with('_') => {
                    match join(&parts[..parts.len() - 1]) {
                        Cow::Borrowed(s) => Cow::Borrowed(&s[1..]),
                        Cow::Owned(mut s) => {
                            s.remove(0);
                            Cow::Owned(s)
                        }
                    }
                }
                _ => join(parts),
            };
            if name.is_empty() {
                return Reading::Invalid;
            }
            Reading::Name(ConsulName::PreparedQuery { name, datacenter })
        }
        Kind::Addr => match parts {
            [] => match parse_locality(suffix) {
                Some(loc) => Reading::Ent(loc.datacenter),
                None => Reading::Invalid,
            },
            [hex] => match decode_ip(hex.as_bytes()) {
                Some(ip) => Reading::Name(ConsulName::Addr { ip }),
                None => Reading::Invalid,
            },
            _ => Reading::Invalid,
        },
        Kind::Connect | Kind::Ingress | Kind::Node | Kind::Virtual => {
            let Some(locality) = parse_locality(suffix) else {
                return Reading::Invalid;
            };
            let Some(&service) = parts.last() else {
                return Reading::Ent(locality.datacenter);
            };
            Reading::Name(match kind {
                Kind::Connect => ConsulName::Connect { service, locality },
                Kind::Ingress => ConsulName::Ingress { service, locality },
                Kind::Node => ConsulName::Node {
                    node: join(parts),
                    locality,
                },
                _ => ConsulName::Virtual {
                    service,
                    // One label is the peer; a `<dc>.dc` pair is ignored.
                    peer: if suffix.len() == 1 {
                        locality.datacenter
                    } else {
                        locality.peer
                    },
                },
            })
        }
    }
}

#[inline]
fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        *o = hex_val(pair[0])? << 4 | hex_val(pair[1])?;
    }
    Some(out)
}

fn decode_ip(s: &[u8]) -> Option<IpAddr> {
    match s.len() {
        8 => decode_hex::<4>(s).map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        32 => decode_hex::<16>(s).map(|b| IpAddr::V6(Ipv6Addr::from(b))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::ConsulName::*;
    use super::*;

    #[test]
    fn relative_labels_are_lower_cased_without_the_domain() {
        let lowered = |name: &str, domain_labels: u8| -> Option<Vec<String>> {
            let name = Name::from_ascii(name).expect("a name");
            let mut buf = [0; 255];
            let got = relative_labels(&name, domain_labels, &mut buf)?;
            Some(got.iter().map(|l| l.to_string()).collect())
        };
        assert_eq!(
            lowered("Web.SERVICE.Dc1.Consul.", 1).expect("UTF-8"),
            ["web", "service", "dc1"]
        );
        let long = "A.b.C.d.E.f.G.h.I.j.K.service.example.consul.";
        let want: Vec<String> = long.split('.').take(12).map(str::to_lowercase).collect();
        assert_eq!(
            lowered(long, 2).expect("UTF-8"),
            want,
            "more labels than kept inline"
        );
        assert!(lowered("CONSUL.", 1).expect("UTF-8").is_empty());

        let binary = Name::from_labels([&b"\xff\xfe"[..], b"service", b"consul"]).expect("raw");
        let mut buf = [0; 255];
        assert!(relative_labels(&binary, 1, &mut buf).is_none(), "not UTF-8");
    }

    fn labels(q: &str) -> Vec<&str> {
        if q.is_empty() {
            Vec::new()
        } else {
            q.split('.').collect()
        }
    }

    fn p(q: &str, srv: bool) -> ConsulName<'_> {
        parse(&labels(q), srv)
    }

    fn loc<'a>(dc: Option<&'a str>, peer: Option<&'a str>) -> Locality<'a> {
        Locality {
            datacenter: dc,
            peer,
        }
    }
    const L0: Locality<'static> = Locality {
        datacenter: None,
        peer: None,
    };
    fn dc(d: &str) -> Locality<'_> {
        loc(Some(d), None)
    }
    fn peer(p: &str) -> Locality<'_> {
        loc(None, Some(p))
    }
    fn svc<'a>(s: &'a str, tag: Option<&'a str>, l: Locality<'a>) -> ConsulName<'a> {
        Service {
            service: s,
            tag: tag.map(Cow::Borrowed),
            locality: l,
            rfc2782: false,
        }
    }
    fn rfc<'a>(s: &'a str, tag: Option<&'a str>, l: Locality<'a>) -> ConsulName<'a> {
        Service {
            service: s,
            tag: tag.map(Cow::Borrowed),
            locality: l,
            rfc2782: true,
        }
    }
    fn node<'a>(n: &'a str, l: Locality<'a>) -> ConsulName<'a> {
        Node {
            node: Cow::Borrowed(n),
            locality: l,
        }
    }
    fn pq<'a>(n: &'a str, d: Option<&'a str>) -> ConsulName<'a> {
        PreparedQuery {
            name: Cow::Borrowed(n),
            datacenter: d,
        }
    }
    fn ent(d: Option<&str>) -> ConsulName<'_> {
        EmptyNonTerminal { datacenter: d }
    }
    fn v4(a: u8, b: u8, c: u8, d: u8) -> ConsulName<'static> {
        Addr {
            ip: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        }
    }

    #[test]
    fn table() {
        let v6: IpAddr = "2607:f0d0:1002:51::4".parse().unwrap();
        #[rustfmt::skip]
        let rows: Vec<(&str, bool, ConsulName)> = vec![
            // --- apex
            ("", false, Apex),
            ("", true, Apex),
            // --- standard service (TS ServiceLookup, TagPeriod, ExtraTags)
            ("db", false, ent(Some("db"))),
            ("db.service", false, svc("db", None, L0)),
            ("db.service", true, svc("db", None, L0)),
            ("web.service.dc1", false, svc("web", None, dc("dc1"))),
            ("primary.db.service.dc1", true, svc("db", Some("primary"), dc("dc1"))),
            ("v1.primary.db.service", false, Service { service: "db", tag: Some(Cow::Owned("v1.primary".into())), locality: L0, rfc2782: false }),
            ("dummy.primary.db.service", true, Service { service: "db", tag: Some(Cow::Owned("dummy.primary".into())), locality: L0, rfc2782: false }),
            ("_v1.db.service", false, svc("db", Some("_v1"), L0)),
            // --- RFC 2782 (TS SRV_RFC, SRV_RFC_TCP_Default, ServiceAddressWithTagLookup)
            ("_db._tcp.service.dc1", true, rfc("db", None, dc("dc1"))),
            ("_db._tcp.service", true, rfc("db", None, L0)),
            ("_db._tcp.dc1", true, rfc("db", None, dc("dc1"))),
            ("_db._tcp", true, rfc("db", None, L0)),
            ("_db._primary.service.dc1", true, rfc("db", Some("primary"), dc("dc1"))),
            ("_db._primary.dc1", true, rfc("db", Some("primary"), dc("dc1"))),
            ("_db._udp.service", true, rfc("db", Some("udp"), L0)),
            ("_db._tcp.service", false, rfc("db", None, L0)), // explicit kind: any qtype
            ("_db._.service", false, rfc("db", None, L0)),    // empty tag = no filter
            ("_._tcp.service", false, Invalid),                // empty service
            ("_db._tcp.service.dc1.dc", true, rfc("db", None, dc("dc1"))),
            ("_db._tcp.p1.peer", true, rfc("db", None, peer("p1"))),
            ("banana._db._primary.service.dc1", true, Service { service: "_primary", tag: Some(Cow::Owned("banana._db".into())), locality: dc("dc1"), rfc2782: false }),
            ("banana._db._primary.dc1", true, Service { service: "_primary", tag: Some(Cow::Owned("banana._db".into())), locality: dc("dc1"), rfc2782: false }),
            // SRV-implicit position wins over a kind label further left
            ("web.service._x", true, Service { service: "_x", tag: Some(Cow::Owned("web.service".into())), locality: L0, rfc2782: false }),
            ("web.service._x", false, svc("web", None, dc("_x"))),
            // RFC 2782 names asked with qtype A: exist for SRV only → ENT (NODATA)
            ("_db._tcp", false, ent(None)),
            ("_db._tcp.dc1", false, ent(Some("dc1"))),
            // SRV reading invalid (3-label locality), A reading valid → ENT for SRV
            ("web.service._x.dc.b.dc", true, ent(Some("b"))),
            ("web.service._x.dc.b.dc", false, svc("web", None, dc("b"))),
            // --- single `_` part: ancestor of `_svc._tag…`
            ("_tcp.service", false, ent(None)),
            ("_tcp.service", true, ent(None)),
            ("_tcp.service.dc1", false, ent(Some("dc1"))),
            ("_tcp", false, ent(None)),
            ("_tcp", true, ent(None)),
            ("_tcp.dc1", false, ent(Some("dc1"))),
            ("_tcp.dc1", true, ent(Some("dc1"))),
            ("__tcp._tcp.service", true, rfc("_tcp", None, L0)),
            // --- empty parts (Consul NXDOMAIN, TD InvalidQueries) → ENT
            ("service", true, ent(None)),
            ("node", true, ent(None)),
            ("query", true, ent(None)),
            ("addr", false, ent(None)),
            ("connect", false, ent(None)),
            ("ingress", false, ent(None)),
            ("virtual", false, ent(None)),
            ("service.dc1", false, ent(Some("dc1"))),
            ("service.dc1.dc", false, ent(Some("dc1"))),
            ("service.p1.peer", false, ent(None)),
            ("node.dc1", false, ent(Some("dc1"))),
            ("query.dc1", false, ent(Some("dc1"))),
            ("addr.dc1", false, ent(Some("dc1"))),
            ("virtual.p1", false, ent(Some("p1"))),
            // --- locality suffixes
            ("web.service.dc1.dc", false, svc("web", None, dc("dc1"))),
            ("web.service.p1.peer", false, svc("web", None, peer("p1"))),
            ("web.service.a.dc.b.dc", false, svc("web", None, dc("b"))),
            ("web.service.a.peer.b.peer", false, svc("web", None, peer("b"))),
            ("web.service.dc1.dc.p1.peer", false, Invalid),
            ("web.service.p1.peer.dc1.dc", false, Invalid),
            ("web.service.ns1.ns", false, Invalid),
            ("web.service.ap1.ap", false, Invalid),
            ("web.service.sg1.sg", false, Invalid),
            ("web.service.http.port", false, Invalid),
            ("web.service.a.b", false, Invalid),
            ("foo.service.dc1.extra.more", true, Invalid), // TD InvalidQueries
            ("foo.node.dc1.extra.more", true, Invalid),
            ("foo.query.dc1.extra.more", true, Invalid),
            ("web.service.a.dc.b.dc.c.dc", false, Invalid), // 6 labels: newest-only
            ("web.service.a.b.c.d.e", false, Invalid),
            // --- connect / ingress (TS ConnectServiceLookup, IngressServiceLookup)
            ("db.connect", true, Connect { service: "db", locality: L0 }),
            ("db.connect.dc2", false, Connect { service: "db", locality: dc("dc2") }),
            ("x.db.connect", false, Connect { service: "db", locality: L0 }),
            ("db.connect.p1.peer", false, Connect { service: "db", locality: peer("p1") }),
            ("db.ingress", false, Ingress { service: "db", locality: L0 }),
            ("db.ingress.dc1.dc", false, Ingress { service: "db", locality: dc("dc1") }),
            ("db.ingress.dc1.dc.p1.peer", false, Invalid),
            // --- virtual (TD VirtualIPLookup)
            ("db.virtual", false, Virtual { service: "db", peer: None }),
            ("db.virtual.cluster-01", false, Virtual { service: "db", peer: Some("cluster-01") }),
            ("db.virtual.cluster-01.peer", false, Virtual { service: "db", peer: Some("cluster-01") }),
            ("db.virtual.dc1.dc", false, Virtual { service: "db", peer: None }),
            ("db.virtual.dc1.dc.p.peer", false, Invalid),
            ("db.virtual.a.b.c", false, Invalid),
            // --- node (TN NodeLookup, PeriodName, CaseInsensitive is handled by the caller)
            ("foo.node", false, node("foo", L0)),
            ("foo.node.dc1", false, node("foo", dc("dc1"))),
            ("foo.node.dc1.dc", false, node("foo", dc("dc1"))),
            ("foo.node.p1.peer", false, node("foo", peer("p1"))),
            ("foo.bar.node", false, Node { node: Cow::Owned("foo.bar".into()), locality: L0 }),
            ("my.test-node.node.dc1", false, Node { node: Cow::Owned("my.test-node".into()), locality: dc("dc1") }),
            ("foo.node.ns1.ns", false, Invalid),
            ("foo.node.srv", true, node("foo", dc("srv"))),
            // rightmost kind label wins
            ("web.service.node.dc1", false, node("web.service", dc("dc1"))),
            ("0a020101.addr.service", false, svc("addr", Some("0a020101"), L0)),
            // --- prepared query (TS ServiceLookup, PreparedQuery_*)
            ("nope.query", true, pq("nope", None)),
            ("test.query.dc1", true, pq("test", Some("dc1"))),
            ("some.query.name.query", false, PreparedQuery { name: Cow::Owned("some.query.name".into()), datacenter: None }),
            ("_test._tcp.query", true, pq("test", None)),
            ("_test._tcp.query.dc1", false, pq("test", Some("dc1"))),
            ("_some.dotted._tcp.query", true, PreparedQuery { name: Cow::Owned("some.dotted".into()), datacenter: None }),
            ("_test.query", true, pq("_test", None)),
            ("test._tcp.query", true, PreparedQuery { name: Cow::Owned("test._tcp".into()), datacenter: None }),
            ("_._tcp.query", false, Invalid),
            ("test.query.dc1.dc", false, Invalid),
            // --- addr (TS ServiceAddress_*, spec §3.4)
            ("7f000001.addr.dc1", false, v4(127, 0, 0, 1)),
            ("0a020101.addr", true, v4(10, 2, 1, 1)),
            ("0A020101.addr", false, v4(10, 2, 1, 1)),
            ("0a020101.addr.a.b.c.d.e", false, v4(10, 2, 1, 1)),
            ("2607f0d010020051000000000000004.addr.dc1", false, Invalid), // 31 hex
            ("2607f0d0100200510000000000000004.addr.dc1", false, Addr { ip: v6 }),
            ("0a02010.addr", false, Invalid),
            ("0a0201011.addr", false, Invalid),
            ("0a02010z.addr", false, Invalid),
            ("0a02.addr", false, Invalid),
            ("x.0a020101.addr", false, Invalid),
            ("addr.a.b.c", false, Invalid),
            // --- no kind label: locality tails
            ("dc1", false, ent(Some("dc1"))),
            ("dc1", true, ent(Some("dc1"))),
            ("dc", false, ent(None)),
            ("peer", false, ent(None)),
            ("dc1.dc", false, ent(Some("dc1"))),
            ("p1.peer", false, ent(None)),
            ("dc.dc1.dc", false, ent(Some("dc1"))),
            ("peer.p1.peer", false, ent(None)),
            ("a.dc.b.dc", false, ent(Some("b"))),
            ("dc.x.peer", false, Invalid),
            ("x.dc.y.peer", false, Invalid),
            ("foo.bar", false, Invalid),
            ("foo.bar.baz", false, Invalid),
            ("foo.bar.baz", true, Invalid),
            ("service.dc1.extra.more", false, Invalid),
            ("a.b.c.d.e", false, Invalid),
            // kind label right of a `_` label: A reads the kind, SRV the `_` label
            ("service._x", false, ent(None)),
            ("service._x", true, svc("_x", Some("service"), L0)),
        ];
        assert!(rows.len() >= 60);
        let mut failures = Vec::new();
        for (q, srv, want) in &rows {
            let got = p(q, *srv);
            if &got != want {
                failures.push(format!("{q:?} srv={srv}: got {got:?}, want {want:?}"));
            }
        }
        assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    }

    #[test]
    fn no_allocation_in_common_cases() {
        for (q, srv) in [
            ("web.service.dc1", false),
            ("primary.web.service", false),
            ("_web._tcp.service", true),
            ("_web._udp.dc1", true),
            ("foo.node.dc1", false),
            ("_q._tcp.query", true),
            ("q.query", true),
        ] {
            match p(q, srv) {
                Service { tag, .. } => assert!(!matches!(tag, Some(Cow::Owned(_))), "{q}"),
                Node { node, .. } => assert!(matches!(node, Cow::Borrowed(_)), "{q}"),
                PreparedQuery { name, .. } => assert!(matches!(name, Cow::Borrowed(_)), "{q}"),
                other => panic!("{q}: {other:?}"),
            }
        }
    }

    /// Every proper suffix of a lookup name must be Apex, an ENT or itself a lookup (for
    /// both qtype readings, since minimising resolvers ask A/NS), and an ENT's datacenter, if
    /// any, must be the one the full name is in.
    #[test]
    fn suffixes_of_valid_names_are_never_invalid() {
        let heads: &[(&[&str], bool)] = &[
            (&["web", "service"], false),
            (&["primary", "web", "service"], false),
            (&["v1", "primary", "web", "service"], false),
            (&["_web", "_tcp", "service"], true),
            (&["_web", "_tcp"], true),
            (&["_web", "_primary"], true),
            (&["banana", "_db", "_primary"], true),
            (&["web", "connect"], false),
            (&["web", "ingress"], false),
            (&["web", "virtual"], false),
            (&["foo", "node"], false),
            (&["foo", "bar", "node"], false),
            (&["q", "query"], false),
            (&["_q", "_tcp", "query"], true),
            (&["0a020101", "addr"], false),
            (&["2607f0d0100200510000000000000004", "addr"], false),
        ];
        let locs: &[&[&str]] = &[
            &[],
            &["dc1"],
            &["dc"],
            &["peer"],
            &["dc1", "dc"],
            &["p1", "peer"],
            &["dc", "dc"],
            &["a", "dc", "dc1", "dc"],
            &["p0", "peer", "p1", "peer"],
            &["dc", "dc", "dc", "dc"],
        ];
        let mut checked = 0;
        let mut skipped = 0;
        for (head, srv) in heads {
            for l in locs {
                let full: Vec<&str> = head.iter().chain(l.iter()).copied().collect();
                let name = parse(&full, *srv);
                if matches!(name, Invalid) {
                    // `query` takes 0 or 1 locality label; skip what the grammar rejects.
                    assert!(head.contains(&"query"), "{full:?}");
                    skipped += 1;
                    continue;
                }
                assert!(
                    !matches!(name, EmptyNonTerminal { .. }),
                    "{full:?} {name:?}"
                );
                let want_dc = match &name {
                    Service { locality, .. }
                    | Connect { locality, .. }
                    | Ingress { locality, .. }
                    | Node { locality, .. } => Some(locality.datacenter),
                    PreparedQuery { datacenter, .. } => Some(*datacenter),
                    _ => None,
                };
                for i in 1..=full.len() {
                    let suffix = &full[i..];
                    for qsrv in [false, true] {
                        let got = parse(suffix, qsrv);
                        checked += 1;
                        match got {
                            Invalid => panic!("{suffix:?} (srv={qsrv}) of {full:?}: Invalid"),
                            EmptyNonTerminal {
                                datacenter: Some(d),
                            } => {
                                if let Some(w) = want_dc {
                                    assert_eq!(w, Some(d), "{suffix:?} of {full:?}");
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
        assert!(checked > 500, "{checked}");
        assert_eq!(skipped, 2 * 6, "2 query heads x 6 multi-label localities");
    }

    #[test]
    fn brief_walks() {
        // What a QNAME-minimising resolver asks (qtype A) on the way down.
        for q in [
            "web.service.dc1",
            "_web._tcp.service",
            "_web._tcp",
            "primary.web.service",
            "foo.node.dc1",
            "0a020101.addr.dc1",
            "web.service.dc1.dc",
        ] {
            let l = labels(q);
            for i in 1..=l.len() {
                let got = parse(&l[i..], false);
                assert!(!matches!(got, Invalid), "{:?} of {q}", &l[i..]);
            }
        }
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let long = "a".repeat(10_000);
        let many: Vec<&str> = std::iter::repeat_n("x", 127).collect();
        let mut many_kind = many.clone();
        many_kind.push("service");
        let mut many_under = vec!["_a"; 127];
        many_under.push("_b");
        let odd: Vec<Vec<&str>> = vec![
            vec![""],
            vec!["", ""],
            vec!["", "service"],
            vec!["web", "", "service"],
            vec!["service", ""],
            vec!["_", "_"],
            vec!["_"],
            vec!["_", "query"],
            vec!["_", "_", "query"],
            vec!["__", "_", "query"],
            vec![&long, "service"],
            vec![&long],
            vec!["é", "service"],
            vec!["_é", "_ü", "service"],
            vec!["ü", "addr"],
            vec!["0a0201é", "addr"],
            vec!["ééééé", "addr"],
            vec!["\u{0}", "node"],
            many.clone(),
            many_kind.clone(),
            many_under.clone(),
        ];
        for l in &odd {
            for srv in [false, true] {
                let _ = parse(l, srv);
            }
        }
        assert_eq!(parse(&[""], false), Invalid);
        assert_eq!(parse(&["web", "", "service"], false), Invalid);
        assert_eq!(parse(&many, false), Invalid);
        assert_eq!(parse(&["ééééé", "addr"], false), Invalid); // 10 bytes, not hex
        assert_eq!(parse(&["0a0201é", "addr"], false), Invalid); // 8 bytes, not hex
        match parse(&many_kind, false) {
            Service {
                service: "x",
                tag: Some(t),
                ..
            } => assert_eq!(t.len(), 126 * 2 - 1),
            other => panic!("{other:?}"),
        }
    }
}
