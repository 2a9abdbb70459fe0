//! Configuration: the command line (clap), the TOML config file and the Consul agent's own
//! configuration, merged into one validated [`Config`].
//!
//! Precedence, per setting: command-line flag (or its environment variable), then the
//! config file (`--config`), then the Consul agent's configuration (`--consul-config`), then
//! the built-in default. Defaults are Consul's own
//! (`agent/config/default.go`); option names in the file are Consul's `dns_config` names,
//! accepted at the top level or inside a `[dns_config]` table. See
//! `consul-dns.example.toml` for every key.

mod agent;
mod duration;
mod file;
mod hcl;
mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use ipnet::IpNet;
use struct_patch::{Merge, Patch};

use agent::AgentConfig;
use file::FileConfig;

pub use duration::parse_go_duration;
pub use values::{
    normalize_consul_addr, normalize_datacenter, normalize_domain, normalize_tls_server_name,
    parse_bool, parse_listen_addr, parse_network, parse_recursor, redact_userinfo,
};

/// Default DNS listen address (Consul's `client_addr` + `ports.dns`).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8600));
/// Default cap on live per-service watches.
///
/// Each blocking query holds an HTTP/1.1 connection to the agent, and a Consul agent
/// accepts at most `limits.http_max_conns_per_client` (200 by default) connections from
/// one client address: 150 leaves room for the list watches, other datacenters and other
/// clients on the same host. Raise both together.
pub const DEFAULT_MAX_WATCHES: usize = 150;
/// Default `workers`: the CPUs this process may use (cgroup quota and affinity honoured),
/// one if that cannot be told.
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(MAX_WORKERS)
}
/// The most `workers` (a thread and a socket each, per listen address).
pub const MAX_WORKERS: usize = 1024;
/// Default `max_services`, as a multiple of `max_watches`.
pub const DEFAULT_SERVICES_PER_WATCH: usize = 10;
/// Smallest accepted `blocking_wait`.
pub const MIN_BLOCKING_WAIT: Duration = Duration::from_secs(1);
/// Largest accepted `blocking_wait` (Consul caps a blocking query's wait at 10 minutes).
pub const MAX_BLOCKING_WAIT: Duration = Duration::from_secs(600);
/// The static zones directory served when neither `--zones` nor `zones` is set, if it
/// exists (relative to the working directory).
pub const DEFAULT_ZONES_DIR: &str = "zones";
/// Default `allow_recursion`: loopback only.
pub fn default_allow_recursion() -> Vec<IpNet> {
    vec![
        IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)), 8),
        IpNet::new_assert(IpAddr::V6(Ipv6Addr::LOCALHOST), 128),
    ]
}
/// Default cap on open TCP connections. Each is a file descriptor: 500 leaves room for the
/// Consul connections (`max_watches`) within the common soft limit of 1024 descriptors.
pub const DEFAULT_TCP_MAX_CONNECTIONS: usize = 500;
/// Default `tcp_max_connections_per_source`: a quarter of `tcp_max_connections` (at least
/// 1), so one client address (an IPv6 /64) never holds more than a quarter of the slots
/// and at least four sources are needed to fill them, while a resolver that gathers many
/// clients' queries behind one address (a node-local cache, a NAT) still gets plenty of
/// connections. Its idle connections give way to new ones past it in any case.
pub const fn default_tcp_max_connections_per_source(max_connections: usize) -> usize {
    let quarter = max_connections / 4;
    if quarter == 0 {
        1
    } else {
        quarter
    }
}
/// Largest accepted `rrl_window` (BIND's `window` range is 1..3600 s).
pub const MAX_RRL_WINDOW: Duration = Duration::from_secs(3600);
/// Largest accepted `rrl_slip` (BIND's range).
pub const MAX_RRL_SLIP: u32 = 10;
/// Consul's hard cap on `udp_answer_limit` (`maxUDPAnswerLimit` in `agent/dns.go`).
pub const MAX_UDP_ANSWER_LIMIT: u32 = 8;

const ABOUT: &str = "Authoritative DNS server for the Consul domain, backed by the Consul HTTP API";

const LONG_ABOUT: &str = "\
consul-dns is a standalone, authoritative DNS server for the Consul domain (consul. by \
default): a drop-in for the DNS interface of a Consul agent. It answers service, tag, \
RFC 2782 SRV, node and .addr lookups from an in-memory view of the catalog, kept fresh \
by blocking queries to Consul's HTTP API, and keeps answering from the last good data \
when Consul is unreachable. It also serves static zone files (--zones) and forwards \
other names to upstream resolvers (--recursor) for clients in --allow-recursion \
networks; other names are refused. SIGHUP reloads the zone files (and the DNS-over-TLS \
certificate).

