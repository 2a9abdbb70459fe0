//! Seeing what the server does: the metrics by name form and the gauges of what is known
//! (scraped over HTTP from `--http-addr`), nothing looking healthy before Consul has
//! answered, the log lines as JSON (`--log-format json`), a line when the catalog's size
//! changes, and the query log (`--query-log`: JSON lines on stdout, for every answer path,
//! sampled, off by default). Replies are read by hickory and NLnet Labs' `domain`
//! (`common::decode`), and by kdig for TCP and DNS over TLS.

use crate::common;
use crate::common::pki;
use crate::program;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{decode, ede, eventually, exchange, query, query_with, rcode, Ask, Instance};
use consul_dns::app::Running;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Label, Name, RecordType};
use program::{ask, free_port, poll, tool, world, Program, TempDir, World};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(10);

const EXAMPLE_ZONE: &str = include_str!("../../zones/cluster.internal.zone");
const UPSTREAM_ZONE: &str = "$TTL 300
@   IN SOA ns.upstream.test. hostmaster.upstream.test. ( 1 3600 600 86400 60 )
    IN NS  ns
ns  IN A   127.0.0.1
www IN A   192.0.2.7
";

// ---- metrics, scraped over HTTP ----

/// `GET /metrics` of a server started with an `http_addr`.
async fn scrape(running: &Running) -> String {
    let addr = running.http_addr.expect("http_addr set");
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("metrics endpoint")
        .text()
        .await
        .expect("metrics body")
}

/// The value of `series` (name and labels as rendered) in `text`; None when absent.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn queries(qtype: &str, rcode: &str, form: &str) -> String {
    format!(r#"consul_dns_dns_queries_total{{qtype="{qtype}",rcode="{rcode}",form="{form}"}}"#)
}

fn http_config(c: &mut consul_dns::config::Config) {
    c.http_addr = Some("127.0.0.1:0".parse().expect("address"));
}

/// Waits until the server answers Consul names (an ancestor of services: no service read).
async fn synced(dns: SocketAddr) {
    eventually(WAIT, || async {
        rcode(&query(dns, "service.consul.", RecordType::A).await) == ResponseCode::NoError
    })
    .await;
}

