//! Configuration: the command line (clap), the TOML config file and the Consul agent's own
//! configuration, merged into one validated [`Config`].
//!
//! Precedence, per setting: command-line flag (or its environment variable), then the
//! config file (`--config`), then the Consul agent's configuration (`--consul-config`), then
//! the built-in default. Defaults are Consul's own
//! (`agent/config/default.go`); option names in the file are Consul's `dns_config` names,
//! accepted at the top level or inside a `[dns_config]` table. See
//! `consul-dns.example.toml` for every key.
//!
//! Each source becomes a `Layer` (what it sets, as a [`ConfigPatch`], and where each
//! setting came from): `agent.rs` (with `hcl.rs`) for the agent's files, `file.rs` for the
//! TOML file, `cli.rs` for the flags. `resolve.rs` applies them over [`Config::default`] and
//! checks what spans several keys. A new key is a field of [`Config`] (or of its section)
//! with its default in the `Default` impl, one line in `file.rs`, and, if it has a flag,
//! the flag in `cli.rs` and one line in `Cli::layer`.

mod agent;
mod cli;
mod duration;
mod file;
mod hcl;
mod layer;
mod resolve;
mod values;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use struct_patch::Patch;

use agent::AgentConfig;
use layer::Layer;

pub use cli::Cli;

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
#[derive(Debug, Clone, PartialEq, Eq, Patch)]
#[patch(attribute(derive(Debug, Default, Clone, PartialEq, Eq)))]
#[patch(attribute(doc = "TLS settings set by one layer of configuration."))]
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
#[derive(Debug, Clone, PartialEq, Eq, Patch)]
#[patch(attribute(derive(Debug, Default, Clone, PartialEq, Eq)))]
#[patch(attribute(doc = "Transfer settings set by one layer of configuration."))]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Patch)]
#[patch(attribute(derive(Debug, Default, Clone, Copy, PartialEq, Eq)))]
#[patch(attribute(doc = "TCP limits set by one layer of configuration."))]
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
#[derive(Debug, Clone, PartialEq, Eq, Patch)]
#[patch(attribute(derive(Debug, Default, Clone, PartialEq, Eq)))]
#[patch(attribute(doc = "DNS-over-TLS settings set by one layer of configuration."))]
pub struct DotConfig {
    /// Addresses served over TLS; empty: DNS over TLS is off.
    pub listen: Vec<SocketAddr>,
    /// PEM certificate chain, leaf first; set whenever `listen` is not empty.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`; set whenever `listen` is not empty.
    pub key_file: Option<PathBuf>,
    /// Limits of its connections, apart from TCP's: `tls_max_connections` (a quarter of
    /// them per source) and `tls_idle_timeout`; the total and write timeouts are TCP's.
    #[patch(nesting)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Patch)]
#[patch(attribute(derive(Debug, Default, Clone, Copy, PartialEq, Eq)))]
#[patch(attribute(doc = "Rate-limiting settings set by one layer of configuration."))]
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
#[derive(Debug, Clone, PartialEq, Eq, Patch)]
#[patch(attribute(derive(Debug, Default, Clone, PartialEq, Eq)))]
#[patch(attribute(
    doc = "The settings one layer of configuration (the agent's files, the config file, the flags) sets."
))]
pub struct Config {
    /// Consul HTTP API base URL, normalised without a trailing slash
    /// (`http://127.0.0.1:8500`). With `dev` it is `http://<dev_http>`.
    pub consul_addr: String,
    /// ACL token for Consul API requests.
    #[patch(skip)]
    pub token: Option<Secret>,
    /// TLS to Consul.
    #[patch(nesting)]
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
    #[patch(nesting)]
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
    #[patch(nesting)]
    pub tcp: TcpConfig,
    /// Zone transfers and NOTIFY.
    #[patch(nesting)]
    pub transfer: TransferConfig,
    /// DNS over TLS.
    #[patch(nesting)]
    pub dot: DotConfig,
    /// Response-rate limiting of UDP answers.
    #[patch(nesting)]
    pub rrl: RrlConfig,
    /// Run the embedded Consul API emulator.
    pub dev: bool,
    /// The Consul address given (flag, environment or file) that `--dev` replaced.
    #[patch(skip)]
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
    #[patch(skip)]
    pub consul_config_files: Vec<PathBuf>,
    /// What they hold that consul-dns does not use, to say once at start (one line each).
    #[patch(skip)]
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
            Some(path) => file::read(path)?,
            None => Layer::default(),
        };
        let agent_paths = if cli.consul_config.is_empty() {
            file.consul_config.clone().unwrap_or_default()
        } else {
            cli.consul_config.clone()
        };
        let agent = AgentConfig::read(&agent_paths)?;
        let zones_unset = cli.zones.is_none() && !file.sets("zones");
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

    /// The agent's configuration, then the file's, then the flags', over the defaults.
    fn merge(cli: Cli, file: Layer, agent: AgentConfig) -> Result<Config, ConfigError> {
        let layers = vec![agent.layer(), file, cli.layer()?];
        resolve::resolve(layers, &agent)
    }
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

/// Rejects a listen address given twice (port 0 may repeat: each gets its own port).
pub(crate) fn check_listen_list(addrs: &[SocketAddr]) -> Result<(), String> {
    for (i, a) in addrs.iter().enumerate() {
        if a.port() != 0 && addrs[..i].contains(a) {
            return Err(format!("{a} is listed twice"));
        }
    }
    Ok(())
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