Settings come from command-line flags, environment variables (CONSUL_HTTP_ADDR, \
CONSUL_HTTP_TOKEN, CONSUL_CACERT and Consul's other TLS variables), a TOML config file (--config) whose keys are Consul's dns_config \
option names, the Consul agent's own configuration (--consul-config /etc/consul.d), and \
built-in defaults equal to Consul's. A flag (or its environment variable) overrides the \
config file, which overrides the agent's configuration, which overrides the default.";

/// Command line.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "consul-dns", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Cli {
    /// Consul HTTP API address.
    #[arg(
        long,
        env = "CONSUL_HTTP_ADDR",
        value_name = "URL",
        help = "Consul HTTP API address: http(s)://host:port, or host:port for plain http; \
                unix:// sockets are not supported [default: http://127.0.0.1:8500]"
    )]
    pub consul_addr: Option<String>,

    /// ACL token for Consul API requests.
    #[arg(
        long,
        env = "CONSUL_HTTP_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        help = "ACL token sent with every Consul API request; it needs node:read, \
                service:read and query:read (e.g. the builtin/dns templated policy) \
                [default: none, i.e. the agent's default token]"
    )]
    pub token: Option<Secret>,

    /// File holding the ACL token.
    #[arg(
        long,
        env = "CONSUL_HTTP_TOKEN_FILE",
        value_name = "FILE",
        help = "File holding the ACL token (its first line); --token wins over it \
                [default: none]"
    )]
    pub token_file: Option<PathBuf>,

    /// DNS listen addresses.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        value_parser = values::parse_listen_arg,
        help = "Address to serve DNS on, over both UDP and TCP; repeat for several; \
                IPv6 as [::1]:8600; port 0 picks a free port [default: 127.0.0.1:8600]"
    )]
    pub listen: Vec<SocketAddr>,

    /// DNS-over-TLS listen addresses.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        value_parser = values::parse_listen_arg,
        help = "Address to serve DNS over TLS on (RFC 7858; port 853 is DoT's), with \
                --tls-cert-file and --tls-key-file; repeat for several [default: none]"
    )]
    pub listen_tls: Vec<SocketAddr>,

    /// Certificate of DNS over TLS.
    #[arg(
        long,
        value_parser = values::parse_path_arg,
        value_name = "FILE",
        help = "PEM file of the certificate chain (leaf first) served on --listen-tls; read \
                again on SIGHUP [default: none]"
    )]
    pub tls_cert_file: Option<PathBuf>,

    /// Private key of DNS over TLS.
    #[arg(
        long,
        value_parser = values::parse_path_arg,
        value_name = "FILE",
        help = "PEM file of the private key of --tls-cert-file (PKCS#8, PKCS#1 or SEC1); \
                read again on SIGHUP [default: none]"
    )]
    pub tls_key_file: Option<PathBuf>,

    /// Consul domain.
    #[arg(
        long,
        value_name = "DOMAIN",
        help = "Domain to answer for (Consul's domain) [default: consul.]"
    )]
    pub domain: Option<String>,

    /// Alternative domain.
    #[arg(
        long,
        value_name = "DOMAIN",
        help = "Second domain answered exactly like --domain (Consul's alt_domain); answers \
                use the domain the question used [default: none]"
    )]
    pub alt_domain: Option<String>,

    /// Local datacenter.
    #[arg(
        long,
        value_name = "DC",
        help = "Datacenter answered for names without a datacenter label \
                [default: learned from the Consul agent]"
    )]
    pub datacenter: Option<String>,

    /// Static zones directory.
    #[arg(
        long,
        value_name = "DIR",
        value_parser = values::parse_zones_arg,
        help = "Directory of RFC 1035 zone files named <origin>.zone, served \
                authoritatively beside the Consul domain and reloaded on SIGHUP; \"\" serves \
                none [default: ./zones if it exists]"
    )]
    pub zones: Option<PathBuf>,

    /// Upstream resolvers.
    #[arg(
        long = "recursor",
        value_name = "ADDR",
        value_parser = values::parse_recursor_arg,
        help = "Upstream resolver for names outside the Consul domain and the static zones \
                (Consul's -recursor); repeat for several; port 53 unless given, e.g. \
                192.0.2.53 or [2001:db8::53]:5353; overrides `recursors` in the config file \
                [default: none: such names are refused]"
    )]
    pub recursors: Vec<SocketAddr>,

    /// Networks allowed to recurse.
    #[arg(
        long,
        value_name = "CIDR",
        value_parser = values::parse_network_arg,
        help = "Network whose clients may have names forwarded to the recursors, e.g. \
                10.2.0.0/16; repeat for several; others get REFUSED for such names \
                [default: 127.0.0.0/8 and ::1/128]"
    )]
    pub allow_recursion: Vec<IpNet>,

    /// Networks allowed to transfer the Consul zone.
    #[arg(
        long,
        value_name = "CIDR",
        value_parser = values::parse_network_arg,
        help = "Network whose clients may transfer the Consul domain's zone (AXFR and IXFR \
                over TCP), e.g. the secondaries' 10.0.0.0/8; repeat for several; overrides \
                `allow_transfer` in the config file; while set, every service is watched \
                [default: none: transfers are refused]"
    )]
    pub allow_transfer: Vec<IpNet>,

    /// Secondaries to notify of changes.
    #[arg(
        long,
        value_name = "ADDR",
        value_parser = values::parse_recursor_arg,
        help = "Secondary server to send a NOTIFY when the zone changes (port 53 unless \
                given), e.g. 10.0.0.53 or 10.0.0.53:5353; repeat for several; overrides \
                `notify` in the config file; needs --allow-transfer [default: none]"
    )]
    pub notify: Vec<SocketAddr>,

    /// Config file.
    #[arg(
        long,
        value_name = "FILE",
        help = "TOML config file; keys are Consul's dns_config option names (see \
                consul-dns.example.toml); flags override it [default: none]"
    )]
    pub config: Option<PathBuf>,

    /// The Consul agent's own configuration.
    #[arg(
        long,
        value_name = "PATH",
        help = "The Consul agent's own configuration, read as the agent reads it: an .hcl or \
                .json file, or a directory of them (e.g. /etc/consul.d), as for consul agent \
                -config-file/-config-dir; repeat for several. Its domain, alt_domain, \
                datacenter, recursors, translate_wan_addrs and dns_config are used; its \
                ports, addresses and client_addr give the Consul address (the agent's HTTP \
                API) and, once the agent's DNS is off (ports { dns = -1 }), the address \
                consul-dns listens on (the agent's, port 8600); other keys are ignored. \
                --config and flags override it; overrides `consul_config` in the config file \
                [default: none]"
    )]
    pub consul_config: Vec<PathBuf>,

    /// Development mode.
    #[arg(
        long,
        help = "Run an embedded Consul API emulator with demo data on --dev-http and serve \
                DNS from it (the Consul address is then http://<dev-http>) [default: off]"
    )]
    pub dev: bool,

    /// Address of the dev emulator.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        value_parser = values::parse_listen_arg,
        help = "Address the --dev emulator's HTTP API listens on [default: 127.0.0.1:8500]"
    )]
    pub dev_http: Option<SocketAddr>,

    /// Overlay networks whose addresses are answered.
    #[arg(
        long = "internal-cidr",
        value_name = "CIDR",
        value_parser = values::parse_cidr,
        help = "Only answer addresses inside this network (e.g. the weave network \
                10.2.0.0/16), choosing among the service address, its tagged addresses and \
                the node address; repeatable; instances with no such address are left out \
                [default: any address]"
    )]
    pub internal_cidrs: Vec<ipnet::IpNet>,

    /// UDP sockets (each with its own thread) per listen address.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u16).range(1..=1024),
        help = "UDP sockets per --listen address, bound with SO_REUSEPORT, each answered by \
                a thread of its own [default: the CPUs this process may use]"
    )]
    pub workers: Option<u16>,

    /// Metrics and health endpoint.
    #[arg(
        long,
        value_name = "ADDR:PORT",
        value_parser = values::parse_listen_arg,
        help = "Serve Prometheus /metrics, /health/live and /health/ready over HTTP on this \
                address [default: off]"
    )]
    pub http_addr: Option<SocketAddr>,

    /// CA certificate file for TLS to Consul.
    #[arg(
        long,
        env = "CONSUL_CACERT",
        value_parser = values::parse_path_arg,
        value_name = "FILE",
        help = "PEM file of the CA certificate(s) that sign the Consul server's certificate \
                (with an https:// address); only these CAs (and --ca-path's) are then trusted, \
                not the built-in roots [default: the built-in web roots]"
    )]
    pub ca_file: Option<PathBuf>,

    /// Directory of CA certificates for TLS to Consul.
    #[arg(
        long,
        env = "CONSUL_CAPATH",
        value_parser = values::parse_path_arg,
        value_name = "DIR",
        help = "Directory of PEM files of CA certificates, each file holding at least one; \
                trusted like --ca-file [default: none]"
    )]
    pub ca_path: Option<PathBuf>,

    /// Client certificate for TLS to Consul.
    #[arg(
        long,
        env = "CONSUL_CLIENT_CERT",
        value_parser = values::parse_path_arg,
        value_name = "FILE",
        help = "PEM file of the client certificate (and its chain) presented to Consul \
                (verify_incoming); needs --client-key [default: none]"
    )]
    pub client_cert: Option<PathBuf>,

    /// Client key for TLS to Consul.
    #[arg(
        long,
        env = "CONSUL_CLIENT_KEY",
        value_parser = values::parse_path_arg,
        value_name = "FILE",
        help = "PEM file of the client certificate's private key; needs --client-cert \
                [default: none]"
    )]
    pub client_key: Option<PathBuf>,

    /// Server name the Consul certificate is verified against.
    #[arg(
        long,
        env = "CONSUL_TLS_SERVER_NAME",
        value_name = "NAME",
        help = "Name the Consul server's certificate is verified against, and sent as SNI, \
                instead of the address's host (e.g. server.dc1.consul) [default: the host]"
    )]
    pub tls_server_name: Option<String>,

    /// Verify the Consul server's certificate.
    #[arg(
        long,
        env = "CONSUL_HTTP_SSL_VERIFY",
        value_name = "BOOL",
        value_parser = values::parse_bool_arg,
        help = "Verify the Consul server's certificate (true/false, 1/0); false accepts any \
                certificate and logs a warning [default: true]"
    )]
    pub ssl_verify: Option<bool>,

    /// Log level.
    #[arg(
        long,
        value_name = "LEVEL",
        value_parser = ["off", "error", "warn", "info", "debug", "trace"],
        help = "Log level: off, error, warn, info, debug or trace [default: info]. RUST_LOG, \
                when set, wins (tracing's filter syntax, e.g. consul_dns=debug)"
    )]
    pub log_level: Option<String>,

    /// Log line format.
    #[arg(
        long,
        value_name = "FORMAT",
        value_parser = ["text", "json"],
        help = "Log lines on stderr as text, or as JSON objects, one a line (for journald, \
                Loki and other collectors) [default: text]"
    )]
    pub log_format: Option<String>,

    /// The query log.
    #[arg(
        long,
        help = "Log the queries answered (1 in --query-log-sample), one JSON line each on \
                stdout: client, name, type, rcode, answers, name form, stale, microseconds \
                [default: off]"
    )]
    pub query_log: bool,

    /// 1 query in N logged.
    #[arg(
        long,
        value_name = "N",
        value_parser = clap::value_parser!(u32).range(1..),
        help = "With --query-log, log 1 query in N, drawn at random [default: 1, every one]"
    )]
    pub query_log_sample: Option<u32>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// tracing's text lines.
    #[default]
    Text,
    /// A JSON object a line (tracing's JSON format).
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err("must be \"text\" or \"json\"".to_string()),
        }
    }
}

