//! The resolvers people put in front of consul-dns, run for real on loopback: unbound with a
//! `stub-zone` (validating, the Consul domain insecure), dnsmasq with `server=/consul/...`,
//! BIND with a `forward only` zone (validating, the Consul domain excepted), and glibc's own
//! resolver (`getent hosts`) in a network namespace whose resolv.conf names consul-dns on
//! port 53. Through each: the same addresses as asking consul-dns directly, and a
//! registration made through the Consul HTTP API becomes visible; through unbound, dnsmasq
//! and BIND also the reverse names of service and node addresses (their private-range
//! reverse zones forwarded to consul-dns).
//!
//! Nothing leaves the machine: the resolvers' root hints list only a loopback address and
//! they have no other upstream. A test whose program is missing (or that needs root) prints
//! `SKIPPED <test>: <why>`; with `CONSUL_DNS_TESTS_NO_SKIP` set (CI) it fails instead.
//! The configurations here are the ones the README shows.

use crate::common;
use crate::program;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use program::{
    addresses, addresses_eventually, ask, free_port, is_root, poll, tool, world, NetNs, Program,
    TempDir, World,
};
use serde_json::json;

/// Root hints that point at a loopback address where nothing listens, so a resolver never
/// reaches the internet.
const ROOT_HINTS: &str = "\
.                   3600000 IN NS a.root-servers.net.
a.root-servers.net. 3600000 IN A  127.0.0.254
";

fn register_app(w: &World, address: &str) {
    let body = json!({
        "Node": "node1",
        "Address": "192.168.56.11",
        "Service": {"ID": format!("app-{address}"), "Service": "app", "Address": address, "Port": 8080}
    });
    w.rt.block_on(common::http_register(&w.emu.url(), &body));
}

/// SRV answers as `(port, target)`, sorted, and the addresses of the targets.
fn srv_view(server: SocketAddr, name: &str) -> (Vec<(u16, String)>, Vec<IpAddr>) {
    let m = ask(server, name, RecordType::SRV);
    let mut srv: Vec<(u16, String)> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.port, s.target.to_lowercase().to_string())),
            _ => None,
        })
        .collect();
    srv.sort();
    let mut targets = Vec::new();
    for (_, target) in &srv {
        targets.extend(addresses(&ask(server, target, RecordType::A)));
    }
    targets.sort();
    (srv, targets)
}

/// What every resolver must do: give the same answers as consul-dns itself, and show a new
/// registration.
fn check_through(w: &World, resolver: SocketAddr, who: &str) {
    let direct = |name: &str| addresses(&ask(w.dns.addr, name, RecordType::A));
    // The first query may wait for the resolver to start.
    let web = addresses_eventually(resolver, "web.service.consul", Duration::from_secs(20));
    assert_eq!(web, direct("web.service.consul"), "{who}: web");
    assert_eq!(web.len(), 3, "{who}: {web:?}");
    for name in [
        "v1.web.service.consul",
        "db.service.dc1.consul",
        "node1.node.consul",
        "redis.service.consul",
    ] {
        let through = addresses(&ask(resolver, name, RecordType::A));
        assert!(!through.is_empty(), "{who}: {name}");
        assert_eq!(through, direct(name), "{who}: {name}");
    }
    let (srv, targets) = srv_view(resolver, "_web._tcp.service.consul");
    assert_eq!(srv.len(), 3, "{who}: {srv:?}");
    assert_eq!(
        (srv, targets),
        srv_view(w.dns.addr, "_web._tcp.service.consul"),
        "{who}: SRV"
    );

    // Not registered yet, then registered through the HTTP API: visible through the
    // resolver (TTL 0 everywhere by default, so nothing is cached).
    let m = ask(resolver, "app.service.consul", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{who}");
    register_app(w, "10.2.7.1");
    let seen = poll(Duration::from_secs(5), || {
        let m = ask(resolver, "app.service.consul", RecordType::A);
        (addresses(&m) == ["10.2.7.1".parse::<IpAddr>().expect("ip")]).then_some(())
    });
    assert!(
        seen.is_some(),
        "{who}: the registration never became visible"
    );
}

/// The reverse names forwarded to consul-dns: a service address (10.2.0.0/16) and a node
/// address (192.168.56.0/24) get the same PTR through the resolver as from consul-dns.
fn check_reverse_through(w: &World, resolver: SocketAddr, who: &str) {
    for (name, expected) in [
        ("1.1.2.10.in-addr.arpa", "web.service.dc1.consul."),
        ("11.56.168.192.in-addr.arpa", "node1.node.dc1.consul."),
    ] {
        let ptrs = |server: SocketAddr| -> Vec<String> {
            let m = ask(server, name, RecordType::PTR);
            let mut ptrs: Vec<String> = m
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::PTR(p) => Some(p.0.to_lowercase().to_string()),
                    _ => None,
                })
                .collect();
            ptrs.sort();
            ptrs
        };
        let through = ptrs(resolver);
        assert!(
            through.iter().any(|p| p == expected),
            "{who}: {name} PTR {through:?}"
        );
        assert_eq!(through, ptrs(w.dns.addr), "{who}: {name}");
    }
}

