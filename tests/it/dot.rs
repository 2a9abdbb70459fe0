//! DNS over TLS (RFC 7858) through real sockets on loopback: certificates made at test time
//! (rcgen), a tokio-rustls client trusting them, replies read by hickory and by NLnet Labs'
//! `domain`. What a DoT client sees: the same answers as over UDP, pipelined queries all
//! answered, the certificate read again on SIGHUP (new connections get the new one; a bad
//! file keeps the old), limits apart from TCP's; a bad certificate stops the start with one
//! line naming the file; and `kdig +tls` gets its answer.

use crate::common;
use crate::common::pki;
use crate::program;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{decode, eventually, metric, query, rcode, web_server};
use consul_dns::app::Running;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use pki::{self_signed, Ca, Leaf};
use program::{poll, run_to_exit, tool, ConsulDns, Program, TempDir, BIN};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const WEB: &str = "web.service.consul.";
/// The address `common::web_server` registers for `web`.
const WEB_ADDR: &str = "10.2.0.1";

/// A leaf's certificate and key written to `dir` as `<name>.pem` and `<name>-key.pem`.
fn write_leaf(dir: &TempDir, name: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
    (
        dir.write(&format!("{name}.pem"), &leaf.cert_pem),
        dir.write(&format!("{name}-key.pem"), &leaf.key_pem),
    )
}

/// `web` registered, and a server serving DNS over TLS on 127.0.0.1 with `cert` and `key`,
/// synced.
async fn dot_server(
    cert: &Path,
    key: &Path,
    tweak: impl FnOnce(&mut consul_dns::config::Config),
) -> (consul_emulator::Emulator, Running) {
    let (cert, key) = (cert.to_path_buf(), key.to_path_buf());
    let (emu, running) = web_server(|c| {
        c.dot.listen = vec!["127.0.0.1:0".parse().expect("address")];
        c.dot.cert_file = Some(cert);
        c.dot.key_file = Some(key);
        tweak(c);
    })
    .await;
    let dns = running.dns_addrs[0];
    eventually(Duration::from_secs(10), || async {
        let m = query(dns, WEB, RecordType::A).await;
        rcode(&m) == ResponseCode::NoError && m.answers.len() == 1
    })
    .await;
    (emu, running)
}

/// A DoT client trusting the certificates in `pems`, offering ALPN `alpn` (none if empty).
fn client(pems: &[&str], alpn: &[u8]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for pem in pems {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots
                .add(cert.expect("test certificate parses"))
                .expect("trust anchor");
        }
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
    if !alpn.is_empty() {
        config.alpn_protocols = vec![alpn.to_vec()];
    }
    TlsConnector::from(Arc::new(config))
}

async fn connect(addr: SocketAddr, client: &TlsConnector) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.expect("TCP connect");
    let name = ServerName::try_from("localhost").expect("server name");
    tokio::time::timeout(Duration::from_secs(5), client.connect(name, tcp))
        .await
        .expect("handshake within 5 s")
        .expect("handshake")
}

/// The DER of the certificate the server presented.
fn peer_certificate(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    let certs = stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("a certificate");
    certs[0].as_ref().to_vec()
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("PEM certificate")
        .as_ref()
        .to_vec()
}

fn question(name: &str, qtype: RecordType) -> Message {
    let mut msg = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    msg
}

fn framed(msg: &Message) -> Vec<u8> {
    let bytes = msg.to_vec().expect("encodes");
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&bytes);
    out
}

async fn receive(stream: &mut TlsStream<TcpStream>) -> Vec<u8> {
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut len))
        .await
        .expect("answer within 5 s")
        .expect("read the length");
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await.expect("read the answer");
    buf
}

/// One query over an open DoT connection: the reply as received.
async fn ask(stream: &mut TlsStream<TcpStream>, name: &str, qtype: RecordType) -> Vec<u8> {
    let msg = question(name, qtype);
    stream.write_all(&framed(&msg)).await.expect("send");
    let reply = receive(stream).await;
    assert_eq!(decode(&reply).metadata.id, msg.metadata.id);
    reply
}