/// A secret string (the ACL token). `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Secret {
        Secret(secret.into())
    }

    /// The secret itself; use only where it is sent, never where it is logged.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Order in which recursors are tried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum RecursorStrategy {
    /// In configuration order.
    #[default]
    Sequential,
    /// In a random permutation per query.
    Random,
}

impl RecursorStrategy {
    /// The config-file spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RecursorStrategy::Sequential => "sequential",
            RecursorStrategy::Random => "random",
        }
    }
}

impl FromStr for RecursorStrategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sequential" | "" => Ok(RecursorStrategy::Sequential),
            "random" => Ok(RecursorStrategy::Random),
            _ => Err("invalid strategy (expected \"sequential\" or \"random\")".to_string()),
        }
    }
}

impl fmt::Display for RecursorStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// SOA record fields, in seconds (`dns_config.soa`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Patch)]
#[patch(attribute(derive(Debug, Default, Clone, Copy, PartialEq, Eq)))]
#[patch(attribute(doc = "SOA fields set by one layer of configuration."))]
pub struct SoaConfig {
    /// SOA refresh (default 3600).
    pub refresh: u32,
    /// SOA retry (default 600).
    pub retry: u32,
    /// SOA expire (default 86400).
    pub expire: u32,
    /// SOA minimum TTL, also the TTL of the SOA record itself (default 0).
    pub min_ttl: u32,
}

impl Default for SoaConfig {
    fn default() -> Self {
        SoaConfig {
            refresh: 3600,
            retry: 600,
            expire: 86400,
            min_ttl: 0,
        }
    }
}

/// Per-service TTLs (`dns_config.service_ttl`), as Consul's legacy `GetTTLForService`.
///
/// A key ending in `*` is a prefix (`"db*"`); `"*"` alone is the empty prefix and so
/// matches every service. Keys are lower-cased.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceTtl {
    exact: BTreeMap<String, u32>,
    /// `(prefix, ttl)`, longest prefix first.
    prefixes: Vec<(String, u32)>,
}

impl ServiceTtl {
    /// Builds the table from `(key, ttl_seconds)` pairs; keys are lower-cased (a later
    /// duplicate wins).
    pub fn new<K: AsRef<str>>(entries: impl IntoIterator<Item = (K, u32)>) -> ServiceTtl {
        let mut exact = BTreeMap::new();
        let mut prefixes = BTreeMap::new();
        for (key, ttl) in entries {
            let key = key.as_ref().to_lowercase();
            match key.strip_suffix('*') {
                Some(prefix) => prefixes.insert(prefix.to_string(), ttl),
                None => exact.insert(key, ttl),
            };
        }
        let mut prefixes: Vec<(String, u32)> = prefixes.into_iter().collect();
        prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        ServiceTtl { exact, prefixes }
    }

    /// The configured TTL for a service, if any key matches: the exact name, else the
    /// longest matching `prefix*`, else `*`.
    pub fn lookup(&self, service_lowercase: &str) -> Option<u32> {
        if let Some(&ttl) = self.exact.get(service_lowercase) {
            return Some(ttl);
        }
        self.prefixes
            .iter()
            .find(|(prefix, _)| service_lowercase.starts_with(prefix.as_str()))
            .map(|&(_, ttl)| ttl)
    }

    /// TTL in seconds for a service's records: [`lookup`](Self::lookup), else 0.
    /// (Consul's legacy server does not fall back to `node_ttl` here.)
    pub fn ttl_for(&self, service_lowercase: &str) -> u32 {
        self.lookup(service_lowercase).unwrap_or(0)
    }

    /// True when no service TTL is configured.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }
}

/// TLS to Consul (used with an `https://` address), as Consul's Go client reads it
/// (`api.TLSConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsulTls {
    /// PEM file of trusted CA certificates.
    pub ca_file: Option<PathBuf>,
    /// Directory of PEM files of trusted CA certificates.
    pub ca_path: Option<PathBuf>,
    /// PEM client certificate (chain); set together with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Name to verify the server certificate against (and send as SNI), lower-cased,
    /// without a trailing dot.
    pub server_name: Option<String>,
    /// Verify the server certificate (default true).
    pub verify: bool,
}