#[test]
fn unbound_stub_zone() {
    let test = "unbound_stub_zone";
    let (Some(unbound), Some(checkconf)) = (tool("unbound"), tool("unbound-checkconf")) else {
        skip!(
            test,
            "unbound is not installed (apt-get install unbound; CI installs it)"
        );
    };
    let w = world(test, &[]);
    let port = free_port();
    let dir = w.dir.path();
    std::fs::write(dir.join("root.hints"), ROOT_HINTS).expect("write");
    // Validating, as a distribution's unbound is, with the Consul domain insecure.
    let trust_anchor = Path::new("/usr/share/dns/root.key");
    let validation = if trust_anchor.is_file() {
        format!(
            "    module-config: \"validator iterator\"\n    trust-anchor-file: \"{}\"\n    domain-insecure: \"consul\"\n",
            trust_anchor.display()
        )
    } else {
        "    module-config: \"iterator\"\n".to_string()
    };
    let conf = format!(
        r#"server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    access-control: 127.0.0.0/8 allow
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "{dir}"
    pidfile: "{dir}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    root-hints: "{dir}/root.hints"
    # consul-dns listens on loopback: let unbound query it.
    do-not-query-localhost: no
    qname-minimisation: yes
{validation}
    # Reverse names of the overlay and node networks: unbound answers RFC 1918 reverse
    # zones itself unless told not to.
    local-zone: "10.in-addr.arpa." nodefault
    local-zone: "168.192.in-addr.arpa." nodefault
    domain-insecure: "10.in-addr.arpa"
    domain-insecure: "56.168.192.in-addr.arpa"

stub-zone:
    name: "consul"
    stub-addr: 127.0.0.1@{consul_port}

stub-zone:
    name: "10.in-addr.arpa"
    stub-addr: 127.0.0.1@{consul_port}

stub-zone:
    name: "56.168.192.in-addr.arpa"
    stub-addr: 127.0.0.1@{consul_port}

remote-control:
    control-enable: no
"#,
        dir = dir.display(),
        consul_port = w.dns.addr.port(),
    );
    let conf_path = w.dir.write("unbound.conf", &conf);
    let check = Command::new(checkconf)
        .arg(&conf_path)
        .output()
        .expect("unbound-checkconf runs");
    assert!(
        check.status.success(),
        "unbound-checkconf: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let mut cmd = Command::new(unbound);
    cmd.args(["-d", "-c"]).arg(&conf_path);
    let unbound = Program::spawn("unbound", cmd);
    let resolver = SocketAddr::from(([127, 0, 0, 1], port));
    check_through(&w, resolver, "unbound");
    check_reverse_through(&w, resolver, "unbound");
    if trust_anchor.is_file() {
        assert!(
            unbound.output().contains("validator"),
            "unbound validates: {}",
            unbound.output()
        );
    }

    // unbound minimises the QNAME (asks service.consul, _tcp.service.consul ... first): the
    // empty non-terminals must not be NXDOMAIN, or the SRV lookup above would have failed.
    let m = ask(resolver, "web.service.consul", RecordType::A);
    assert!(
        !m.metadata.authentic_data,
        "the Consul domain is insecure, not signed"
    );
}

#[test]
fn dnsmasq_server_for_the_consul_domain() {
    let test = "dnsmasq_server_for_the_consul_domain";
    let Some(dnsmasq) = tool("dnsmasq") else {
        skip!(
            test,
            "dnsmasq is not installed (apt-get install dnsmasq-base; CI installs it)"
        );
    };
    let w = world(test, &[]);
    let port = free_port();
    let mut cmd = Command::new(dnsmasq);
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--log-facility=-",
        "--log-queries",
        "--no-resolv",
        "--no-hosts",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        // Answers private ranges' reverse names itself; the server= lines must win.
        "--bogus-priv",
    ])
    .arg(format!("--port={port}"))
    .arg(format!("--server=/consul/127.0.0.1#{}", w.dns.addr.port()))
    .arg(format!(
        "--server=/10.in-addr.arpa/56.168.192.in-addr.arpa/127.0.0.1#{}",
        w.dns.addr.port()
    ))
    .arg(format!("--pid-file={}/dnsmasq.pid", w.dir.path().display()));
    if is_root() {
        // Do not switch to a user that may not exist here.
        cmd.args(["--user=root", "--group=root"]);
    }
    let _dnsmasq = Program::spawn("dnsmasq", cmd);
    let resolver = SocketAddr::from(([127, 0, 0, 1], port));
    check_through(&w, resolver, "dnsmasq");
    check_reverse_through(&w, resolver, "dnsmasq");
    // With --no-resolv and no other server, other names go nowhere.
    let m = ask(resolver, "example.com", RecordType::A);
    assert_ne!(m.metadata.response_code, ResponseCode::NoError);
}