/// The rcode and the answer records as NLnet Labs' `domain` reads them, one line each,
/// sorted.
fn domain_answers(bytes: &[u8]) -> (String, Vec<String>) {
    use domain::base::name::ParsedName;
    use domain::rdata::AllRecordData;
    let msg = domain::base::Message::from_octets(bytes).expect("domain reads the message");
    let rcode = msg.header().rcode().to_string();
    let mut records: Vec<String> = msg
        .answer()
        .expect("domain reads the answer section")
        .limit_to::<AllRecordData<_, ParsedName<_>>>()
        .map(|r| r.expect("domain reads the record").to_string())
        .collect();
    records.sort();
    (rcode, records)
}

// ---- answers ----

#[tokio::test(flavor = "multi_thread")]
async fn answers_over_tls_are_those_over_udp() {
    let dir = TempDir::new("dot");
    let leaf = self_signed(&["127.0.0.1", "localhost"]);
    let (cert, key) = write_leaf(&dir, "dot", &leaf);
    let (_emu, running) = dot_server(&cert, &key, |_| {}).await;
    let dot = client(&[&leaf.cert_pem], b"dot");
    let mut stream = connect(running.tls_addrs[0], &dot).await;
    assert_eq!(
        stream.get_ref().1.alpn_protocol(),
        Some(&b"dot"[..]),
        "ALPN dot"
    );
    assert_eq!(peer_certificate(&stream), der(&leaf.cert_pem));
    for qtype in [RecordType::A, RecordType::SRV] {
        let over_tls = domain_answers(&ask(&mut stream, WEB, qtype).await);
        let (_, udp_bytes) =
            common::query_bytes(running.dns_addrs[0], WEB, qtype, common::Ask::default()).await;
        let over_udp = domain_answers(&udp_bytes);
        assert_eq!(over_tls, over_udp, "{qtype}: DoT and UDP answer alike");
        assert_eq!(over_tls.0, "NOERROR", "{qtype}");
        assert_eq!(over_tls.1.len(), 1, "{qtype}: {over_tls:?}");
    }
    let (_, a) = domain_answers(&ask(&mut stream, WEB, RecordType::A).await);
    assert!(a[0].ends_with(&format!(" IN A {WEB_ADDR}")), "{a:?}");
    let (_, srv) = domain_answers(&ask(&mut stream, WEB, RecordType::SRV).await);
    assert!(srv[0].contains(" IN SRV 1 1 80 "), "{srv:?}");
    // An unknown name is NXDOMAIN over TLS too.
    let (rcode, _) = domain_answers(&ask(&mut stream, "nope.service.consul.", RecordType::A).await);
    assert_eq!(rcode, "NXDOMAIN");
    // DNS over TCP is still served, with its own figures.
    let tcp = common::query_with(
        running.dns_addrs[0],
        WEB,
        RecordType::A,
        common::Ask {
            transport: common::Transport::Tcp,
            ..common::Ask::default()
        },
    )
    .await;
    assert_eq!(tcp.answers.len(), 1);
    assert_eq!(metric(&running, "consul_dns_tls_connections"), 1);
    drop(stream);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pipelined_queries_on_one_connection_are_all_answered() {
    let dir = TempDir::new("dot");
    let leaf = self_signed(&["localhost"]);
    let (cert, key) = write_leaf(&dir, "dot", &leaf);
    let (_emu, running) = dot_server(&cert, &key, |_| {}).await;
    let mut stream = connect(running.tls_addrs[0], &client(&[&leaf.cert_pem], b"dot")).await;
    // Sent in one write, before any answer is read.
    let questions: Vec<Message> = (0..40)
        .map(|i| match i % 3 {
            0 => question(WEB, RecordType::A),
            1 => question(WEB, RecordType::SRV),
            _ => question(&format!("nope{i}.service.consul."), RecordType::A),
        })
        .collect();
    let bytes: Vec<u8> = questions.iter().flat_map(framed).collect();
    stream.write_all(&bytes).await.expect("send");
    let mut unanswered: Vec<&Message> = questions.iter().collect();
    while !unanswered.is_empty() {
        let reply = receive(&mut stream).await;
        let m = decode(&reply);
        let i = unanswered
            .iter()
            .position(|q| q.metadata.id == m.metadata.id)
            .unwrap_or_else(|| panic!("an answer to no open question: {m:?}"));
        let q = unanswered.swap_remove(i);
        let (rcode, answers) = domain_answers(&reply);
        if q.queries[0].name().to_ascii().starts_with("nope") {
            assert_eq!(rcode, "NXDOMAIN");
        } else {
            assert_eq!(
                (rcode.as_str(), answers.len()),
                ("NOERROR", 1),
                "{answers:?}"
            );
        }
    }
    running.shutdown().await;
}

// ---- limits and failures ----

#[tokio::test(flavor = "multi_thread")]
async fn tls_and_tcp_connections_have_limits_of_their_own() {
    let dir = TempDir::new("dot");
    let leaf = self_signed(&["localhost"]);
    let (cert, key) = write_leaf(&dir, "dot", &leaf);
    let (_emu, running) = dot_server(&cert, &key, |c| {
        c.tcp.max_connections = 1;
        c.tcp.max_connections_per_source = 1;
        c.dot.limits.max_connections = 2;
        c.dot.limits.max_connections_per_source = 2;
    })
    .await;
    let dot = client(&[&leaf.cert_pem], b"dot");
    let mut first = connect(running.tls_addrs[0], &dot).await;
    let mut second = connect(running.tls_addrs[0], &dot).await;
    let _tcp = TcpStream::connect(running.dns_addrs[0]).await.expect("TCP");
    let m = Arc::clone(running.syncer().metrics());
    eventually(Duration::from_secs(5), || {
        let m = Arc::clone(&m);
        async move { m.tcp.connections.get() == 1 && m.tls.connections.get() == 2 }
    })
    .await;
    // A second TCP connection takes the TCP slot, not a TLS one.
    let _tcp2 = TcpStream::connect(running.dns_addrs[0]).await.expect("TCP");
    eventually(Duration::from_secs(5), || {
        let m = Arc::clone(&m);
        async move { m.tcp.evicted.get() == 1 }
    })
    .await;
    assert_eq!(m.tls.evicted.get(), 0);
    assert_eq!(m.tls.connections.get(), 2);
    for stream in [&mut first, &mut second] {
        let reply = ask(stream, WEB, RecordType::A).await;
        assert_eq!(domain_answers(&reply).1.len(), 1);
    }
    // A third TLS connection closes the longest-idle TLS one.
    let mut third = connect(running.tls_addrs[0], &dot).await;
    ask(&mut third, WEB, RecordType::A).await;
    assert_eq!(m.tls.evicted.get(), 1);
    assert_eq!(m.tcp.evicted.get(), 1);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_handshakes_are_counted() {
    let dir = TempDir::new("dot");
    let leaf = self_signed(&["localhost"]);
    let (cert, key) = write_leaf(&dir, "dot", &leaf);
    let (_emu, running) = dot_server(&cert, &key, |_| {}).await;
    let addr = running.tls_addrs[0];
    // A client that does not trust the certificate, one that wants another protocol than
    // DNS over TLS, and one speaking plain DNS over TCP to the TLS port.
    let stranger = client(&[&self_signed(&["localhost"]).cert_pem], b"dot");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    assert!(stranger.connect(name.clone(), tcp).await.is_err());
    let h2 = client(&[&leaf.cert_pem], b"h2");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    assert!(h2.connect(name, tcp).await.is_err(), "no ALPN in common");
    let mut plain = TcpStream::connect(addr).await.expect("connect");
    plain
        .write_all(&framed(&question(WEB, RecordType::A)))
        .await
        .expect("send");
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buf))
        .await
        .expect("closed within 5 s")
        .unwrap_or(0);
    assert!(
        n == 0 || buf[0] == 0x15,
        "plain DNS gets no answer, at most a TLS alert"
    );
    let m = Arc::clone(running.syncer().metrics());
    eventually(Duration::from_secs(5), || {
        let m = Arc::clone(&m);
        async move { m.tls_handshake_errors.get() == 3 }
    })
    .await;
    let text = m.render();
    assert!(
        text.contains(r#"consul_dns_tls_handshake_failures_total{reason="error"} 3"#),
        "{text}"
    );
    // A client that never starts its handshake is closed after 5 s.
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let n = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("closed within the handshake timeout")
        .unwrap_or(0);
    assert_eq!(n, 0);
    eventually(Duration::from_secs(5), || {
        let m = Arc::clone(&m);
        async move { m.tls_handshake_timeouts.get() == 1 }
    })
    .await;
    // Still serving; a client offering no ALPN at all too.
    let mut stream = connect(addr, &client(&[&leaf.cert_pem], b"dot")).await;
    ask(&mut stream, WEB, RecordType::A).await;
    let mut stream = connect(addr, &client(&[&leaf.cert_pem], b"")).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), None);
    ask(&mut stream, WEB, RecordType::A).await;
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_stops_the_tls_listeners_and_closes_their_connections() {
    let dir = TempDir::new("dot");
    let leaf = self_signed(&["localhost"]);
    let (cert, key) = write_leaf(&dir, "dot", &leaf);
    let (_emu, running) = dot_server(&cert, &key, |_| {}).await;
    let addr = running.tls_addrs[0];
    let mut open = connect(addr, &client(&[&leaf.cert_pem], b"dot")).await;
    ask(&mut open, WEB, RecordType::A).await;
    tokio::time::timeout(Duration::from_secs(5), running.shutdown())
        .await
        .expect("shutdown within 5 s");
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), open.read(&mut buf))
        .await
        .expect("closed at once");
    assert!(matches!(n, Ok(0)), "closed with a close_notify: {n:?}");
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "nothing listens on {addr} any more"
    );
}

