//! consul-dns as the primary of the Consul domain (issue 20): NSD and Knot, run for real on
//! loopback as its secondaries, transfer the zone (AXFR), answer every name of it as
//! consul-dns does, and follow a registration and a deregistration through NOTIFY and
//! IXFR; a client outside `--allow-transfer` is refused, over TCP and UDP.
//!
//! The secondaries know only consul-dns (no root hints, no upstream): nothing leaves the
//! machine. A missing program skips the test, or fails it with `CONSUL_DNS_TESTS_NO_SKIP`.

use crate::common;
use crate::program;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::SOA;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use program::{ask, ask_from, free_port, poll, tool, world, NetNs, Program, TempDir, World};
use serde_json::json;

/// The demo catalog and consul-dns as the primary, with `extra` arguments.
fn primary(test: &str, extra: &[&str]) -> World {
    world(test, extra)
}

/// Registrations through the Consul HTTP API.
trait Catalog {
    fn register(&self, id: &str, address: &str);
    fn deregister(&self, id: &str);
}

impl Catalog for World {
    fn register(&self, id: &str, address: &str) {
        let body = json!({
            "Node": "node1",
            "Address": "192.168.56.11",
            "Service": {"ID": id, "Service": "app", "Address": address, "Port": 8080}
        });
        self.rt
            .block_on(common::http_register(&self.emu.url(), &body));
    }

    fn deregister(&self, id: &str) {
        let body = json!({"Node": "node1", "ServiceID": id});
        self.rt
            .block_on(common::http_deregister(&self.emu.url(), &body));
    }
}

/// A transfer request for `consul.` of `qtype`; for IXFR with the client's `serial`.
fn transfer_request(qtype: RecordType, serial: Option<u32>) -> Vec<u8> {
    let consul = Name::from_ascii("consul.").expect("name");
    let mut msg = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(consul.clone(), qtype));
    if let Some(serial) = serial {
        let soa = SOA::new(consul.clone(), consul.clone(), serial, 0, 0, 0, 0);
        msg.add_authority(Record::from_rdata(consul, 0, RData::SOA(soa)));
    }
    msg.to_vec().expect("encodes")
}

/// The messages answering a transfer request over TCP from `from`, each read strictly,
/// until the closing SOA (or the first error response).
fn transfer(server: SocketAddr, from: IpAddr, request: &[u8]) -> Vec<Message> {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&SocketAddr::new(from, 0).into())
        .expect("bind the client address");
    socket.connect(&server.into()).expect("connect");
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(&(request.len() as u16).to_be_bytes())
        .expect("write");
    s.write_all(request).expect("write");
    let mut messages = Vec::new();
    let mut soas = 0;
    loop {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).expect("a framed message");
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).expect("the message");
        let m = common::decode(&buf);
        let code = m.metadata.response_code;
        soas += m
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .count();
        let single_soa = messages.is_empty() && soas == 1 && m.answers.len() == 1;
        messages.push(m);
        if code != ResponseCode::NoError || soas >= 2 || single_soa {
            return messages;
        }
    }
}

/// Waits until consul-dns has its first version of the zone (SERVFAIL before), and
/// returns its serial.
fn transferable(server: SocketAddr) -> u32 {
    let request = transfer_request(RecordType::AXFR, None);
    poll(Duration::from_secs(15), || {
        let m = transfer(server, IpAddr::V4(Ipv4Addr::LOCALHOST), &request);
        match m[0].answers.first().map(|r| &r.data) {
            Some(RData::SOA(soa)) => Some(soa.serial),
            _ => None,
        }
    })
    .expect("the zone becomes transferable")
}

/// The zone consul-dns transfers: its records without the SOA, by (name, type).
/// An AXFR of consul-dns now: its serial and its records between the two SOAs.
fn axfr(server: SocketAddr) -> (u32, Vec<Record>) {
    let messages = transfer(
        server,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        &transfer_request(RecordType::AXFR, None),
    );
    let mut records: Vec<Record> = messages.into_iter().flat_map(|m| m.answers).collect();
    let serial = match records.first().map(|r| &r.data) {
        Some(RData::SOA(soa)) => soa.serial,
        other => panic!("an AXFR starts with the SOA, not {other:?}"),
    };
    assert!(
        matches!(records.last().map(|r| &r.data), Some(RData::SOA(s)) if s.serial == serial),
        "and ends with it"
    );
    records.pop();
    records.remove(0);
    (serial, records)
}

