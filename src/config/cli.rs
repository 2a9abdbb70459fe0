//! The command line (clap) and what it sets: [`Cli::layer`].
//!
//! Flags whose values clap can check with the flag's name in its message are checked by
//! clap (`value_parser`); the others (`--domain`, `--consul-addr`, ...) where they become
//! a layer, as `ConfigError`s naming the flag.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use ipnet::IpNet;

use super::layer::{Layer, Origin, TokenSource};
use super::values::{
    self, normalize_consul_addr, normalize_datacenter, normalize_domain, normalize_tls_server_name,
};
use super::{
    check_listen_list, ConfigError, ConfigPatch, ConsulTlsPatch, DotConfigPatch, Secret,
    TransferConfigPatch,
};

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

impl Cli {
    /// What the flags (and their environment variables) set. An empty path or TLS value
    /// is not set, as in Consul's client; an empty `--zones` serves no zones.
    pub(super) fn layer(self) -> Result<Layer, ConfigError> {
        let mut given = Given(BTreeMap::new());
        let g = &mut given;
        let path = |p: Option<PathBuf>| p.filter(|p| !p.as_os_str().is_empty());
        let token = match (
            self.token.filter(|t| !t.expose().is_empty()),
            self.token_file,
        ) {
            (Some(token), _) => Some(TokenSource::Value(token)),
            (None, Some(file)) => Some(TokenSource::File(file, "--token-file")),
            (None, None) => None,
        };
        check_list("--listen", &self.listen)?;
        check_list("--listen-tls", &self.listen_tls)?;
        let mut recursors: Vec<SocketAddr> = Vec::new();
        for r in self.recursors {
            if !recursors.contains(&r) {
                recursors.push(r);
            }
        }
        let settings = ConfigPatch {
            consul_addr: g.checked(
                "consul_addr",
                "--consul-addr",
                self.consul_addr,
                normalize_consul_addr,
            )?,
            tls: ConsulTlsPatch {
                ca_file: g.some("ca_file", "--ca-file", path(self.ca_file)),
                ca_path: g.some("ca_path", "--ca-path", path(self.ca_path)),
                cert_file: g.some("cert_file", "--client-cert", path(self.client_cert)),
                key_file: g.some("key_file", "--client-key", path(self.client_key)),
                server_name: g
                    .checked(
                        "tls_server_name",
                        "--tls-server-name",
                        self.tls_server_name.filter(|s| !s.is_empty()),
                        normalize_tls_server_name,
                    )?
                    .map(Some),
                verify: g.value("ssl_verify", "--ssl-verify", self.ssl_verify),
            },
            listen: g.list("listen", "--listen", self.listen),
            domain: g.checked("domain", "--domain", self.domain, normalize_domain)?,
            alt_domain: g
                .checked(
                    "alt_domain",
                    "--alt-domain",
                    self.alt_domain,
                    normalize_domain,
                )?
                .map(Some),
            datacenter: g
                .checked(
                    "datacenter",
                    "--datacenter",
                    self.datacenter,
                    normalize_datacenter,
                )?
                .map(Some),
            recursors: g.list("recursors", "--recursor", recursors),
            allow_recursion: g.list(
                "allow_recursion",
                "--allow-recursion",
                self.allow_recursion.iter().map(IpNet::trunc).collect(),
            ),
            zones: g.value(
                "zones",
                "--zones",
                self.zones
                    .map(|p| Some(p).filter(|p| !p.as_os_str().is_empty())),
            ),
            transfer: TransferConfigPatch {
                allow: g.list(
                    "allow_transfer",
                    "--allow-transfer",
                    self.allow_transfer.iter().map(IpNet::trunc).collect(),
                ),
                notify: g.list("notify", "--notify", self.notify),
                ..TransferConfigPatch::default()
            },
            dot: DotConfigPatch {
                listen: g.list("listen_tls", "--listen-tls", self.listen_tls),
                cert_file: g.some("tls_cert_file", "--tls-cert-file", path(self.tls_cert_file)),
                key_file: g.some("tls_key_file", "--tls-key-file", path(self.tls_key_file)),
                ..DotConfigPatch::default()
            },
            internal_cidrs: g.list("internal_cidrs", "--internal-cidr", self.internal_cidrs),
            http_addr: g.some("http_addr", "--http-addr", self.http_addr),
            workers: g.value("workers", "--workers", self.workers.map(usize::from)),
            dev: self.dev.then_some(true),
            dev_http: self.dev_http,
            log_level: g.value("log_level", "--log-level", self.log_level),
            log_format: g.checked("log_format", "--log-format", self.log_format, |s| s.parse())?,
            query_log: self.query_log.then_some(true),
            query_log_sample: g.value(
                "query_log_sample",
                "--query-log-sample",
                self.query_log_sample,
            ),
            ..ConfigPatch::default()
        };
        Ok(Layer {
            settings,
            origins: given.0,
            token,
            consul_config: (!self.consul_config.is_empty()).then_some(self.consul_config),
        })
    }
}

/// The settings the flags give, by config-file key.
struct Given(BTreeMap<&'static str, Origin>);

impl Given {
    /// `value` when the flag was given, noted as setting `key`.
    fn value<T>(&mut self, key: &'static str, flag: &str, value: Option<T>) -> Option<T> {
        if value.is_some() {
            self.0.insert(key, Origin::flag(flag));
        }
        value
    }

    /// `value` for a setting that may be unset (`Option` in the config).
    fn some<T>(&mut self, key: &'static str, flag: &str, value: Option<T>) -> Option<Option<T>> {
        self.value(key, flag, value).map(Some)
    }

    /// A repeatable flag: given when repeated at least once.
    fn list<T>(&mut self, key: &'static str, flag: &str, values: Vec<T>) -> Option<Vec<T>> {
        self.value(key, flag, (!values.is_empty()).then_some(values))
    }

    /// `value` converted by `check`; its error names the flag and the value.
    fn checked<T>(
        &mut self,
        key: &'static str,
        flag: &str,
        value: Option<String>,
        check: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let Some(value) = value else {
            return Ok(None);
        };
        let checked = check(&value).map_err(|reason| ConfigError::Invalid {
            key: flag.to_string(),
            value: Some(format!("{value:?}")),
            file: None,
            reason,
        })?;
        Ok(self.value(key, flag, Some(checked)))
    }
}

/// Rejects a repeatable address flag that lists one address twice.
fn check_list(flag: &str, addrs: &[SocketAddr]) -> Result<(), ConfigError> {
    check_listen_list(addrs).map_err(|reason| ConfigError::Invalid {
        key: flag.to_string(),
        value: None,
        file: None,
        reason,
    })
}