// ---- the certificate: reload, bad files ----

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_gives_new_connections_the_new_certificate() {
    let dir = TempDir::new("dot");
    let ca = Ca::new("DoT test CA");
    let (old, new) = (ca.server(&["localhost"]), ca.server(&["localhost"]));
    let (cert, key) = write_leaf(&dir, "dot", &old);
    let (_emu, running) = dot_server(&cert, &key, |_| {}).await;
    let addr = running.tls_addrs[0];
    let dot = client(&[&ca.pem], b"dot");
    let mut before = connect(addr, &dot).await;
    assert_eq!(peer_certificate(&before), der(&old.cert_pem));

    write_leaf(&dir, "dot", &new);
    assert!(matches!(running.reload_certificate(), Some(Ok(()))));
    let mut after = connect(addr, &dot).await;
    assert_eq!(peer_certificate(&after), der(&new.cert_pem));
    // A connection made before the reload goes on with its own.
    ask(&mut before, WEB, RecordType::A).await;
    ask(&mut after, WEB, RecordType::A).await;

    // A bad file: the reload fails naming it, and the certificate served stays.
    std::fs::write(&cert, "not a certificate\n").expect("write");
    match running.reload_certificate() {
        Some(Err(e)) => {
            let e = e.to_string();
            assert!(e.contains(&cert.display().to_string()), "{e}");
            assert!(e.contains("not PEM"), "{e}");
        }
        other => panic!("the reload should fail: {other:?}"),
    }
    let still = connect(addr, &dot).await;
    assert_eq!(peer_certificate(&still), der(&new.cert_pem));
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn without_dns_over_tls_there_is_nothing_to_reload() {
    let (_emu, running) = web_server(|_| {}).await;
    assert!(running.tls_addrs.is_empty());
    assert!(running.reload_certificate().is_none());
    running.shutdown().await;
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The emulator with `web` registered (10.2.0.1), on `rt`.
fn emulator(rt: &tokio::runtime::Runtime) -> consul_emulator::Emulator {
    rt.block_on(async {
        let emu = common::emulator().await;
        common::http_register(
            &emu.url(),
            &common::Instance::new("web", "web1")
                .on("n1", "192.168.0.1")
                .at(WEB_ADDR, 80)
                .json(),
        )
        .await;
        emu
    })
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// The binary serving DNS over TLS with `cert` and `key` (and the other `args`), started in
/// `dir`: it, and its DNS-over-TLS address.
fn binary(dir: &TempDir, consul: &str, cert: &Path, key: &Path) -> (ConsulDns, SocketAddr) {
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--consul-addr", consul])
        .args(["--listen-tls", "127.0.0.1:0"])
        .args(["--tls-cert-file", path_str(cert)])
        .args(["--tls-key-file", path_str(key)])
        .args(["--zones", ""])
        .current_dir(dir.path());
    let mut dns = ConsulDns::start_command("consul-dns", cmd);
    let out = dns
        .program
        .wait_for_output("DNS over TLS: listening on ", Duration::from_secs(10));
    let addr = out
        .lines()
        .find_map(|l| l.split("DNS over TLS: listening on ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no DNS-over-TLS address in {out}"));
    (dns, addr)
}

#[test]
fn sighup_gives_new_connections_the_new_certificate() {
    let rt = runtime();
    let emu = emulator(&rt);
    let dir = TempDir::new("dot");
    let ca = Ca::new("DoT test CA");
    let (old, new) = (ca.server(&["localhost"]), ca.server(&["localhost"]));
    let (cert, key) = write_leaf(&dir, "dot", &old);
    let (mut dns, addr) = binary(&dir, &emu.url(), &cert, &key);
    let dot = client(&[&ca.pem], b"dot");
    let presented = || rt.block_on(async { peer_certificate(&connect(addr, &dot).await) });
    assert_eq!(presented(), der(&old.cert_pem));

    write_leaf(&dir, "dot", &new);
    dns.program.signal(libc::SIGHUP);
    let reloaded = poll(Duration::from_secs(5), || {
        (presented() == der(&new.cert_pem)).then_some(())
    });
    assert!(reloaded.is_some(), "{}", dns.program.output());
    dns.program.wait_for_output(
        "reload: DNS-over-TLS certificate read again",
        Duration::from_secs(5),
    );

    // A key that does not match: a warning, and the certificate stays.
    dir.write("dot-key.pem", &ca.server(&["localhost"]).key_pem);
    dns.program.signal(libc::SIGHUP);
    let out = dns.program.wait_for_output(
        "still serving the previous DNS-over-TLS certificate",
        Duration::from_secs(5),
    );
    assert!(
        out.lines()
            .any(|l| l.contains("WARN") && l.contains("the key does not belong")),
        "{out}"
    );
    assert_eq!(presented(), der(&new.cert_pem));
    let reply = rt.block_on(async {
        let mut stream = connect(addr, &dot).await;
        ask(&mut stream, WEB, RecordType::A).await
    });
    assert_eq!(domain_answers(&reply).1.len(), 1);
}

/// Runs the binary to its exit with DNS over TLS and `args`; returns the exit code and its
/// stderr.
fn run(args: &[&str]) -> (i32, String) {
    let mut all = vec![
        "--listen",
        "127.0.0.1:0",
        "--consul-addr",
        "http://127.0.0.1:1",
        "--listen-tls",
        "127.0.0.1:0",
        "--zones",
        "",
    ];
    all.extend_from_slice(args);
    run_to_exit(&all)
}

#[test]
fn a_bad_certificate_stops_the_start_with_one_line_naming_the_file() {
    let dir = TempDir::new("dot");
    let leaf = self_signed(&["localhost"]);
    let (cert, key) = write_leaf(&dir, "dot", &leaf);
    let other_key = dir.write("other-key.pem", &self_signed(&["localhost"]).key_pem);
    let text = dir.write("notes.txt", "not a certificate\n");
    let missing = dir.path().join("missing.pem");
    let (cert, key, other_key, text, missing) = (
        path_str(&cert),
        path_str(&key),
        path_str(&other_key),
        path_str(&text),
        path_str(&missing),
    );
    let cases: [(&[&str], String); 6] = [
        (
            &["--tls-cert-file", missing, "--tls-key-file", key],
            format!("consul-dns: DNS-over-TLS certificate {missing}: cannot read: "),
        ),
        (
            &["--tls-cert-file", cert, "--tls-key-file", missing],
            format!("consul-dns: DNS-over-TLS key {missing}: cannot read: "),
        ),
        (
            &["--tls-cert-file", text, "--tls-key-file", key],
            format!("consul-dns: DNS-over-TLS certificate {text}: not PEM: "),
        ),
        (
            &["--tls-cert-file", key, "--tls-key-file", key],
            format!("consul-dns: DNS-over-TLS certificate {key}: no certificate in it"),
        ),
        (
            &["--tls-cert-file", cert, "--tls-key-file", other_key],
            format!(
                "consul-dns: DNS-over-TLS certificate {cert} with key {other_key}: the key does \
                 not belong to the certificate"
            ),
        ),
        (
            &["--tls-cert-file", cert],
            "consul-dns: --listen-tls: DNS over TLS needs tls_key_file (--tls-key-file)"
                .to_string(),
        ),
    ];
    for (args, want) in cases {
        // At the default log level the log's "starting" line may come first.
        let (code, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        let errors: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("consul-dns: "))
            .collect();
        assert_eq!(errors.len(), 1, "{args:?}: one error line: {err}");
        assert!(
            errors[0].starts_with(&want),
            "{args:?}: want {want:?}: {err}"
        );
        // Nothing else on stderr when the log says only errors.
        let quiet: Vec<&str> = [args, &["--log-level", "error"]].concat();
        let (code, err) = run(&quiet);
        assert_eq!(code, 2, "{quiet:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{quiet:?}: one line: {err}");
    }
}

// ---- a real DoT client ----

#[test]
fn kdig_asks_over_tls() {
    let test = "kdig_asks_over_tls";
    let Some(kdig) = tool("kdig") else {
        skip!(test, "needs kdig (apt-get install knot-dnsutils)");
    };
    let rt = runtime();
    let emu = emulator(&rt);
    let dir = TempDir::new("dot");
    let ca = Ca::new("DoT test CA");
    let (cert, key) = write_leaf(&dir, "dot", &ca.server(&["localhost", "127.0.0.1"]));
    let ca_file = dir.write("ca.pem", &ca.pem);
    let (_dns, addr) = binary(&dir, &emu.url(), &cert, &key);
    let mut cmd = Command::new(kdig);
    cmd.arg("@127.0.0.1")
        .args(["-p", &addr.port().to_string()])
        .arg(format!("+tls-ca={}", path_str(&ca_file)))
        .arg("+tls-hostname=localhost")
        .args(["+timeout=5", "+retry=0"])
        .args(["web.service.consul", "A"]);
    let (code, out) = Program::spawn("kdig", cmd).wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("TLS session"), "over TLS: {out}");
    assert!(out.contains("status: NOERROR"), "{out}");
    let answers: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with(';') && l.contains("\tA\t"))
        .collect();
    assert_eq!(answers.len(), 1, "{out}");
    assert!(
        answers[0].starts_with("web.service.consul.") && answers[0].ends_with(WEB_ADDR),
        "{out}"
    );
}