#[test]
fn bind_forward_only_zone() {
    let test = "bind_forward_only_zone";
    let (Some(named), Some(checkconf)) = (tool("named"), tool("named-checkconf")) else {
        skip!(
            test,
            "BIND is not installed (apt-get install bind9; CI installs it)"
        );
    };
    let w = world(test, &[]);
    let port = free_port();
    let dir = w.dir.path();
    std::fs::write(dir.join("root.hints"), ROOT_HINTS).expect("write");
    let conf = format!(
        r#"options {{
    directory "{dir}";
    pid-file "{dir}/named.pid";
    session-keyfile "{dir}/session.key";
    managed-keys-directory "{dir}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion yes;
    allow-query {{ localhost; }};
    allow-recursion {{ localhost; }};
    dnssec-validation auto;
    validate-except {{ "consul"; "10.in-addr.arpa"; "56.168.192.in-addr.arpa"; }};
    max-cache-size 16m;
}};
controls {{ }};
zone "." {{ type hint; file "{dir}/root.hints"; }};
zone "consul" {{
    type forward;
    forward only;
    forwarders {{ 127.0.0.1 port {consul_port}; }};
}};
zone "10.in-addr.arpa" {{
    type forward;
    forward only;
    forwarders {{ 127.0.0.1 port {consul_port}; }};
}};
zone "56.168.192.in-addr.arpa" {{
    type forward;
    forward only;
    forwarders {{ 127.0.0.1 port {consul_port}; }};
}};
"#,
        dir = dir.display(),
        consul_port = w.dns.addr.port(),
    );
    let conf_path = w.dir.write("named.conf", &conf);
    let check = Command::new(checkconf)
        .arg(&conf_path)
        .output()
        .expect("named-checkconf runs");
    assert!(
        check.status.success(),
        "named-checkconf: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let mut cmd = Command::new(named);
    cmd.args(["-g", "-n", "1", "-c"]).arg(&conf_path);
    let _named = Program::spawn("named", cmd);
    let resolver = SocketAddr::from(([127, 0, 0, 1], port));
    check_through(&w, resolver, "named");
    check_reverse_through(&w, resolver, "named");
}