#[tokio::test]
async fn queries_are_counted_by_name_form() {
    let emu = common::emulator().await;
    emu.seed_demo();
    let zones = TempDir::new("forms-up");
    zones.write("upstream.test.zone", UPSTREAM_ZONE);
    let up_dir = zones.path().to_path_buf();
    let upstream = common::server_with(&emu.url(), move |c| {
        c.zones = Some(up_dir);
        http_config(c);
    })
    .await;
    let own = TempDir::new("forms");
    own.write("cluster.internal.zone", EXAMPLE_ZONE);
    let own_dir = own.path().to_path_buf();
    let recursor = upstream.dns_addrs[0];
    let running = common::server_with(&emu.url(), move |c| {
        c.zones = Some(own_dir);
        c.recursors = vec![recursor];
        http_config(c);
    })
    .await;
    let dns = running.dns_addrs[0];
    synced(dns).await;

    // Each form once: (name, qtype, rcode expected, qtype label, form label).
    let forms = [
        (
            "web.service.consul.",
            RecordType::A,
            ResponseCode::NoError,
            "A",
            "service",
        ),
        (
            "web.connect.consul.",
            RecordType::SRV,
            ResponseCode::NoError,
            "SRV",
            "connect",
        ),
        (
            "api.ingress.consul.",
            RecordType::A,
            ResponseCode::NoError,
            "A",
            "ingress",
        ),
        (
            "web.virtual.consul.",
            RecordType::A,
            ResponseCode::NoError,
            "A",
            "virtual",
        ),
        (
            "node1.node.consul.",
            RecordType::A,
            ResponseCode::NoError,
            "A",
            "node",
        ),
        (
            "0a020101.addr.consul.",
            RecordType::A,
            ResponseCode::NoError,
            "A",
            "addr",
        ),
        (
            "primary-db.query.consul.",
            RecordType::A,
            ResponseCode::NoError,
            "A",
            "query",
        ),
        (
            "service.consul.",
            RecordType::A,
            ResponseCode::NoError,
            "A",
            "ancestor",
        ),
        (
            "consul.",
            RecordType::SOA,
            ResponseCode::NoError,
            "SOA",
            "apex",
        ),
        (
            "foo.bar.consul.",
            RecordType::A,
            ResponseCode::NXDomain,
            "A",
            "invalid",
        ),
        (
            "consul.",
            RecordType::AXFR,
            ResponseCode::Refused,
            "other",
            "transfer",
        ),
        (
            "11.56.168.192.in-addr.arpa.",
            RecordType::PTR,
            ResponseCode::NoError,
            "PTR",
            "reverse",
        ),
        (
            "node1.cluster.internal.",
            RecordType::A,
            ResponseCode::NoError,
            "A",
            "static",
        ),
        (
            "www.upstream.test.",
            RecordType::A,
            ResponseCode::NoError,
            "A",
            "forwarded",
        ),
    ];
    for (name, qtype, want, _, _) in forms {
        let m = query(dns, name, qtype).await;
        assert_eq!(rcode(&m), want, "{name} {qtype}");
    }
    // An UPDATE (its zone section read as the question): NOTIMP.
    let mut update = Message::new(rand::random(), MessageType::Query, OpCode::Update);
    update.add_query(Query::query(
        Name::from_ascii("consul.").expect("name"),
        RecordType::SOA,
    ));
    let (m, _) = exchange(dns, &update, common::Transport::Udp).await;
    assert_eq!(rcode(&m), ResponseCode::NotImp);
    // Outside every zone of a server without recursors: REFUSED (the upstream's).
    let m = query(upstream.dns_addrs[0], "nothing.example.", RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::Refused);

    // Stored responses count by form too: positive answers from the response cache,
    // negative ones from the stored response of their shape.
    const ASKED: usize = 40;
    for _ in 0..ASKED {
        let m = query(dns, "db.service.consul.", RecordType::A).await;
        assert_eq!(m.answers.len(), 2);
        let m = query(dns, "nosuch.node.consul.", RecordType::A).await;
        assert_eq!(rcode(&m), ResponseCode::NXDomain);
    }

    let text = scrape(&running).await;
    for (name, _, want, qtype, form) in forms {
        let rcode = match want {
            ResponseCode::NoError => "NOERROR",
            ResponseCode::NXDomain => "NXDOMAIN",
            _ => "REFUSED",
        };
        let series = queries(qtype, rcode, form);
        assert!(
            value(&text, &series).is_some_and(|v| v >= 1.0),
            "{name}: no {series} in\n{text}"
        );
    }
    assert_eq!(
        value(&text, &queries("SOA", "NOTIMP", "other")),
        Some(1.0),
        "{text}"
    );
    let asked = ASKED as f64;
    // web.service.consul was asked once before: db only now.
    let services = value(&text, &queries("A", "NOERROR", "service"));
    assert_eq!(services, Some(asked + 1.0), "{text}");
    assert_eq!(
        value(&text, &queries("A", "NXDOMAIN", "node")),
        Some(asked),
        "{text}"
    );
    assert!(value(&text, "consul_dns_response_cache_hits_total").is_some_and(|v| v > 0.0));
    assert!(value(&text, "consul_dns_negative_cache_hits_total").is_some_and(|v| v > 0.0));
    let up = scrape(&upstream).await;
    assert_eq!(
        value(&up, &queries("A", "REFUSED", "outside")),
        Some(1.0),
        "{up}"
    );
    running.shutdown().await;
    upstream.shutdown().await;
}

