use std::path::Path;

use clap::{CommandFactory, Parser};

use super::agent::AgentConfig;
use super::*;

const EXAMPLE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/consul-dns.example.toml"
));
const PATH: &str = "/etc/consul-dns.toml";

/// Parses a command line like the binary does. `CONSUL_HTTP_ADDR` / `CONSUL_HTTP_TOKEN`
/// may be set in the environment running the tests: their values are dropped unless the
/// flag itself is on the command line.
fn cli(args: &[&str]) -> Cli {
    let argv = std::iter::once("consul-dns").chain(args.iter().copied());
    let mut cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => panic!("{args:?} should parse: {e}"),
    };
    if !args.iter().any(|a| a.starts_with("--consul-addr")) {
        cli.consul_addr = None;
    }
    if !args.iter().any(|a| a.starts_with("--token")) {
        cli.token = None;
    }
    let given = |flag: &str| args.iter().any(|a| a.starts_with(flag));
    if !given("--ca-file") {
        cli.ca_file = None;
    }
    if !given("--ca-path") {
        cli.ca_path = None;
    }
    if !given("--client-cert") {
        cli.client_cert = None;
    }
    if !given("--client-key") {
        cli.client_key = None;
    }
    if !given("--tls-server-name") {
        cli.tls_server_name = None;
    }
    if !given("--ssl-verify") {
        cli.ssl_verify = None;
    }
    cli
}

fn load(args: &[&str], text: &str) -> Result<Config, ConfigError> {
    let file = file::parse(Path::new(PATH), text)?;
    Config::merge(cli(args), file, AgentConfig::default())
}

fn load_ok(args: &[&str], text: &str) -> Config {
    match load(args, text) {
        Ok(c) => c,
        Err(e) => panic!("should load: {e}"),
    }
}

fn load_err(args: &[&str], text: &str) -> (ConfigError, String) {
    match load(args, text) {
        Ok(c) => panic!("should fail, got {c:?}"),
        Err(e) => {
            let s = e.to_string();
            assert!(!s.contains('\n'), "error is not one line: {s:?}");
            (e, s)
        }
    }
}