impl Default for ConsulTls {
    fn default() -> Self {
        ConsulTls {
            ca_file: None,
            ca_path: None,
            cert_file: None,
            key_file: None,
            server_name: None,
            verify: true,
        }
    }
}

impl ConsulTls {
    /// The config-file names of the options set away from their defaults.
    pub fn keys_set(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        for (key, set) in [
            ("ca_file", self.ca_file.is_some()),
            ("ca_path", self.ca_path.is_some()),
            ("cert_file", self.cert_file.is_some()),
            ("key_file", self.key_file.is_some()),
            ("tls_server_name", self.server_name.is_some()),
            ("ssl_verify", !self.verify),
        ] {
            if set {
                keys.push(key);
            }
        }
        keys
    }
}

/// Consul's `dns_config` options, typed. [`Default`] gives Consul's defaults.
#[derive(Debug, Clone, PartialEq, Eq, Patch)]
#[patch(attribute(derive(Debug, Default, Clone, PartialEq, Eq)))]
#[patch(attribute(doc = "`dns_config` options set by one layer of configuration."))]
pub struct DnsConfig {
    /// Allow stale reads from any server (default true).
    pub allow_stale: bool,
    /// How long data may be served after its watch started failing (Consul unreachable);
    /// past it, SERVFAIL (default 87600h). Consul's own meaning (re-query consistently when
    /// the answering server's `LastContact` exceeds it) has no use here: answers come from
    /// the watched view.
    pub max_stale: Duration,
    /// TTL in seconds of node records (default 0).
    pub node_ttl: u32,
    /// Per-service TTLs (default none, i.e. 0).
    pub service_ttl: ServiceTtl,
    /// Set TC when answers were trimmed (default false).
    pub enable_truncate: bool,
    /// Exclude instances whose checks are `warning`, not only `critical` (default false).
    pub only_passing: bool,
    /// Recursor order (default sequential).
    pub recursor_strategy: RecursorStrategy,
    /// Per-recursor timeout (default 2s; always > 0).
    pub recursor_timeout: Duration,
    /// Disable DNS name compression (default false).
    pub disable_compression: bool,
    /// Max answers in a non-EDNS UDP response (default 3). The effective value: the
    /// configured one capped at [`MAX_UDP_ANSWER_LIMIT`] (8), because Consul applies
    /// `min(8, udp_answer_limit)` when trimming, so larger values behave as 8 there too.
    pub udp_answer_limit: u32,
    /// Max A/AAAA/ANY answer records over UDP and TCP; 0 = unlimited (default 0).
    pub a_record_limit: u32,
    /// Add node-meta TXT records to the Additional section (default true).
    pub enable_additional_node_meta_txt: bool,
    /// SOA fields.
    #[patch(nesting)]
    pub soa: SoaConfig,
    /// Use the agent cache for lookups; in Consul this implies stale reads (default false).
    pub use_cache: bool,
    /// Max age of cached results with `use_cache`; 0 = no limit (default 0).
    pub cache_max_age: Duration,
    /// Enterprise, deprecated: a single label before the domain is a namespace
    /// (default false).
    pub prefer_namespace: bool,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            allow_stale: true,
            max_stale: Duration::from_secs(87600 * 3600),
            node_ttl: 0,
            service_ttl: ServiceTtl::default(),
            enable_truncate: false,
            only_passing: false,
            recursor_strategy: RecursorStrategy::Sequential,
            recursor_timeout: Duration::from_secs(2),
            disable_compression: false,
            udp_answer_limit: 3,
            a_record_limit: 0,
            enable_additional_node_meta_txt: true,
            soa: SoaConfig::default(),
            use_cache: false,
            cache_max_age: Duration::ZERO,
            prefer_namespace: false,
        }
    }
}

/// Zone transfers of the Consul domain, and NOTIFY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferConfig {
    /// Clients that may transfer (empty: transfers are off and refused).
    pub allow: Vec<IpNet>,
    /// Secondaries sent a NOTIFY on each change.
    pub notify: Vec<SocketAddr>,
    /// The shortest time between two NOTIFYs to one secondary (> 0).
    pub notify_interval: Duration,
    /// Bytes of zone differences kept for IXFR, roughly.
    pub journal_bytes: usize,
    /// The TSIG key transfers must be signed with (and NOTIFYs are signed with).
    pub key: Option<TransferKey>,
}

/// A TSIG key as configured: its secret given (base64) or in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferKey {
    pub name: String,
    pub secret: TransferSecret,
    /// `hmac-sha256` (default), `hmac-sha384` or `hmac-sha512`.
    pub algorithm: String,
}

/// Where a TSIG key's secret is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferSecret {
    Base64(Secret),
    /// The bare base64 secret, or a BIND key file (`tsig-keygen`'s output).
    File(PathBuf),
}

impl Default for TransferConfig {
    fn default() -> Self {
        TransferConfig {
            allow: Vec::new(),
            notify: Vec::new(),
            notify_interval: Duration::from_millis(100),
            // `transfer_journal_bytes`.
            journal_bytes: 16 << 20,
            key: None,
        }
    }
}

impl TransferConfig {
    /// Whether zone transfers are served.
    pub fn enabled(&self) -> bool {
        !self.allow.is_empty()
    }
}

/// Limits of DNS over TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpConfig {
    /// Most connections open at once (≥ 1); past it a new one closes the longest-idle
    /// connection, or is closed at once when every open one has queries in flight.
    pub max_connections: usize,
    /// Most connections open at once from one source, an IPv4 address or an IPv6 /64
    /// (≥ 1); past it a new one closes that source's longest-idle connection, or is closed
    /// at once when each of them has queries in flight.
    pub max_connections_per_source: usize,
    /// A connection without a complete query for this long is closed (> 0).
    pub idle_timeout: Duration,
    /// A connection is closed this long after it was accepted, however busy (> 0).
    pub total_timeout: Duration,
    /// A connection whose answer cannot be written within this is closed (> 0).
    pub write_timeout: Duration,
}

impl Default for TcpConfig {
    fn default() -> Self {
        TcpConfig {
            max_connections: DEFAULT_TCP_MAX_CONNECTIONS,
            max_connections_per_source: default_tcp_max_connections_per_source(
                DEFAULT_TCP_MAX_CONNECTIONS,
            ),
            // Time a TCP connection may go without a complete query (hickory's was 10 s).
            idle_timeout: Duration::from_secs(10),
            // Lifetime of a TCP connection, however busy: a client sending slowly but
            // steadily cannot hold a slot longer.
            total_timeout: Duration::from_secs(60),
            // Time an answer may take to be written (a client that does not read).
            write_timeout: Duration::from_secs(5),
        }
    }
}

/// DNS over TLS (RFC 7858): its listen addresses, certificate and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotConfig {
    /// Addresses served over TLS; empty: DNS over TLS is off.
    pub listen: Vec<SocketAddr>,
    /// PEM certificate chain, leaf first; set whenever `listen` is not empty.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`; set whenever `listen` is not empty.
    pub key_file: Option<PathBuf>,
    /// Limits of its connections, apart from TCP's: `tls_max_connections` (a quarter of
    /// them per source) and `tls_idle_timeout`; the total and write timeouts are TCP's.
    pub limits: TcpConfig,
}

