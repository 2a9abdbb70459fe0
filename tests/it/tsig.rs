//! TSIG (`consul_dns::dns::tsig`) against other implementations, on loopback only.
//!
//! - BIND's `dig -y hmac-sha256:NAME:SECRET` signs a query; a small responder here (UDP
//!   and TCP on 127.0.0.1) checks it with `verify_request` and signs its answer with the
//!   `ResponseSigner`; dig must find the answer's TSIG valid, and must say so when it is
//!   not (wrong secret, tampered answer, clock off, unknown key).
//! - `dig AXFR` reads a transfer of three messages, each signed in the chain (RFC 8945
//!   §5.3.1); a tampered middle message must fail.
//! - The `domain` crate's TSIG (NLnet Labs) on both sides: a request from `sign_request`
//!   accepted by its server side, its signed answer accepted by `verify_response`; its
//!   client signing an AXFR request, our chain of three messages accepted by its
//!   `ClientSequence`; its view of our BADSIG and BADTIME answers.
//!
//! A test whose program is missing prints `SKIPPED <test>: <why>`; with
//! `CONSUL_DNS_TESTS_NO_SKIP` set (CI) it fails instead.

use crate::program;

use std::net::SocketAddr;
use std::process::Command;
use std::str::FromStr;

use consul_dns::dns::tsig::{
    sign_request, unix_now, verify_request, verify_response, Algorithm, RequestAuth, TsigError,
    TsigKey,
};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, NS, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use program::{free_port, tool};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

const KEY_NAME: &str = "transfer-key";
const SECRET: &str = "ADOGQ1nZ2qmYElHwbp5lGKKfKnywZC1JrMiwMEI80sk=";
const OTHER_SECRET: &str = "c2VjcmV0LW9mLWFub3RoZXIta2V5LTAxMjM0NTY3ODk=";
const ZONE: &str = "example.test.";

fn key() -> TsigKey {
    TsigKey::new(KEY_NAME, SECRET).expect("key")
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("name")
}

// ---- the responder -------------------------------------------------------------------

/// How the responder misbehaves.
#[derive(Clone, Default)]
struct Twist {
    /// Added to its clock (BADTIME when beyond the fudge).
    clock_offset: i64,
    /// The index of the message whose content is changed after signing.
    tamper: Option<usize>,
    /// The index of the message signed by a fresh signer, as if it were the first: its
    /// MAC is good on its own but does not continue the chain.
    restart_chain: Option<usize>,
}

/// A DNS responder on 127.0.0.1 (UDP and TCP, one port) that verifies requests with
/// `verify_request` and signs what it sends with the `ResponseSigner`. Stops when dropped.
struct Responder {
    addr: SocketAddr,
    _rt: tokio::runtime::Runtime,
}

