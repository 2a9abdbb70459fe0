//! TLS to Consul through real sockets: the emulator serving HTTPS (certificates made at test
//! time), consul-dns reading from it, DNS queries to consul-dns. What a user sees: answers,
//! SERVFAIL while it cannot sync and the log line saying why, exit code 2 and one line
//! naming the file for a bad TLS file.

use crate::common;
use crate::common::pki;
use crate::program;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, query, rcode, server_with, Instance, LOCAL};
use consul_dns::config::ConsulTls;
use consul_emulator::{Emulator, EmulatorConfig};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use pki::{self_signed, Ca, Leaf};
use program::{addresses_eventually, ask, run_to_exit, ConsulDns, TempDir, BIN, CONSUL_ENV};

const WEB: &str = "web.service.consul.";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// An emulator serving HTTPS with `tls`, holding one healthy `web` instance (10.2.1.1).
async fn https_emulator(tls: Arc<rustls::ServerConfig>) -> Emulator {
    let cfg = EmulatorConfig {
        tls: Some(tls),
        ..EmulatorConfig::default()
    };
    let emu = Emulator::start(LOCAL.parse().expect("address"), cfg)
        .await
        .expect("emulator starts");
    emu.register(
        Instance::new("web", "web1")
            .on("node1", "192.168.56.11")
            .at("10.2.1.1", 80)
            .json(),
    )
    .expect("register");
    emu
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temporary paths are UTF-8")
}

/// In-process: the server with `tls` answers `web` from the emulator at `url`.
async fn answers_in_process(url: &str, tls: ConsulTls) {
    let running = server_with(url, |c| c.tls = tls).await;
    let dns = running.dns_addrs[0];
    eventually(Duration::from_secs(10), || async {
        let m = query(dns, WEB, RecordType::A).await;
        rcode(&m) == ResponseCode::NoError && m.answers.len() == 1
    })
    .await;
    running.shutdown().await;
}

/// The binary against `url` with `args` and `env` (the test's own Consul variables are
/// dropped), started in `dir`.
fn binary(dir: &TempDir, url: &str, args: &[&str], env: &[(&str, &str)]) -> ConsulDns {
    let mut cmd = Command::new(BIN);
    cmd.args(["--listen", "127.0.0.1:0", "--consul-addr", url])
        .args(args)
        .current_dir(dir.path());
    for var in CONSUL_ENV {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    ConsulDns::start_command("consul-dns", cmd)
}

/// Consul names are SERVFAIL (no sync) and the log says why.
fn assert_no_sync(dns: &mut ConsulDns, reason: &str) {
    let m = ask(dns.addr, WEB, RecordType::A);
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::ServFail,
        "no sync, so SERVFAIL: {m:?}"
    );
    // With TLS 1.3 the server's refusal comes after the handshake: a first attempt can
    // end in "connection was not ready" before the alert is read, and the next warning
    // comes 10 s later (rate-limited).
    let out = dns.program.wait_for_output(reason, Duration::from_secs(25));
    assert!(
        out.lines().any(|l| l.contains("WARN")
            && l.contains(reason)
            && l.to_lowercase().contains("certificate")),
        "a warning names the certificate problem:\n{out}"
    );
}

// ---- trusting the server ----

#[tokio::test(flavor = "multi_thread")]
async fn ca_file_trusts_the_consul_certificate() {
    let ca = Ca::new("test CA");
    let leaf = ca.server(&["127.0.0.1", "consul.test"]);
    let emu = https_emulator(leaf.server_config(None)).await;
    assert!(emu.url().starts_with("https://127.0.0.1:"), "{}", emu.url());
    let dir = TempDir::new("tls");
    let tls = ConsulTls {
        ca_file: Some(dir.write("ca.pem", &ca.pem)),
        ..ConsulTls::default()
    };
    answers_in_process(&emu.url(), tls).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ca_path_trusts_every_ca_in_the_directory() {
    let ca = Ca::new("test CA");
    let other = Ca::new("another CA");
    let emu = https_emulator(ca.server(&["127.0.0.1"]).server_config(None)).await;
    let dir = TempDir::new("tls");
    let cas = dir.path().join("cas");
    std::fs::create_dir(&cas).expect("create the CA directory");
    std::fs::write(cas.join("a-other.pem"), &other.pem).expect("write");
    std::fs::write(cas.join("b-ours.crt"), &ca.pem).expect("write");
    let tls = ConsulTls {
        ca_path: Some(cas),
        ..ConsulTls::default()
    };
    answers_in_process(&emu.url(), tls).await;
}

#[test]
fn without_the_ca_nothing_syncs_and_the_log_says_why() {
    let rt = runtime();
    let ca = Ca::new("test CA");
    let emu = rt.block_on(https_emulator(
        ca.server(&["127.0.0.1"]).server_config(None),
    ));
    let dir = TempDir::new("tls");
    // The built-in web roots do not know the test CA.
    let mut dns = binary(&dir, &emu.url(), &[], &[]);
    assert_no_sync(&mut dns, "UnknownIssuer");
    // Another CA is no better.
    let other = dir.write("other.pem", &Ca::new("another CA").pem);
    let mut dns = binary(&dir, &emu.url(), &["--ca-file", path_str(&other)], &[]);
    assert_no_sync(&mut dns, "UnknownIssuer");
}

// ---- the server name ----

/// A server that has a certificate only for the SNI name `name`: a handshake that does not
/// send that name fails.
fn sni_only(leaf: &Leaf, name: &str) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).expect("cert")];
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key");
    let key = provider
        .key_provider
        .load_private_key(key)
        .expect("signing key");
    let mut sni = rustls::server::ResolvesServerCertUsingSni::new();
    sni.add(name, rustls::sign::CertifiedKey::new(chain, key))
        .expect("SNI entry");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(sni));
    Arc::new(config)
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_server_name_is_verified_and_sent_as_sni() {
    let ca = Ca::new("test CA");
    // A certificate for another name than the address (127.0.0.1), served only to clients
    // that ask for that name.
    let leaf = ca.server(&["server.dc1.consul"]);
    let emu = https_emulator(sni_only(&leaf, "server.dc1.consul")).await;
    let dir = TempDir::new("tls");
    let tls = ConsulTls {
        ca_file: Some(dir.write("ca.pem", &ca.pem)),
        server_name: Some("server.dc1.consul".to_string()),
        ..ConsulTls::default()
    };
    answers_in_process(&emu.url(), tls).await;
}