fn zone(server: SocketAddr) -> (u32, BTreeMap<(String, RecordType), Vec<String>>) {
    let (serial, records) = axfr(server);
    let mut rrsets: BTreeMap<(String, RecordType), Vec<String>> = BTreeMap::new();
    for r in &records {
        rrsets
            .entry((r.name.to_lowercase().to_string(), r.record_type()))
            .or_default()
            .push(r.data.to_string());
    }
    for v in rrsets.values_mut() {
        v.sort();
    }
    (serial, rrsets)
}

/// The RRset `server` answers for `name`/`qtype` over UDP, as text, sorted.
fn rrset(server: SocketAddr, name: &str, qtype: RecordType) -> Vec<String> {
    let m = ask(server, name, qtype);
    let mut v: Vec<String> = m
        .answers
        .iter()
        .filter(|r| r.record_type() == qtype && r.name.to_lowercase().to_string() == name)
        .map(|r| r.data.to_string())
        .collect();
    v.sort();
    v
}

fn soa_serial(server: SocketAddr) -> Option<u32> {
    let m = ask_from(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        server,
        "consul.",
        RecordType::SOA,
        false,
        Duration::from_secs(1),
    )?;
    m.answers.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    })
}

/// `addr` as NSD and Knot write it: `IP@PORT`.
fn at(addr: SocketAddr) -> String {
    format!("{}@{}", addr.ip(), addr.port())
}

/// NSD as a secondary of consul-dns on 127.0.0.1:`port`.
fn nsd(dir: &TempDir, port: u16, primary: SocketAddr) -> Option<Program> {
    nsd_with_key(dir, port, primary, None)
}

/// [`nsd`], transfers and NOTIFYs signed with the TSIG key (name, base64 secret).
fn nsd_with_key(
    dir: &TempDir,
    port: u16,
    primary: SocketAddr,
    key: Option<(&str, &str)>,
) -> Option<Program> {
    let nsd = tool("nsd")?;
    let d = dir.path().join("nsd");
    std::fs::create_dir_all(&d).expect("dir");
    let d = d.display();
    let conf = format!(
        r#"server:
  ip-address: 127.0.0.1@{port}
  port: {port}
  do-ip6: no
  server-count: 1
  username: ""
  chroot: ""
  zonesdir: "{d}"
  database: ""
  pidfile: "{d}/nsd.pid"
  xfrdfile: "{d}/xfrd.state"
  xfrdir: "{d}"
  zonelistfile: "{d}/zone.list"
  logfile: "{d}/nsd.log"
  verbosity: 2
  rrl-ratelimit: 0
  xfrd-reload-timeout: 0
remote-control:
  control-enable: no
{key_clause}zone:
  name: "consul."
  zonefile: "{d}/consul.zone"
  request-xfr: {primary} {key_name}
  allow-notify: 127.0.0.1 {key_name}
"#,
        primary = at(primary),
        key_clause = key.map_or(String::new(), |(name, secret)| format!(
            "key:\n  name: \"{name}\"\n  algorithm: hmac-sha256\n  secret: \"{secret}\"\n"
        )),
        key_name = key.map_or("NOKEY", |(name, _)| name),
    );
    let path = dir.write("nsd.conf", &conf);
    let mut cmd = std::process::Command::new(nsd);
    cmd.args(["-d", "-c"]).arg(path);
    Some(Program::spawn("nsd", cmd))
}