fn invalid_key(e: &ConfigError) -> &str {
    match e {
        ConfigError::Invalid { key, .. } => key,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn addr(s: &str) -> SocketAddr {
    match s.parse() {
        Ok(a) => a,
        Err(e) => panic!("{s}: {e}"),
    }
}

// ---- defaults ----

#[test]
fn defaults() {
    let c = load_ok(&[], "");
    assert_eq!(c, Config::default());
    assert_eq!(c.consul_addr, "http://127.0.0.1:8500");
    assert_eq!(c.token, None);
    assert_eq!(c.listen, vec![addr("127.0.0.1:8600")]);
    assert_eq!(c.domain, "consul.");
    assert_eq!(c.alt_domain, None);
    assert_eq!(c.datacenter, None);
    assert!(c.recursors.is_empty());
    assert_eq!(c.max_watches, 150);
    assert_eq!(c.watch_idle_timeout, Duration::from_secs(3600));
    assert_eq!(c.startup_wait, Duration::from_secs(2));
    assert_eq!(c.blocking_wait, Duration::from_secs(300));
    assert!(!c.dev);
    assert_eq!(c.dev_http, addr("127.0.0.1:8500"));
    assert_eq!(c.log_level, "info");
    assert_eq!(c.log_format, LogFormat::Text);
    assert!(!c.query_log, "the query log is off");
    assert_eq!(c.query_log_sample, 1);
    assert_eq!(c.dns, DnsConfig::default());
    assert_eq!(c.tcp.max_connections, 500);
    assert_eq!(
        c.tcp.max_connections_per_source, 125,
        "a quarter of the slots"
    );
    assert_eq!(c.tcp.idle_timeout, Duration::from_secs(10));
    assert_eq!(c.tcp.total_timeout, Duration::from_secs(60));
    assert_eq!(c.tcp.write_timeout, Duration::from_secs(5));
    assert!(c.dot.listen.is_empty(), "DNS over TLS is off by default");
    assert_eq!(
        (c.dot.cert_file.as_ref(), c.dot.key_file.as_ref()),
        (None, None)
    );
    assert_eq!(
        c.dot.limits,
        TcpConfig {
            max_connections: 250,
            max_connections_per_source: 62,
            idle_timeout: Duration::from_secs(10),
            ..c.tcp
        },
        "its own connection cap and idle timeout; TCP's total and write timeouts"
    );
    assert_eq!(c.rrl.responses_per_second, 0, "RRL is off by default");
    assert_eq!(c.rrl.window, Duration::from_secs(5));
    assert_eq!(c.rrl.slip, 2);
    assert_eq!(c.rrl.ipv4_prefix_length, 24);
    assert_eq!(c.rrl.ipv6_prefix_length, 56);
    assert_eq!(c.tls, ConsulTls::default());
    assert!(c.tls.verify);
    assert!(c.tls.keys_set().is_empty());
}

#[test]
fn dns_defaults_are_consuls() {
    let d = DnsConfig::default();
    assert!(d.allow_stale);
    assert_eq!(d.max_stale, Duration::from_secs(87600 * 3600));
    assert_eq!(d.node_ttl, 0);
    assert!(d.service_ttl.is_empty());
    assert_eq!(d.service_ttl.ttl_for("web"), 0);
    assert!(!d.enable_truncate);
    assert!(!d.only_passing);
    assert_eq!(d.recursor_strategy, RecursorStrategy::Sequential);
    assert_eq!(d.recursor_timeout, Duration::from_secs(2));
    assert!(!d.disable_compression);
    assert_eq!(d.udp_answer_limit, 3);
    assert_eq!(d.a_record_limit, 0);
    assert!(d.enable_additional_node_meta_txt);
    assert_eq!(
        d.soa,
        SoaConfig {
            refresh: 3600,
            retry: 600,
            expire: 86400,
            min_ttl: 0
        }
    );
    assert!(!d.use_cache);
    assert_eq!(d.cache_max_age, Duration::ZERO);
    assert!(!d.prefer_namespace);
}

#[test]
fn for_tests_config() {
    let c = Config::for_tests("http://127.0.0.1:12345/");
    assert_eq!(c.consul_addr, "http://127.0.0.1:12345");
    assert_eq!(c.listen, vec![addr("127.0.0.1:0")]);
    assert_eq!(c.startup_wait, Duration::from_secs(2));
    assert_eq!(c.dns, DnsConfig::default());
    assert_eq!(c.domain, "consul.");
}

// ---- the example file ----

#[test]
fn example_file_parses_and_documents_the_defaults() {
    let c = load_ok(&[], EXAMPLE);
    assert_eq!(c, Config::default());
}

#[test]
fn example_file_commented_keys_parse_too() {
    // Uncomment the optional keys ("# key = value" lines) and parse again.
    let uncommented: String = EXAMPLE
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest
                    .split_once(" = ")
                    .is_some_and(|(k, _)| !k.contains(' ')) =>
            {
                rest
            }
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let c = load_ok(&[], &uncommented);
    assert!(c.token.is_some());
    assert_eq!(
        c.tls.keys_set(),
        [
            "ca_file",
            "ca_path",
            "cert_file",
            "key_file",
            "tls_server_name"
        ]
    );
    assert_eq!(c.alt_domain.as_deref(), Some("consul.example.com."));
    assert_eq!(c.datacenter.as_deref(), Some("dc1"));
    assert_eq!(c.recursors.len(), 2);
    assert_eq!(c.zones.as_deref(), Some(Path::new("/etc/consul-dns/zones")));
    assert_eq!(c.dns.service_ttl.ttl_for("web"), 10);
    assert_eq!(c.dns.service_ttl.ttl_for("dbx"), 66);
    assert_eq!(c.dns.service_ttl.ttl_for("api"), 5);
    assert_eq!(c.dot.listen, [addr("0.0.0.0:853")]);
    assert!(c.dot.cert_file.is_some() && c.dot.key_file.is_some());
}

// ---- every key from the file ----

const FULL: &str = r#"
consul_addr = "consul.internal:8501"
token = "s3cr3t-token"
ca_file = "/etc/consul/ca.pem"
ca_path = "/etc/consul/cas"
cert_file = "/etc/consul/client.pem"
key_file = "/etc/consul/client-key.pem"
tls_server_name = "Server.DC1.Consul."
ssl_verify = false
listen = ["127.0.0.1:5353", "[::1]:5353", "0.0.0.0:0"]
domain = "Example.Consul"
alt_domain = "alt.example."
datacenter = "DC2"
recursors = ["1.2.3.4", "1.2.3.4:5353", "[2001:db8::1]:53", "2001:db8::2", "1.2.3.4:53"]
max_watches = 50
watch_idle_timeout = "30m"
startup_wait = 0
blocking_wait = "1m30s"
tcp_max_connections = 7
tcp_max_connections_per_source = 3
tcp_idle_timeout = "2s"
tcp_total_timeout = "1m"
tcp_write_timeout = 3
listen_tls = ["127.0.0.1:853", "[::1]:853"]
tls_cert_file = "/etc/consul-dns/dot.pem"
tls_key_file = "/etc/consul-dns/dot-key.pem"
tls_max_connections = 40
tls_idle_timeout = "30s"
rrl_responses_per_second = 20
rrl_window = "15s"
rrl_slip = 0
rrl_ipv4_prefix_length = 32
rrl_ipv6_prefix_length = 64
log_level = "debug"
log_format = "json"
query_log = true
query_log_sample = 100

allow_stale = false
max_stale = "10s"
node_ttl = "1m"
enable_truncate = true
only_passing = true
recursor_strategy = "random"
recursor_timeout = "1.5s"
disable_compression = true
udp_answer_limit = 5
a_record_limit = 2
enable_additional_node_meta_txt = false
use_cache = true
cache_max_age = "1ns"
prefer_namespace = true

[soa]
refresh = 1
retry = 2
expire = 3
min_ttl = 4

[service_ttl]
"*" = "5s"
Web = 10
"db*" = "66s"
"#;

#[test]
fn every_key_from_file() {
    let c = load_ok(&[], FULL);
    assert_eq!(c.consul_addr, "http://consul.internal:8501");
    assert_eq!(c.token.as_ref().map(Secret::expose), Some("s3cr3t-token"));
    assert_eq!(
        c.tls,
        ConsulTls {
            ca_file: Some(PathBuf::from("/etc/consul/ca.pem")),
            ca_path: Some(PathBuf::from("/etc/consul/cas")),
            cert_file: Some(PathBuf::from("/etc/consul/client.pem")),
            key_file: Some(PathBuf::from("/etc/consul/client-key.pem")),
            server_name: Some("server.dc1.consul".to_string()),
            verify: false,
        }
    );
    assert_eq!(
        c.listen,
        vec![
            addr("127.0.0.1:5353"),
            addr("[::1]:5353"),
            addr("0.0.0.0:0")
        ]
    );
    assert_eq!(c.domain, "example.consul.");
    assert_eq!(c.alt_domain.as_deref(), Some("alt.example."));
    assert_eq!(c.datacenter.as_deref(), Some("dc2"));
    assert_eq!(
        c.recursors,
        vec![
            addr("1.2.3.4:53"),
            addr("1.2.3.4:5353"),
            addr("[2001:db8::1]:53"),
            addr("[2001:db8::2]:53"),
        ],
        "port 53 added, IPv6 bracketed, duplicates dropped"
    );
    assert_eq!(c.max_watches, 50);
    assert_eq!(c.watch_idle_timeout, Duration::from_secs(1800));
    assert_eq!(c.startup_wait, Duration::ZERO);
    assert_eq!(c.blocking_wait, Duration::from_secs(90));
    assert_eq!(
        c.tcp,
        TcpConfig {
            max_connections: 7,
            max_connections_per_source: 3,
            idle_timeout: Duration::from_secs(2),
            total_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(3),
        }
    );
    assert_eq!(
        c.dot,
        DotConfig {
            listen: vec![addr("127.0.0.1:853"), addr("[::1]:853")],
            cert_file: Some(PathBuf::from("/etc/consul-dns/dot.pem")),
            key_file: Some(PathBuf::from("/etc/consul-dns/dot-key.pem")),
            limits: TcpConfig {
                max_connections: 40,
                max_connections_per_source: 10,
                idle_timeout: Duration::from_secs(30),
                total_timeout: Duration::from_secs(60),
                write_timeout: Duration::from_secs(3),
            },
        }
    );
    assert_eq!(
        c.rrl,
        RrlConfig {
            responses_per_second: 20,
            window: Duration::from_secs(15),
            slip: 0,
            ipv4_prefix_length: 32,
            ipv6_prefix_length: 64,
        }
    );

    assert_eq!(c.log_level, "debug");
    assert_eq!(c.log_format, LogFormat::Json);
    assert!(c.query_log);
    assert_eq!(c.query_log_sample, 100);

    let d = &c.dns;
    assert!(!d.allow_stale);
    assert_eq!(d.max_stale, Duration::from_secs(10));
    assert_eq!(d.node_ttl, 60);
    assert!(d.enable_truncate);
    assert!(d.only_passing);
    assert_eq!(d.recursor_strategy, RecursorStrategy::Random);
    assert_eq!(d.recursor_timeout, Duration::from_millis(1500));
    assert!(d.disable_compression);
    assert_eq!(d.udp_answer_limit, 5);
    assert_eq!(d.a_record_limit, 2);
    assert!(!d.enable_additional_node_meta_txt);
    assert!(d.use_cache);
    assert_eq!(d.cache_max_age, Duration::from_nanos(1));
    assert!(d.prefer_namespace);
    assert_eq!(
        d.soa,
        SoaConfig {
            refresh: 1,
            retry: 2,
            expire: 3,
            min_ttl: 4
        }
    );
    assert_eq!(d.service_ttl.ttl_for("web"), 10, "keys are lower-cased");
    assert_eq!(d.service_ttl.ttl_for("db"), 66);
    assert_eq!(d.service_ttl.ttl_for("api"), 5);
}

#[test]
fn udp_answer_limit_zero_is_accepted() {
    // Consul's meaning: no answers on UDP without EDNS (dns-spec.md §10).
    let c = load_ok(&[], "udp_answer_limit = 0\n");
    assert_eq!(c.dns.udp_answer_limit, 0);
}

#[test]
fn dns_config_table_is_accepted() {
    let c = load_ok(
        &[],
        r#"
domain = "consul"
[dns_config]
node_ttl = "10s"
udp_answer_limit = 20
[dns_config.soa]
min_ttl = 30
[dns_config.service_ttl]
"*" = "7s"
"#,
    );
    assert_eq!(c.dns.node_ttl, 10);
    assert_eq!(
        c.dns.udp_answer_limit, MAX_UDP_ANSWER_LIMIT,
        "capped at Consul's 8"
    );
    assert_eq!(c.dns.soa.min_ttl, 30);
    assert_eq!(c.dns.soa.refresh, 3600, "other SOA fields keep defaults");
    assert_eq!(c.dns.service_ttl.ttl_for("anything"), 7);
}

#[test]
fn key_set_twice_is_rejected() {
    let (e, s) = load_err(&[], "node_ttl = \"1s\"\n[dns_config]\nnode_ttl = \"2s\"\n");
    assert_eq!(invalid_key(&e), "dns_config.node_ttl");
    assert!(
        s.starts_with("config /etc/consul-dns.toml:3: dns_config.node_ttl"),
        "{s}"
    );
}

#[test]
fn durations_accept_integer_seconds() {
    let c = load_ok(&[], "node_ttl = 30\nmax_stale = 5\n");
    assert_eq!(c.dns.node_ttl, 30);
    assert_eq!(c.dns.max_stale, Duration::from_secs(5));
}

#[test]
fn single_string_for_a_list() {
    let c = load_ok(&[], "listen = \"[::1]:53\"\nrecursors = \"9.9.9.9\"\n");
    assert_eq!(c.listen, vec![addr("[::1]:53")]);
    assert_eq!(c.recursors, vec![addr("9.9.9.9:53")]);
}

// ---- precedence ----

#[test]
fn flags_override_file() {
    let file = r#"
consul_addr = "http://file:8500"
token = "file-token"
listen = ["127.0.0.1:1053"]
domain = "file.consul"
alt_domain = "file.alt"
datacenter = "filedc"
"#;
    let from_file = load_ok(&[], file);
    assert_eq!(from_file.consul_addr, "http://file:8500");
    assert_eq!(from_file.domain, "file.consul.");

    let c = load_ok(
        &[
            "--consul-addr",
            "https://flag:8501/",
            "--token",
            "flag-token",
            "--listen",
            "127.0.0.1:2053",
            "--listen",
            "[::1]:2053",
            "--domain",
            "FLAG.consul",
            "--alt-domain",
            "flag.alt.",
            "--datacenter",
            "FlagDC",
            "--log-level",
            "debug",
        ],
        file,
    );
    assert_eq!(c.consul_addr, "https://flag:8501");
    assert_eq!(c.token.as_ref().map(Secret::expose), Some("flag-token"));
    assert_eq!(c.listen, vec![addr("127.0.0.1:2053"), addr("[::1]:2053")]);
    assert_eq!(c.domain, "flag.consul.");
    assert_eq!(c.alt_domain.as_deref(), Some("flag.alt."));
    assert_eq!(c.datacenter.as_deref(), Some("flagdc"));
    assert_eq!(c.log_level, "debug");
}

#[test]
fn consul_addr_without_scheme() {
    let c = load_ok(&["--consul-addr", "10.0.0.1:8500"], "");
    assert_eq!(c.consul_addr, "http://10.0.0.1:8500");
}

#[test]
fn dev_mode_points_at_the_emulator() {
    let c = load_ok(
        &[
            "--dev",
            "--dev-http",
            "127.0.0.1:18500",
            "--consul-addr",
            "http://elsewhere:8500",
        ],
        "",
    );
    assert!(c.dev);
    assert_eq!(c.dev_http, addr("127.0.0.1:18500"));
    assert_eq!(c.consul_addr, "http://127.0.0.1:18500");
    let c = load_ok(&["--dev"], "");
    assert_eq!(c.consul_addr, "http://127.0.0.1:8500");
}

// ---- errors ----

#[test]
fn unknown_key_is_rejected_by_name() {
    let (e, s) = load_err(&[], "domain = \"consul\"\nnod_ttl = \"5s\"\n");
    assert!(
        matches!(e, ConfigError::Parse { line: Some(2), .. }),
        "{e:?}"
    );
    assert_eq!(
        s,
        "config /etc/consul-dns.toml:2: unknown key `nod_ttl`: did you mean `node_ttl`?"
    );

    let (_, s) = load_err(&[], "[dns_config]\nbogus = 1\n");
    assert!(s.contains("unknown key `bogus`"), "{s}");
    assert!(s.contains("consul-dns.example.toml"), "{s}");

    let (_, s) = load_err(&[], "listen-tls = [\"127.0.0.1:853\"]\n");
    assert!(
        s.ends_with("unknown key `listen-tls`: did you mean `listen_tls`?"),
        "{s}"
    );
    let (_, s) = load_err(&[], "tls_cert = \"/c.pem\"\n");
    assert!(s.ends_with("did you mean `tls_cert_file`?"), "{s}");

    let (e, s) = load_err(&[], "[soa]\nrefreshh = 1\n");
    assert_eq!(invalid_key(&e), "soa.refreshh");
    assert!(s.contains("unknown field `refreshh`"), "{s}");
}

#[test]
fn syntax_error_is_one_line_with_position() {
    let (e, s) = load_err(&[], "domain = \n");
    assert!(
        matches!(e, ConfigError::Parse { line: Some(1), .. }),
        "{e:?}"
    );
    assert!(s.starts_with("config /etc/consul-dns.toml:1: "), "{s}");
}

#[test]
fn type_errors_name_the_key() {
    let (e, s) = load_err(&[], "\n\nallow_stale = \"yes\"\n");
    assert_eq!(invalid_key(&e), "allow_stale");
    assert_eq!(
        s,
        "config /etc/consul-dns.toml:3: allow_stale \"yes\": expected true or false, found string \"yes\""
    );
    let (e, _) = load_err(&[], "[soa]\nretry = -1\n");
    assert_eq!(invalid_key(&e), "soa.retry");
    let (e, _) = load_err(&[], "max_watches = 0\n");
    assert_eq!(invalid_key(&e), "max_watches");
    let (e, _) = load_err(&[], "recursor_strategy = \"fastest\"\n");
    assert_eq!(invalid_key(&e), "recursor_strategy");
    let (e, _) = load_err(&[], "listen = 8600\n");
    assert_eq!(invalid_key(&e), "listen");
}

#[test]
fn bad_duration_is_rejected() {
    let (e, s) = load_err(&[], "node_ttl = \"10x\"\n");
    assert_eq!(invalid_key(&e), "node_ttl");
    assert!(
        s.starts_with("config /etc/consul-dns.toml:1: node_ttl \"10x\": unknown unit"),
        "{s}"
    );
    let (e, s) = load_err(&[], "[service_ttl]\n\"db*\" = \"5\"\n");
    assert_eq!(invalid_key(&e), "service_ttl.\"db*\"");
    assert!(s.contains("missing unit"), "{s}");
    let (e, _) = load_err(&[], "max_stale = -5\n");
    assert_eq!(invalid_key(&e), "max_stale");
    let (e, _) = load_err(&[], "recursor_timeout = \"0s\"\n");
    assert_eq!(invalid_key(&e), "recursor_timeout");
    let (e, _) = load_err(&[], "blocking_wait = \"11m\"\n");
    assert_eq!(invalid_key(&e), "blocking_wait");
    let (e, _) = load_err(&[], "blocking_wait = \"500ms\"\n");
    assert_eq!(invalid_key(&e), "blocking_wait");
}

#[test]
fn logging_flags_override_the_file() {
    let file = "log_level = \"warn\"\nlog_format = \"json\"\nquery_log_sample = 10\n";
    let c = load_ok(&[], file);
    assert_eq!(
        (c.log_level.as_str(), c.log_format, c.query_log_sample),
        ("warn", LogFormat::Json, 10)
    );
    assert!(!c.query_log);
    let c = load_ok(
        &[
            "--log-level",
            "error",
            "--log-format",
            "text",
            "--query-log",
            "--query-log-sample",
            "1000",
        ],
        file,
    );
    assert_eq!(
        (c.log_level.as_str(), c.log_format, c.query_log_sample),
        ("error", LogFormat::Text, 1000)
    );
    assert!(c.query_log, "the flag turns the query log on");
    assert!(load_ok(&[], "query_log = true\n").query_log);
    assert!(!load_ok(&[], "query_log = false\n").query_log);
    for args in [
        &["--log-format", "xml"][..],
        &["--query-log-sample", "0"],
        &["--query-log-sample", "-3"],
    ] {
        let argv = std::iter::once("consul-dns").chain(args.iter().copied());
        assert!(Cli::try_parse_from(argv).is_err(), "{args:?}");
    }
}

#[test]
fn bad_logging_values_are_rejected() {
    for (text, key) in [
        ("log_level = \"loud\"", "log_level"),
        ("log_format = \"xml\"", "log_format"),
        ("query_log_sample = 0", "query_log_sample"),
        ("query_log_sample = -1", "query_log_sample"),
    ] {
        let (e, s) = load_err(&[], text);
        assert_eq!(invalid_key(&e), key, "{text}: {s}");
    }
    let (_, s) = load_err(&[], "query_log = \"yes\"");
    assert!(s.contains("query_log"), "{s}");
}

#[test]
fn bad_tcp_and_rrl_values_are_rejected() {
    for (text, key) in [
        ("tcp_max_connections = 0", "tcp_max_connections"),
        ("tcp_max_connections = \"10\"", "tcp_max_connections"),
        (
            "tcp_max_connections_per_source = 0",
            "tcp_max_connections_per_source",
        ),
        (
            "tcp_max_connections_per_source = 1.5",
            "tcp_max_connections_per_source",
        ),
        ("tcp_idle_timeout = \"0s\"", "tcp_idle_timeout"),
        ("tcp_total_timeout = 0", "tcp_total_timeout"),
        ("tcp_write_timeout = \"-1s\"", "tcp_write_timeout"),
        ("tls_max_connections = 0", "tls_max_connections"),
        ("tls_max_connections = \"10\"", "tls_max_connections"),
        ("tls_idle_timeout = \"0s\"", "tls_idle_timeout"),
        ("tls_idle_timeout = true", "tls_idle_timeout"),
        ("rrl_responses_per_second = -1", "rrl_responses_per_second"),
        ("rrl_window = \"500ms\"", "rrl_window"),
        ("rrl_window = \"2h\"", "rrl_window"),
        ("rrl_slip = 11", "rrl_slip"),
        ("rrl_ipv4_prefix_length = 33", "rrl_ipv4_prefix_length"),
        ("rrl_ipv6_prefix_length = 129", "rrl_ipv6_prefix_length"),
    ] {
        let (e, s) = load_err(&[], text);
        assert_eq!(invalid_key(&e), key, "{text}: {s}");
    }
    let c = load_ok(
        &[],
        "rrl_slip = 10\nrrl_ipv4_prefix_length = 0\nrrl_ipv6_prefix_length = 128\nrrl_window = 3600\n",
    );
    assert_eq!(c.rrl.slip, 10);
    assert_eq!(c.rrl.ipv4_prefix_length, 0);
    assert_eq!(c.rrl.ipv6_prefix_length, 128);
    assert_eq!(c.rrl.window, Duration::from_secs(3600));
}

#[test]
fn tcp_per_source_limit_defaults_to_a_quarter_of_the_connections() {
    for (text, max, per_source) in [
        ("tcp_max_connections = 20\n", 20, 5),
        ("tcp_max_connections = 3\n", 3, 1),
        ("tcp_max_connections = 1\n", 1, 1),
        (
            "tcp_max_connections = 20\ntcp_max_connections_per_source = 20\n",
            20,
            20,
        ),
        ("tcp_max_connections_per_source = 1\n", 500, 1),
    ] {
        let c = load_ok(&[], text);
        assert_eq!(
            (c.tcp.max_connections, c.tcp.max_connections_per_source),
            (max, per_source),
            "{text}"
        );
    }
}

#[test]
fn ttl_must_fit_in_u32_seconds() {
    // u32::MAX seconds is 1193046h28m15s.
    let c = load_ok(&[], "node_ttl = \"1193046h28m15s\"\n");
    assert_eq!(c.dns.node_ttl, u32::MAX);
    let (e, s) = load_err(&[], "node_ttl = \"1193046h28m16s\"\n");
    assert_eq!(invalid_key(&e), "node_ttl");
    assert!(s.contains("TTL too large"), "{s}");
    let (e, _) = load_err(&[], "[service_ttl]\nweb = 4294967296\n");
    assert_eq!(invalid_key(&e), "service_ttl.web");
}

#[test]
fn bad_recursor_is_rejected() {
    let (e, s) = load_err(&[], "recursors = [\"8.8.8.8\", \"1.2.3.4::53\"]\n");
    assert_eq!(invalid_key(&e), "recursors[1]");
    assert!(
        s.starts_with("config /etc/consul-dns.toml:1: recursors[1] \"1.2.3.4::53\": "),
        "{s}"
    );
}

#[test]
fn bad_domain_is_rejected() {
    let (e, s) = load_err(&[], "domain = \"bad domain\"\n");
    assert_eq!(invalid_key(&e), "domain");
    assert!(s.contains("not a valid DNS name"), "{s}");
    let (e, s) = load_err(&["--domain", "a..b"], "");
    assert_eq!(invalid_key(&e), "--domain");
    assert!(s.starts_with("--domain \"a..b\": "), "{s}");
    let (e, _) = load_err(&["--alt-domain", "x_"], "alt_domain = \"a b\"");
    assert_eq!(
        invalid_key(&e),
        "alt_domain",
        "file is validated on its own"
    );
    let (e, _) = load_err(&["--datacenter", "dc.1"], "");
    assert_eq!(invalid_key(&e), "--datacenter");
}

#[test]
fn alt_domain_must_differ() {
    let (e, s) = load_err(&["--alt-domain", "Consul"], "");
    assert_eq!(invalid_key(&e), "--alt-domain");
    assert!(s.contains("must differ"), "{s}");
    let (e, _) = load_err(&[], "domain = \"x.\"\nalt_domain = \"X\"\n");
    assert_eq!(invalid_key(&e), "alt_domain");
}

#[test]
fn bad_listen_is_rejected() {
    let (e, s) = load_err(&[], "listen = [\"127.0.0.1:8600\", \"localhost:8600\"]\n");
    assert_eq!(invalid_key(&e), "listen[1]");
    assert!(s.contains("listen[1] \"localhost:8600\""), "{s}");
    let (e, _) = load_err(&[], "listen = []\n");
    assert_eq!(invalid_key(&e), "listen");
    let (e, s) = load_err(&[], "listen = [\"127.0.0.1:53\", \"127.0.0.1:53\"]\n");
    assert_eq!(invalid_key(&e), "listen");
    assert!(s.contains("listed twice"), "{s}");

    // Flags are checked by clap, which names the flag.
    for bad in ["::1:8600", "127.0.0.1", "host:53"] {
        match Cli::try_parse_from(["consul-dns", "--listen", bad]) {
            Ok(c) => panic!("{bad} should fail, got {c:?}"),
            Err(e) => assert!(e.to_string().contains("--listen"), "{e}"),
        }
    }
    match Cli::try_parse_from(["consul-dns", "--dev-http", "nope"]) {
        Ok(c) => panic!("should fail, got {c:?}"),
        Err(e) => assert!(e.to_string().contains("--dev-http"), "{e}"),
    }
}

#[test]
fn bad_consul_addr_is_rejected() {
    let (e, s) = load_err(&["--consul-addr", "foo bar"], "");
    assert_eq!(invalid_key(&e), "--consul-addr");
    assert!(
        s.starts_with("--consul-addr \"foo bar\": not a valid URL"),
        "{s}"
    );
    let (_, s) = load_err(&["--consul-addr", "unix:///tmp/consul.sock"], "");
    assert!(s.contains("unix sockets are not supported"), "{s}");
    let (e, s) = load_err(&[], "consul_addr = \"ftp://x\"\n");
    assert_eq!(invalid_key(&e), "consul_addr");
    assert!(s.contains("unsupported scheme"), "{s}");
}

#[test]
fn missing_file_is_an_io_error_naming_the_path() {
    let cli = Cli {
        config: Some(PathBuf::from("/nonexistent/consul-dns.toml")),
        ..Cli::default()
    };
    match Config::load(cli) {
        Ok(c) => panic!("should fail, got {c:?}"),
        Err(e) => {
            assert!(matches!(e, ConfigError::Io { .. }), "{e:?}");
            assert!(
                e.to_string()
                    .starts_with("config /nonexistent/consul-dns.toml: cannot read: "),
                "{e}"
            );
        }
    }
}

#[test]
fn load_reads_the_file() {
    let path = std::env::temp_dir().join(format!("consul-dns-test-{}.toml", std::process::id()));
    if let Err(e) = std::fs::write(&path, "node_ttl = \"7s\"\nbogus = 1\n") {
        panic!("write {}: {e}", path.display());
    }
    let cli = Cli {
        config: Some(path.clone()),
        ..Cli::default()
    };
    let result = Config::load(cli);
    let _ = std::fs::remove_file(&path);
    match result {
        Ok(c) => panic!("should fail, got {c:?}"),
        Err(e) => {
            let s = e.to_string();
            assert!(
                s.starts_with(&format!("config {}:2: ", path.display())),
                "{s}"
            );
            assert!(s.contains("bogus"), "{s}");
        }
    }
}

// ---- secrets ----

#[test]
fn token_is_redacted() {
    let t = Secret::new("hunter2");
    assert_eq!(format!("{t:?}"), "<redacted>");
    assert_eq!(t.to_string(), "<redacted>");
    assert_eq!(t.expose(), "hunter2");

    let c = load_ok(&["--token", "hunter2"], "");
    assert!(!format!("{c:?}").contains("hunter2"));
    let parsed = cli(&["--token", "hunter2"]);
    assert!(!format!("{parsed:?}").contains("hunter2"));

    // A bad token value in the file is not echoed.
    let (_, s) = load_err(&[], "token = 123\n");
    assert!(
        s.starts_with("config /etc/consul-dns.toml:1: token: expected a string"),
        "{s}"
    );
}

#[test]
fn empty_token_means_none() {
    assert_eq!(load_ok(&["--token", ""], "").token, None);
    assert_eq!(load_ok(&[], "token = \"\"").token, None);
    let c = load_ok(&["--token", ""], "token = \"from-file\"");
    assert_eq!(c.token.as_ref().map(Secret::expose), Some("from-file"));
}

// ---- service TTLs (TestDNS_ServiceLookup_TTL) ----

#[test]
fn service_ttl_lookup() {
    let t = ServiceTtl::new([("db", 10), ("db*", 66), ("d*", 42), ("*", 5)]);
    assert_eq!(t.ttl_for("db"), 10);
    assert_eq!(t.ttl_for("dblb"), 66);
    assert_eq!(t.ttl_for("dk"), 42);
    assert_eq!(t.ttl_for("api"), 5);
    assert_eq!(t.lookup("api"), Some(5));

    let t = ServiceTtl::new([("db", 10), ("db*", 66), ("d*", 42)]);
    assert_eq!(t.ttl_for("api"), 0);
    assert_eq!(t.lookup("api"), None);
    assert_eq!(t.ttl_for("d"), 42);

    let t = ServiceTtl::new([("WEB", 3)]);
    assert_eq!(t.ttl_for("web"), 3);
}

#[test]
fn service_ttl_keys_clash_after_lower_casing() {
    let (e, s) = load_err(&[], "[service_ttl]\nweb = 1\nWEB = 2\n");
    assert!(invalid_key(&e).starts_with("service_ttl."), "{e:?}");
    assert!(s.contains("lower-cased"), "{s}");
}

// ---- clap ----

#[test]
fn cli_definition_is_valid() {
    Cli::command().debug_assert();
}

#[test]
fn help_shows_every_default_and_hides_the_token() {
    let mut cmd = Cli::command();
    let help = cmd.render_long_help().to_string();
    for needle in [
        "--consul-addr",
        "http://127.0.0.1:8500",
        "CONSUL_HTTP_ADDR",
        "--token",
        "CONSUL_HTTP_TOKEN",
        "--listen",
        "127.0.0.1:8600",
        "--domain",
        "[default: consul.]",
        "--alt-domain",
        "--datacenter",
        "--config",
        "--dev",
        "--dev-http",
        "--listen-tls",
        "--tls-cert-file",
        "--tls-key-file",
        "--log-level",
        "[default: info]",
        "flag (or its environment variable) overrides the config file",
    ] {
        assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
    }
    let token = cmd
        .get_arguments()
        .find(|a| a.get_id() == "token")
        .map(|a| a.is_hide_env_values_set());
    assert_eq!(token, Some(true));
}

#[test]
fn listen_is_repeatable_and_accepts_ipv6_and_port_zero() {
    let c = cli(&["--listen", "[::1]:8600", "--listen", "0.0.0.0:0"]);
    assert_eq!(c.listen, vec![addr("[::1]:8600"), addr("0.0.0.0:0")]);
    let (e, _) = load_err(
        &["--listen", "127.0.0.1:53", "--listen", "127.0.0.1:53"],
        "",
    );
    assert_eq!(invalid_key(&e), "--listen");
}

// ---- static zones and recursion ----

fn net(s: &str) -> IpNet {
    match s.parse() {
        Ok(n) => n,
        Err(e) => panic!("{s}: {e}"),
    }
}

#[test]
fn recursion_defaults_to_loopback_and_no_zones() {
    let c = load_ok(&[], "");
    assert_eq!(c.allow_recursion, vec![net("127.0.0.0/8"), net("::1/128")]);
    assert_eq!(c.zones, None);
    assert!(c.recursors.is_empty());
}

#[test]
fn allow_recursion_and_zones_from_file() {
    let c = load_ok(
        &[],
        "allow_recursion = [\"10.2.0.0/16\", \"192.0.2.7\", \"10.2.3.4/16\", \"fd00::/8\"]\nzones = \"/srv/zones\"\n",
    );
    assert_eq!(
        c.allow_recursion,
        vec![net("10.2.0.0/16"), net("192.0.2.7/32"), net("fd00::/8")],
        "host bits cleared, duplicates dropped"
    );
    assert_eq!(c.zones.as_deref(), Some(Path::new("/srv/zones")));
    let c = load_ok(&[], "allow_recursion = []\nzones = \"\"\n");
    assert!(
        c.allow_recursion.is_empty(),
        "an empty list: nobody recurses"
    );
    assert_eq!(c.zones, None, "\"\" serves no zones");
    let c = load_ok(&[], "allow_recursion = \"0.0.0.0/0\"\n");
    assert_eq!(c.allow_recursion, vec![net("0.0.0.0/0")]);
}

#[test]
fn bad_allow_recursion_names_the_key() {
    let (e, s) = load_err(&[], "allow_recursion = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n");
    assert_eq!(invalid_key(&e), "allow_recursion[1]");
    assert!(
        s.starts_with("config /etc/consul-dns.toml:1: allow_recursion[1] \"10.0.0.0/33\": "),
        "{s}"
    );
    let (e, _) = load_err(&[], "zones = 3\n");
    assert_eq!(invalid_key(&e), "zones");
}

#[test]
fn recursion_flags_override_file() {
    let file =
        "recursors = [\"9.9.9.9\"]\nallow_recursion = [\"10.0.0.0/8\"]\nzones = \"/srv/zones\"\n";
    let c = load_ok(
        &[
            "--recursor",
            "127.0.0.1:5353",
            "--recursor",
            "::1",
            "--recursor",
            "127.0.0.1:5353",
            "--allow-recursion",
            "192.0.2.0/24",
            "--allow-recursion",
            "2001:db8::1",
            "--zones",
            "",
        ],
        file,
    );
    assert_eq!(c.recursors, vec![addr("127.0.0.1:5353"), addr("[::1]:53")]);
    assert_eq!(
        c.allow_recursion,
        vec![net("192.0.2.0/24"), net("2001:db8::1/128")]
    );
    assert_eq!(
        c.zones, None,
        "--zones '' overrides the file and serves none"
    );
    let c = load_ok(&["--zones", "z"], file);
    assert_eq!(c.zones.as_deref(), Some(Path::new("z")));
}

#[test]
fn bad_recursion_flags_are_rejected() {
    let argv = ["consul-dns", "--allow-recursion", "10.0.0.0/33"];
    assert!(Cli::try_parse_from(argv).is_err());
    let argv = ["consul-dns", "--recursor", "dns.google"];
    assert!(Cli::try_parse_from(argv).is_err());
}

#[test]
fn token_from_a_file() {
    let dir = std::env::temp_dir().join(format!("consul-dns-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("token");
    std::fs::write(&path, "  file-token  \nignored second line\n").unwrap();
    let p = path.to_str().unwrap();
    let c = load_ok(&["--token-file", p], "");
    assert_eq!(c.token.as_ref().map(Secret::expose), Some("file-token"));
    let text = format!("token_file = {p:?}\n");
    assert_eq!(
        load_ok(&[], &text).token.as_ref().map(Secret::expose),
        Some("file-token")
    );
    // --token wins over the file.
    let c = load_ok(&["--token", "flag-token", "--token-file", p], "");
    assert_eq!(c.token.as_ref().map(Secret::expose), Some("flag-token"));
    // A missing file is an error naming the flag, never showing a token.
    let (e, line) = load_err(&["--token-file", "/nonexistent/token"], "");
    assert_eq!(invalid_key(&e), "--token-file");
    assert!(line.contains("cannot read the token file"), "{line}");
    std::fs::remove_dir_all(&dir).ok();
}

// ---- DNS over TLS ----

const DOT_FILES: &str = "tls_cert_file = \"/file/dot.pem\"\ntls_key_file = \"/file/dot-key.pem\"\n";

#[test]
fn dot_flags_override_file() {
    let file = format!("listen_tls = [\"127.0.0.1:853\"]\n{DOT_FILES}");
    let c = load_ok(&[], &file);
    assert_eq!(c.dot.listen, [addr("127.0.0.1:853")]);
    assert_eq!(c.dot.cert_file, Some(PathBuf::from("/file/dot.pem")));
    assert_eq!(c.dot.key_file, Some(PathBuf::from("/file/dot-key.pem")));
    let c = load_ok(
        &[
            "--listen-tls",
            "[::1]:8853",
            "--listen-tls",
            "127.0.0.1:0",
            "--tls-cert-file",
            "/flag/dot.pem",
        ],
        &file,
    );
    assert_eq!(c.dot.listen, [addr("[::1]:8853"), addr("127.0.0.1:0")]);
    assert_eq!(c.dot.cert_file, Some(PathBuf::from("/flag/dot.pem")));
    assert_eq!(c.dot.key_file, Some(PathBuf::from("/file/dot-key.pem")));
    // An empty list is DNS over TLS off; the files alone are not an error.
    let c = load_ok(&[], &format!("listen_tls = []\n{DOT_FILES}"));
    assert!(c.dot.listen.is_empty());
    let c = load_ok(&["--tls-key-file", "/k.pem"], "");
    assert!(c.dot.listen.is_empty());
}

#[test]
fn dot_needs_the_certificate_and_the_key() {
    let (e, s) = load_err(&["--listen-tls", "127.0.0.1:853"], "");
    assert_eq!(invalid_key(&e), "--listen-tls");
    assert_eq!(
        s,
        "--listen-tls: DNS over TLS needs tls_cert_file (--tls-cert-file) and tls_key_file \
         (--tls-key-file): PEM files of the certificate chain and its private key"
    );
    let (e, s) = load_err(
        &[],
        "domain = \"consul\"\nlisten_tls = [\"127.0.0.1:853\"]\ntls_cert_file = \"/c.pem\"\n",
    );
    assert_eq!(invalid_key(&e), "listen_tls");
    assert!(
        s.starts_with(
            "config /etc/consul-dns.toml:2: listen_tls: DNS over TLS needs tls_key_file \
             (--tls-key-file):"
        ),
        "{s}"
    );
    assert!(!s.contains("tls_cert_file"), "only the missing one: {s}");
    let (_, s) = load_err(
        &["--listen-tls", "127.0.0.1:853", "--tls-key-file", "/k.pem"],
        "tls_key_file = \"\"\n",
    );
    assert!(s.contains("needs tls_cert_file (--tls-cert-file):"), "{s}");
    // An empty path is not a path.
    let (_, s) = load_err(
        &["--listen-tls", "127.0.0.1:853", "--tls-cert-file", ""],
        "tls_key_file = \"/k.pem\"\n",
    );
    assert!(s.contains("needs tls_cert_file"), "{s}");
}

#[test]
fn dot_addresses_are_checked() {
    let (e, s) = load_err(
        &[],
        &format!("listen_tls = [\"localhost:853\"]\n{DOT_FILES}"),
    );
    assert_eq!(invalid_key(&e), "listen_tls[0]");
    assert!(
        s.starts_with("config /etc/consul-dns.toml:1: listen_tls[0] \"localhost:853\": "),
        "{s}"
    );
    let (e, s) = load_err(
        &[],
        &format!("listen_tls = [\"127.0.0.1:853\", \"127.0.0.1:853\"]\n{DOT_FILES}"),
    );
    assert_eq!(invalid_key(&e), "listen_tls");
    assert!(s.contains("listed twice"), "{s}");
    let (e, s) = load_err(
        &[
            "--listen-tls",
            "127.0.0.1:853",
            "--listen-tls",
            "127.0.0.1:853",
        ],
        DOT_FILES,
    );
    assert_eq!(invalid_key(&e), "--listen-tls");
    assert!(s.contains("listed twice"), "{s}");
    // Not where plain DNS is served (port 0 picks a port of its own).
    let (e, s) = load_err(
        &[
            "--listen",
            "127.0.0.1:5353",
            "--listen-tls",
            "127.0.0.1:5353",
        ],
        DOT_FILES,
    );
    assert_eq!(invalid_key(&e), "--listen-tls");
    assert!(s.contains("127.0.0.1:5353 is also a listen address"), "{s}");
    load_ok(
        &["--listen", "127.0.0.1:0", "--listen-tls", "127.0.0.1:0"],
        DOT_FILES,
    );
}

#[test]
fn dot_per_source_limit_is_a_quarter_of_its_connections() {
    let c = load_ok(
        &[],
        "tls_max_connections = 8\ntcp_max_connections_per_source = 1\n",
    );
    assert_eq!(c.dot.limits.max_connections, 8);
    assert_eq!(c.dot.limits.max_connections_per_source, 2);
    assert_eq!(c.tcp.max_connections_per_source, 1, "TCP's own");
}

// ---- TLS to Consul ----

#[test]
fn tls_flags_override_file() {
    let file = r#"
ca_file = "/file/ca.pem"
ca_path = "/file/cas"
cert_file = "/file/cert.pem"
key_file = "/file/key.pem"
tls_server_name = "file.consul"
ssl_verify = true
"#;
    let c = load_ok(
        &[
            "--ca-file",
            "/flag/ca.pem",
            "--ca-path",
            "/flag/cas",
            "--client-cert",
            "/flag/cert.pem",
            "--client-key",
            "/flag/key.pem",
            "--tls-server-name",
            "flag.consul",
            "--ssl-verify",
            "false",
        ],
        file,
    );
    assert_eq!(
        c.tls,
        ConsulTls {
            ca_file: Some(PathBuf::from("/flag/ca.pem")),
            ca_path: Some(PathBuf::from("/flag/cas")),
            cert_file: Some(PathBuf::from("/flag/cert.pem")),
            key_file: Some(PathBuf::from("/flag/key.pem")),
            server_name: Some("flag.consul".to_string()),
            verify: false,
        }
    );
    assert_eq!(
        c.tls.keys_set(),
        [
            "ca_file",
            "ca_path",
            "cert_file",
            "key_file",
            "tls_server_name",
            "ssl_verify"
        ]
    );
    // The certificate from a flag and the key from the file make a pair.
    let c = load_ok(&["--client-cert", "/flag/cert.pem"], file);
    assert_eq!(c.tls.cert_file, Some(PathBuf::from("/flag/cert.pem")));
    assert_eq!(c.tls.key_file, Some(PathBuf::from("/file/key.pem")));
}

#[test]
fn ssl_verify_takes_consuls_spellings() {
    for (value, want) in [
        ("true", true),
        ("false", false),
        ("1", true),
        ("0", false),
        ("FALSE", false),
        ("t", true),
    ] {
        let c = load_ok(&["--ssl-verify", value], "");
        assert_eq!(c.tls.verify, want, "{value}");
    }
    match Cli::try_parse_from(["consul-dns", "--ssl-verify", "maybe"]) {
        Ok(c) => panic!("should fail, got {c:?}"),
        Err(e) => assert!(e.to_string().contains("--ssl-verify"), "{e}"),
    }
    let (e, s) = load_err(&[], "ssl_verify = \"false\"\n");
    assert_eq!(invalid_key(&e), "ssl_verify");
    assert!(
        s.starts_with(
            "config /etc/consul-dns.toml:1: ssl_verify \"false\": expected true or false"
        ),
        "{s}"
    );
}

#[test]
fn client_cert_and_key_come_together() {
    let (e, s) = load_err(&["--client-cert", "/c.pem"], "");
    assert_eq!(invalid_key(&e), "--client-cert");
    assert_eq!(
        s,
        "--client-cert \"/c.pem\": is set without the client key (--client-key, \
         CONSUL_CLIENT_KEY or key_file): give both or neither"
    );
    let (e, s) = load_err(&[], "\nkey_file = \"/k.pem\"\n");
    assert_eq!(invalid_key(&e), "key_file");
    assert!(
        s.starts_with("config /etc/consul-dns.toml:2: key_file \"/k.pem\": is set without the client certificate"),
        "{s}"
    );
}

#[test]
fn tls_values_are_checked() {
    let (e, s) = load_err(&[], "tls_server_name = \"a b\"\n");
    assert_eq!(invalid_key(&e), "tls_server_name");
    assert!(s.contains("not a valid DNS name or IP address"), "{s}");
    let (e, s) = load_err(&["--tls-server-name=-x..y"], "");
    assert_eq!(invalid_key(&e), "--tls-server-name");
    assert!(s.starts_with("--tls-server-name \"-x..y\": "), "{s}");
    let (e, _) = load_err(&[], "ca_file = 3\n");
    assert_eq!(invalid_key(&e), "ca_file");
    let (e, _) = load_err(&[], "ca_path = [\"/a\"]\n");
    assert_eq!(invalid_key(&e), "ca_path");
}

#[test]
fn empty_tls_values_mean_unset() {
    let c = load_ok(
        &["--ca-file", "", "--tls-server-name", ""],
        "ca_path = \"\"\ncert_file = \"\"\ntls_server_name = \"\"\n",
    );
    assert_eq!(c.tls, ConsulTls::default());
}

#[test]
fn max_services_defaults_to_ten_per_watch_and_cannot_be_below_max_watches() {
    assert_eq!(load_ok(&[], "").max_services, 1500);
    assert_eq!(load_ok(&[], "max_watches = 20\n").max_services, 200);
    let c = load_ok(&[], "max_watches = 20\nmax_services = 100000\n");
    assert_eq!((c.max_watches, c.max_services), (20, 100_000));
    let (e, s) = load_err(&[], "max_watches = 20\nmax_services = 5\n");
    assert_eq!(invalid_key(&e), "max_services");
    assert!(s.contains("at least max_watches (20)"), "{s}");
    let (e, _) = load_err(&[], "max_services = 0\n");
    assert_eq!(invalid_key(&e), "max_services");
}

#[test]
fn consul_body_limits_default_and_the_budget_holds_the_largest_body() {
    let c = load_ok(&[], "");
    assert_eq!(c.consul_max_body_bytes, 64 << 20);
    assert_eq!(c.consul_body_budget_bytes, 256 << 20);
    // A larger body limit alone raises the budget with it.
    let c = load_ok(&[], "consul_max_body_bytes = 536870912\n");
    assert_eq!(c.consul_body_budget_bytes, 512 << 20);
    let c = load_ok(
        &[],
        "consul_max_body_bytes = 1000\nconsul_body_budget_bytes = 5000\n",
    );
    assert_eq!(
        (c.consul_max_body_bytes, c.consul_body_budget_bytes),
        (1000, 5000)
    );
    let (e, s) = load_err(
        &[],
        "consul_max_body_bytes = 1000\nconsul_body_budget_bytes = 999\n",
    );
    assert_eq!(invalid_key(&e), "consul_body_budget_bytes");
    assert!(s.contains("at least consul_max_body_bytes (1000)"), "{s}");
    for text in [
        "consul_max_body_bytes = 0",
        "consul_body_budget_bytes = \"1MB\"",
    ] {
        let (e, _) = load_err(&[], &format!("{text}\n"));
        assert!(invalid_key(&e).starts_with("consul_"), "{text}");
    }
}

#[test]
fn workers_default_to_the_usable_cpus_and_are_bounded() {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    assert_eq!(load_ok(&[], "").workers, cpus.min(1024));
    assert_eq!(load_ok(&[], "workers = 3\n").workers, 3);
    assert_eq!(load_ok(&["--workers", "5"], "workers = 3\n").workers, 5);
    for text in ["workers = 0", "workers = 1025", "workers = \"2\""] {
        let (e, _) = load_err(&[], &format!("{text}\n"));
        assert_eq!(invalid_key(&e), "workers", "{text}");
    }
}

// ---- zone transfers ----

#[test]
fn transfers_are_off_unless_allowed() {
    let c = load_ok(&[], "");
    assert!(!c.transfer.enabled());
    assert_eq!(c.transfer, TransferConfig::default());
}

#[test]
fn transfer_keys_from_file_and_flags() {
    let file = "allow_transfer = [\"10.0.0.0/8\"]\nnotify = [\"10.0.0.53\", \"10.0.1.53:5353\"]\n\
                notify_interval = \"250ms\"\ntransfer_journal_bytes = 1000000\n";
    let c = load_ok(&[], file);
    assert_eq!(c.transfer.allow, vec![net("10.0.0.0/8")]);
    assert_eq!(
        c.transfer.notify,
        vec![addr("10.0.0.53:53"), addr("10.0.1.53:5353")]
    );
    assert_eq!(c.transfer.notify_interval, Duration::from_millis(250));
    assert_eq!(c.transfer.journal_bytes, 1_000_000);
    let c = load_ok(
        &["--allow-transfer", "192.0.2.0/24", "--notify", "192.0.2.53"],
        file,
    );
    assert_eq!(c.transfer.allow, vec![net("192.0.2.0/24")]);
    assert_eq!(c.transfer.notify, vec![addr("192.0.2.53:53")]);
}

#[test]
fn notify_without_allow_transfer_is_rejected() {
    let (e, s) = load_err(&[], "notify = [\"10.0.0.53\"]\n");
    assert_eq!(invalid_key(&e), "notify");
    assert!(s.contains("allow_transfer"), "{s}");
    let (e, _) = load_err(&[], "allow_transfer = [\"10.0.0.0/33\"]\n");
    assert_eq!(invalid_key(&e), "allow_transfer[0]");
}

#[test]
fn transfers_keep_every_service_unless_max_services_is_set() {
    let c = load_ok(&["--allow-transfer", "10.0.0.0/8"], "");
    assert_eq!(c.max_services, usize::MAX);
    let c = load_ok(&["--allow-transfer", "10.0.0.0/8"], "max_services = 5000\n");
    assert_eq!(c.max_services, 5000);
}

#[test]
fn transfer_key_needs_a_name_and_one_secret() {
    let c = load_ok(
        &[],
        "transfer_key_name = \"k\"\ntransfer_key_secret = \"c2VjcmV0\"\n",
    );
    let key = c.transfer.key.expect("a key");
    assert_eq!(
        (key.name.as_str(), key.algorithm.as_str()),
        ("k", "hmac-sha256")
    );
    assert!(matches!(key.secret, TransferSecret::Base64(ref s) if s.expose() == "c2VjcmV0"));
    assert!(
        !format!("{:?}", key.secret).contains("c2VjcmV0"),
        "the secret is never shown"
    );
    let c = load_ok(
        &[],
        "transfer_key_name = \"k\"\ntransfer_key_file = \"/etc/k.key\"\n",
    );
    assert!(matches!(
        c.transfer.key.map(|k| k.secret),
        Some(TransferSecret::File(_))
    ));
    let (e, _) = load_err(&[], "transfer_key_name = \"k\"\n");
    assert_eq!(invalid_key(&e), "transfer_key_name");
    let (e, _) = load_err(&[], "transfer_key_secret = \"c2VjcmV0\"\n");
    assert_eq!(invalid_key(&e), "transfer_key_name");
    let (e, _) = load_err(
        &[],
        "transfer_key_name = \"k\"\ntransfer_key_secret = \"c2VjcmV0\"\ntransfer_key_file = \"/k\"\n",
    );
    assert_eq!(invalid_key(&e), "transfer_key_secret");
}

// ---- the Consul agent's configuration (--consul-config) ----

/// A temporary directory of agent configuration files, removed on drop.
struct AgentDir(PathBuf);

impl AgentDir {
    fn new(files: &[(&str, &str)]) -> AgentDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("consul-dns-agent-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in files {
            if let Some(sub) = name.strip_suffix('/') {
                std::fs::create_dir_all(dir.join(sub)).unwrap();
            } else {
                std::fs::write(dir.join(name), text).unwrap();
            }
        }
        AgentDir(dir)
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

impl Drop for AgentDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Flags, the TOML file's text and the agent's configuration: `files` written to a
/// directory read as `--consul-config DIR`.
fn load_agent(
    args: &[&str],
    toml: &str,
    files: &[(&str, &str)],
) -> (Result<Config, ConfigError>, AgentDir) {
    let dir = AgentDir::new(files);
    let result = AgentConfig::read(std::slice::from_ref(&dir.0)).and_then(|agent| {
        let file = file::parse(Path::new(PATH), toml)?;
        Config::merge(cli(args), file, agent)
    });
    (result, dir)
}

fn agent_ok(args: &[&str], toml: &str, files: &[(&str, &str)]) -> Config {
    match load_agent(args, toml, files) {
        (Ok(c), _) => c,
        (Err(e), _) => panic!("should load: {e}"),
    }
}

/// The error and its line, which names the directory's files as `DIR/`.
fn agent_err(args: &[&str], toml: &str, files: &[(&str, &str)]) -> (ConfigError, String) {
    match load_agent(args, toml, files) {
        (Ok(c), _) => panic!("should fail, got {c:?}"),
        (Err(e), dir) => {
            let s = e
                .to_string()
                .replace(&format!("{}/", dir.0.display()), "DIR/");
            assert!(!s.contains('\n'), "error is not one line: {s:?}");
            (e, s)
        }
    }
}

/// An agent configuration as found in /etc/consul.d, with the agent's DNS off: every key
/// consul-dns takes, among keys it ignores.
const AGENT_HCL: &str = r#"
# Consul agent configuration
datacenter = "DC1"
data_dir = "/opt/consul"
server = true
bootstrap_expect = 3
encrypt = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="
retry_join = ["10.0.0.1", "10.0.0.2"]
ui_config { enabled = true }
acl { enabled = true tokens { default = "00000000-0000-0000-0000-000000000000" } }
telemetry { prometheus_retention_time = "24h" }
service { name = "web" port = 80 check { http = "http://localhost/health" interval = "10s" } }

domain = "Mesh"
alt_domain = "mesh.example."
recursors = ["1.1.1.1", "[2001:db8::1]:5353"]
translate_wan_addrs = true
client_addr = "0.0.0.0"
ports {
  dns = -1
  http = 8501
  grpc = 8502
}
"dns_config" {
  "allow_stale" = false
  max_stale = "1h"
  node_ttl = "10s"
  service_ttl {
    "*" = "5s"
    "db*" = "10s"
    "Web" = "30s"
  }
  soa { min_ttl = 30 refresh = 100 }
  udp_answer_limit = 5
  a_record_limit = 2
  only_passing = true
  enable_truncate = true
  recursor_strategy = "random"
  recursor_timeout = "3s"
  enable_additional_node_meta_txt = false
  use_cache = true
  cache_max_age = "10s"
}
"#;

/// The same in JSON.
const AGENT_JSON: &str = r#"{
  "datacenter": "DC1",
  "data_dir": "/opt/consul",
  "server": true,
  "ui_config": { "enabled": true },
  "acl": { "enabled": true, "tokens": { "default": "00000000-0000-0000-0000-000000000000" } },
  "services": [{ "name": "web", "port": 80 }],
  "domain": "Mesh",
  "alt_domain": "mesh.example.",
  "recursors": ["1.1.1.1", "[2001:db8::1]:5353"],
  "translate_wan_addrs": true,
  "client_addr": "0.0.0.0",
  "ports": { "dns": -1, "http": 8501, "grpc": 8502 },
  "dns_config": {
    "allow_stale": false,
    "max_stale": "1h",
    "node_ttl": "10s",
    "service_ttl": { "*": "5s", "db*": "10s", "Web": "30s" },
    "soa": { "min_ttl": 30, "refresh": 100 },
    "udp_answer_limit": 5,
    "a_record_limit": 2,
    "only_passing": true,
    "enable_truncate": true,
    "recursor_strategy": "random",
    "recursor_timeout": "3s",
    "enable_additional_node_meta_txt": false,
    "use_cache": true,
    "cache_max_age": "10s",
    "prefer_namespace": null
  }
}"#;

#[test]
fn agent_configuration_in_hcl_and_json_gives_the_same_settings() {
    for (name, text) in [
        ("consul.hcl", AGENT_HCL),
        ("consul.json", AGENT_JSON),
        // HCL 1 reads JSON too.
        ("json-in.hcl", AGENT_JSON),
    ] {
        let c = agent_ok(&[], "", &[(name, text)]);
        assert_eq!(c.domain, "mesh.", "{name}");
        assert_eq!(c.alt_domain.as_deref(), Some("mesh.example."), "{name}");
        assert_eq!(c.datacenter.as_deref(), Some("dc1"), "{name}");
        assert_eq!(
            c.recursors,
            vec![addr("1.1.1.1:53"), addr("[2001:db8::1]:5353")],
            "{name}"
        );
        assert!(c.translate_wan_addrs, "{name}");
        assert_eq!(
            c.listen,
            vec![addr("0.0.0.0:8600")],
            "{name}: the agent's DNS is off: consul-dns listens where it did, on port 8600"
        );
        assert_eq!(
            c.consul_addr, "http://127.0.0.1:8501",
            "{name}: the agent's HTTP API, client_addr 0.0.0.0 reached on loopback"
        );
        let d = &c.dns;
        assert!(!d.allow_stale, "{name}");
        assert_eq!(d.max_stale, Duration::from_secs(3600), "{name}");
        assert_eq!(d.node_ttl, 10, "{name}");
        assert_eq!(d.service_ttl.ttl_for("api"), 5, "{name}");
        assert_eq!(d.service_ttl.ttl_for("dbx"), 10, "{name}");
        assert_eq!(
            d.service_ttl.ttl_for("web"),
            30,
            "{name}: keys are lower-cased"
        );
        assert_eq!(
            d.soa,
            SoaConfig {
                refresh: 100,
                retry: 600,
                expire: 86400,
                min_ttl: 30
            },
            "{name}"
        );
        assert_eq!(d.udp_answer_limit, 5, "{name}");
        assert_eq!(d.a_record_limit, 2, "{name}");
        assert!(d.only_passing && d.enable_truncate && d.use_cache, "{name}");
        assert_eq!(d.recursor_strategy, RecursorStrategy::Random, "{name}");
        assert_eq!(d.recursor_timeout, Duration::from_secs(3), "{name}");
        assert!(!d.enable_additional_node_meta_txt, "{name}");
        assert_eq!(d.cache_max_age, Duration::from_secs(10), "{name}");
        assert!(!d.prefer_namespace, "{name}: null is not set");
        assert_eq!(c.consul_config_files.len(), 1, "{name}");
        assert!(
            c.consul_config_warnings.is_empty(),
            "{name}: the agent's other keys are ignored silently: {:?}",
            c.consul_config_warnings
        );
        // Everything else at its default.
        assert_eq!(
            Config {
                domain: String::new(),
                alt_domain: None,
                datacenter: None,
                recursors: Vec::new(),
                translate_wan_addrs: false,
                listen: Vec::new(),
                consul_addr: String::new(),
                dns: DnsConfig::default(),
                consul_config_files: Vec::new(),
                ..c
            },
            Config {
                domain: String::new(),
                listen: Vec::new(),
                consul_addr: String::new(),
                ..Config::default()
            },
            "{name}"
        );
    }
}

#[test]
fn agent_directory_files_merge_in_lexical_order_as_consul_merges_them() {
    let files = [
        (
            "10-dns.json",
            r#"{ "domain": "second", "recursors": ["8.8.8.8", "1.1.1.1"],
                 "dns_config": { "only_passing": true, "service_ttl": { "web": "3s" },
                                 "soa": { "min_ttl": 20 } } }"#,
        ),
        (
            "00-base.hcl",
            "domain = \"first\"\ndatacenter = \"dc7\"\nrecursors = [\"1.1.1.1\"]\n\
             ports { dns = -1 }\n\
             dns_config {\n  node_ttl = \"1s\"\n  service_ttl { \"*\" = \"5s\" }\n  \
             soa { min_ttl = 10 retry = 7 }\n}\n",
        ),
        ("20-empty-map.hcl", "dns_config { service_ttl = {} }\n"),
        ("README.md", "not read: not .hcl or .json"),
        ("consul.env", "CONSUL_HTTP_ADDR=x"),
        ("sub.hcl/", ""),
    ];
    let (result, dir) = load_agent(&[], "", &files);
    let c = match result {
        Ok(c) => c,
        Err(e) => panic!("should load: {e}"),
    };
    assert_eq!(
        c.consul_config_files,
        [
            dir.0.join("00-base.hcl"),
            dir.0.join("10-dns.json"),
            dir.0.join("20-empty-map.hcl")
        ],
        "lexical order; other files and directories skipped"
    );
    assert_eq!(c.domain, "second.", "a later value replaces");
    assert_eq!(c.datacenter.as_deref(), Some("dc7"), "an earlier one stays");
    assert_eq!(
        c.recursors,
        vec![addr("1.1.1.1:53"), addr("8.8.8.8:53")],
        "recursors are appended across files, duplicates dropped"
    );
    assert_eq!(c.dns.node_ttl, 1);
    assert!(c.dns.only_passing);
    assert_eq!(
        (
            c.dns.service_ttl.ttl_for("web"),
            c.dns.service_ttl.ttl_for("api")
        ),
        (3, 0),
        "a later service_ttl replaces the whole table; an empty one replaces nothing"
    );
    assert_eq!(
        (c.dns.soa.min_ttl, c.dns.soa.retry),
        (20, 600),
        "a later soa replaces the whole soa"
    );

    // Several paths are read in the order given.
    let a = AgentDir::new(&[("a.hcl", "domain = \"from-a\"\nrecursors = [\"9.9.9.9\"]\n")]);
    let b = AgentDir::new(&[(
        "b.json",
        r#"{"domain": "from-b", "recursors": ["1.1.1.1"]}"#,
    )]);
    let agent = AgentConfig::read(&[b.0.join("b.json"), a.0.clone()]).expect("reads");
    assert_eq!(agent.settings.domain.as_deref(), Some("from-a."));
    assert_eq!(
        agent.settings.recursors,
        Some(vec![addr("1.1.1.1:53"), addr("9.9.9.9:53")])
    );
}

#[test]
fn agent_configuration_is_under_the_file_and_the_flags() {
    let files = [(
        "consul.hcl",
        "domain = \"agent\"\nrecursors = [\"1.1.1.1\"]\nports { dns = -1 }\n\
         client_addr = \"127.0.0.2\"\ntranslate_wan_addrs = true\n\
         dns_config {\n  node_ttl = \"10s\"\n  service_ttl { \"*\" = \"5s\" }\n  \
         soa { min_ttl = 30 expire = 5 }\n  only_passing = true\n}\n",
    )];
    // The agent's values alone.
    let c = agent_ok(&[], "", &files);
    assert_eq!(
        (c.domain.as_str(), c.dns.node_ttl, c.dns.soa.min_ttl),
        ("agent.", 10, 30)
    );
    assert_eq!(c.listen, vec![addr("127.0.0.2:8600")]);
    assert_eq!(c.consul_addr, "http://127.0.0.2:8500");

    // The TOML file over them, key by key (the SOA field by field).
    let toml = "domain = \"toml\"\nrecursors = [\"8.8.8.8\"]\nlisten = [\"127.0.0.1:5353\"]\n\
                consul_addr = \"http://consul.internal:8500\"\ntranslate_wan_addrs = false\n\
                [dns_config]\nnode_ttl = \"20s\"\n[dns_config.service_ttl]\nweb = \"1s\"\n\
                [dns_config.soa]\nmin_ttl = 40\n";
    let c = agent_ok(&[], toml, &files);
    assert_eq!(c.domain, "toml.");
    assert_eq!(
        c.recursors,
        vec![addr("8.8.8.8:53")],
        "the file's list replaces"
    );
    assert_eq!(c.listen, vec![addr("127.0.0.1:5353")]);
    assert_eq!(c.consul_addr, "http://consul.internal:8500");
    assert!(!c.translate_wan_addrs);
    assert_eq!(c.dns.node_ttl, 20);
    assert_eq!(
        (
            c.dns.service_ttl.ttl_for("web"),
            c.dns.service_ttl.ttl_for("api")
        ),
        (1, 0),
        "the file's table replaces the agent's"
    );
    assert_eq!((c.dns.soa.min_ttl, c.dns.soa.expire), (40, 5));
    assert!(
        c.dns.only_passing,
        "what the file does not set stays the agent's"
    );
    // An empty list in the file turns the agent's recursors off.
    assert!(agent_ok(&[], "recursors = []\n", &files)
        .recursors
        .is_empty());

    // The flags over both.
    let c = agent_ok(
        &[
            "--domain",
            "flag",
            "--recursor",
            "9.9.9.9",
            "--listen",
            "127.0.0.1:0",
            "--consul-addr",
            "http://flag:8500",
        ],
        toml,
        &files,
    );
    assert_eq!(c.domain, "flag.");
    assert_eq!(c.recursors, vec![addr("9.9.9.9:53")]);
    assert_eq!(c.listen, vec![addr("127.0.0.1:0")]);
    assert_eq!(c.consul_addr, "http://flag:8500");
    // With --dev the emulator answers: the agent's HTTP API is not looked for.
    let c = agent_ok(&["--dev"], "", &[("c.hcl", "ports { dns = -1 http = -1 }")]);
    assert_eq!(c.consul_addr, "http://127.0.0.1:8500");
}

#[test]
fn where_consul_dns_listens_and_reads_beside_the_agent() {
    // (agent configuration, flags, listen addresses, Consul address)
    let cases: &[(&str, &[&str], &[&str], &str)] = &[
        // The agent's DNS off: consul-dns takes its address, on port 8600.
        (
            "ports { dns = -1 }",
            &[],
            &["127.0.0.1:8600"],
            "http://127.0.0.1:8500",
        ),
        (
            "ports { dns = 0 }",
            &[],
            &["127.0.0.1:8600"],
            "http://127.0.0.1:8500",
        ),
        (
            "client_addr = \"127.0.0.1 ::1\"\naddresses { dns = \"10.0.0.5 10.0.0.6\" }\n\
             ports { dns = -1 }",
            &[],
            &["10.0.0.5:8600", "10.0.0.6:8600"],
            "http://127.0.0.1:8500",
        ),
        (
            "client_addr = \"::\"\nports { dns = -1 }",
            &[],
            &["[::]:8600"],
            "http://[::1]:8500",
        ),
        (
            "client_addr = \"10.1.2.3 127.0.0.1\"\nports = { dns = -1 }",
            &[],
            &["10.1.2.3:8600", "127.0.0.1:8600"],
            "http://127.0.0.1:8500",
        ),
        // The agent's DNS on another port: consul-dns keeps its own default.
        (
            "ports { dns = 8653 }",
            &[],
            &["127.0.0.1:8600"],
            "http://127.0.0.1:8500",
        ),
        // The agent's DNS on, consul-dns given another address.
        (
            "",
            &["--listen", "127.0.0.1:5353"],
            &["127.0.0.1:5353"],
            "http://127.0.0.1:8500",
        ),
        (
            "client_addr = \"10.0.0.9\"",
            &[],
            &["127.0.0.1:8600"],
            "http://10.0.0.9:8500",
        ),
        // The HTTP API: its own address, a unix socket skipped; HTTPS when HTTP is off.
        (
            "ports { dns = -1 }\naddresses { http = \"unix:///run/consul.sock 10.1.2.3\" }",
            &[],
            &["127.0.0.1:8600"],
            "http://10.1.2.3:8500",
        ),
        (
            "ports {\n  dns = -1\n  http = -1\n  https = 8501\n}",
            &[],
            &["127.0.0.1:8600"],
            "https://127.0.0.1:8501",
        ),
        // A Consul address given wins, even when the agent has no HTTP API.
        (
            "ports { dns = -1 http = -1 }",
            &["--consul-addr", "consul:8500"],
            &["127.0.0.1:8600"],
            "http://consul:8500",
        ),
    ];
    for (text, args, listen, consul) in cases {
        let c = agent_ok(args, "", &[("consul.hcl", text)]);
        let want: Vec<SocketAddr> = listen.iter().map(|a| addr(a)).collect();
        assert_eq!(c.listen, want, "{text:?} {args:?}");
        assert_eq!(c.consul_addr, *consul, "{text:?} {args:?}");
    }
}

#[test]
fn the_agents_own_dns_address_is_refused_with_what_to_do() {
    // No ports.dns: the agent serves DNS on 127.0.0.1:8600, consul-dns's default.
    let (e, s) = agent_err(&[], "", &[("consul.hcl", "datacenter = \"dc1\"\n")]);
    assert_eq!(invalid_key(&e), "ports.dns");
    assert_eq!(
        s,
        "ports.dns 8600: the Consul agent serves DNS on 127.0.0.1:8600 itself (Consul's \
         default port: its configuration sets no ports.dns), where consul-dns would listen \
         (127.0.0.1:8600): turn the agent's DNS off (ports { dns = -1 } in its \
         configuration, then restart it) and consul-dns takes its place, or give consul-dns \
         another address (--listen)"
    );
    // Set in a file: named with its line.
    let (_, s) = agent_err(
        &["--listen", "0.0.0.0:8600"],
        "",
        &[("dns.hcl", "\nports {\n  dns = 8600\n}\n")],
    );
    assert!(
        s.starts_with("config DIR/dns.hcl:3: ports.dns 8600: the Consul agent serves DNS on 127.0.0.1:8600 itself, where consul-dns would listen (0.0.0.0:8600)"),
        "{s}"
    );
    let (e, _) = agent_err(
        &[],
        "listen = [\"10.0.0.1:53\"]\n",
        &[(
            "c.json",
            r#"{"client_addr": "0.0.0.0", "ports": {"dns": 53}}"#,
        )],
    );
    assert_eq!(invalid_key(&e), "ports.dns");
}

#[test]
fn agent_addresses_that_cannot_be_used_are_errors_naming_them() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "client_addr = \"{{ GetPrivateIP }}\"\nports { dns = -1 }\naddresses { http = \"127.0.0.1\" }",
            "client_addr",
            "config DIR/c.hcl:1: client_addr \"{{ GetPrivateIP }}\": go-sockaddr templates are not evaluated by consul-dns: give --listen",
        ),
        (
            "ports { dns = -1 }\naddresses { dns = \"unix:///x.sock\" }",
            "addresses.dns",
            "a unix socket (unix:///x.sock) cannot serve DNS: give --listen",
        ),
        (
            "ports { dns = -1 }\naddresses { http = \"unix:///run/consul.sock\" }",
            "addresses.http",
            "no TCP address (unix sockets are not supported): give --consul-addr",
        ),
        (
            "ports { dns = -1 }\nclient_addr = \"localhost\"\naddresses { http = \"127.0.0.1\" }",
            "client_addr",
            "\"localhost\" is not an IP address: give --listen",
        ),
        (
            "ports {\n  dns = -1\n  http = -1\n}",
            "ports.http",
            "config DIR/c.hcl:3: ports.http -1: the Consul agent serves no HTTP API",
        ),
    ];
    for (text, key, want) in cases {
        let (e, s) = agent_err(&[], "", &[("c.hcl", text)]);
        assert_eq!(invalid_key(&e), *key, "{text:?}: {s}");
        assert!(s.contains(want), "{text:?}: {s}");
    }
}

