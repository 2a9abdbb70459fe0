//! The query log (`--query-log`): one event per query answered, 1 in `--query-log-sample`
//! of them, with tracing target [`TARGET`]; the binary writes these as JSON lines on
//! stdout. Fields: `client`, `port`, `proto` (`udp`, `tcp`, `tls`), `name` (as asked, in
//! presentation form: bytes that are not printable ASCII as `\DDD`), `qtype`, `rcode`,
//! `answers` (records in the answer section), `form` (the name form, as in
//! `dns_queries_total`), `stale` (served from data whose watch is failing) and `us`
//! (microseconds from arrival to the reply handed to the socket).
//!
//! Off, it costs a query one branch: no clock read, no formatting. On, the draw of the
//! sample comes first; only a query drawn reads the clock and its question.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Instant;

use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{Header, Query};
use hickory_server::proto::rr::{Name, RecordType};
use hickory_server::proto::serialize::binary::{BinDecodable, BinDecoder};
use rand::Rng;

use crate::metrics::NameForm;

/// The tracing target of the query log's events.
pub const TARGET: &str = "consul_dns::query";

/// How a query came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    /// DNS over TLS.
    Tls,
}

impl Transport {
    /// The protocol DNS sees: TLS is a stream, answered as TCP.
    pub fn protocol(self) -> Protocol {
        match self {
            Transport::Udp => Protocol::Udp,
            Transport::Tcp | Transport::Tls => Protocol::Tcp,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// The query log's setting: 1 query in `sample` is logged.
#[derive(Debug, Clone, Copy)]
pub struct QueryLog {
    sample: u32,
}

impl QueryLog {
    /// Logs 1 query in `sample` (0 and 1: every one).
    pub fn new(sample: u32) -> QueryLog {
        QueryLog {
            sample: sample.max(1),
        }
    }

    /// Whether the query now arriving is logged: 1 in `sample`, drawn at random (so that
    /// no pattern in the traffic lines up with the sample), from the thread's generator.
    pub fn sampled(&self) -> bool {
        self.sample == 1 || rand::rng().random_ratio(1, self.sample)
    }
}

/// A query drawn for the log: what is known of it when it arrives.
pub struct Logged {
    start: Instant,
    client: SocketAddr,
    transport: Transport,
    question: Option<Query>,
}

impl Logged {
    /// `message`, arrived from `client` over `transport`.
    pub fn new(message: &[u8], client: SocketAddr, transport: Transport) -> Logged {
        let start = Instant::now();
        let mut decoder = BinDecoder::new(message);
        let question = Header::read(&mut decoder)
            .ok()
            .filter(|h| h.counts.queries > 0)
            .and_then(|_| Query::read(&mut decoder).ok());
        Logged {
            start,
            client,
            transport,
            question,
        }
    }

    /// Logs the query with its reply `reply` (a whole DNS message), to a name of `form`,
    /// `stale` or not.
    pub fn answered(self, reply: &[u8], form: NameForm, stale: bool) {
        let us = u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX);
        let name = self.question.as_ref().map(|q| presentation(q.name()));
        let qtype = self.question.as_ref().map(|q| type_name(q.query_type()));
        let rcode = reply.get(3).map(|b| rcode_name(b & 0x0f));
        let answers = reply
            .get(6..8)
            .map(|c| u64::from(u16::from_be_bytes([c[0], c[1]])));
        tracing::info!(
            target: TARGET,
            client = %self.client.ip(),
            port = self.client.port(),
            proto = self.transport.as_str(),
            name = name.as_deref(),
            qtype = qtype.as_deref(),
            rcode = rcode.as_deref(),
            answers,
            form = form.as_str(),
            stale,
            us,
        );
    }
}

/// `name` in presentation form (RFC 1035 §5.1, as dig writes it): printable ASCII as is
/// but for `.`, `;`, `\`, `"`, `(`, `)`, `@` and `$`, escaped with `\`; any other byte as
/// `\DDD` (decimal). Names come from the network: any byte can be in a label.
pub fn presentation(name: &Name) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    for label in name.iter() {
        for &b in label {
            match b {
                b'.' | b';' | b'\\' | b'"' | b'(' | b')' | b'@' | b'$' => {
                    out.push('\\');
                    out.push(char::from(b));
                }
                0x21..=0x7e => out.push(char::from(b)),
                _ => {
                    let _ = write!(out, "\\{b:03}");
                }
            }
        }
        out.push('.');
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// A record type's mnemonic; `TYPE<n>` for one without (RFC 3597).
fn type_name(t: RecordType) -> Cow<'static, str> {
    match t {
        RecordType::Unknown(n) => Cow::Owned(format!("TYPE{n}")),
        t => Cow::Borrowed(<&'static str>::from(t)),
    }
}

/// A header rcode's mnemonic; `RCODE<n>` for one without.
fn rcode_name(code: u8) -> Cow<'static, str> {
    const NAMES: [&str; 11] = [
        "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
        "NXRRSET", "NOTAUTH", "NOTZONE",
    ];
    match NAMES.get(usize::from(code)) {
        Some(name) => Cow::Borrowed(name),
        None => Cow::Owned(format!("RCODE{code}")),
    }
}

#[cfg(test)]
mod tests {
    use hickory_server::proto::rr::{Label, Name, RecordType};

    use super::{presentation, rcode_name, type_name, QueryLog};

    #[test]
    fn names_are_written_as_dig_writes_them() {
        let ascii = Name::from_ascii("web.service.consul.").unwrap();
        assert_eq!(presentation(&ascii), "web.service.consul.");
        assert_eq!(presentation(&Name::root()), ".");
        let odd = Name::from_labels(vec![
            Label::from_raw_bytes(b"a\"b\\c\x00\xff d.e").unwrap(),
            Label::from_raw_bytes(b"consul").unwrap(),
        ])
        .unwrap();
        assert_eq!(presentation(&odd), r#"a\"b\\c\000\255\032d\.e.consul."#);
    }

    #[test]
    fn types_and_rcodes_have_names() {
        assert_eq!(type_name(RecordType::SRV), "SRV");
        assert_eq!(type_name(RecordType::Unknown(65280)), "TYPE65280");
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(rcode_name(12), "RCODE12");
    }

    #[test]
    fn one_in_n_is_drawn() {
        assert!((0..100).all(|_| QueryLog::new(1).sampled()));
        assert!((0..100).all(|_| QueryLog::new(0).sampled()));
        let drawn = (0..100_000).filter(|_| QueryLog::new(10).sampled()).count();
        assert!((9_000..11_000).contains(&drawn), "{drawn}");
    }
}