/// Knot as a secondary of consul-dns on 127.0.0.1:`port`.
fn knot(dir: &TempDir, port: u16, primary: SocketAddr) -> Option<Program> {
    let knotd = tool("knotd")?;
    let d = dir.path().join("knot");
    std::fs::create_dir_all(d.join("db")).expect("dir");
    let d = d.display();
    let id = |flag: &str| {
        let out = std::process::Command::new("id")
            .arg(flag)
            .output()
            .expect("id");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let (uid, gid) = (id("-un"), id("-gn"));
    let conf = format!(
        r#"server:
    rundir: "{d}"
    user: {uid}:{gid}
    pidfile: "{d}/knot.pid"
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: info
database:
    storage: "{d}/db"
remote:
  - id: primary
    address: {primary}
acl:
  - id: notify_from_primary
    address: 127.0.0.1
    action: notify
template:
  - id: default
    storage: "{d}"
    zonefile-sync: -1
    journal-content: changes
zone:
  - domain: consul.
    master: primary
    acl: notify_from_primary
"#,
        primary = at(primary),
    );
    let path = dir.write("knot.conf", &conf);
    let mut cmd = std::process::Command::new(knotd);
    cmd.arg("-c").arg(path);
    Some(Program::spawn("knotd", cmd))
}

/// The whole check against one secondary, started by `start` on a port consul-dns
/// notifies.
fn secondary_follows(test: &str, start: fn(&TempDir, u16, SocketAddr) -> Option<Program>) {
    let port = free_port();
    let secondary = SocketAddr::from(([127, 0, 0, 1], port));
    let notify = secondary.to_string();
    let p = primary(
        test,
        &[
            "--allow-transfer",
            "127.0.0.1/32",
            "--notify",
            &notify,
            "--log-level",
            "debug",
        ],
    );
    let primary_addr = p.dns.addr;
    // The first version, once every service is in memory.
    let serial = transferable(primary_addr);
    let Some(_secondary) = start(&p.dir, port, primary_addr) else {
        skip!(
            test,
            "{test} needs its server installed (CI installs nsd and knot)"
        );
    };
    let transferred = poll(Duration::from_secs(20), || {
        (soa_serial(secondary).is_some_and(|s| s == soa_serial(primary_addr).unwrap_or(0)))
            .then_some(())
    });
    assert!(
        transferred.is_some(),
        "{test}: the secondary never had serial {serial} (has {:?})",
        soa_serial(secondary)
    );

    // Every RRset of the zone is answered by the secondary as by consul-dns.
    let (_, rrsets) = zone(primary_addr);
    assert!(
        rrsets.len() > 20,
        "{test}: a zone of the demo catalog: {rrsets:?}"
    );
    for kind in [
        "web.service.consul.",
        "_web._tcp.service.consul.",
        "node1.node.consul.",
    ] {
        assert!(
            rrsets.keys().any(|(n, _)| n == kind),
            "{test}: {kind} is in the zone"
        );
    }
    for ((name, qtype), records) in &rrsets {
        let direct = rrset(primary_addr, name, *qtype);
        assert_eq!(
            &direct, records,
            "{test}: consul-dns's {name} {qtype} and its zone"
        );
        assert_eq!(
            rrset(secondary, name, *qtype),
            direct,
            "{test}: the secondary's {name} {qtype}"
        );
    }

    // A registration reaches the secondary (NOTIFY, then IXFR), then a deregistration.
    let changed = Instant::now();
    p.register("app-1", "10.2.7.1");
    let seen = poll(Duration::from_secs(5), || {
        (rrset(secondary, "app.service.consul.", RecordType::A) == ["10.2.7.1"]).then_some(())
    });
    assert!(
        seen.is_some(),
        "{test}: the registration never reached the secondary"
    );
    println!(
        "{test}: registration seen by the secondary after {:?}",
        changed.elapsed()
    );
    let changed = Instant::now();
    p.deregister("app-1");
    let gone = poll(Duration::from_secs(5), || {
        let m = ask(secondary, "app.service.consul.", RecordType::A);
        (m.metadata.response_code == ResponseCode::NXDomain).then_some(())
    });
    assert!(
        gone.is_some(),
        "{test}: the deregistration never reached the secondary"
    );
    println!(
        "{test}: deregistration seen by the secondary after {:?}",
        changed.elapsed()
    );
    let metrics = p.dns.program.output();
    assert!(
        metrics.contains("IXFR"),
        "{test}: the changes went by IXFR:\n{metrics}"
    );
}

#[test]
fn nsd_is_a_secondary() {
    secondary_follows("nsd_is_a_secondary", nsd);
}

#[test]
fn knot_is_a_secondary() {
    secondary_follows("knot_is_a_secondary", knot);
}

#[test]
fn transfers_are_refused_outside_allow_transfer_and_over_udp() {
    let p = primary("transfers_refused", &["--allow-transfer", "127.0.0.1/32"]);
    let dns = p.dns.addr;
    transferable(dns);
    // Inside: served. From 127.0.0.2, outside the network: REFUSED.
    let inside = transfer(
        dns,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        &transfer_request(RecordType::AXFR, None),
    );
    assert_eq!(inside[0].metadata.response_code, ResponseCode::NoError);
    let outside = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    for qtype in [RecordType::AXFR, RecordType::IXFR] {
        let refused = transfer(dns, outside, &transfer_request(qtype, Some(1)));
        assert_eq!(refused.len(), 1);
        assert_eq!(
            refused[0].metadata.response_code,
            ResponseCode::Refused,
            "{qtype}"
        );
        assert!(refused[0].answers.is_empty());
        // Over UDP, from anywhere.
        let m = ask_from(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            dns,
            "consul.",
            qtype,
            false,
            Duration::from_secs(2),
        )
        .expect("answered");
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::Refused,
            "{qtype} over UDP"
        );
    }
}

