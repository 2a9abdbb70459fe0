//! Cases as CoreDNS writes them: a question, the expected rcode and each section as
//! zone-file text, citing what it checks; asked of a real server three ways (UDP with
//! EDNS, UDP without, TCP).

use std::net::SocketAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use super::{assert_records, query_with, rcode, Ask, Transport};

pub struct Case {
    pub spec: &'static str,
    pub qname: &'static str,
    pub qtype: RecordType,
    pub rcode: ResponseCode,
    pub answer: &'static [&'static str],
    pub authority: &'static [&'static str],
    pub additional: &'static [&'static str],
}

pub const SOA_LINE: &str = "consul. 0 IN SOA ns.consul. hostmaster.consul. * 3600 600 86400 0";
pub const OK: ResponseCode = ResponseCode::NoError;

pub fn ok(
    spec: &'static str,
    qname: &'static str,
    qtype: RecordType,
    answer: &'static [&'static str],
) -> Case {
    Case {
        spec,
        qname,
        qtype,
        rcode: OK,
        answer,
        authority: &[],
        additional: &[],
    }
}

pub fn with_extra(c: Case, additional: &'static [&'static str]) -> Case {
    Case { additional, ..c }
}

pub fn nodata(spec: &'static str, qname: &'static str, qtype: RecordType) -> Case {
    Case {
        authority: &[SOA_LINE],
        ..ok(spec, qname, qtype, &[])
    }
}

pub fn nxdomain(spec: &'static str, qname: &'static str, qtype: RecordType) -> Case {
    Case {
        rcode: ResponseCode::NXDomain,
        authority: &[SOA_LINE],
        ..ok(spec, qname, qtype, &[])
    }
}

/// Asks every case of `cases` of `dns` over UDP with EDNS, UDP without and TCP; each
/// reply must be authoritative, whole (no TC), carry RA exactly when `recursion`, echo
/// the OPT record iff sent, and hold the case's sections.
pub async fn check_cases(dns: SocketAddr, cases: &[Case], recursion: bool) {
    let ways = [
        ("UDP+EDNS", Transport::Udp, Some(1232), false),
        ("UDP", Transport::Udp, None, true),
        ("TCP", Transport::Tcp, None, true),
    ];
    for (way, transport, edns, rd) in ways {
        let ask = Ask {
            transport,
            edns,
            rd,
        };
        for c in cases {
            let what = format!("[{}] {} {} over {way}", c.spec, c.qname, c.qtype);
            let m = query_with(dns, c.qname, c.qtype, ask).await;
            assert_eq!(rcode(&m), c.rcode, "{what}: rcode");
            assert!(m.metadata.authoritative, "{what}: AA");
            assert!(!m.metadata.truncation, "{what}: TC");
            assert_eq!(m.metadata.recursion_available, recursion, "{what}: RA");
            assert_eq!(
                m.edns.is_some(),
                ask.edns.is_some(),
                "{what}: OPT echoed iff sent"
            );
            assert_records(&format!("{what}: answer"), &m.answers, c.answer);
            assert_records(&format!("{what}: authority"), &m.authorities, c.authority);
            assert_records(&format!("{what}: additional"), &m.additionals, c.additional);
        }
    }
}