#[test]
fn bad_agent_values_are_errors_naming_file_line_and_key() {
    // (file name, text, key or None for a syntax error, start of the message)
    let cases: &[(&str, &str, Option<&str>, &str)] = &[
        (
            "c.hcl",
            "datacenter = \"dc1\"\ndns_config {\n  node_ttl = \"10x\"\n}",
            Some("dns_config.node_ttl"),
            "config DIR/c.hcl:3: dns_config.node_ttl \"10x\": unknown unit",
        ),
        (
            "c.hcl",
            "ports { dns = \"8600\" }",
            Some("ports.dns"),
            "config DIR/c.hcl:1: ports.dns \"8600\": expected an integer (a port; -1 turns it off), found string \"8600\"",
        ),
        ("c.hcl", "ports { dns = 70000 }", Some("ports.dns"), "config DIR/c.hcl:1: ports.dns 70000: not a port"),
        (
            "c.hcl",
            "recursors = [\n  \"1.1.1.1\",\n  \"dns.google\"\n]",
            Some("recursors[1]"),
            "config DIR/c.hcl:1: recursors[1] \"dns.google\": expected an IP address",
        ),
        ("c.hcl", "domain = 5", Some("domain"), "config DIR/c.hcl:1: domain 5: expected a string"),
        ("c.hcl", "domain = \"a b\"", Some("domain"), "config DIR/c.hcl:1: domain \"a b\": not a valid DNS name"),
        ("c.hcl", "dns_config = \"x\"", Some("dns_config"), "config DIR/c.hcl:1: dns_config \"x\": expected a block of options"),
        (
            "c.hcl",
            "dns_config {\n  service_ttl { \"*\" = 5.5 }\n}",
            Some("dns_config.service_ttl.\"*\""),
            "config DIR/c.hcl:2: dns_config.service_ttl.\"*\" 5.5: expected a duration",
        ),
        ("c.hcl", "dns_config { only_passing = \"yes\" }", Some("dns_config.only_passing"), "expected true or false"),
        ("c.json", r#"{"dns_config": {"udp_answer_limit": -1}}"#, Some("dns_config.udp_answer_limit"), "config DIR/c.json: dns_config.udp_answer_limit -1: must be between 0"),
        ("c.json", r#"{"translate_wan_addrs": "true"}"#, Some("translate_wan_addrs"), "config DIR/c.json: translate_wan_addrs \"true\": expected true or false"),
        // Syntax errors: the parser's line.
        ("c.hcl", "datacenter = \"dc1\"\nports {\n  dns = \n}", None, "config DIR/c.hcl:4: HCL: expected a value"),
        ("c.hcl", "node_ttl = 10s", None, "config DIR/c.hcl:1: HCL: `10s` is not a number: a string is quoted"),
        ("c.json", "{\n  \"domain\": \"x\",\n}", None, "config DIR/c.json:3: JSON: trailing comma"),
        ("c.json", "[1]", None, "config DIR/c.json: JSON: expected an object of agent options"),
    ];
    for (name, text, key, want) in cases {
        let (e, s) = agent_err(&[], "", &[(name, text)]);
        match key {
            Some(key) => assert_eq!(invalid_key(&e), *key, "{text:?}: {s}"),
            None => assert!(matches!(e, ConfigError::Parse { .. }), "{text:?}: {e:?}"),
        }
        assert!(
            s.starts_with(want) || (!want.starts_with("config") && s.contains(want)),
            "{text:?}:\n{s}\nwant {want}"
        );
    }
}

#[test]
fn unknown_dns_config_keys_are_reported_once_not_errors() {
    let c = agent_ok(
        &["--listen", "127.0.0.1:0"],
        "",
        &[(
            "dns.hcl",
            "dns_config {\n  node_ttl = \"1s\"\n  nod_ttl = \"2s\"\n  future_option = true\n}\n\
             some_future_agent_key = { a = 1 }\n",
        )],
    );
    assert_eq!(c.dns.node_ttl, 1);
    let dir = c.consul_config_files[0]
        .parent()
        .unwrap()
        .display()
        .to_string();
    let warnings: Vec<String> = c
        .consul_config_warnings
        .iter()
        .map(|w| w.replace(&dir, "DIR"))
        .collect();
    assert_eq!(
        warnings,
        [
            "consul config DIR/dns.hcl:4: dns_config.future_option is not a dns_config option consul-dns knows: ignored",
            "consul config DIR/dns.hcl:3: dns_config.nod_ttl is not a dns_config option consul-dns knows: ignored",
        ],
        "the agent's other keys say nothing"
    );
}

#[test]
fn agent_paths_are_checked() {
    let dir = AgentDir::new(&[("consul-dns.toml", "domain = \"x\"\n"), ("empty/", "")]);
    match AgentConfig::read(&[dir.0.join("consul-dns.toml")]) {
        Ok(a) => panic!("should fail, got {a:?}"),
        Err(e) => {
            let s = e.to_string();
            assert!(
                s.ends_with("consul-dns.toml: a Consul agent configuration file ends in .hcl or .json, as Consul requires (consul-dns's own TOML goes to --config)"),
                "{s}"
            );
        }
    }
    match AgentConfig::read(&[dir.0.join("missing")]) {
        Ok(a) => panic!("should fail, got {a:?}"),
        Err(e) => assert!(matches!(e, ConfigError::Io { .. }), "{e:?}"),
    }
    let agent = AgentConfig::read(&[dir.0.join("empty")]).expect("an empty directory reads");
    assert!(agent.files.is_empty());
    assert_eq!(agent.warnings.len(), 1);
    assert!(agent.warnings[0].ends_with("empty: no .hcl or .json file in this directory"));
    // No file read: nothing taken, nothing derived.
    let c = Config::merge(cli(&[]), Layer::default(), agent).expect("loads");
    assert_eq!(c.listen, Config::default().listen);
}

#[test]
fn the_agents_configuration_given_to_config_says_to_use_consul_config() {
    let dir = AgentDir::new(&[
        ("consul.hcl", "ports { dns = -1 }\n"),
        ("consul.json", "{}"),
        ("agent.conf", "{\n  \"domain\": \"x\"\n}\n"),
        (
            "agent2.conf",
            "datacenter = \"dc1\"\nports {\n  dns = -1\n}\n",
        ),
    ]);
    for name in ["consul.hcl", "consul.json", "agent.conf", "agent2.conf", ""] {
        let cli = Cli {
            config: Some(dir.0.join(name)),
            ..Cli::default()
        };
        match Config::load(cli) {
            Ok(c) => panic!("{name}: should fail, got {c:?}"),
            Err(e) => {
                let s = e.to_string();
                assert!(
                    s.ends_with(
                        ": --config takes consul-dns's own settings, in TOML (see \
                         consul-dns.example.toml); for the Consul agent's configuration \
                         (.hcl, .json, /etc/consul.d) use --consul-config"
                    ),
                    "{name}: {s}"
                );
            }
        }
    }
    // A TOML mistake stays a TOML error.
    let (_, s) = load_err(&[], "domain = \"x\"\ndomain = \"y\"\n");
    assert!(!s.contains("--consul-config"), "{s}");
}

#[test]
fn consul_config_from_the_file_and_the_flag() {
    let a = AgentDir::new(&[("a.hcl", "domain = \"from-file-key\"\nports { dns = -1 }\n")]);
    let b = AgentDir::new(&[("b.hcl", "domain = \"from-flag\"\nports { dns = -1 }\n")]);
    let toml = AgentDir::new(&[(
        "consul-dns.toml",
        &format!("consul_config = [{:?}]\n", a.0.display().to_string()),
    )]);
    let load = |args: &[&str]| {
        let mut argv = vec!["--config", &toml.file("consul-dns.toml")]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        argv.extend(args.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        match Config::load(cli(&argv)) {
            Ok(c) => c,
            Err(e) => panic!("should load: {e}"),
        }
    };
    assert_eq!(load(&[]).domain, "from-file-key.");
    let b_dir = b.0.display().to_string();
    assert_eq!(load(&["--consul-config", &b_dir]).domain, "from-flag.");
}

#[test]
fn errors_across_keys_name_where_the_value_at_fault_was_set() {
    let (_, s) = load_err(&[], "domain = \"x.\"\n\nalt_domain = \"X\"\n");
    assert_eq!(
        s,
        "config /etc/consul-dns.toml:3: alt_domain \"x.\": must differ from the domain"
    );
    let (_, s) = load_err(&["--alt-domain", "x"], "domain = \"x\"\n");
    assert_eq!(s, "--alt-domain \"x.\": must differ from the domain");
    let (_, s) = agent_err(
        &["--domain", "x"],
        "",
        &[(
            "a.hcl",
            "datacenter = \"dc1\"\nalt_domain = \"x\"\nports { dns = -1 }\n",
        )],
    );
    assert_eq!(
        s,
        "config DIR/a.hcl:2: alt_domain \"x.\": must differ from the domain"
    );

    let (_, s) = load_err(&[], "max_watches = 20\n\nmax_services = 5\n");
    assert!(
        s.starts_with("config /etc/consul-dns.toml:3: max_services 5: must be at least"),
        "{s}"
    );
    let (_, s) = load_err(&[], "\nnotify = [\"10.0.0.53\"]\n");
    assert!(
        s.starts_with("config /etc/consul-dns.toml:2: notify: needs allow_transfer"),
        "{s}"
    );
    let (_, s) = load_err(&["--notify", "10.0.0.53"], "");
    assert!(s.starts_with("--notify: needs allow_transfer"), "{s}");
    // The flag that set it, not the file's key it replaced.
    let (_, s) = load_err(
        &["--listen-tls", "127.0.0.1:853"],
        "listen_tls = [\"127.0.0.1:5353\"]\ntls_cert_file = \"/c.pem\"\n",
    );
    assert!(
        s.starts_with("--listen-tls: DNS over TLS needs tls_key_file"),
        "{s}"
    );
}