impl Default for DotConfig {
    fn default() -> Self {
        DotConfig {
            listen: Vec::new(),
            cert_file: None,
            key_file: None,
            limits: dot_limits(
                // Open connections: with the TCP connections (500) and the Consul ones
                // (`max_watches`), still within the common soft limit of 1024 descriptors.
                250,
                // Time a connection may go without a complete query.
                Duration::from_secs(10),
                &TcpConfig::default(),
            ),
        }
    }
}

fn dot_limits(max_connections: usize, idle_timeout: Duration, tcp: &TcpConfig) -> TcpConfig {
    TcpConfig {
        max_connections,
        max_connections_per_source: default_tcp_max_connections_per_source(max_connections),
        idle_timeout,
        ..*tcp
    }
}

/// Response-rate limiting of UDP answers, per client prefix (BIND's `rate-limit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RrlConfig {
    /// Answers per second to one client prefix; 0 = off (the default).
    pub responses_per_second: u32,
    /// Burst credit: a prefix that was quiet may get this many seconds' worth of answers
    /// at once (1s..=1h).
    pub window: Duration,
    /// Every `slip`-th limited answer is sent as an empty truncated one (the client
    /// retries over TCP); 0 = never, 1 = always (0..=10).
    pub slip: u32,
    /// IPv4 clients are grouped by this prefix length (0..=32).
    pub ipv4_prefix_length: u8,
    /// IPv6 clients are grouped by this prefix length (0..=128).
    pub ipv6_prefix_length: u8,
}

impl Default for RrlConfig {
    fn default() -> Self {
        RrlConfig {
            responses_per_second: 0,
            // Seconds of burst credit of response-rate limiting.
            window: Duration::from_secs(5),
            // `rrl_slip` (BIND's): every second limited response is sent truncated.
            slip: 2,
            // IPv4 client prefix length of response-rate limiting (BIND's).
            ipv4_prefix_length: 24,
            // IPv6 client prefix length of response-rate limiting (BIND's).
            ipv6_prefix_length: 56,
        }
    }
}

/// The effective, validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Consul HTTP API base URL, normalised without a trailing slash
    /// (`http://127.0.0.1:8500`). With `dev` it is `http://<dev_http>`.
    pub consul_addr: String,
    /// ACL token for Consul API requests.
    pub token: Option<Secret>,
    /// TLS to Consul.
    pub tls: ConsulTls,
    /// DNS listen addresses; UDP and TCP are served on each (never empty).
    pub listen: Vec<SocketAddr>,
    /// Primary domain, lower-cased, with trailing dot (`consul.`).
    pub domain: String,
    /// Alternative domain, same normalisation; never equal to `domain`.
    pub alt_domain: Option<String>,
    /// Local datacenter, lower-cased; `None` = learn it from the agent.
    pub datacenter: Option<String>,
    /// Upstream resolvers, in configuration order, without duplicates.
    pub recursors: Vec<SocketAddr>,
    /// Clients allowed to use the recursors (host bits cleared).
    pub allow_recursion: Vec<IpNet>,
    /// The static zones directory, if any.
    pub zones: Option<PathBuf>,
    /// Consul's `dns_config` options.
    pub dns: DnsConfig,
    /// Cap on live per-service watches (≥ 1).
    pub max_watches: usize,
    /// Cap on services kept in memory, watched or polled (≥ `max_watches`).
    pub max_services: usize,
    /// The largest Consul response body of the lists that grow with the catalog (health,
    /// nodes, prepared query results); smaller endpoints get a fraction of it.
    pub consul_max_body_bytes: usize,
    /// Bytes of all Consul bodies being read at once (≥ `consul_max_body_bytes`).
    pub consul_body_budget_bytes: usize,
    /// A service nobody asked for this long stops being watched (> 0).
    pub watch_idle_timeout: Duration,
    /// How long a query waits for the first catalog sync before SERVFAIL.
    pub startup_wait: Duration,
    /// The `wait` sent on blocking queries (1s..=10m).
    pub blocking_wait: Duration,
    /// Watch every service of the catalog from the start, not only those asked for.
    pub watch_all_services: bool,
    /// How often a service asked for beyond `max_watches` is re-read (> 0).
    pub watch_poll_interval: Duration,
    /// Address of the metrics and health HTTP endpoint; `None` = off.
    pub http_addr: Option<SocketAddr>,
    /// UDP sockets, each with its own thread, per listen address (≥ 1).
    pub workers: usize,
    /// Only addresses inside these networks are answered (empty: any).
    pub internal_cidrs: Vec<ipnet::IpNet>,
    /// Consul's `translate_wan_addrs`: answers for other datacenters use WAN addresses.
    pub translate_wan_addrs: bool,
    /// Answer ANY in full for static zones and forwarded names (else RFC 8482).
    pub allow_any: bool,
    /// Limits of DNS over TCP.
    pub tcp: TcpConfig,
    /// Zone transfers and NOTIFY.
    pub transfer: TransferConfig,
    /// DNS over TLS.
    pub dot: DotConfig,
    /// Response-rate limiting of UDP answers.
    pub rrl: RrlConfig,
    /// Run the embedded Consul API emulator.
    pub dev: bool,
    /// The Consul address given (flag, environment or file) that `--dev` replaced.
    pub dev_replaced: Option<String>,
    /// Address of the emulator's HTTP API (port 0 allowed: the caller must then point
    /// `consul_addr` at the bound port).
    pub dev_http: SocketAddr,
    /// Log level.
    pub log_level: String,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Log the queries answered (1 in `query_log_sample`).
    pub query_log: bool,
    /// 1 query in this many is logged (≥ 1).
    pub query_log_sample: u32,
    /// The Consul agent configuration files read (`--consul-config`), in the order read.
    pub consul_config_files: Vec<PathBuf>,
    /// What they hold that consul-dns does not use, to say once at start (one line each).
    pub consul_config_warnings: Vec<String>,
}

