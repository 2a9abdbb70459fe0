//! The binary as a user runs it: exit codes and messages for bad input, `--dev` answering at
//! once, SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::program;

const BIN: &str = env!("CARGO_BIN_EXE_consul-dns");
/// `--dev` on ports of its own.
const DEV: [&str; 5] = [
    "--dev",
    "--dev-http",
    "127.0.0.1:0",
    "--listen",
    "127.0.0.1:0",
];

fn run(args: &[&str]) -> (i32, String) {
    program::run_to_exit(args)
}

#[test]
fn bad_flag_exits_2() {
    let (code, err) = run(&["--no-such-flag"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--no-such-flag"), "{err}");
}

#[test]
fn malformed_addresses_exit_2_with_one_line() {
    for args in [
        &["--listen", "not-an-address"][..],
        &["--consul-addr", "http://exa mple:8500"][..],
    ] {
        let (code, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// A password in `--consul-addr` (or the file's `consul_addr`) is refused without being
/// shown: an error message ends up in logs and terminals.
#[test]
fn a_password_in_the_consul_address_is_never_printed() {
    let dir = std::env::temp_dir().join(format!("consul-dns-cli-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("pw.toml");
    std::fs::write(
        &path,
        "consul_addr = \"http://admin:s3cretpw@127.0.0.1:8500\"\n",
    )
    .unwrap();
    let path = path.to_str().unwrap().to_string();
    for args in [
        &["--consul-addr", "http://admin:s3cretpw@127.0.0.1:8500"][..],
        &["--consul-addr", "http://admin:s3cretpw@"][..],
        &["--consul-addr", "ftp://admin:s3cretpw@host"][..],
        &["--config", path.as_str()][..],
    ] {
        let (code, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(!err.contains("s3cretpw"), "{args:?}: {err}");
        assert!(
            err.contains("***@"),
            "{args:?}: the address is still named: {err}"
        );
    }
}

#[test]
fn bad_config_file_exits_2_naming_the_key() {
    let dir = std::env::temp_dir().join(format!("consul-dns-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "nod_ttl = \"10s\"\n").unwrap();
    let (code, err) = run(&["--config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nod_ttl"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");
}

#[test]
fn port_in_use_exits_2() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, err) = run(&["--listen", &addr, "--consul-addr", "http://127.0.0.1:1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&addr), "{err}");
    assert!(
        err.contains("another program listens there") && err.contains("--listen"),
        "says what to do: {err}"
    );
    let last = err.trim().lines().last().unwrap_or_default();
    assert!(last.starts_with("consul-dns: cannot listen on"), "{err}");
}

/// A port held by another `SO_REUSEPORT` socket of the same user (another consul-dns
/// with several workers): refused, not silently shared.
#[test]
fn a_port_shared_by_reuseport_is_refused() {
    let shared = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )
    .unwrap();
    shared.set_reuse_port(true).unwrap();
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    shared.bind(&any.into()).unwrap();
    let addr = shared
        .local_addr()
        .unwrap()
        .as_socket()
        .unwrap()
        .to_string();
    let (code, err) = run(&[
        "--listen",
        &addr,
        "--workers",
        "2",
        "--consul-addr",
        "http://127.0.0.1:1",
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains(&addr) && err.contains("--listen"), "{err}");
}

/// The default port is the local Consul agent's DNS port: taken, the error says how to
/// take it over.
#[test]
fn the_consul_agents_port_taken_says_how_to_take_it_over() {
    let Ok(_taken) = std::net::UdpSocket::bind("127.0.0.1:8600") else {
        println!("SKIPPED the_consul_agents_port_taken_says_how_to_take_it_over: 127.0.0.1:8600 is in use here");
        return;
    };
    let (code, err) = run(&["--consul-addr", "http://127.0.0.1:1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ports { dns = -1 }"), "{err}");
}

/// Starts the binary and returns it with the DNS address read from its log.
fn spawn(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("CONSUL_HTTP_ADDR")
        .env_remove("CONSUL_HTTP_TOKEN")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("listening line in the log");
    (child, addr)
}

#[tokio::test]
async fn dev_mode_answers_at_once_and_sigterm_exits_0() {
    let (mut child, addr) = spawn(&[
        "--dev",
        "--dev-http",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
    ]);
    let addr: std::net::SocketAddr = addr.parse().expect("address in the log");

    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut msg = Message::new(7, MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(
        Name::from_ascii("web.service.consul.").unwrap(),
        RecordType::A,
    ));
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&msg.to_vec().unwrap(), addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert!(
        !reply.answers.is_empty(),
        "the demo catalog answers web.service.consul: {reply:?}"
    );
    for r in &reply.answers {
        assert!(
            r.data.to_string().starts_with("10.2."),
            "container address: {r}"
        );
    }

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no exit 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn help_explains_and_hides_the_token() {
    let out = Command::new(BIN)
        .arg("--help")
        .env("CONSUL_HTTP_TOKEN", "very-secret-value")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for flag in [
        "--consul-addr",
        "--token",
        "--listen",
        "--domain",
        "--datacenter",
        "--config",
        "--dev",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
    assert!(
        !text.contains("very-secret-value"),
        "--help shows the token"
    );
}

fn dig(addr: &std::net::SocketAddr, args: &[&str]) -> Vec<String> {
    let port = addr.port().to_string();
    let server = format!("@{}", addr.ip());
    let out = Command::new("dig")
        .args([
            server.as_str(),
            "-p",
            &port,
            "+short",
            "+time=2",
            "+tries=1",
        ])
        .args(args)
        .output()
        .expect("dig runs");
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

#[test]
fn dig_against_dev_mode() {
    if Command::new("dig").arg("-v").output().is_err() {
        println!("SKIPPED dig_against_dev_mode: dig is not installed (apt-get install dnsutils; CI installs it)");
        return;
    }
    let (mut child, addr) = spawn(&[
        "--dev",
        "--dev-http",
        "127.0.0.1:0",
        "--listen",
        "127.0.0.1:0",
    ]);
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let web = ["10.2.1.1", "10.2.1.2", "10.2.1.3"];
    // The critical fourth instance (10.2.1.4) is never answered.
    assert_eq!(dig(&addr, &["web.service.dc1.consul"]), web);
    assert_eq!(dig(&addr, &["+tcp", "web.service.consul"]), web);
    let srv = dig(&addr, &["_web._tcp.service.consul", "SRV"]);
    assert_eq!(srv.len(), 3, "{srv:?}");
    for line in &srv {
        // "1 1 80 0a020101.addr.dc1.consul."; the target resolves to the container address.
        let target = line.split_whitespace().last().unwrap();
        let resolved = dig(&addr, &[target]);
        assert_eq!(resolved.len(), 1, "{target}");
        assert!(
            web.contains(&resolved[0].as_str()),
            "{target} -> {resolved:?}"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The log says what `--dev` set aside and where the zones come from (issue 21's rough
/// edges): a Consul address given with `--dev` is not used, and says so; started where
/// there is no `zones/`, the log says static zones are off.
#[test]
fn dev_mode_says_what_it_ignores_and_where_zones_come_from() {
    let dir = program::TempDir::new("devlog");
    let mut cmd = Command::new(BIN);
    for var in program::CONSUL_ENV {
        cmd.env_remove(var);
    }
    cmd.env("CONSUL_HTTP_ADDR", "http://consul.example:8500")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .args(DEV)
        .current_dir(dir.path());
    let mut server = program::ConsulDns::start_command("consul-dns", cmd);
    let out = server
        .program
        .wait_for_output("no zones directory", Duration::from_secs(10));
    assert!(
        out.contains("consul.example:8500") && out.contains("is not used"),
        "{out}"
    );
    server.program.signal(libc::SIGTERM);
    let (code, _) = server.program.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0));
}

/// A log filter that does not parse stops the start (it used to silence every line), and
/// a closed stderr does not kill the server (`2>&1 | head -1`).
#[test]
fn bad_log_filters_exit_2_and_a_closed_stderr_is_survived() {
    let out = Command::new(BIN)
        .args(DEV)
        .env("RUST_LOG", "consul_dns=loud=yes")
        .output()
        .expect("binary runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("RUST_LOG"));
    let (code, err) = run(&["--log-level", "verbose"]);
    assert_eq!(code, 2, "{err}");

    let mut child = Command::new(BIN)
        .args(DEV)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    drop(stderr);
    // It logs on (the sync, the listening line) into the closed pipe, and keeps running.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited: {:?}",
        child.try_wait()
    );
    let _ = child.kill();
    let _ = child.wait();
}