#[test]
fn certificate_for_another_name_needs_tls_server_name() {
    let rt = runtime();
    let ca = Ca::new("test CA");
    let emu = rt.block_on(https_emulator(
        ca.server(&["other.test"]).server_config(None),
    ));
    let dir = TempDir::new("tls");
    let ca_file = dir.write("ca.pem", &ca.pem);
    let ca_arg = ["--ca-file", path_str(&ca_file)];
    // The address's host (127.0.0.1) is not in the certificate.
    let mut dns = binary(&dir, &emu.url(), &ca_arg, &[]);
    assert_no_sync(&mut dns, "not valid for name");
    // Nor is a wrong server name.
    let mut dns = binary(
        &dir,
        &emu.url(),
        &ca_arg,
        &[("CONSUL_TLS_SERVER_NAME", "consul.test")],
    );
    assert_no_sync(&mut dns, "not valid for name");
    // The certificate's name is accepted (given by the environment variable).
    let dns = binary(
        &dir,
        &emu.url(),
        &ca_arg,
        &[("CONSUL_TLS_SERVER_NAME", "other.test")],
    );
    let addrs = addresses_eventually(dns.addr, WEB, Duration::from_secs(10));
    assert_eq!(addrs.len(), 1, "{addrs:?}");
}

// ---- ssl_verify ----

#[test]
fn ssl_verify_false_accepts_a_self_signed_certificate_with_a_warning() {
    let rt = runtime();
    let emu = rt.block_on(https_emulator(
        self_signed(&["consul.test"]).server_config(None),
    ));
    let dir = TempDir::new("tls");
    let mut dns = binary(&dir, &emu.url(), &[], &[]);
    assert_no_sync(&mut dns, "certificate");
    drop(dns);
    // Consul's spelling of false in its environment variable.
    let mut dns = binary(&dir, &emu.url(), &[], &[("CONSUL_HTTP_SSL_VERIFY", "0")]);
    let addrs = addresses_eventually(dns.addr, WEB, Duration::from_secs(10));
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    let out = dns
        .program
        .wait_for_output("ssl_verify is false", Duration::from_secs(5));
    assert!(
        out.lines()
            .any(|l| l.contains("WARN") && l.contains("NOT verified")),
        "{out}"
    );
}

// ---- client certificates (Consul's verify_incoming) ----

#[test]
fn client_certificate_from_the_config_file_is_presented() {
    let rt = runtime();
    let ca = Ca::new("test CA");
    let server = ca.server(&["127.0.0.1"]);
    let emu = rt.block_on(https_emulator(server.server_config(Some(&ca))));
    let dir = TempDir::new("tls");
    let client = ca.client("consul-dns");
    let config = format!(
        "ca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
        path_str(&dir.write("ca.pem", &ca.pem)),
        path_str(&dir.write("client.pem", &client.cert_pem)),
        path_str(&dir.write("client-key.pem", &client.key_pem)),
    );
    let config = dir.write("consul-dns.toml", &config);
    let dns = binary(&dir, &emu.url(), &["--config", path_str(&config)], &[]);
    let addrs = addresses_eventually(dns.addr, WEB, Duration::from_secs(10));
    assert_eq!(addrs.len(), 1, "{addrs:?}");
}

