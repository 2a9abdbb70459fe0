//! consul-dns under a service manager (issue 21, item 3): with `$NOTIFY_SOCKET` set, the
//! real binary says READY=1 once its sockets are bound and it is synced with Consul,
//! RELOADING=1 then READY=1 around a SIGHUP, and STOPPING=1 on SIGTERM, as systemd's
//! `Type=notify` expects; read here from a real unix datagram socket.

use crate::program;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use program::{ask, free_port, ConsulDns, TempDir, BIN, CONSUL_ENV};

/// The next notification, its lines; None when nothing comes within `within`.
fn next(sock: &UnixDatagram, within: Duration) -> Option<Vec<String>> {
    sock.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).ok()?;
    Some(
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .map(str::to_owned)
            .collect(),
    )
}

#[test]
fn ready_reloading_and_stopping_reach_the_service_manager() {
    let dir = TempDir::new("notify");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let port = free_port();
    let mut cmd = Command::new(BIN);
    for var in CONSUL_ENV {
        cmd.env_remove(var);
    }
    cmd.env("NOTIFY_SOCKET", &path)
        .args(["--dev", "--dev-http", &format!("127.0.0.1:{port}")])
        .args(["--listen", "127.0.0.1:0", "--zones", ""])
        .current_dir(dir.path());
    let mut server = ConsulDns::start_command("consul-dns", cmd);

    let ready = next(&sock, Duration::from_secs(10)).expect("a notification within 10 s");
    assert!(ready.contains(&"READY=1".to_string()), "{ready:?}");
    // Sent once the sockets are bound and the first sync is done: it answers at once.
    let m = ask(server.addr, "web.service.consul.", RecordType::A);
    assert!(!m.answers.is_empty(), "answered once READY=1: {m:?}");

    server.program.signal(libc::SIGHUP);
    let reloading = next(&sock, Duration::from_secs(10)).expect("RELOADING=1 after SIGHUP");
    assert!(
        reloading.contains(&"RELOADING=1".to_string()),
        "{reloading:?}"
    );
    assert!(
        reloading.iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "systemd's notify-reload wants the time: {reloading:?}"
    );
    let again = next(&sock, Duration::from_secs(10)).expect("READY=1 after the reload");
    assert!(again.contains(&"READY=1".to_string()), "{again:?}");

    server.program.signal(libc::SIGTERM);
    let stopping = next(&sock, Duration::from_secs(10)).expect("STOPPING=1 after SIGTERM");
    assert!(stopping.contains(&"STOPPING=1".to_string()), "{stopping:?}");
    let (code, _) = server.program.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0));
}

#[test]
fn without_notify_socket_nothing_is_sent_and_it_runs_as_before() {
    let dir = TempDir::new("nonotify");
    let port = free_port();
    let mut cmd = Command::new(BIN);
    for var in CONSUL_ENV {
        cmd.env_remove(var);
    }
    cmd.env_remove("NOTIFY_SOCKET")
        .args(["--dev", "--dev-http", &format!("127.0.0.1:{port}")])
        .args(["--listen", "127.0.0.1:0", "--zones", ""])
        .current_dir(dir.path());
    let mut server = ConsulDns::start_command("consul-dns", cmd);
    let m = ask(server.addr, "web.service.consul.", RecordType::A);
    assert!(!m.answers.is_empty());
    server.program.signal(libc::SIGTERM);
    let (code, out) = server.program.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{out}");
}