#[test]
fn glibc_resolver_in_a_network_namespace() {
    let test = "glibc_resolver_in_a_network_namespace";
    if !is_root() {
        skip!(test, "needs root (ip netns add, port 53); CI runs as root");
    }
    let (Some(_), Some(getent)) = (tool("ip"), tool("getent")) else {
        skip!(test, "needs ip (apt-get install iproute2) and getent");
    };
    let getent = getent.to_string_lossy().into_owned();
    // `ip netns exec` mounts these over /etc/resolv.conf and /etc/nsswitch.conf.
    let ns = NetNs::new(&[
        (
            "resolv.conf",
            "nameserver 127.0.0.1\nsearch service.consul\noptions timeout:2 attempts:2\n",
        ),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nhosts: files dns\n",
        ),
    ]);
    let rt = ns.runtime();
    let emu = NetNs::block_on(&rt, async {
        let emu = common::emulator().await;
        emu.seed_demo();
        emu
    });
    let dir = TempDir::new(test);
    // The nameserver of resolv.conf must resolve every name: other names are forwarded to
    // an upstream (another consul-dns, serving the example zone).
    dir.write(
        "cluster.internal.zone",
        include_str!("../../zones/cluster.internal.zone"),
    );
    let upstream = ns.consul_dns(
        "upstream (netns)",
        &[
            "--consul-addr",
            &emu.url(),
            "--listen",
            "127.0.0.1:5353",
            "--zones",
            &dir.path().to_string_lossy(),
        ],
        dir.path(),
    );
    let dns = ns.consul_dns(
        "consul-dns (netns)",
        &[
            "--consul-addr",
            &emu.url(),
            "--listen",
            "127.0.0.1:53",
            "--zones",
            "",
            "--recursor",
            &upstream.addr.to_string(),
        ],
        dir.path(),
    );
    assert_eq!(dns.addr, SocketAddr::from(([127, 0, 0, 1], 53)));

    let getent_hosts = |name: &str| -> Option<Vec<IpAddr>> {
        let out = ns
            .command(&getent, &["hosts", name])
            .output()
            .expect("getent runs");
        if !out.status.success() {
            return None;
        }
        let mut v: Vec<IpAddr> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        v.sort();
        v.dedup();
        Some(v)
    };
    let direct = |name: &'static str| {
        NetNs::block_on(&rt, async move {
            addresses(
                &common::query(SocketAddr::from(([127, 0, 0, 1], 53)), name, RecordType::A).await,
            )
        })
    };

    let web = poll(Duration::from_secs(10), || {
        getent_hosts("web.service.consul")
    })
    .expect("getent hosts web.service.consul never succeeded");
    assert_eq!(web, direct("web.service.consul"));
    assert_eq!(web.len(), 3, "{web:?}");
    assert_eq!(
        getent_hosts("node1.node.consul"),
        Some(direct("node1.node.consul"))
    );
    // `search service.consul` in resolv.conf: the bare service name resolves.
    assert_eq!(getent_hosts("web"), Some(web));
    // Names outside the Consul domain, through the recursor.
    assert_eq!(
        getent_hosts("node1.cluster.internal"),
        Some(vec!["192.168.56.11".parse::<IpAddr>().expect("ip")])
    );
    assert_eq!(getent_hosts("nope.cluster.internal"), None);

    assert_eq!(
        getent_hosts("app.service.consul"),
        None,
        "not registered yet"
    );
    let url = emu.url();
    NetNs::block_on(&rt, async move {
        let body = json!({
            "Node": "node1",
            "Address": "192.168.56.11",
            "SkipNodeUpdate": true,
            "Service": {"ID": "app1", "Service": "app", "Address": "10.2.7.1", "Port": 8080}
        });
        common::http_register(&url, &body).await;
    });
    let seen = poll(Duration::from_secs(5), || {
        getent_hosts("app.service.consul")
            .filter(|v| v == &["10.2.7.1".parse::<IpAddr>().expect("ip")])
    });
    assert!(
        seen.is_some(),
        "the registration never became visible through glibc"
    );
    drop(dns);
    drop(upstream);
    drop(rt);
}