#[test]
fn ixfr_sends_the_difference_and_an_unknown_serial_gets_the_whole_zone() {
    let p = primary("ixfr_difference", &["--allow-transfer", "127.0.0.0/8"]);
    let dns = p.dns.addr;
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let before = transferable(dns);
    assert_eq!(
        soa_serial(dns),
        Some(before),
        "the SOA answered is the zone's"
    );
    let (_, whole) = zone(dns);
    p.register("app-1", "10.2.7.1");
    let names = |records: &[&Record]| -> Vec<String> {
        records
            .iter()
            .filter(|r| r.record_type() != RecordType::SOA)
            .map(|r| format!("{} {}", r.name, r.record_type()))
            .collect()
    };
    // The serial may move before the new service's records are in (the catalog index
    // moves first); wait for the version that holds them.
    let ixfr = poll(Duration::from_secs(5), || {
        let ixfr = transfer(
            dns,
            localhost,
            &transfer_request(RecordType::IXFR, Some(before)),
        );
        let records: Vec<&Record> = ixfr.iter().flat_map(|m| &m.answers).collect();
        names(&records)
            .iter()
            .any(|r| r == "app.service.consul. A")
            .then_some(ixfr)
    })
    .expect("an IXFR from the old serial brings the registration");
    let records: Vec<&Record> = ixfr.iter().flat_map(|m| &m.answers).collect();
    let soas: Vec<(usize, u32)> = records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match &r.data {
            RData::SOA(s) => Some((i, s.serial)),
            _ => None,
        })
        .collect();
    let after = soas.first().map(|s| s.1).expect("an SOA first");
    assert!(
        after > before,
        "the serial moves forward: {before} -> {after}"
    );
    assert_eq!(
        soa_serial(dns),
        Some(after),
        "the SOA answered is the zone's"
    );
    // RFC 1995 framing: the new SOA, then per version the old SOA, what went, the new
    // SOA, what came; the new SOA again at the end.
    assert_eq!(soas.get(1).map(|s| s.1), Some(before), "{records:?}");
    assert_eq!(soas.last().map(|s| s.1), Some(after), "{records:?}");
    assert!(soas.len() >= 4 && soas.len().is_multiple_of(2), "{soas:?}");
    let changed = names(&records);
    assert!(
        changed.len() < whole.len() / 2,
        "a few records, not the zone: {changed:?}"
    );
    // Within one version, nothing goes and comes back.
    for step in soas[1..soas.len() - 1].chunks(2) {
        let [(went_from, _), (came_from, _)] = step else {
            unreachable!("an even count")
        };
        let next = soas
            .iter()
            .map(|s| s.0)
            .find(|&i| i > *came_from)
            .unwrap_or(records.len());
        let went: Vec<String> = records[went_from + 1..*came_from]
            .iter()
            .map(|r| line(r))
            .collect();
        let came: Vec<String> = records[came_from + 1..next]
            .iter()
            .map(|r| line(r))
            .collect();
        assert!(
            went.iter().all(|r| !came.contains(r)),
            "removed and added again in one version: {went:?} / {came:?}"
        );
    }

    // Up to date: the SOA alone.
    let current = transfer(
        dns,
        localhost,
        &transfer_request(RecordType::IXFR, Some(after)),
    );
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].answers.len(), 1);
    // A serial the journal never had: the whole zone, AXFR-style.
    let unknown = transfer(dns, localhost, &transfer_request(RecordType::IXFR, Some(7)));
    let n: usize = unknown.iter().map(|m| m.answers.len()).sum();
    assert!(
        n > whole.len(),
        "{n} records for a zone of {} RRsets",
        whole.len()
    );
}