impl Default for Config {
    /// Every setting at its default.
    fn default() -> Self {
        Config {
            // Consul HTTP API address (as Consul's CLI).
            consul_addr: "http://127.0.0.1:8500".to_string(),
            token: None,
            tls: ConsulTls::default(),
            listen: vec![DEFAULT_LISTEN],
            domain: "consul.".to_string(),
            alt_domain: None,
            datacenter: None,
            recursors: Vec::new(),
            allow_recursion: default_allow_recursion(),
            zones: None,
            dns: DnsConfig::default(),
            max_watches: DEFAULT_MAX_WATCHES,
            max_services: DEFAULT_MAX_WATCHES * DEFAULT_SERVICES_PER_WATCH,
            // `consul_max_body_bytes`: a health list of about 60,000 instances.
            consul_max_body_bytes: 64 * 1024 * 1024,
            // `consul_body_budget_bytes`: four of the largest bodies at once.
            consul_body_budget_bytes: 256 * 1024 * 1024,
            // Time after which an unqueried service stops being watched.
            watch_idle_timeout: Duration::from_secs(3600),
            // Time a query waits for the first catalog sync before SERVFAIL.
            startup_wait: Duration::from_secs(2),
            blocking_wait: Duration::from_secs(300),
            watch_all_services: false,
            // Re-read period of services beyond `max_watches`.
            watch_poll_interval: Duration::from_secs(30),
            http_addr: None,
            workers: default_workers(),
            internal_cidrs: Vec::new(),
            translate_wan_addrs: false,
            allow_any: false,
            tcp: TcpConfig::default(),
            transfer: TransferConfig::default(),
            dot: DotConfig::default(),
            rrl: RrlConfig::default(),
            dev: false,
            dev_replaced: None,
            dev_http: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8500)),
            log_level: "info".to_string(),
            log_format: LogFormat::Text,
            query_log: false,
            query_log_sample: 1,
            consul_config_files: Vec::new(),
            consul_config_warnings: Vec::new(),
        }
    }
}

impl Config {
    /// Reads the config file named by `--config` (if any) and the Consul agent's
    /// configuration (`--consul-config`, else the file's `consul_config`) and merges them
    /// with the flags and the defaults. When none sets the zones directory,
    /// [`DEFAULT_ZONES_DIR`] is served if it exists.
    pub fn load(cli: Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        let agent_paths = if cli.consul_config.is_empty() {
            file.consul_config.clone().unwrap_or_default()
        } else {
            cli.consul_config.clone()
        };
        let agent = AgentConfig::read(&agent_paths)?;
        let zones_unset = cli.zones.is_none() && file.zones.is_none();
        let mut config = Config::merge(cli, file, agent)?;
        if zones_unset && Path::new(DEFAULT_ZONES_DIR).is_dir() {
            config.zones = Some(PathBuf::from(DEFAULT_ZONES_DIR));
        }
        Ok(config)
    }

    /// Defaults, listening on `127.0.0.1:0`, talking to `consul_addr` (normalised when
    /// valid, else used as given), for integration tests.
    pub fn for_tests(consul_addr: &str) -> Config {
        let consul_addr = normalize_consul_addr(consul_addr)
            .unwrap_or_else(|_| consul_addr.trim_end_matches('/').to_string());
        Config {
            consul_addr,
            listen: vec![SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))],
            startup_wait: Duration::from_secs(2),
            // Whatever the machine: several sockets in a SO_REUSEPORT group, as in
            // production, without a thread per core per test server.
            workers: 2,
            ..Config::default()
        }
    }

    fn merge(cli: Cli, file: FileConfig, agent: AgentConfig) -> Result<Config, ConfigError> {
        let defaults = Config::default();
        // The agent's values under the file's.
        let file = FileConfig {
            domain: file.domain.or(agent.domain.clone()),
            alt_domain: file.alt_domain.or(agent.alt_domain.clone()),
            datacenter: file.datacenter.or(agent.datacenter.clone()),
            recursors: file
                .recursors
                .or((!agent.recursors.is_empty()).then(|| agent.recursors.clone())),
            translate_wan_addrs: file.translate_wan_addrs.or(agent.translate_wan_addrs),
            dns: dns_over(agent.dns.clone(), file.dns),
            ..file
        };

        let consul_addr_given = cli.consul_addr.is_some() || file.consul_addr.is_some();
        let consul_addr = match &cli.consul_addr {
            Some(v) => flag("--consul-addr", v, normalize_consul_addr(v))?,
            None => match file.consul_addr {
                Some(addr) => addr,
                // Beside the agent, its HTTP API (not with --dev, whose emulator answers).
                None if agent.is_used() && !cli.dev => agent.http_url()?,
                None => defaults.consul_addr,
            },
        };
        let tls = merge_tls(&cli, file.tls)?;
        // --token, then --token-file, then the file's token, then its token_file.
        let token = match (
            cli.token.filter(|t| !t.expose().is_empty()),
            &cli.token_file,
        ) {
            (Some(t), _) => Some(t),
            (None, Some(path)) => read_token_file("--token-file", path)?,
            (None, None) => match (file.token, &file.token_file) {
                (Some(t), _) => Some(t),
                (None, Some(path)) => read_token_file("token_file", path)?,
                (None, None) => None,
            },
        };
        let listen = if cli.listen.is_empty() {
            match file.listen {
                Some(listen) => listen,
                // The agent's DNS is off: consul-dns takes its place.
                None if agent.is_used() && agent.dns_port().is_none() => agent
                    .dns_ips("--listen")?
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, DEFAULT_LISTEN.port()))
                    .collect(),
                None => defaults.listen,
            }
        } else {
            check_listen_list(&cli.listen).map_err(|reason| ConfigError::Invalid {
                key: "--listen".to_string(),
                value: None,
                file: None,
                reason,
            })?;
            cli.listen
        };
        check_agent_dns(&agent, &listen)?;
        let domain = match &cli.domain {
            Some(v) => flag("--domain", v, normalize_domain(v))?,
            None => file.domain.unwrap_or(defaults.domain),
        };
        let (alt_domain, alt_key) = match &cli.alt_domain {
            Some(v) => (
                Some(flag("--alt-domain", v, normalize_domain(v))?),
                "--alt-domain",
            ),
            None => (file.alt_domain, "alt_domain"),
        };
        if alt_domain.as_deref() == Some(domain.as_str()) {
            return Err(ConfigError::Invalid {
                key: alt_key.to_string(),
                value: Some(format!("{domain:?}")),
                file: None,
                reason: "must differ from the domain".to_string(),
            });
        }
        let transfer = TransferConfig {
            allow: if cli.allow_transfer.is_empty() {
                file.base.transfer.allow
            } else {
                cli.allow_transfer.iter().map(IpNet::trunc).collect()
            },
            notify: if cli.notify.is_empty() {
                file.base.transfer.notify
            } else {
                cli.notify.clone()
            },
            ..file.base.transfer
        };
        if !transfer.notify.is_empty() && !transfer.enabled() {
            return Err(ConfigError::Invalid {
                key: "notify".to_string(),
                value: None,
                file: None,
                reason: "needs allow_transfer (--allow-transfer): secondaries notified must \
                         be able to transfer the zone"
                    .to_string(),
            });
        }
        let datacenter = match &cli.datacenter {
            Some(v) => Some(flag("--datacenter", v, normalize_datacenter(v))?),
            None => file.datacenter,
        };
        let dev_http = cli.dev_http.unwrap_or(defaults.dev_http);
        // In dev mode the DNS server reads from the embedded emulator, whatever
        // --consul-addr / CONSUL_HTTP_ADDR / consul_addr say.
        let dev_replaced = (cli.dev && consul_addr_given).then(|| consul_addr.clone());
        let consul_addr = if cli.dev {
            format!("http://{dev_http}")
        } else {
            consul_addr
        };

        let max_watches = file.base.max_watches;
        let max_services = match file.max_services {
            Some(n) if n < max_watches => {
                return Err(ConfigError::Invalid {
                    key: "max_services".to_string(),
                    value: Some(n.to_string()),
                    file: None,
                    reason: format!(
                        "must be at least max_watches ({max_watches}): a watched service is kept in memory"
                    ),
                })
            }
            Some(n) => n,
            // A zone transfer holds every service: none may leave memory.
            None if transfer.enabled() => usize::MAX,
            None => max_watches.saturating_mul(DEFAULT_SERVICES_PER_WATCH),
        };

        let consul_max_body_bytes = file.base.consul_max_body_bytes;
        let consul_body_budget_bytes = match file.consul_body_budget_bytes {
            Some(n) if n < consul_max_body_bytes => {
                return Err(ConfigError::Invalid {
                    key: "consul_body_budget_bytes".to_string(),
                    value: Some(n.to_string()),
                    file: None,
                    reason: format!(
                        "must be at least consul_max_body_bytes ({consul_max_body_bytes}): the largest body must fit in it"
                    ),
                })
            }
            Some(n) => n,
            None => defaults
                .consul_body_budget_bytes
                .max(consul_max_body_bytes),
        };

        if file.base.workers > MAX_WORKERS {
            return Err(ConfigError::Invalid {
                key: "workers".to_string(),
                value: Some(file.base.workers.to_string()),
                file: None,
                reason: format!("must be at most {MAX_WORKERS}"),
            });
        }

        let tcp = file.base.tcp;
        let dot = merge_dot(
            (cli.listen_tls, cli.tls_cert_file, cli.tls_key_file),
            file.dot,
            file.base.dot,
            &listen,
        )?;

        Ok(Config {
            consul_addr,
            token,
            tls,
            listen,
            domain,
            alt_domain,
            datacenter,
            recursors: if cli.recursors.is_empty() {
                file.recursors.unwrap_or_default()
            } else {
                let mut unique: Vec<SocketAddr> = Vec::new();
                for r in cli.recursors {
                    if !unique.contains(&r) {
                        unique.push(r);
                    }
                }
                unique
            },
            allow_recursion: if cli.allow_recursion.is_empty() {
                file.base.allow_recursion
            } else {
                cli.allow_recursion.iter().map(IpNet::trunc).collect()
            },
            // An empty path ("--zones ''", `zones = ""`) serves no zones.
            zones: cli
                .zones
                .or(file.zones)
                .filter(|p| !p.as_os_str().is_empty()),
            dns: {
                let mut dns = DnsConfig::default();
                dns.apply(file.dns);
                dns
            },
            max_watches,
            max_services,
            consul_max_body_bytes,
            consul_body_budget_bytes,
            http_addr: cli.http_addr.or(file.base.http_addr),
            workers: cli.workers.map_or(file.base.workers, usize::from),
            translate_wan_addrs: file
                .translate_wan_addrs
                .unwrap_or(defaults.translate_wan_addrs),
            transfer,
            tcp,
            dot,
            internal_cidrs: if cli.internal_cidrs.is_empty() {
                file.base.internal_cidrs
            } else {
                cli.internal_cidrs
            },
            dev: cli.dev,
            dev_replaced,
            dev_http,
            log_level: cli.log_level.unwrap_or(file.base.log_level),
            log_format: match cli.log_format {
                Some(f) => f.parse().map_err(|reason| ConfigError::Invalid {
                    key: "log_format".to_string(),
                    value: Some(f),
                    file: None,
                    reason,
                })?,
                None => file.base.log_format,
            },
            query_log: cli.query_log || file.base.query_log,
            query_log_sample: cli.query_log_sample.unwrap_or(file.base.query_log_sample),
            consul_config_files: agent.files,
            consul_config_warnings: agent.warnings,
            ..file.base
        })
    }
}