#[tokio::test]
async fn gauges_say_what_is_known() {
    let emu = common::emulator().await;
    emu.seed_demo();
    let running = common::server_with(&emu.url(), http_config).await;
    let dns = running.dns_addrs[0];
    synced(dns).await;
    let text = scrape(&running).await;
    assert_eq!(value(&text, "consul_dns_synced"), Some(1.0), "{text}");
    assert_eq!(
        value(&text, "consul_dns_catalog_services"),
        Some(7.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "consul_dns_catalog_nodes"),
        Some(4.0),
        "{text}"
    );
    assert_eq!(value(&text, "consul_dns_consul_known_leader"), Some(1.0));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    for watch in ["catalog/services", "catalog/nodes", "query"] {
        let series =
            format!(r#"consul_dns_watch_last_success_timestamp_seconds{{watch="{watch}"}}"#);
        let at = value(&text, &series).unwrap_or_else(|| panic!("no {series} in {text}"));
        assert!(
            (now - 60.0..now + 5.0).contains(&at),
            "{series} = {at}, now {now}"
        );
    }
    let service_watches =
        r#"consul_dns_watch_last_success_timestamp_seconds{watch="health/service"}"#;
    assert_eq!(value(&text, service_watches), None, "no service watch yet");
    query(dns, "web.service.consul.", RecordType::A).await;
    let text = scrape(&running).await;
    assert!(
        value(&text, service_watches).is_some_and(|at| at > now - 60.0),
        "{text}"
    );

    // A service and a node more, seen by the gauges.
    emu.register(
        Instance::new("app", "app1")
            .on("node9", "192.168.56.19")
            .at("10.2.7.1", 8080)
            .json(),
    )
    .expect("registered");
    eventually(WAIT, || async {
        let text = scrape(&running).await;
        value(&text, "consul_dns_catalog_services") == Some(8.0)
            && value(&text, "consul_dns_catalog_nodes") == Some(5.0)
    })
    .await;
    running.shutdown().await;
}

#[tokio::test]
async fn nothing_looks_healthy_before_consul_answers() {
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let running = common::server_with(&nowhere, |c| {
        http_config(c);
        c.startup_wait = Duration::from_millis(100);
    })
    .await;
    let dns = running.dns_addrs[0];
    let m = query(dns, "web.service.consul.", RecordType::A).await;
    assert_eq!(rcode(&m), ResponseCode::ServFail, "not synced");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = scrape(&running).await;
    let leader = value(&text, "consul_dns_consul_known_leader");
    assert_eq!(leader, Some(0.0), "never told of a leader: {text}");
    for watch in ["catalog/services", "catalog/nodes"] {
        let stale = format!(r#"consul_dns_watch_stale_seconds{{watch="{watch}"}}"#);
        assert!(
            value(&text, &stale).is_some_and(|s| s > 0.0),
            "{watch}: stale since the start: {text}"
        );
    }
    for watch in ["catalog/services", "catalog/nodes", "query"] {
        let at = format!(r#"consul_dns_watch_last_success_timestamp_seconds{{watch="{watch}"}}"#);
        assert_eq!(value(&text, &at), Some(0.0), "{watch}: never read: {text}");
    }
    assert_eq!(value(&text, "consul_dns_synced"), Some(0.0), "{text}");
    assert_eq!(value(&text, "consul_dns_catalog_services"), Some(0.0));
    assert_eq!(
        value(&text, &queries("A", "SERVFAIL", "service")),
        Some(1.0),
        "{text}"
    );
    running.shutdown().await;
}

// ---- the log lines ----

/// Every line of `text` parsed as a JSON object; panics naming a line that is not one.
fn json_lines(text: &str) -> Vec<serde_json::Map<String, Value>> {
    text.lines()
        .map(|line| match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(object)) => object,
            other => panic!("not a JSON object: {line:?} ({other:?})"),
        })
        .collect()
}

#[test]
fn log_lines_are_json_with_log_format_json() {
    let mut w = world("json-logs", &["--log-format", "json"]);
    w.dns.program.wait_for_output("synced with Consul", WAIT);
    assert_eq!(
        ask(w.dns.addr, "web.service.consul.", RecordType::A)
            .answers
            .len(),
        3
    );
    w.dns.program.signal(libc::SIGTERM);
    let (code, _) = w.dns.program.wait_exit(WAIT);
    assert_eq!(code, Some(0));
    let stderr = w.dns.program.stderr();
    let lines = json_lines(&stderr);
    assert!(lines.len() >= 4, "{stderr}");
    for line in &lines {
        for key in ["timestamp", "level", "message", "target"] {
            assert!(
                line.get(key).is_some_and(Value::is_string),
                "{key} in {line:?}"
            );
        }
    }
    let synced = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("synced with Consul"))
        })
        .unwrap_or_else(|| panic!("no sync line in {stderr}"));
    assert_eq!(synced["level"], "INFO");
    assert_eq!(synced["services"], 7, "fields as JSON numbers: {synced:?}");
    assert_eq!(synced["nodes"], 4);
    assert!(synced["took_ms"].is_u64());
    assert!(
        lines.iter().any(|l| l["message"] == "shutting down"),
        "{stderr}"
    );
    assert_eq!(w.dns.program.stdout(), "", "no query log unless asked");
}

