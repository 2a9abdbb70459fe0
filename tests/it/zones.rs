//! Static zones as a user runs them: the binary with a zones directory, a broken zone at
//! start, and SIGHUP reloads (good and bad).

use crate::common;
use crate::program;

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use program::{ask, poll, ConsulDns, Program, TempDir, BIN};

/// The example zone shipped in `zones/`.
const EXAMPLE_ZONE: &str = include_str!("../../zones/cluster.internal.zone");

const OTHER_ZONE: &str = "\
$TTL 60
@    IN SOA ns hostmaster 7 3600 600 86400 30
     IN NS  ns
ns   IN A   127.0.0.1
db   IN A   10.9.0.1
db   IN A   10.9.0.2
mail IN MX  10 db
";

fn start_emulator(rt: &tokio::runtime::Runtime) -> consul_emulator::Emulator {
    let emu = rt.block_on(common::emulator());
    emu.seed_demo();
    emu
}

fn start(dir: &TempDir, url: &str, zones: &str) -> ConsulDns {
    ConsulDns::start(
        &[
            "--consul-addr",
            url,
            "--listen",
            "127.0.0.1:0",
            "--zones",
            zones,
        ],
        dir.path(),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

fn a_of(server: SocketAddr, name: &str) -> Vec<String> {
    common::lines(&ask(server, name, RecordType::A).answers)
}

#[test]
fn zone_files_are_served_authoritatively_beside_consul() {
    let rt = runtime();
    let emu = start_emulator(&rt);
    let dir = TempDir::new("zones-serve");
    let zones = dir.path().join("zones");
    std::fs::create_dir(&zones).expect("mkdir");
    std::fs::write(zones.join("cluster.internal.zone"), EXAMPLE_ZONE).expect("write");
    std::fs::write(zones.join("Other.Example.zone"), OTHER_ZONE).expect("write");
    std::fs::write(zones.join("README.md"), "not a zone").expect("write");
    std::fs::write(zones.join("notes.txt"), "not a zone either (").expect("write");

    // No --zones: ./zones of the working directory is served.
    let mut cmd = std::process::Command::new(BIN);
    cmd.args(["--consul-addr", &emu.url(), "--listen", "127.0.0.1:0"])
        .current_dir(dir.path());
    let dns = ConsulDns::start_command("consul-dns", cmd);
    let s = dns.addr;

    let m = ask(s, "node1.cluster.internal", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative, "AA on static zone answers");
    assert!(!m.metadata.recursion_available, "no recursors: no RA");
    common::assert_records(
        "answer",
        &m.answers,
        &["node1.cluster.internal. 300 IN A 192.168.56.11"],
    );
    common::assert_records(
        "CNAME",
        &ask(s, "Gateway.Cluster.Internal", RecordType::A).answers,
        &[
            "Gateway.Cluster.Internal. 300 IN CNAME node1.cluster.internal.",
            "node1.cluster.internal. 300 IN A 192.168.56.11",
        ],
    );
    let soa = "cluster.internal. 300 IN SOA ns.cluster.internal. hostmaster.cluster.internal. 2024060101 3600 600 86400 60";
    let m = ask(s, "nope.cluster.internal", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.metadata.authoritative);
    common::assert_records("NXDOMAIN authority", &m.authorities, &[soa]);
    let m = ask(s, "node1.cluster.internal", RecordType::MX);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    common::assert_records("NODATA authority", &m.authorities, &[soa]);
    let m = ask(s, "cluster.internal", RecordType::SOA);
    common::assert_records("SOA", &m.answers, &[soa]);
    common::assert_records(
        "SOA authority",
        &m.authorities,
        &["cluster.internal. 300 IN NS ns.cluster.internal."],
    );
    assert_eq!(
        a_of(s, "db.other.example"),
        [
            "db.other.example. 60 IN A 10.9.0.1",
            "db.other.example. 60 IN A 10.9.0.2"
        ],
        "a file named with capitals serves its lower-case origin"
    );

    // The Consul domain is unchanged, and other names are still refused.
    assert_eq!(
        program::addresses(&ask(s, "web.service.consul", RecordType::A)).len(),
        3
    );
    assert_eq!(
        ask(s, "example.com", RecordType::A).metadata.response_code,
        ResponseCode::Refused
    );
    let out = dns.program.output();
    assert!(
        out.contains("serving zone cluster.internal.")
            && out.contains("serving zone other.example."),
        "{out}"
    );
}

#[test]
fn a_broken_zone_stops_the_start_with_file_line_and_reason() {
    let rt = runtime();
    let emu = start_emulator(&rt);
    let cases: [(&str, String, &[&str]); 4] = [
        (
            "bad.example.zone",
            format!("{OTHER_ZONE}web  IN A 10.9.0.300\n"),
            &["bad.example.zone:8:", "invalid IPv4 address"],
        ),
        (
            "paren.example.zone",
            "$TTL 60\n@ IN SOA ns hostmaster ( 1 2 3 4 5\nns IN A 10.0.0.1\n".to_string(),
            &["paren.example.zone:2:", "unclosed"],
        ),
        (
            "nosoa.example.zone",
            "$TTL 60\nns IN A 10.0.0.1\n".to_string(),
            &["nosoa.example.zone:", "no SOA record"],
        ),
        (
            "web.service.consul.zone",
            "$TTL 60\n@ IN SOA ns hostmaster 1 2 3 4 5\n".to_string(),
            &["web.service.consul.zone:", "inside the Consul domain"],
        ),
    ];
    for (file, text, wants) in cases {
        let dir = TempDir::new("zones-bad");
        std::fs::write(dir.path().join("cluster.internal.zone"), EXAMPLE_ZONE).expect("write");
        std::fs::write(dir.path().join(file), text).expect("write");
        let mut cmd = std::process::Command::new(BIN);
        cmd.args([
            "--consul-addr",
            &emu.url(),
            "--listen",
            "127.0.0.1:0",
            "--zones",
            &dir.path().to_string_lossy(),
        ]);
        let mut p = Program::spawn("consul-dns", cmd);
        let (code, out) = p.wait_exit(Duration::from_secs(10));
        assert_eq!(code, Some(2), "{file}: {out}");
        let line = out
            .lines()
            .find(|l| l.starts_with("consul-dns: "))
            .unwrap_or_else(|| panic!("{file}: no error line in {out}"));
        for want in wants {
            assert!(line.contains(want), "{file}: {want:?} not in {line:?}");
        }
        assert!(!out.contains("listening on"), "{out}");
    }

    // A zones directory that does not exist is an error too.
    let dir = TempDir::new("zones-missing");
    let mut cmd = std::process::Command::new(BIN);
    cmd.args([
        "--consul-addr",
        &emu.url(),
        "--listen",
        "127.0.0.1:0",
        "--zones",
        "no-such-dir",
    ])
    .current_dir(dir.path());
    let (code, out) = Program::spawn("consul-dns", cmd).wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("no-such-dir"), "{out}");
}

#[test]
fn sighup_reloads_zones_and_a_broken_zone_keeps_its_previous_version() {
    let rt = runtime();
    let emu = start_emulator(&rt);
    let dir = TempDir::new("zones-reload");
    let zone = dir.write("cluster.internal.zone", EXAMPLE_ZONE);
    let mut dns = start(&dir, &emu.url(), &dir.path().to_string_lossy());
    let s = dns.addr;
    let node1 = |s| a_of(s, "node1.cluster.internal");
    assert_eq!(node1(s), ["node1.cluster.internal. 300 IN A 192.168.56.11"]);
    assert_eq!(
        ask(s, "db.other.example", RecordType::A)
            .metadata
            .response_code,
        ResponseCode::Refused
    );

    // A good change and a new zone: both served after SIGHUP.
    std::fs::write(
        &zone,
        EXAMPLE_ZONE
            .replace("192.168.56.11", "192.168.56.111")
            .replace("2024060101", "2024060102"),
    )
    .expect("write");
    dir.write("other.example.zone", OTHER_ZONE);
    dns.program.signal(libc::SIGHUP);
    let reloaded = poll(Duration::from_secs(5), || {
        (node1(s) == ["node1.cluster.internal. 300 IN A 192.168.56.111"]).then_some(())
    });
    assert!(reloaded.is_some(), "{}", dns.program.output());
    assert_eq!(a_of(s, "db.other.example").len(), 2);

    // A broken change: the previous version stays, the log names the file and line.
    std::fs::write(&zone, EXAMPLE_ZONE.replace("192.168.56.11", "192.168.56.x")).expect("write");
    let broken_line = EXAMPLE_ZONE
        .lines()
        .position(|l| l.contains("192.168.56.11"))
        .map(|i| i + 1)
        .expect("example zone has node1");
    dns.program.signal(libc::SIGHUP);
    let want = format!("cluster.internal.zone:{broken_line}:");
    dns.program.wait_for_output(&want, Duration::from_secs(5));
    assert!(
        dns.program
            .output()
            .contains("still serving its previous version"),
        "{}",
        dns.program.output()
    );
    assert_eq!(
        node1(s),
        ["node1.cluster.internal. 300 IN A 192.168.56.111"]
    );
    assert_eq!(a_of(s, "db.other.example").len(), 2);

    // Fixed again, and the other zone removed.
    std::fs::write(&zone, EXAMPLE_ZONE).expect("write");
    std::fs::remove_file(dir.path().join("other.example.zone")).expect("rm");
    dns.program.signal(libc::SIGHUP);
    let reloaded = poll(Duration::from_secs(5), || {
        (node1(s) == ["node1.cluster.internal. 300 IN A 192.168.56.11"]).then_some(())
    });
    assert!(reloaded.is_some(), "{}", dns.program.output());
    let m: Message = ask(s, "db.other.example", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    // Still running, still answering Consul names.
    assert_eq!(
        program::addresses(&ask(s, "web.service.consul", RecordType::A)).len(),
        3
    );
}

#[test]
fn big_static_answers_over_udp_stay_within_1232_bytes() {
    let rt = runtime();
    let emu = start_emulator(&rt);
    let dir = TempDir::new("zones-big");
    let mut zone = String::from("$TTL 60\n@ IN SOA ns hostmaster 1 3600 600 86400 30\n");
    for i in 1..=120 {
        zone.push_str(&format!("many IN A 10.7.{}.{}\n", i / 200, i % 200 + 1));
    }
    dir.write("big.example.zone", &zone);
    let dns = start(&dir, &emu.url(), &dir.path().to_string_lossy());
    let ask = |transport, edns| {
        rt.block_on(common::query_with(
            dns.addr,
            "many.big.example",
            RecordType::A,
            common::Ask {
                transport,
                edns,
                rd: true,
            },
        ))
    };
    // A client advertising 4096 bytes over UDP gets at most 1232 (no IP fragmentation):
    // the answer is cut and TC set, and TCP gives all of it.
    let udp = ask(common::Transport::Udp, Some(4096));
    assert!(udp.metadata.truncation, "TC set");
    assert!(udp.answers.len() < 120, "{}", udp.answers.len());
    let size = udp.to_vec().expect("encodes").len();
    assert!(size <= 1232, "{size} bytes");
    let tcp = ask(common::Transport::Tcp, Some(4096));
    assert!(!tcp.metadata.truncation);
    assert_eq!(tcp.answers.len(), 120);
}