/// Refuses a listen address where the Consul agent serves DNS itself (its configuration
/// says so): the bind would fail, and this says what to do.
fn check_agent_dns(agent: &AgentConfig, listen: &[SocketAddr]) -> Result<(), ConfigError> {
    let Some(port) = agent.is_used().then(|| agent.dns_port()).flatten() else {
        return Ok(());
    };
    // Addresses that cannot be read are no clash to report; listening tells.
    let Ok(ips) = agent.dns_ips("--listen") else {
        return Ok(());
    };
    let clash = listen.iter().find_map(|ours| {
        ips.iter()
            .find(|ip| {
                ours.port() == port
                    && (ours.ip() == **ip || ours.ip().is_unspecified() || ip.is_unspecified())
            })
            .map(|ip| (ours, SocketAddr::new(*ip, port)))
    });
    let Some((ours, theirs)) = clash else {
        return Ok(());
    };
    let (value, file) = agent.dns_port_setting();
    let default = if file.is_none() {
        " (Consul's default port: its configuration sets no ports.dns)"
    } else {
        ""
    };
    Err(ConfigError::Invalid {
        key: "ports.dns".to_string(),
        value: Some(value),
        file,
        reason: format!(
            "the Consul agent serves DNS on {theirs} itself{default}, where consul-dns would \
             listen ({ours}): turn the agent's DNS off (ports {{ dns = -1 }} in its \
             configuration, then restart it) and consul-dns takes its place, or give \
             consul-dns another address (--listen)"
        ),
    })
}

/// The TSIG key of `transfer_key_*`: a name with exactly one of a secret and a file.
fn transfer_key(
    name: Option<String>,
    secret: Option<Secret>,
    file: Option<PathBuf>,
    algorithm: Option<String>,
) -> Result<Option<TransferKey>, ConfigError> {
    let invalid = |key: &str, reason: &str| ConfigError::Invalid {
        key: key.to_string(),
        value: None,
        file: None,
        reason: reason.to_string(),
    };
    let secret = match (secret, file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "transfer_key_secret",
                "give the key's secret or transfer_key_file, not both",
            ))
        }
        (Some(s), None) => Some(TransferSecret::Base64(s)),
        (None, Some(f)) => Some(TransferSecret::File(f)),
        (None, None) => None,
    };
    match (name, secret) {
        (None, None) if algorithm.is_none() => Ok(None),
        (Some(name), Some(secret)) => Ok(Some(TransferKey {
            name,
            secret,
            algorithm: algorithm.unwrap_or_else(|| "hmac-sha256".to_string()),
        })),
        (Some(_), None) => Err(invalid(
            "transfer_key_name",
            "needs transfer_key_secret (base64) or transfer_key_file",
        )),
        _ => Err(invalid(
            "transfer_key_name",
            "must be set with transfer_key_secret, transfer_key_file or transfer_key_algorithm",
        )),
    }
}