impl Responder {
    fn start(key: TsigKey, twist: Twist) -> Responder {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let (udp, tcp) = rt.block_on(async {
            (
                UdpSocket::bind(addr).await.expect("bind udp"),
                TcpListener::bind(addr).await.expect("bind tcp"),
            )
        });
        let (k, t) = (key.clone(), twist.clone());
        rt.spawn(async move {
            let mut buf = vec![0u8; 65535];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                for reply in replies(&k, &t, &buf[..n]) {
                    let _ = udp.send_to(&reply, peer).await;
                }
            }
        });
        rt.spawn(async move {
            loop {
                let Ok((mut stream, _)) = tcp.accept().await else {
                    continue;
                };
                let (k, t) = (key.clone(), twist.clone());
                tokio::spawn(async move {
                    loop {
                        let Ok(len) = stream.read_u16().await else {
                            return;
                        };
                        let mut request = vec![0u8; usize::from(len)];
                        if stream.read_exact(&mut request).await.is_err() {
                            return;
                        }
                        for reply in replies(&k, &t, &request) {
                            let len = u16::try_from(reply.len()).expect("fits");
                            let mut framed = len.to_be_bytes().to_vec();
                            framed.extend_from_slice(&reply);
                            if stream.write_all(&framed).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Responder { addr, _rt: rt }
    }
}

/// The messages answering `request`: an A record, or a zone transfer of three messages.
fn replies(key: &TsigKey, twist: &Twist, request: &[u8]) -> Vec<Vec<u8>> {
    let now = unix_now().saturating_add_signed(twist.clock_offset);
    let mut signer = match verify_request(key, request, now) {
        RequestAuth::Signed(signer) => signer,
        RequestAuth::Rejected(reply) if twist.tamper == Some(0) => return vec![tampered(&reply)],
        RequestAuth::Rejected(reply) => return vec![reply],
        RequestAuth::Malformed => return Vec::new(),
        RequestAuth::Unsigned => {
            let req = Message::from_vec(request).expect("parsed before");
            let mut reply = Message::error_msg(req.id, req.op_code, ResponseCode::Refused);
            reply.add_queries(req.queries.clone());
            return vec![reply.to_vec().expect("encodes")];
        }
    };
    let req = Message::from_vec(request).expect("verified, so it parses");
    let messages = match req.queries.first().map(Query::query_type) {
        Some(RecordType::AXFR) => transfer(&req),
        _ => vec![address_answer(&req)],
    };
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let bytes = m.to_vec().expect("encodes");
            let signed = if twist.restart_chain == Some(i) {
                let RequestAuth::Signed(mut fresh) = verify_request(key, request, now) else {
                    unreachable!("verified once already")
                };
                fresh.sign_at(&bytes, now).expect("signs")
            } else {
                signer.sign_at(&bytes, now).expect("signs")
            };
            if twist.tamper == Some(i) {
                tampered(&signed)
            } else {
                signed
            }
        })
        .collect()
}

fn response_to(req: &Message) -> Message {
    let mut m = Message::response(req.id, req.op_code);
    m.metadata.authoritative = true;
    m.add_queries(req.queries.clone());
    m
}

fn address_answer(req: &Message) -> Message {
    let mut m = response_to(req);
    if let Some(q) = req.queries.first() {
        m.add_answer(Record::from_rdata(
            q.name().clone(),
            60,
            RData::A(A::new(192, 0, 2, 1)),
        ));
    }
    m
}

/// `example.test.` in three messages: SOA NS A | A A | TXT SOA.
fn transfer(req: &Message) -> Vec<Message> {
    let soa = Record::from_rdata(
        name(ZONE),
        3600,
        RData::SOA(SOA::new(
            name("ns.example.test."),
            name("hostmaster.example.test."),
            2024010101,
            3600,
            600,
            86400,
            60,
        )),
    );
    let a = |owner: &str, last: u8| {
        Record::from_rdata(name(owner), 60, RData::A(A::new(192, 0, 2, last)))
    };
    let sections = [
        vec![
            soa.clone(),
            Record::from_rdata(name(ZONE), 3600, RData::NS(NS(name("ns.example.test.")))),
            a("ns.example.test.", 53),
        ],
        vec![a("www.example.test.", 80), a("web.example.test.", 81)],
        vec![
            Record::from_rdata(
                name("txt.example.test."),
                60,
                RData::TXT(TXT::new(vec!["signed in a chain".into()])),
            ),
            soa,
        ],
    ];
    sections
        .into_iter()
        .enumerate()
        .map(|(i, answers)| {
            // Only the first message repeats the question (RFC 5936 §2.2).
            let mut m = if i == 0 {
                response_to(req)
            } else {
                let mut m = Message::response(req.id, req.op_code);
                m.metadata.authoritative = true;
                m
            };
            m.add_answers(answers);
            m
        })
        .collect()
}

/// A signed message with its first answer's address changed (or, without one, its AA
/// flag), its TSIG record kept.
fn tampered(signed: &[u8]) -> Vec<u8> {
    let mut m = Message::from_vec(signed).expect("decodes");
    match m.answers.iter_mut().find(|r| matches!(r.data, RData::A(_))) {
        Some(record) => record.data = RData::A(A::new(198, 51, 100, 66)),
        None => m.metadata.authoritative = !m.metadata.authoritative,
    }
    m.to_vec().expect("encodes")
}

// ---- dig -------------------------------------------------------------------------------

fn dig(addr: SocketAddr, args: &[&str]) -> String {
    let dig = tool("dig").expect("checked before");
    let out = Command::new(dig)
        .arg(format!("@{}", addr.ip()))
        .args(["-p", &addr.port().to_string(), "+time=3", "+tries=1"])
        .args(args)
        .output()
        .expect("dig runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("---- dig {args:?}\n{text}");
    text
}

macro_rules! need_dig {
    ($test:expr) => {
        if tool("dig").is_none() {
            skip!(
                $test,
                "dig is not installed (apt-get install bind9-dnsutils; CI installs it)"
            );
        }
    };
}

fn y(secret: &str) -> String {
    format!("hmac-sha256:{KEY_NAME}:{secret}")
}

/// What dig prints when a TSIG does not verify (BIND 9.18): the reason, then a warning
/// at the end.
const DIG_FAILED: &str = "Couldn't verify signature";
const DIG_WARNING: &str = "Some TSIG could not be validated";

/// dig found every TSIG good.
fn assert_dig_verified(out: &str) {
    assert!(
        !out.contains(DIG_FAILED) && !out.contains(DIG_WARNING),
        "dig could not verify:\n{out}"
    );
}

/// dig says a TSIG failed, for `reason`.
fn assert_dig_failed(out: &str, reason: &str) {
    assert!(
        out.contains(&format!("{DIG_FAILED}: {reason}")) && out.contains(DIG_WARNING),
        "dig did not report {reason:?}:\n{out}"
    );
}

#[test]
fn dig_verifies_a_signed_answer_over_udp_and_tcp() {
    need_dig!("dig_verifies_a_signed_answer_over_udp_and_tcp");
    let r = Responder::start(key(), Twist::default());
    for transport in ["+notcp", "+tcp"] {
        let out = dig(
            r.addr,
            &["-y", &y(SECRET), transport, "www.example.test", "A"],
        );
        assert_dig_verified(&out);
        assert!(out.contains("status: NOERROR"), "{out}");
        assert!(out.contains("192.0.2.1"), "{out}");
        // The response's TSIG record: our key, hmac-sha256, fudge 300, a 32-byte MAC, no
        // error.
        assert!(out.contains(";; TSIG PSEUDOSECTION:"), "{out}");
        let tsig_line = out
            .lines()
            .find(|l| l.starts_with("transfer-key.") && l.contains("TSIG"))
            .unwrap_or_else(|| panic!("no TSIG record:\n{out}"));
        assert!(tsig_line.contains("hmac-sha256. "), "{tsig_line}");
        assert!(tsig_line.contains(" 300 32 "), "{tsig_line}");
        assert!(tsig_line.contains(" NOERROR 0"), "{tsig_line}");
    }
    // The key name in other capitals is the same key.
    let out = dig(
        r.addr,
        &[
            "-y",
            &format!("hmac-sha256:Transfer-KEY:{SECRET}"),
            "www.example.test",
            "A",
        ],
    );
    assert_dig_verified(&out);
    assert!(out.contains("status: NOERROR"), "{out}");

    // hmac-sha512 too.
    let sha512 = TsigKey::with_algorithm(KEY_NAME, SECRET, Algorithm::HmacSha512).expect("key");
    let r512 = Responder::start(sha512, Twist::default());
    let out = dig(
        r512.addr,
        &[
            "-y",
            &format!("hmac-sha512:{KEY_NAME}:{SECRET}"),
            "www.example.test",
            "A",
        ],
    );
    assert_dig_verified(&out);
    assert!(out.contains("hmac-sha512. "), "{out}");
    assert!(out.contains(" 300 64 "), "{out}");
}

#[test]
fn dig_sees_every_failure() {
    need_dig!("dig_sees_every_failure");
    let r = Responder::start(key(), Twist::default());

    // dig with another secret: our BADSIG, unsigned.
    let out = dig(r.addr, &["-y", &y(OTHER_SECRET), "www.example.test", "A"]);
    assert_dig_failed(&out, "tsig indicates error");
    assert!(out.contains("status: NOTAUTH"), "{out}");
    assert!(out.contains(" BADSIG "), "{out}");
    assert!(!out.contains("192.0.2.1"), "{out}");

    // dig with a key we do not know: BADKEY, its key name echoed.
    let out = dig(
        r.addr,
        &[
            "-y",
            &format!("hmac-sha256:other-key:{SECRET}"),
            "www.example.test",
            "A",
        ],
    );
    assert_dig_failed(&out, "tsig indicates error");
    assert!(out.contains("status: NOTAUTH"), "{out}");
    assert!(
        out.contains("other-key.") && out.contains(" BADKEY "),
        "{out}"
    );

    // The same secret for another algorithm: BADKEY.
    let out = dig(
        r.addr,
        &[
            "-y",
            &format!("hmac-sha512:{KEY_NAME}:{SECRET}"),
            "www.example.test",
            "A",
        ],
    );
    assert!(out.contains(" BADKEY "), "{out}");

    // Our clock 1000 s ahead: BADTIME, signed, our time in Other Data.
    let skewed = Responder::start(
        key(),
        Twist {
            clock_offset: 1000,
            ..Twist::default()
        },
    );
    let out = dig(skewed.addr, &["-y", &y(SECRET), "www.example.test", "A"]);
    // dig checks the MAC first ("tsig verify failure"), then reads the error: the BADTIME
    // is signed right.
    assert_dig_failed(&out, "clocks are unsynchronized");
    assert!(out.contains("status: NOTAUTH"), "{out}");
    assert!(out.contains(" BADTIME 6 "), "{out}");
    let skewed_tampered = Responder::start(
        key(),
        Twist {
            clock_offset: 1000,
            tamper: Some(0),
            ..Twist::default()
        },
    );
    let out = dig(
        skewed_tampered.addr,
        &["-y", &y(SECRET), "www.example.test", "A"],
    );
    assert_dig_failed(&out, "tsig verify failure");

    // A signed answer changed after signing: dig's own MAC check fails.
    let tamper = Responder::start(
        key(),
        Twist {
            tamper: Some(0),
            ..Twist::default()
        },
    );
    let out = dig(tamper.addr, &["-y", &y(SECRET), "www.example.test", "A"]);
    assert_dig_failed(&out, "tsig verify failure");
    assert!(out.contains("198.51.100.66"), "{out}");

    // Unsigned: our responder's policy is REFUSED (the caller's decision).
    let out = dig(r.addr, &["www.example.test", "A"]);
    assert!(out.contains("status: REFUSED"), "{out}");
}

#[test]
fn dig_verifies_a_signed_transfer_of_three_messages() {
    need_dig!("dig_verifies_a_signed_transfer_of_three_messages");
    let r = Responder::start(key(), Twist::default());
    let out = dig(r.addr, &["-y", &y(SECRET), ZONE, "AXFR"]);
    assert_dig_verified(&out);
    assert!(
        out.contains("XFR size: 7 records (messages 3,"),
        "not the whole transfer:\n{out}"
    );
    let tsigs = out
        .lines()
        .filter(|l| l.starts_with("transfer-key.") && l.contains(" NOERROR 0"))
        .count();
    assert_eq!(tsigs, 3, "a TSIG per message:\n{out}");
    assert!(out.contains("signed in a chain"), "{out}");

    // The middle message changed, or signed as a first message (out of the chain): dig
    // fails it.
    for twist in [
        Twist {
            tamper: Some(1),
            ..Twist::default()
        },
        Twist {
            restart_chain: Some(1),
            ..Twist::default()
        },
        Twist {
            restart_chain: Some(2),
            ..Twist::default()
        },
    ] {
        let broken = Responder::start(key(), twist);
        let out = dig(broken.addr, &["-y", &y(SECRET), ZONE, "AXFR"]);
        assert_dig_failed(&out, "tsig verify failure");
    }
    // Without a TSIG the responder refuses the transfer.
    let out = dig(r.addr, &[ZONE, "AXFR"]);
    assert!(out.contains("Transfer failed"), "{out}");
}

// ---- the domain crate ------------------------------------------------------------------

/// The `domain` crate's TSIG, in the shapes the tests need.
mod nlnet {
    use super::*;
    use domain::base::iana::{Rcode, Rtype};
    use domain::base::message_builder::AdditionalBuilder;
    use domain::base::{Message as DMessage, MessageBuilder, Name as DName};
    use domain::rdata::tsig::Time48;
    use domain::tsig::{Algorithm, Key, KeyName, ServerTransaction};

    pub use domain::tsig::{ClientSequence, ClientTransaction, ValidationError};

    pub fn key(secret: &str, key_name: &str) -> Key {
        let bits = data_encoding::BASE64
            .decode(secret.as_bytes())
            .expect("base64");
        let name = KeyName::from_str(key_name).expect("key name");
        Key::new(Algorithm::Sha256, &bits, name, None, None).expect("domain key")
    }

    pub fn time(t: u64) -> Time48 {
        Time48::from_u64(t)
    }

    pub fn message(bytes: Vec<u8>) -> DMessage<Vec<u8>> {
        DMessage::from_octets(bytes).expect("a message")
    }

    /// An AXFR request of the zone as domain builds it, signed by `sign`.
    pub fn axfr_request<T>(
        id: u16,
        sign: impl FnOnce(&mut AdditionalBuilder<Vec<u8>>) -> T,
    ) -> (Vec<u8>, T) {
        let mut builder = MessageBuilder::new_vec();
        builder.header_mut().set_id(id);
        let mut question = builder.question();
        let zone = DName::<Vec<u8>>::from_str(ZONE).expect("name");
        question.push((zone, Rtype::AXFR)).expect("push");
        let mut additional = question.additional();
        let state = sign(&mut additional);
        (additional.finish(), state)
    }

    /// domain's server side given `request` at `now`: its answer signed, or the TSIG
    /// error it would answer with.
    pub fn serve(key: &Key, request: &[u8], now: u64) -> Result<Vec<u8>, String> {
        let mut received = message(request.to_vec());
        let server = match ServerTransaction::request(key, &mut received, time(now)) {
            Ok(Some(server)) => server,
            Ok(None) => return Err("no TSIG".into()),
            Err(e) => return Err(e.error().to_string()),
        };
        let answer = MessageBuilder::new_vec()
            .start_answer(&received, Rcode::NOERROR)
            .expect("answer");
        let mut additional = answer.additional();
        server
            .answer(&mut additional, time(now))
            .expect("domain signs");
        Ok(additional.finish())
    }
}

fn notify(id: u16) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Notify);
    m.metadata.authoritative = true;
    m.add_query(Query::query(name(ZONE), RecordType::SOA));
    m.to_vec().expect("encodes")
}

#[test]
fn sign_request_and_verify_response_agree() {
    let now = unix_now();
    let (request, mac) = sign_request(&key(), &notify(0x5151), now).expect("signs");
    let RequestAuth::Signed(mut signer) = verify_request(&key(), &request, now) else {
        panic!("our own request does not verify")
    };
    let mut answer = Message::response(0x5151, OpCode::Notify);
    answer.metadata.authoritative = true;
    answer.add_query(Query::query(name(ZONE), RecordType::SOA));
    let reply = signer
        .sign_at(&answer.to_vec().expect("encodes"), now)
        .expect("signs");
    verify_response(&key(), &mac, &reply, now).expect("verifies");
    let other = TsigKey::new(KEY_NAME, OTHER_SECRET).expect("key");
    assert!(matches!(
        verify_response(&other, &mac, &reply, now),
        Err(TsigError::BadSig)
    ));
}

#[test]
fn domain_accepts_our_signed_notify_and_we_accept_its_answer() {
    let now = unix_now();
    let (request, mac) = sign_request(&key(), &notify(0x4242), now).expect("signs");
    let dkey = nlnet::key(SECRET, KEY_NAME);
    let answer = nlnet::serve(&dkey, &request, now + 5)
        .unwrap_or_else(|e| panic!("domain rejected our request: {e}"));
    verify_response(&key(), &mac, &answer, now).expect("domain's answer verifies");

    // With another secret domain refuses ours. (domain 0.11 answers a MAC that does not
    // match with FORMERR, not BADSIG.)
    let wrong = nlnet::key(OTHER_SECRET, KEY_NAME);
    match nlnet::serve(&wrong, &request, now) {
        Err(e) => assert!(e.starts_with("BADSIG") || e.starts_with("FORMERR"), "{e}"),
        Ok(_) => panic!("domain accepted a request signed with another secret"),
    }
    // Signed 301 s ago: BADTIME.
    match nlnet::serve(&dkey, &request, now + 301) {
        Err(e) => assert!(e.starts_with("BADTIME"), "{e}"),
        Ok(_) => panic!("domain accepted a request 301 s old"),
    }
}

#[test]
fn domain_verifies_our_chain_of_three_messages() {
    let now = unix_now();
    let dkey = nlnet::key(SECRET, KEY_NAME);
    // The chain as sent, the middle message changed when `tamper`.
    let exchange = |id: u16, tamper: bool| {
        let (request, sequence) = nlnet::axfr_request(id, |m| {
            nlnet::ClientSequence::request(dkey.clone(), m, nlnet::time(now)).expect("domain signs")
        });
        let RequestAuth::Signed(mut signer) = verify_request(&key(), &request, now) else {
            panic!("domain's signed request does not verify here")
        };
        let req = Message::from_vec(&request).expect("decodes");
        let mut messages: Vec<Vec<u8>> = transfer(&req)
            .iter()
            .map(|m| {
                signer
                    .sign_at(&m.to_vec().expect("encodes"), now)
                    .expect("signs")
            })
            .collect();
        if tamper {
            messages[1] = tampered(&messages[1]);
        }
        (sequence, messages)
    };

    let (mut sequence, messages) = exchange(777, false);
    for (i, bytes) in messages.into_iter().enumerate() {
        sequence
            .answer(&mut nlnet::message(bytes), nlnet::time(now))
            .unwrap_or_else(|e| panic!("domain rejects message {i}: {e}"));
    }
    sequence.done().expect("no unsigned messages left");

    let (mut sequence, messages) = exchange(778, true);
    sequence
        .answer(&mut nlnet::message(messages[0].clone()), nlnet::time(now))
        .expect("the first message is intact");
    let err = sequence
        .answer(&mut nlnet::message(messages[1].clone()), nlnet::time(now))
        .expect_err("domain accepted a changed message");
    assert!(matches!(err, nlnet::ValidationError::BadSig), "{err:?}");
}

/// BADTIME is left to dig (`dig_sees_every_failure`): domain 0.11 digests a BADTIME's
/// Other Data as 8 bytes where the record (and BIND, and RFC 8945) has 6, so it verifies
/// no one's BADTIME.
#[test]
fn domain_reads_our_badsig_and_badkey() {
    let now = unix_now();
    for (secret, key_name, expected) in [
        (OTHER_SECRET, KEY_NAME, "ServerBadSig"),
        (SECRET, "unknown-key", "ServerBadKey"),
    ] {
        let dkey = nlnet::key(secret, key_name);
        let (request, client) = nlnet::axfr_request(9, |m| {
            nlnet::ClientTransaction::request(dkey.clone(), m, nlnet::time(now))
                .expect("domain signs")
        });
        let RequestAuth::Rejected(reply) = verify_request(&key(), &request, now) else {
            panic!("{expected}: not rejected")
        };
        let err = client
            .answer(&mut nlnet::message(reply), nlnet::time(now))
            .expect_err("an error answer");
        let text = format!("{err:?}");
        assert_eq!(text, expected);
    }
}