/// A zone as a set of record lines (SOA left out).
type ZoneText = std::collections::BTreeSet<String>;

fn line(r: &Record) -> String {
    format!(
        "{} {} {} {}",
        r.name.to_lowercase(),
        r.ttl,
        r.record_type(),
        r.data
    )
}

/// The zone an AXFR gives now, and its serial.
fn axfr_text(dns: SocketAddr) -> (u32, ZoneText) {
    let (serial, records) = axfr(dns);
    (serial, records.iter().map(line).collect())
}

/// `zone` with the IXFR from `serial` applied (RFC 1995: per version the old SOA, what
/// goes, the new SOA, what comes); each removed record must be there, each added one
/// must not, as NSD and Knot require.
fn apply_ixfr(dns: SocketAddr, serial: u32, mut zone: ZoneText) -> (u32, ZoneText) {
    let messages = transfer(
        dns,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        &transfer_request(RecordType::IXFR, Some(serial)),
    );
    let records: Vec<&Record> = messages.iter().flat_map(|m| &m.answers).collect();
    let soa = |r: &Record| match &r.data {
        RData::SOA(s) => Some(s.serial),
        _ => None,
    };
    let last = soa(records[0]).expect("starts with the SOA");
    assert!(
        records.len() > 1,
        "IXFR from {serial} answered 'up to date'"
    );
    assert_ne!(soa(records[1]), None, "IXFR from {serial}: not AXFR-style");
    // Each version's old SOA starts what goes, its new SOA what comes.
    let mut removing = false;
    for r in &records[1..records.len() - 1] {
        if soa(r).is_some() {
            removing = !removing;
            continue;
        }
        let l = line(r);
        if removing {
            assert!(
                zone.remove(&l),
                "IXFR from {serial} removes {l}, not in the zone"
            );
        } else {
            assert!(
                zone.insert(l.clone()),
                "IXFR from {serial} adds {l}, already there"
            );
        }
    }
    (last, zone)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_ixfr_turns_its_version_into_the_current_zone() {
    let consul = common::emulator().await;
    consul.seed_demo();
    let running = common::server_with(&consul.url(), |c| {
        c.transfer.allow = vec!["127.0.0.0/8".parse().expect("net")];
    })
    .await;
    let dns = running.dns_addrs[0];
    let url = consul.url();
    tokio::task::block_in_place(|| transferable(dns));
    let mut versions: Vec<(u32, ZoneText)> = Vec::new();
    let changes: Vec<(serde_json::Value, bool)> = vec![
        (common::web_instance(4, "passing"), true),
        (common::web_instance(4, "critical"), true),
        (
            common::Instance::new("app", "app1")
                .at("10.2.7.1", 8080)
                .tags(&["v1"])
                .json(),
            true,
        ),
        (common::web_instance(4, "passing"), true),
        (
            common::Instance::new("app", "app2")
                .on("node9", "192.168.56.9")
                .at("10.2.7.1", 8080)
                .json(),
            true,
        ),
        (json!({"Node": "node4", "ServiceID": "web4"}), false),
        (
            common::Instance::new("app", "app1")
                .at("10.2.7.3", 8080)
                .tags(&["v2"])
                .json(),
            true,
        ),
        (json!({"Node": "node9"}), false),
        (json!({"Node": "node1", "ServiceID": "app1"}), false),
    ];
    for (body, register) in changes {
        let before = tokio::task::block_in_place(|| axfr_text(dns));
        versions.push(before.clone());
        if register {
            common::http_register(&url, &body).await;
        } else {
            common::http_deregister(&url, &body).await;
        }
        let moved = tokio::task::block_in_place(|| {
            poll(Duration::from_secs(5), || {
                soa_serial(dns).filter(|&s| s != before.0)
            })
        });
        assert!(moved.is_some(), "the serial moves with {body}");
    }
    let (serial, now) = tokio::task::block_in_place(|| axfr_text(dns));
    for (from, zone) in versions {
        if from == serial {
            continue;
        }
        let (to, applied) = tokio::task::block_in_place(|| apply_ixfr(dns, from, zone));
        assert_eq!(to, serial);
        let missing: Vec<_> = now.difference(&applied).collect();
        let extra: Vec<_> = applied.difference(&now).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "IXFR from {from}: missing {missing:?}, extra {extra:?}"
        );
    }
    running.shutdown().await;
}