/// The TLS options: each flag (or its environment variable) over the file's key. An empty
/// value means unset, as in Consul's client.
fn merge_tls(cli: &Cli, file: file::TlsFile) -> Result<ConsulTls, ConfigError> {
    let path = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
    let server_name = match cli.tls_server_name.as_deref().filter(|s| !s.is_empty()) {
        Some(v) => Some(flag(
            "--tls-server-name",
            v,
            values::normalize_tls_server_name(v),
        )?),
        None => file.server_name,
    };
    // Where the certificate and the key came from, to name them if only one is set.
    let cert = match path(&cli.client_cert) {
        Some(p) => Some((p, "--client-cert".to_string(), None)),
        None => file
            .cert_file
            .map(|(p, at)| (p, "cert_file".to_string(), Some(at))),
    };
    let key = match path(&cli.client_key) {
        Some(p) => Some((p, "--client-key".to_string(), None)),
        None => file
            .key_file
            .map(|(p, at)| (p, "key_file".to_string(), Some(at))),
    };
    let (cert_file, key_file) = match (cert, key) {
        (Some((cert, ..)), Some((key, ..))) => (Some(cert), Some(key)),
        (None, None) => (None, None),
        (Some((p, key, at)), None) | (None, Some((p, key, at))) => {
            let missing = if key.contains("cert") {
                "the client key (--client-key, CONSUL_CLIENT_KEY or key_file)"
            } else {
                "the client certificate (--client-cert, CONSUL_CLIENT_CERT or cert_file)"
            };
            return Err(ConfigError::Invalid {
                key,
                value: Some(format!("{:?}", p.display().to_string())),
                file: at,
                reason: format!("is set without {missing}: give both or neither"),
            });
        }
    };
    Ok(ConsulTls {
        ca_file: path(&cli.ca_file).or(file.ca_file),
        ca_path: path(&cli.ca_path).or(file.ca_path),
        cert_file,
        key_file,
        server_name,
        verify: cli.ssl_verify.or(file.ssl_verify).unwrap_or(true),
    })
}

/// DNS over TLS: each flag over the file's key. A TLS address needs the certificate and
/// the key, and must not be a plain DNS address too.
fn merge_dot(
    (listen_tls, cert_flag, key_flag): (Vec<SocketAddr>, Option<PathBuf>, Option<PathBuf>),
    file: file::DotFile,
    base: DotConfig,
    listen: &[SocketAddr],
) -> Result<DotConfig, ConfigError> {
    let path = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
    let (addrs, key, at) = if listen_tls.is_empty() {
        match file.listen {
            Some((addrs, at)) => (addrs, "listen_tls", Some(at)),
            None => (Vec::new(), "listen_tls", None),
        }
    } else {
        (listen_tls, "--listen-tls", None)
    };
    let invalid = |reason: String| ConfigError::Invalid {
        key: key.to_string(),
        value: None,
        file: at.clone(),
        reason,
    };
    check_listen_list(&addrs).map_err(invalid)?;
    let cert_file = path(cert_flag).or(file.cert_file);
    let key_file = path(key_flag).or(file.key_file);
    if !addrs.is_empty() {
        let missing: Vec<&str> = [
            (cert_file.is_none(), "tls_cert_file (--tls-cert-file)"),
            (key_file.is_none(), "tls_key_file (--tls-key-file)"),
        ]
        .into_iter()
        .filter_map(|(missing, name)| missing.then_some(name))
        .collect();
        if !missing.is_empty() {
            return Err(invalid(format!(
                "DNS over TLS needs {}: PEM files of the certificate chain and its private key",
                missing.join(" and ")
            )));
        }
    }
    if let Some(a) = addrs.iter().find(|a| a.port() != 0 && listen.contains(a)) {
        return Err(invalid(format!(
            "{a} is also a listen address, where DNS over TCP is served: give it another port"
        )));
    }
    Ok(DotConfig {
        listen: addrs,
        cert_file,
        key_file,
        ..base
    })
}

/// `later`'s `dns_config` values over `earlier`'s, each where set (the SOA's field by
/// field). The SOA is merged here: struct-patch 0.14 merges a nested patch the wrong way
/// round (`earlier`'s fields first).
fn dns_over(earlier: DnsConfigPatch, later: DnsConfigPatch) -> DnsConfigPatch {
    let soa = earlier.soa.merge(later.soa);
    DnsConfigPatch {
        soa,
        ..earlier.merge(later)
    }
}

/// Rejects a listen address given twice (port 0 may repeat: each gets its own port).
pub(crate) fn check_listen_list(addrs: &[SocketAddr]) -> Result<(), String> {
    for (i, a) in addrs.iter().enumerate() {
        if a.port() != 0 && addrs[..i].contains(a) {
            return Err(format!("{a} is listed twice"));
        }
    }
    Ok(())
}

fn flag<T>(name: &str, value: &str, result: Result<T, String>) -> Result<T, ConfigError> {
    result.map_err(|reason| ConfigError::Invalid {
        key: name.to_string(),
        value: Some(format!("{value:?}")),
        file: None,
        reason,
    })
}

/// Where in a config file a value was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLocation {
    /// The file.
    pub path: PathBuf,
    /// 1-based line, when known.
    pub line: Option<usize>,
}

impl fmt::Display for FileLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        Ok(())
    }
}

/// A configuration error. `Display` is one line naming the file, key and value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("config {}: cannot read: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML, or has an unknown key.
    #[error("config {}: {message}", at_line(.path, .line))]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        /// What is wrong (from the toml crate, made one line).
        message: String,
    },
    /// A value is invalid.
    #[error("{}: {reason}", describe(.file, .key, .value))]
    Invalid {
        /// The key: a flag (`--domain`) or a config-file key path (`dns_config.node_ttl`,
        /// `recursors[1]`, `service_ttl."db*"`).
        key: String,
        /// The offending value, quoted, when it is short and not secret.
        value: Option<String>,
        /// Where in the config file, for values from the file.
        file: Option<FileLocation>,
        /// Why it is invalid.
        reason: String,
    },
}

/// The token in `path`: its first line, trimmed; an empty file means no token.
fn read_token_file(key: &str, path: &std::path::Path) -> Result<Option<Secret>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
        key: key.to_string(),
        value: Some(format!("{:?}", path.display().to_string())),
        file: None,
        reason: format!("cannot read the token file: {e}"),
    })?;
    let token = text.lines().next().unwrap_or("").trim();
    Ok((!token.is_empty()).then(|| Secret::new(token)))
}

fn at_line(path: &std::path::Path, line: &Option<usize>) -> FileLocation {
    FileLocation {
        path: path.to_path_buf(),
        line: *line,
    }
}

fn describe(file: &Option<FileLocation>, key: &str, value: &Option<String>) -> String {
    let mut out = String::new();
    if let Some(loc) = file {
        out.push_str(&format!("config {loc}: "));
    }
    out.push_str(key);
    if let Some(v) = value {
        out.push(' ');
        out.push_str(&values::redact_userinfo(v));
    }
    out
}

#[cfg(test)]
mod tests;
