//! The ACL token never leaks: the binary at trace level, given a distinctive token by flag,
//! environment variable or file, against a Consul that accepts it, answers 403, answers
//! garbage, or fails the TLS handshake; the token must appear nowhere in what it prints,
//! in its metrics, or in `--help`.

use crate::common::pki;
use crate::program;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use consul_emulator::{Emulator, EmulatorConfig, Fault};
use pki::Ca;
use program::{addresses_eventually, poll, ConsulDns, TempDir, BIN, CONSUL_ENV};
use serde_json::json;

const TOKEN: &str = "leak-canary-7f3a9c2e-token";
const WEB: &str = "web.service.consul.";

#[derive(Debug, Clone, Copy)]
enum Source {
    Flag,
    Env,
    File,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn web(n: u8) -> serde_json::Value {
    json!({
        "Node": format!("node{n}"),
        "Address": format!("192.168.56.{n}"),
        "Service": {"ID": format!("web{n}"), "Service": "web", "Address": format!("10.2.1.{n}"), "Port": 80},
    })
}

/// consul-dns at trace level with the token from `source`, metrics on a free port.
fn start(dir: &TempDir, url: &str, source: Source) -> (ConsulDns, SocketAddr) {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--consul-addr",
        url,
    ])
    .current_dir(dir.path())
    .env("RUST_LOG", "trace");
    for var in CONSUL_ENV {
        cmd.env_remove(var);
    }
    match source {
        Source::Flag => {
            cmd.args(["--token", TOKEN]);
        }
        Source::Env => {
            cmd.env("CONSUL_HTTP_TOKEN", TOKEN);
        }
        Source::File => {
            let file = dir.write("token", &format!("{TOKEN}\n"));
            cmd.arg("--token-file").arg(file);
        }
    }
    let mut dns = ConsulDns::start_command("consul-dns", cmd);
    let out = dns
        .program
        .wait_for_output("metrics on http://", Duration::from_secs(10));
    let metrics = out
        .lines()
        .find_map(|l| l.split("metrics on http://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no metrics address in {out}"));
    (dns, metrics)
}

/// `GET /metrics`, the whole response (headers and body).
fn scrape(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).expect("metrics endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("response");
    text
}

/// Waits until the metrics count a Consul request with `status`; returns them.
fn metrics_with(addr: SocketAddr, status: &str) -> String {
    let needle = format!("status=\"{status}\"");
    poll(Duration::from_secs(10), || {
        let text = scrape(addr);
        text.contains(&needle).then_some(text)
    })
    .unwrap_or_else(|| panic!("no Consul request with {needle} in the metrics"))
}

fn assert_no_token(what: &str, text: &str) {
    assert!(
        !text.contains(TOKEN),
        "the token appears in {what}:\n{text}"
    );
}

/// A Consul that requires the token and sees it, then answers garbage, then 403.
fn accepted_then_garbage_then_403(source: Source) {
    let rt = runtime();
    let emu = rt
        .block_on(Emulator::start(
            "127.0.0.1:0".parse().expect("address"),
            EmulatorConfig::default(),
        ))
        .expect("emulator starts");
    emu.set_required_token(Some(TOKEN.to_string()));
    emu.register(web(1)).expect("register");
    let dir = TempDir::new("token");
    let (mut dns, metrics) = start(&dir, &emu.url(), source);

    // (a) The token is sent: the emulator answers only with it.
    let addrs = addresses_eventually(dns.addr, WEB, Duration::from_secs(10));
    assert_eq!(addrs.len(), 1, "{addrs:?}");
    assert!(
        emu.request_log()
            .iter()
            .any(|r| r.token.as_deref() == Some(TOKEN)),
        "Consul saw the token"
    );
    // (c) Invalid JSON; a catalog change wakes the long polls into it.
    emu.set_fault(Fault::Body("{\"truncated\": [".into()));
    emu.register(web(2)).expect("register");
    metrics_with(metrics, "invalid");
    // (b) 403 (last: a 403 backs off for 10 s).
    emu.set_fault(Fault::Status(403, "ACL not found".into()));
    emu.register(web(3)).expect("register");
    let text = metrics_with(metrics, "403");
    assert_no_token("the metrics", &text);
    dns.program
        .wait_for_output("HTTP 403", Duration::from_secs(10));
    assert_no_token("the output (stdout and stderr)", &dns.program.output());
}

/// A Consul whose certificate is not trusted: the handshake fails before any header.
fn tls_failure(source: Source) {
    let rt = runtime();
    let ca = Ca::new("untrusted CA");
    let cfg = EmulatorConfig {
        tls: Some(ca.server(&["127.0.0.1"]).server_config(None)),
        ..EmulatorConfig::default()
    };
    let emu = rt
        .block_on(Emulator::start(
            "127.0.0.1:0".parse().expect("address"),
            cfg,
        ))
        .expect("emulator starts");
    let dir = TempDir::new("token");
    let (mut dns, metrics) = start(&dir, &emu.url(), source);
    dns.program
        .wait_for_output("UnknownIssuer", Duration::from_secs(10));
    let text = metrics_with(metrics, "error");
    assert_no_token("the metrics", &text);
    assert_no_token("the output (stdout and stderr)", &dns.program.output());
}

#[test]
fn token_from_the_flag_never_leaks() {
    accepted_then_garbage_then_403(Source::Flag);
    tls_failure(Source::Flag);
}

#[test]
fn token_from_the_environment_never_leaks() {
    accepted_then_garbage_then_403(Source::Env);
    tls_failure(Source::Env);
}

#[test]
fn token_from_a_file_never_leaks() {
    accepted_then_garbage_then_403(Source::File);
    tls_failure(Source::File);
}

#[test]
fn help_never_shows_the_token() {
    let dir = TempDir::new("token");
    let file = dir.write("token", TOKEN);
    let file = file.to_str().expect("UTF-8 path");
    for (args, env) in [
        (vec!["--token", TOKEN, "--help"], None),
        (vec!["--help"], Some(("CONSUL_HTTP_TOKEN", TOKEN))),
        (vec!["--token-file", file, "--help"], None),
        (vec!["--token", TOKEN, "-h"], None),
    ] {
        let mut cmd = Command::new(BIN);
        cmd.args(&args);
        for var in CONSUL_ENV {
            cmd.env_remove(var);
        }
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("binary runs");
        assert!(out.status.success(), "{args:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("--token"), "{args:?}: {stdout}");
        assert_no_token("--help", &stdout);
        assert_no_token("--help's stderr", &String::from_utf8_lossy(&out.stderr));
    }
}
