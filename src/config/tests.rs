use std::path::Path;

use clap::CommandFactory;

use super::file::FileConfig;
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
    let file = FileConfig::parse(Path::new(PATH), text)?;
    Config::merge(cli(args), file)
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