const TSIG_NAME: &str = "xfr-key";
const TSIG_SECRET: &str = "c2VjcmV0IGtleSBvZiB0aGUgdHJhbnNmZXJzIGluIHRlc3Rz";

/// `dig AXFR consul.` from consul-dns, signed with `key` ("hmac-sha256:name:secret") if
/// given: what dig printed.
fn dig_axfr(dns: SocketAddr, key: Option<&str>) -> String {
    let Some(dig) = tool("dig") else {
        panic!("dig is needed (CI installs dnsutils)");
    };
    let mut cmd = std::process::Command::new(dig);
    cmd.args([
        "@127.0.0.1",
        "-p",
        &dns.port().to_string(),
        "consul.",
        "AXFR",
        "+tries=1",
        "+time=5",
    ]);
    if let Some(key) = key {
        cmd.args(["-y", key]);
    }
    let out = cmd.output().expect("dig runs");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn with_a_transfer_key_only_signed_transfers_are_served_and_nsd_follows() {
    let test = "transfers_with_tsig";
    if tool("nsd").is_none() {
        skip!(test, "nsd is not installed (CI installs it)");
    }
    let conf_dir = TempDir::new("tsig-conf");
    let conf = conf_dir.write(
        "consul-dns.toml",
        &format!("transfer_key_name = \"{TSIG_NAME}\"\ntransfer_key_secret = \"{TSIG_SECRET}\"\n"),
    );
    let port = free_port();
    let notify = format!("127.0.0.1:{port}");
    let conf = conf.display().to_string();
    let p = primary(
        test,
        &[
            "--allow-transfer",
            "127.0.0.1/32",
            "--notify",
            &notify,
            "--config",
            &conf,
        ],
    );
    let dns = p.dns.addr;
    let key = format!("hmac-sha256:{TSIG_NAME}:{TSIG_SECRET}");
    let signed = poll(Duration::from_secs(15), || {
        let out = dig_axfr(dns, Some(&key));
        out.contains("XFR size").then_some(out)
    })
    .expect("a signed AXFR is served");
    assert!(
        !signed.contains("tsig verify failure") && !signed.contains("Couldn't verify"),
        "{signed}"
    );
    assert!(signed.contains("TSIG"), "the answer is signed: {signed}");

    // Unsigned: REFUSED; signed with another secret: not served.
    let unsigned = transfer(
        dns,
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        &transfer_request(RecordType::AXFR, None),
    );
    assert_eq!(unsigned[0].metadata.response_code, ResponseCode::Refused);
    let wrong = dig_axfr(
        dns,
        Some(&format!("hmac-sha256:{TSIG_NAME}:d3Jvbmcgc2VjcmV0IGtleQ==")),
    );
    assert!(!wrong.contains("XFR size"), "{wrong}");

    // NSD with the key: the first transfer, then a registration through signed NOTIFY
    // and IXFR.
    let Some(_nsd) = nsd_with_key(&p.dir, port, dns, Some((TSIG_NAME, TSIG_SECRET))) else {
        skip!(test, "nsd is not installed");
    };
    let secondary = SocketAddr::from(([127, 0, 0, 1], port));
    let transferred = poll(Duration::from_secs(20), || {
        (soa_serial(secondary).is_some() && soa_serial(secondary) == soa_serial(dns)).then_some(())
    });
    assert!(transferred.is_some(), "NSD never had the zone");
    p.register("app-1", "10.2.7.1");
    let seen = poll(Duration::from_secs(5), || {
        (rrset(secondary, "app.service.consul.", RecordType::A) == ["10.2.7.1"]).then_some(())
    });
    assert!(seen.is_some(), "the registration never reached NSD");
    let log = p.dns.program.output();
    assert!(log.contains("IXFR"), "by IXFR: {log}");
}

/// A secondary that takes the zone slowly (a slow link, a busy server) gets all of it, as
/// long as each message is taken within `tcp_write_timeout`: the messages are made and
/// written one by one, not as one write of the whole zone. In a network namespace whose
/// TCP buffers are at most 64 KiB (as a long path's would be, in time), so that the kernel
/// cannot take the zone at once.
#[test]
fn a_slow_secondary_gets_the_whole_zone_message_by_message() {
    let test = "a_slow_secondary_gets_the_whole_zone_message_by_message";
    if !program::is_root() {
        skip!(test, "needs root (ip netns add); CI runs as root");
    }
    if tool("ip").is_none() {
        skip!(test, "needs ip (apt-get install iproute2)");
    }
    let ns = NetNs::new(&[]);
    for buffers in ["tcp_wmem", "tcp_rmem"] {
        let set = format!("echo '4096 16384 65536' > /proc/sys/net/ipv4/{buffers}");
        ns.exec_ok(&["sh", "-c", &set]);
    }
    let rt = ns.runtime();
    let emu = NetNs::block_on(&rt, async {
        let emu = common::emulator().await;
        emu.seed_demo();
        emu
    });
    // About 700 KB of TXT records: 10 nodes, each with Consul's most meta (64 pairs of
    // up to 512 bytes), at `<node>.node` and `<node>.node.dc1`.
    const NODES: usize = 10;
    const PAIRS: usize = 64;
    let url = emu.url();
    NetNs::block_on(&rt, {
        let url = url.clone();
        async move {
            for n in 0..NODES {
                let meta: serde_json::Map<String, serde_json::Value> = (0..PAIRS)
                    .map(|k| {
                        (
                            format!("key{k}"),
                            json!(format!("{n}-{k}-{}", "v".repeat(500))),
                        )
                    })
                    .collect();
                let body = json!({"Node": format!("meta{n}"),
                                  "Address": format!("192.168.57.{n}"), "NodeMeta": meta});
                common::http_register(&url, &body).await;
            }
        }
    });
    let config = TempDir::new("slow-secondary");
    let config_file = config.write("consul-dns.toml", "tcp_write_timeout = \"1s\"\n");
    let primary = ns.consul_dns(
        "primary (netns)",
        &[
            "--consul-addr",
            &url,
            "--listen",
            "127.0.0.1:0",
            "--zones",
            "",
            "--allow-transfer",
            "127.0.0.0/8",
            "--config",
            config_file.to_str().expect("utf-8"),
        ],
        config.path(),
    );
    let dns = primary.addr;
    let expected = NODES * PAIRS * 2;
    let (records, took) = NetNs::block_on(&rt, async move {
        tokio::task::spawn_blocking(move || {
            poll(Duration::from_secs(20), || {
                transferable(dns);
                (node_txt(&axfr(dns).1) == expected).then_some(())
            })
            .expect("the zone holds every node's meta");
            slow_axfr(dns)
        })
        .await
        .expect("the client runs")
    });
    assert!(took > Duration::from_secs(2), "read slowly: {took:?}");
    assert_eq!(
        node_txt(&records),
        expected,
        "every TXT record, in {took:?}"
    );
    assert!(
        matches!(
            records.last().map(|r| r.record_type()),
            Some(RecordType::SOA)
        ),
        "and the closing SOA"
    );
}

/// The TXT records of the `meta*` nodes among `records`.
fn node_txt(records: &[Record]) -> usize {
    records
        .iter()
        .filter(|r| r.record_type() == RecordType::TXT && r.name.to_ascii().starts_with("meta"))
        .count()
}

/// An AXFR read 8 KiB every 40 ms: its records, and how long it took.
fn slow_axfr(dns: SocketAddr) -> (Vec<Record>, Duration) {
    let mut s = TcpStream::connect(dns).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let request = transfer_request(RecordType::AXFR, None);
    s.write_all(&(request.len() as u16).to_be_bytes())
        .expect("write");
    s.write_all(&request).expect("write");
    let started = Instant::now();
    let mut bytes = Vec::new();
    let mut chunk = vec![0u8; 8192];
    while !complete_transfer(&bytes) {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading the transfer after {} bytes: {e}", bytes.len()),
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    let took = started.elapsed();
    let mut records = Vec::new();
    let mut rest = &bytes[..];
    while let [hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        assert!(
            tail.len() >= len,
            "the transfer was cut after {} bytes",
            bytes.len()
        );
        records.extend(common::decode(&tail[..len]).answers);
        rest = &tail[len..];
    }
    (records, took)
}

/// Whether `bytes` (framed messages) hold a whole transfer: its last complete message
/// ends with the closing SOA.
fn complete_transfer(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    let mut soas = 0;
    while let [hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let Some(message) = tail.get(..len) else {
            return false;
        };
        soas += common::decode(message)
            .answers
            .iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .count();
        rest = &tail[len..];
    }
    soas >= 2
}