#[test]
fn a_catalog_size_change_is_logged() {
    let mut w = world("catalog-size", &["--log-format", "json"]);
    w.dns.program.wait_for_output("synced with Consul", WAIT);
    let register = |service: &str, node: &str, n: u8| {
        let body = Instance::new(service, &format!("{service}1"))
            .on(node, &format!("192.168.56.{n}"))
            .at(&format!("10.2.7.{n}"), 8080)
            .json();
        w.emu.register(body).expect("registered");
    };
    let size_lines = |program: &Program| -> Vec<serde_json::Map<String, Value>> {
        json_lines(&program.stderr())
            .into_iter()
            .filter(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("catalog size changed"))
            })
            .collect()
    };
    register("app", "node1", 11);
    let first = poll(WAIT, || size_lines(&w.dns.program).into_iter().next())
        .expect("a line for the new service");
    assert_eq!(first["services_before"], 7, "{first:?}");
    assert_eq!(first["services"], 8);
    assert_eq!(
        (&first["nodes_before"], &first["nodes"]),
        (&4.into(), &4.into())
    );
    assert_eq!(first["level"], "INFO");
    // Within the interval the next change is held back, then logged.
    register("cache", "node7", 17);
    let second = poll(Duration::from_secs(20), || {
        size_lines(&w.dns.program).get(1).cloned()
    })
    .expect("a line for the held-back change");
    assert_eq!(second["services_before"], 8, "{second:?}");
    assert_eq!(second["services"], 9);
    assert_eq!(
        (&second["nodes_before"], &second["nodes"]),
        (&4.into(), &5.into())
    );
    // Registering an instance of a known service on a known node changes no size.
    register("web", "node2", 12);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(size_lines(&w.dns.program).len(), 2);
}

// ---- the query log ----

/// The query log lines on `program`'s stdout so far, parsed.
fn query_lines(program: &Program) -> Vec<serde_json::Map<String, Value>> {
    json_lines(&program.stdout())
}

/// Asks `name` with `kdig` over `transport` (`+tcp`, or `+tls…`); its answer records.
fn kdig(kdig: &Path, server: SocketAddr, name: &str, transport: &[&str]) -> usize {
    let mut cmd = Command::new(kdig);
    cmd.arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string()])
        .args(transport)
        .args(["+timeout=5", "+retry=0", name, "A"]);
    let (code, out) = Program::spawn("kdig", cmd).wait_exit(Duration::from_secs(20));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("status: NOERROR"), "{out}");
    out.lines()
        .filter(|l| !l.starts_with(';') && l.contains("\tA\t"))
        .count()
}

