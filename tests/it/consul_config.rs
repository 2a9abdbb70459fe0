//! consul-dns beside a Consul agent, set up by nothing but the agent's own configuration
//! directory (`--consul-config consul.d/`): the binary as a user starts it, its answers read
//! by two decoders (hickory and NLnet Labs' `domain`, in `program::ask`) and by dig.

use crate::common;
use crate::program;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use program::{addresses, ask, poll, tool, ConsulDns, TempDir};

const EXAMPLE_ZONE: &str = include_str!("../../zones/cluster.internal.zone");

/// `dig` of `name` `qtype` at `server`: the answer section's records as (TTL, data).
fn dig(server: SocketAddr, name: &str, qtype: &str) -> Vec<(u32, String)> {
    let dig = tool("dig").expect("dig is installed (CI installs dnsutils)");
    let out = Command::new(dig)
        .args([
            &format!("@{}", server.ip()),
            "-p",
            &server.port().to_string(),
            name,
            qtype,
            "+noall",
            "+answer",
            "+tries=1",
            "+time=5",
        ])
        .output()
        .expect("dig runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let ttl = fields
                .get(1)
                .and_then(|t| t.parse().ok())
                .unwrap_or_else(|| panic!("a TTL in dig's line {l:?}"));
            (ttl, fields.last().copied().unwrap_or_default().to_string())
        })
        .collect()
}

#[test]
fn the_agents_configuration_directory_sets_domain_ttls_recursors_and_the_consul_address() {
    if tool("dig").is_none() {
        skip!(
            "the_agents_configuration_directory_sets_domain_ttls_recursors_and_the_consul_address",
            "dig is not installed (CI installs dnsutils)"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    // The agent's HTTP API, with the demo catalog.
    let emu = rt.block_on(common::emulator());
    emu.seed_demo();
    // The resolver the agent forwards other names to: consul-dns serving a zone file.
    let zones = TempDir::new("agent-upstream");
    zones.write("cluster.internal.zone", EXAMPLE_ZONE);
    let zones_dir = zones.path().to_path_buf();
    let upstream = rt.block_on(common::server_with(&emu.url(), move |c| {
        c.zones = Some(zones_dir)
    }));
    let recursor = upstream.dns_addrs[0];

    // /etc/consul.d as an agent has it, with its DNS turned off: an HCL file and a JSON
    // file, merged; the Consul address is nowhere but in `ports.http`.
    let dir = TempDir::new("agent-conf");
    std::fs::create_dir(dir.path().join("consul.d")).expect("mkdir");
    dir.write(
        "consul.d/consul.hcl",
        &format!(
            r#"# Consul agent configuration
datacenter = "dc1"
data_dir = "/opt/consul"
server = true
bootstrap_expect = 1
ui_config {{
  enabled = true
}}
client_addr = "127.0.0.1"
ports {{
  dns  = -1
  http = {http}
}}
recursors = ["{recursor}"]
domain = "mesh"
"#,
            http = emu.addr().port(),
        ),
    );
    dir.write(
        "consul.d/dns.json",
        r#"{
  "dns_config": {
    "service_ttl": { "*": "7s" },
    "node_ttl": "3s",
    "recursor_timeout": "1s",
    "not_an_option": true
  }
}"#,
    );
    dir.write(
        "consul.d/consul.env",
        "CONSUL_HTTP_ADDR=http://127.0.0.1:1\n",
    );
    // Port 8600 may be taken on this machine: the flag wins over the agent's address.
    let mut dns = ConsulDns::start(
        &[
            "--consul-config",
            "consul.d/",
            "--listen",
            "127.0.0.1:0",
            "--zones",
            "",
        ],
        dir.path(),
    );
    let server = dns.addr;

    // A service of the catalog under the agent's domain, with the agent's service TTL.
    let m = poll(Duration::from_secs(10), || {
        let m = ask(server, "web.service.mesh.", RecordType::A);
        (m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty()).then_some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "web.service.mesh. never answered:\n{}",
            dns.program.output()
        )
    });
    assert!(
        addresses(&m)
            .iter()
            .all(|a| a.to_string().starts_with("10.2.1.")),
        "{m:?}"
    );
    for r in &m.answers {
        assert_eq!(r.ttl, 7, "service_ttl \"*\" = \"7s\": {r}");
    }
    let by_dig = dig(server, "web.service.mesh.", "A");
    assert!(!by_dig.is_empty(), "dig read an answer");
    assert!(by_dig.iter().all(|(ttl, _)| *ttl == 7), "dig: {by_dig:?}");
    let mut dig_addrs: Vec<String> = by_dig.into_iter().map(|(_, a)| a).collect();
    dig_addrs.sort();
    let hickory_addrs: Vec<String> = addresses(&m).iter().map(|a| a.to_string()).collect();
    assert_eq!(dig_addrs, hickory_addrs, "the two readings agree");

    // A node, with the agent's node TTL; the Consul domain is no longer ours.
    let m = ask(server, "node1.node.mesh.", RecordType::A);
    assert!(!m.answers.is_empty(), "{m:?}");
    assert!(m.answers.iter().all(|r| r.ttl == 3), "node_ttl: {m:?}");
    assert_eq!(
        dig(server, "node1.node.mesh.", "A")
            .iter()
            .map(|(ttl, _)| *ttl)
            .collect::<Vec<_>>(),
        vec![3; m.answers.len()]
    );

    // Other names go to the agent's recursors.
    let m = ask(server, "node1.cluster.internal.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{m:?}");
    assert!(
        m.answers
            .iter()
            .any(|r| matches!(&r.data, RData::A(a) if a.0.to_string() == "192.168.56.11")),
        "forwarded to the agent's recursor: {m:?}"
    );
    assert_eq!(
        dig(server, "node1.cluster.internal.", "A"),
        vec![(300, "192.168.56.11".to_string())]
    );

    // The files read are named; the option consul-dns does not know is said once.
    let out = dns.program.output();
    assert!(
        out.contains("read the Consul agent's configuration")
            && out.contains("consul.hcl")
            && out.contains("dns.json")
            && !out.contains("consul.env"),
        "{out}"
    );
    assert_eq!(
        out.matches("dns_config.not_an_option is not a dns_config option consul-dns knows")
            .count(),
        1,
        "{out}"
    );
    dns.program.signal(libc::SIGTERM);
    let (code, _) = dns.program.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    rt.block_on(upstream.shutdown());
}

/// Started with the agent's configuration while the agent still serves DNS where
/// consul-dns would listen: one line saying how to take the agent's place, exit code 2.
#[test]
fn the_agents_dns_still_on_stops_the_start_with_what_to_do() {
    let dir = TempDir::new("agent-dns-on");
    let port = program::free_port();
    let conf = dir.write(
        "consul.hcl",
        &format!("datacenter = \"dc1\"\nports {{\n  dns = {port}\n}}\n"),
    );
    let listen = format!("127.0.0.1:{port}");
    let (code, err) = program::run_to_exit(&[
        "--consul-config",
        conf.to_str().expect("utf-8 path"),
        "--listen",
        &listen,
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&format!(
            "consul.hcl:3: ports.dns {port}: the Consul agent serves DNS on {listen} itself"
        )) && err.contains("ports { dns = -1 }"),
        "{err}"
    );

    // A TOML file is not the agent's configuration, nor the other way round.
    let toml = dir.write("consul-dns.toml", "domain = \"consul\"\n");
    let (code, err) = program::run_to_exit(&["--consul-config", toml.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--config"), "{err}");
    let (code, err) = program::run_to_exit(&["--config", conf.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("use --consul-config"), "{err}");
}