#[test]
fn without_a_client_certificate_mtls_fails_clearly() {
    let rt = runtime();
    let ca = Ca::new("test CA");
    let emu = rt.block_on(https_emulator(
        ca.server(&["127.0.0.1"]).server_config(Some(&ca)),
    ));
    let dir = TempDir::new("tls");
    let ca_file = dir.write("ca.pem", &ca.pem);
    let mut dns = binary(&dir, &emu.url(), &["--ca-file", path_str(&ca_file)], &[]);
    assert_no_sync(&mut dns, "CertificateRequired");
    // A certificate from another CA is refused too.
    let stranger = Ca::new("another CA").client("consul-dns");
    let cert = dir.write("client.pem", &stranger.cert_pem);
    let key = dir.write("client-key.pem", &stranger.key_pem);
    let mut dns = binary(
        &dir,
        &emu.url(),
        &[
            "--ca-file",
            path_str(&ca_file),
            "--client-cert",
            path_str(&cert),
            "--client-key",
            path_str(&key),
        ],
        &[],
    );
    assert_no_sync(&mut dns, "UnknownCA");
}

// ---- bad files and settings ----

/// Runs the binary to its exit; returns the exit code and stderr.
fn run(args: &[&str]) -> (i32, String) {
    let mut all = vec![
        "--listen",
        "127.0.0.1:0",
        "--consul-addr",
        "https://127.0.0.1:1",
    ];
    all.extend_from_slice(args);
    run_to_exit(&all)
}

#[test]
fn bad_tls_files_exit_2_naming_the_file() {
    let dir = TempDir::new("tls");
    let ca = Ca::new("test CA");
    let client = ca.client("consul-dns");
    let other = ca.client("someone-else");
    let ca_file = dir.write("ca.pem", &ca.pem);
    let text = dir.write("notes.txt", "not a certificate\n");
    let key_only = dir.write("key.pem", &client.key_pem);
    let cert = dir.write("client.pem", &client.cert_pem);
    let other_key = dir.write("other-key.pem", &other.key_pem);
    let missing = dir.path().join("missing.pem");
    let no_dir = dir.path().join("no-such-dir");
    let cert_only = dir.write(
        "cert-only.toml",
        &format!("cert_file = {:?}\n", path_str(&cert)),
    );
    let (ca_file, text, key_only, cert, other_key, missing, no_dir, cert_only) = (
        path_str(&ca_file),
        path_str(&text),
        path_str(&key_only),
        path_str(&cert),
        path_str(&other_key),
        path_str(&missing),
        path_str(&no_dir),
        path_str(&cert_only),
    );
    let cases: [(&[&str], String); 8] = [
        (
            &["--ca-file", missing],
            format!("CA file {missing}: cannot read: "),
        ),
        (&["--ca-file", text], format!("CA file {text}: not PEM: ")),
        (
            &["--ca-file", key_only],
            format!("CA file {key_only}: no certificate in it (found: PRIVATE KEY)"),
        ),
        (
            &["--ca-path", no_dir],
            format!("CA path {no_dir}: cannot read: "),
        ),
        (
            &["--ca-file", ca_file, "--client-cert", cert],
            format!("--client-cert \"{cert}\": is set without the client key"),
        ),
        (
            &["--client-cert", cert, "--client-key", cert],
            format!("client key {cert}: no private key in it (found: CERTIFICATE)"),
        ),
        (
            &["--client-cert", cert, "--client-key", other_key],
            format!(
                "client certificate {cert} with key {other_key}: the key does not belong to the \
                 certificate"
            ),
        ),
        (
            &["--config", cert_only],
            format!("config {cert_only}:1: cert_file \"{cert}\": is set without the client key"),
        ),
    ];
    for (args, want) in cases {
        let (code, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        // One line says what is wrong (after the log's "starting" line, if any).
        let errors: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("consul-dns: "))
            .collect();
        assert_eq!(errors.len(), 1, "{args:?}: one error line: {err}");
        assert!(
            errors[0].contains(&want),
            "{args:?}: want {want:?} in {err:?}"
        );
    }
}

#[test]
fn tls_options_with_an_http_address_are_ignored_with_a_warning() {
    let rt = runtime();
    let emu = rt.block_on(common::emulator());
    emu.register(
        Instance::new("web", "web1")
            .on("node1", "192.168.56.11")
            .at("10.2.1.1", 80)
            .json(),
    )
    .expect("register");
    let dir = TempDir::new("tls");
    let missing = dir.path().join("missing.pem");
    let mut dns = binary(
        &dir,
        &emu.url(),
        &["--ca-file", path_str(&missing), "--ssl-verify", "false"],
        &[],
    );
    let addrs = addresses_eventually(dns.addr, WEB, Duration::from_secs(10));
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    let out = dns
        .program
        .wait_for_output("are ignored", Duration::from_secs(5));
    assert!(
        out.contains("TLS options (ca_file, ssl_verify) are ignored"),
        "{out}"
    );
}