/// A query for a name whose first label holds `"`, `\`, NUL, 0xff and a newline, over
/// UDP; the reply.
fn ask_odd_name(server: SocketAddr) -> Message {
    let name = Name::from_labels(vec![
        Label::from_raw_bytes(b"a\"b\\c\x00\xff\n").expect("label"),
        Label::from_raw_bytes(b"service").expect("label"),
        Label::from_raw_bytes(b"consul").expect("label"),
    ])
    .expect("name");
    let mut msg = Message::new(rand::random(), MessageType::Query, OpCode::Query);
    msg.add_query(Query::query(name, RecordType::A));
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    socket
        .send_to(&msg.to_vec().expect("encodes"), server)
        .expect("send");
    let mut buf = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buf).expect("an answer");
    decode(&buf[..n])
}

/// The DNS-over-TLS address `dns` logged.
fn tls_addr(w: &mut World) -> SocketAddr {
    let out = w
        .dns
        .program
        .wait_for_output("DNS over TLS: listening on ", WAIT);
    out.lines()
        .find_map(|l| l.split("DNS over TLS: listening on ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no DNS-over-TLS address in {out}"))
}

#[test]
fn the_query_log_has_a_json_line_per_query_on_every_path() {
    let test = "the_query_log_has_a_json_line_per_query_on_every_path";
    let Some(kdig_path) = tool("kdig") else {
        skip!(test, "needs kdig (apt-get install knot-dnsutils)");
    };
    let certs = TempDir::new("query-log-tls");
    let ca = pki::Ca::new("query log test CA");
    let leaf = ca.server(&["localhost", "127.0.0.1"]);
    let cert = certs.write("dot.pem", &leaf.cert_pem);
    let key = certs.write("dot-key.pem", &leaf.key_pem);
    let ca_file = certs.write("ca.pem", &ca.pem);
    let path = |p: &Path| p.to_str().expect("UTF-8 path").to_string();
    let (cert, key) = (path(&cert), path(&key));
    let mut w = world(
        "query-log",
        &[
            "--query-log",
            "--listen-tls",
            "127.0.0.1:0",
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
        ],
    );
    let tls = tls_addr(&mut w);
    w.dns.program.wait_for_output("synced with Consul", WAIT);
    let dns = w.dns.addr;

    // UDP: the first answer of a service waits for its load, the next ones come from the
    // response cache; unknown names from the stored negative response.
    const ASKED: usize = 30;
    for _ in 0..ASKED {
        assert_eq!(
            ask(dns, "web.service.consul.", RecordType::A).answers.len(),
            3
        );
        let m = ask(dns, "nosuch.service.consul.", RecordType::A);
        assert_eq!(rcode(&m), ResponseCode::NXDomain);
    }
    // TCP and DNS over TLS, asked by kdig.
    let over_tcp = kdig(&kdig_path, dns, "api.service.consul", &["+tcp"]);
    let over_tls = kdig(
        &kdig_path,
        tls,
        "db.service.consul",
        &[
            &format!("+tls-ca={}", path(&ca_file)),
            "+tls-hostname=localhost",
        ],
    );
    assert_eq!((over_tcp, over_tls), (2, 2));
    // A name with bytes JSON must escape.
    assert_eq!(rcode(&ask_odd_name(dns)), ResponseCode::NXDomain);

    let all = 2 * ASKED + 3;
    let lines = poll(WAIT, || {
        let lines = query_lines(&w.dns.program);
        (lines.len() >= all).then_some(lines)
    })
    .unwrap_or_else(|| panic!("not {all} lines in {}", w.dns.program.stdout()));
    assert_eq!(lines.len(), all, "one line per query");
    let fields = [
        "timestamp",
        "client",
        "port",
        "proto",
        "name",
        "qtype",
        "rcode",
        "answers",
        "form",
        "stale",
        "us",
    ];
    for line in &lines {
        for key in fields {
            assert!(line.contains_key(key), "{key} in {line:?}");
        }
        assert_eq!(line["client"], "127.0.0.1", "{line:?}");
        assert!(line["port"].is_u64() && line["us"].is_u64() && line["answers"].is_u64());
        assert!(line["stale"].is_boolean());
        assert!(!line.contains_key("level") && !line.contains_key("target"));
    }
    let with = |name: &str, proto: &str| -> Vec<&serde_json::Map<String, Value>> {
        lines
            .iter()
            .filter(|l| l["name"] == name && l["proto"] == proto)
            .collect()
    };
    let web = with("web.service.consul.", "udp");
    assert_eq!(web.len(), ASKED, "one line per query, cache hits included");
    for l in &web {
        assert_eq!((&l["qtype"], &l["rcode"]), (&"A".into(), &"NOERROR".into()));
        assert_eq!((&l["answers"], &l["form"]), (&3.into(), &"service".into()));
    }
    let unknown = with("nosuch.service.consul.", "udp");
    assert_eq!(unknown.len(), ASKED, "stored negative answers included");
    for l in &unknown {
        assert_eq!(
            (&l["rcode"], &l["answers"]),
            (&"NXDOMAIN".into(), &0.into())
        );
        assert_eq!(l["form"], "service");
    }
    let tcp = with("api.service.consul.", "tcp");
    assert_eq!(tcp.len(), 1, "{lines:?}");
    assert_eq!(tcp[0]["answers"], over_tcp);
    let tls_lines = with("db.service.consul.", "tls");
    assert_eq!(tls_lines.len(), 1, "{lines:?}");
    assert_eq!(tls_lines[0]["answers"], over_tls);
    let odd = lines
        .iter()
        .find(|l| l["name"] == r#"a\"b\\c\000\255\010.service.consul."#)
        .unwrap_or_else(|| panic!("no line of the odd name in {lines:?}"));
    assert_eq!(
        (&odd["rcode"], &odd["form"]),
        (&"NXDOMAIN".into(), &"invalid".into())
    );
    assert!(lines.iter().all(|l| l["stale"] == false));

    // Stale: Consul gone, the known data is served marked.
    w.rt.block_on(w.emu.stop());
    let edns = Ask {
        edns: Some(1232),
        ..Ask::default()
    };
    w.rt.block_on(eventually(WAIT, || async {
        let m = query_with(dns, "web.service.consul.", RecordType::A, edns).await;
        ede(&m) == Some(3)
    }));
    let stale = poll(WAIT, || {
        let lines = query_lines(&w.dns.program);
        lines.into_iter().find(|l| l["stale"] == true)
    })
    .unwrap_or_else(|| panic!("no stale line in {}", w.dns.program.stdout()));
    assert_eq!(stale["name"], "web.service.consul.");
    assert_eq!(
        (&stale["rcode"], &stale["answers"]),
        (&"NOERROR".into(), &3.into())
    );
    // Every line on stdout, none among the log lines on stderr.
    assert!(!w.dns.program.stderr().contains("\"qtype\""));
}

#[test]
fn the_query_log_samples_one_in_n() {
    let w = world(
        "query-log-sample",
        &["--query-log", "--query-log-sample", "4"],
    );
    const ASKED: usize = 800;
    for _ in 0..ASKED {
        ask(w.dns.addr, "web.service.consul.", RecordType::A);
    }
    // Lines are written by a thread of their own: wait until they stop coming.
    let mut seen = usize::MAX;
    let lines = poll(WAIT, || {
        std::thread::sleep(Duration::from_millis(200));
        let now = query_lines(&w.dns.program).len();
        let settled = now == seen;
        seen = now;
        settled.then_some(now)
    })
    .expect("the log settles");
    // 200 expected; the binomial's standard deviation is 12.
    assert!(
        (140..=260).contains(&lines),
        "{lines} lines for {ASKED} queries"
    );
}

#[test]
fn the_query_log_is_off_by_default() {
    let w = world("query-log-off", &[]);
    for _ in 0..50 {
        ask(w.dns.addr, "web.service.consul.", RecordType::A);
        ask(w.dns.addr, "nosuch.service.consul.", RecordType::A);
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(w.dns.program.stdout(), "");
    assert!(!w.dns.program.output().contains("\"qtype\""));
}
