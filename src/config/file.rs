//! The TOML config file: raw parsing (with spans, for line numbers) and conversion of
//! every key to its typed value, with errors naming the file, line and key.
//!
//! Parsing happens in two steps. First the text is deserialised into `RawFile`, whose
//! leaves are untyped `Spanned<Value>`s: this catches syntax errors and unknown keys
//! (`deny_unknown_fields`), both with a line number. Then each leaf is converted by hand,
//! so that type and range errors can name the exact key (`dns_config.soa.retry`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::{Spanned, Value};

use super::duration::parse_go_duration;
use super::values::{
    normalize_consul_addr, normalize_datacenter, normalize_domain, normalize_tls_server_name,
    parse_listen_addr, parse_network, parse_recursor, ttl_seconds,
};
use super::{
    check_listen_list, ConfigError, FileLocation, LogFormat, RecursorStrategy, Secret,
    MAX_BLOCKING_WAIT, MAX_RRL_SLIP, MAX_RRL_WINDOW, MIN_BLOCKING_WAIT,
};

type Raw = Option<Spanned<Value>>;

/// The end of the error for a file given to `--config` that is the Consul agent's
/// configuration.
const NOT_TOML: &str = ": --config takes consul-dns's own settings, in TOML (see \
                        consul-dns.example.toml); for the Consul agent's configuration \
                        (.hcl, .json, /etc/consul.d) use --consul-config";

/// Declares the `dns_config` keys once; they are accepted both at the top level of the
/// file and inside a `[dns_config]` table (Consul's own layout).
macro_rules! raw_structs {
    ($($dns:ident),* $(,)?) => {
        /// The `[dns_config]` table.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields, expecting = "a [dns_config] table")]
        struct RawDns {
            $($dns: Raw,)*
        }

        /// The whole file.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields, expecting = "a table of consul-dns settings")]
        struct RawFile {
            consul_addr: Raw,
            consul_config: Raw,
            token: Raw,
            token_file: Raw,
            ca_file: Raw,
            ca_path: Raw,
            cert_file: Raw,
            key_file: Raw,
            tls_server_name: Raw,
            ssl_verify: Raw,
            listen: Raw,
            domain: Raw,
            alt_domain: Raw,
            datacenter: Raw,
            recursors: Raw,
            allow_recursion: Raw,
            allow_transfer: Raw,
            notify: Raw,
            notify_interval: Raw,
            transfer_journal_bytes: Raw,
            transfer_key_name: Raw,
            transfer_key_secret: Raw,
            transfer_key_file: Raw,
            transfer_key_algorithm: Raw,
            zones: Raw,
            max_watches: Raw,
            max_services: Raw,
            consul_max_body_bytes: Raw,
            consul_body_budget_bytes: Raw,
            watch_idle_timeout: Raw,
            startup_wait: Raw,
            blocking_wait: Raw,
            watch_all_services: Raw,
            watch_poll_interval: Raw,
            http_addr: Raw,
            workers: Raw,
            internal_cidrs: Raw,
            translate_wan_addrs: Raw,
            allow_any: Raw,
            tcp_max_connections: Raw,
            tcp_max_connections_per_source: Raw,
            tcp_idle_timeout: Raw,
            tcp_total_timeout: Raw,
            tcp_write_timeout: Raw,
            listen_tls: Raw,
            tls_cert_file: Raw,
            tls_key_file: Raw,
            tls_max_connections: Raw,
            tls_idle_timeout: Raw,
            rrl_responses_per_second: Raw,
            rrl_window: Raw,
            rrl_slip: Raw,
            rrl_ipv4_prefix_length: Raw,
            rrl_ipv6_prefix_length: Raw,
            log_level: Raw,
            log_format: Raw,
            query_log: Raw,
            query_log_sample: Raw,
            dns_config: Option<RawDns>,
            $($dns: Raw,)*
        }

        impl RawFile {
            /// Moves the top-level `dns_config` keys out.
            fn take_dns(&mut self) -> RawDns {
                RawDns { $($dns: self.$dns.take(),)* }
            }
        }

        impl RawDns {
            /// Combines the top-level keys with the `[dns_config]` table into fields that
            /// carry their full key path. A key set in both places is an error.
            fn merge(self, section: RawDns, ctx: &Ctx<'_>) -> Result<DnsFields, ConfigError> {
                Ok(DnsFields {
                    $($dns: ctx.pick(stringify!($dns), self.$dns, section.$dns)?,)*
                })
            }
        }

        /// The `dns_config` keys that were set, wherever they were set.
        pub(super) struct DnsFields {
            $($dns: Option<Field>,)*
        }

        impl DnsFields {
            /// Takes the `dns_config` keys consul-dns knows out of `fields` (key → value);
            /// the others are left there.
            pub(super) fn take(fields: &mut BTreeMap<String, Field>) -> DnsFields {
                DnsFields { $($dns: fields.remove(stringify!($dns)),)* }
            }
        }
    };
}

raw_structs!(
    allow_stale,
    max_stale,
    node_ttl,
    service_ttl,
    enable_truncate,
    only_passing,
    recursor_strategy,
    recursor_timeout,
    disable_compression,
    udp_answer_limit,
    a_record_limit,
    enable_additional_node_meta_txt,
    soa,
    use_cache,
    cache_max_age,
    prefer_namespace,
);

/// Keys of the `soa` table.
const SOA_KEYS: [&str; 4] = ["refresh", "retry", "expire", "min_ttl"];

/// Typed values read from a config file; `None` = not set in the file.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct FileConfig {
    pub consul_addr: Option<String>,
    /// The Consul agent's configuration files and directories (`consul_config`).
    pub consul_config: Option<Vec<PathBuf>>,
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    pub tls: TlsFile,
    pub listen: Option<Vec<SocketAddr>>,
    pub domain: Option<String>,
    pub alt_domain: Option<String>,
    pub datacenter: Option<String>,
    pub recursors: Option<Vec<SocketAddr>>,
    pub allow_recursion: Option<Vec<IpNet>>,
    pub allow_transfer: Option<Vec<IpNet>>,
    pub notify: Option<Vec<SocketAddr>>,
    pub notify_interval: Option<Duration>,
    pub transfer_journal_bytes: Option<usize>,
    pub transfer_key_name: Option<String>,
    pub transfer_key_secret: Option<Secret>,
    pub transfer_key_file: Option<PathBuf>,
    pub transfer_key_algorithm: Option<String>,
    pub zones: Option<PathBuf>,
    pub max_watches: Option<usize>,
    pub max_services: Option<usize>,
    pub consul_max_body_bytes: Option<usize>,
    pub consul_body_budget_bytes: Option<usize>,
    pub watch_idle_timeout: Option<Duration>,
    pub startup_wait: Option<Duration>,
    pub blocking_wait: Option<Duration>,
    pub watch_all_services: Option<bool>,
    pub watch_poll_interval: Option<Duration>,
    pub http_addr: Option<SocketAddr>,
    pub workers: Option<usize>,
    pub internal_cidrs: Option<Vec<ipnet::IpNet>>,
    pub translate_wan_addrs: Option<bool>,
    pub allow_any: Option<bool>,
    pub tcp_max_connections: Option<usize>,
    pub tcp_max_connections_per_source: Option<usize>,
    pub tcp_idle_timeout: Option<Duration>,
    pub tcp_total_timeout: Option<Duration>,
    pub tcp_write_timeout: Option<Duration>,
    pub dot: DotFile,
    pub rrl_responses_per_second: Option<u32>,
    pub rrl_window: Option<Duration>,
    pub rrl_slip: Option<u32>,
    pub rrl_ipv4_prefix_length: Option<u8>,
    pub rrl_ipv6_prefix_length: Option<u8>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
    pub query_log: Option<bool>,
    pub query_log_sample: Option<u32>,
    pub dns: DnsFile,
}

/// TLS values read from a config file; `None` = not set (an empty string is not set).
/// The client certificate and key keep where they were set, to name them when only one is.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct TlsFile {
    pub ca_file: Option<PathBuf>,
    pub ca_path: Option<PathBuf>,
    pub cert_file: Option<(PathBuf, FileLocation)>,
    pub key_file: Option<(PathBuf, FileLocation)>,
    pub server_name: Option<String>,
    pub ssl_verify: Option<bool>,
}

/// DNS-over-TLS values read from a config file; `None` = not set (an empty path is not
/// set). The addresses keep where they were set, to name them when the certificate or the
/// key is missing.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct DotFile {
    pub listen: Option<(Vec<SocketAddr>, FileLocation)>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub max_connections: Option<usize>,
    pub idle_timeout: Option<Duration>,
}

/// `dns_config` values read from a config file; `None` = not set.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct DnsFile {
    pub allow_stale: Option<bool>,
    pub max_stale: Option<Duration>,
    pub node_ttl: Option<u32>,
    /// Lower-cased key → TTL seconds.
    pub service_ttl: Option<BTreeMap<String, u32>>,
    pub enable_truncate: Option<bool>,
    pub only_passing: Option<bool>,
    pub recursor_strategy: Option<RecursorStrategy>,
    pub recursor_timeout: Option<Duration>,
    pub disable_compression: Option<bool>,
    pub udp_answer_limit: Option<u32>,
    pub a_record_limit: Option<u32>,
    pub enable_additional_node_meta_txt: Option<bool>,
    pub soa: SoaFile,
    pub use_cache: Option<bool>,
    pub cache_max_age: Option<Duration>,
    pub prefer_namespace: Option<bool>,
}

impl DnsFile {
    /// These values over `below`'s, each where set (the SOA's field by field).
    pub(super) fn over(self, below: DnsFile) -> DnsFile {
        DnsFile {
            allow_stale: self.allow_stale.or(below.allow_stale),
            max_stale: self.max_stale.or(below.max_stale),
            node_ttl: self.node_ttl.or(below.node_ttl),
            service_ttl: self.service_ttl.or(below.service_ttl),
            enable_truncate: self.enable_truncate.or(below.enable_truncate),
            only_passing: self.only_passing.or(below.only_passing),
            recursor_strategy: self.recursor_strategy.or(below.recursor_strategy),
            recursor_timeout: self.recursor_timeout.or(below.recursor_timeout),
            disable_compression: self.disable_compression.or(below.disable_compression),
            udp_answer_limit: self.udp_answer_limit.or(below.udp_answer_limit),
            a_record_limit: self.a_record_limit.or(below.a_record_limit),
            enable_additional_node_meta_txt: self
                .enable_additional_node_meta_txt
                .or(below.enable_additional_node_meta_txt),
            soa: SoaFile {
                refresh: self.soa.refresh.or(below.soa.refresh),
                retry: self.soa.retry.or(below.soa.retry),
                expire: self.soa.expire.or(below.soa.expire),
                min_ttl: self.soa.min_ttl.or(below.soa.min_ttl),
            },
            use_cache: self.use_cache.or(below.use_cache),
            cache_max_age: self.cache_max_age.or(below.cache_max_age),
            prefer_namespace: self.prefer_namespace.or(below.prefer_namespace),
        }
    }
}

/// `soa` values read from a config file; `None` = not set.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct SoaFile {
    pub refresh: Option<u32>,
    pub retry: Option<u32>,
    pub expire: Option<u32>,
    pub min_ttl: Option<u32>,
}

impl FileConfig {
    /// Reads and parses the config file at `path`. A directory, or a file named `.json`
    /// or `.hcl`, is the Consul agent's configuration, not this file: the error says so.
    pub fn read(path: &Path) -> Result<FileConfig, ConfigError> {
        let not_toml = |found: &str| ConfigError::Parse {
            path: path.to_path_buf(),
            line: None,
            message: format!("{found}{NOT_TOML}"),
        };
        if path.is_dir() {
            return Err(not_toml("a directory, not a TOML file"));
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("json") => return Err(not_toml("a .json file")),
            Some(e) if e.eq_ignore_ascii_case("hcl") => return Err(not_toml("an .hcl file")),
            _ => {}
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        FileConfig::parse(path, &text)
    }

    /// Parses config file text; `path` is only used in error messages.
    pub fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
        let ctx = Ctx { path, text };
        let mut raw: RawFile = toml::from_str(text).map_err(|e| {
            // What is plainly JSON or HCL is named as such, not reported as bad TOML.
            let found = if text.trim_start().starts_with('{') {
                Some("JSON")
            } else if super::hcl::has_blocks(text) {
                Some("HCL")
            } else {
                None
            };
            match found {
                Some(found) => ConfigError::Parse {
                    path: path.to_path_buf(),
                    line: None,
                    message: format!("{found}, not TOML{NOT_TOML}"),
                },
                None => ConfigError::Parse {
                    path: path.to_path_buf(),
                    line: e.span().map(|s| ctx.line_of(s.start)),
                    message: suggest_key(&one_line(e.message())),
                },
            }
        })?;
        let top_dns = raw.take_dns();
        let section = raw.dns_config.take().unwrap_or_default();
        let dns = top_dns.merge(section, &ctx)?;

        let f = |key: &'static str, raw: Raw| raw.map(|v| ctx.field(key.to_string(), v));
        let map_string = |key: &'static str,
                          raw: Raw,
                          check: fn(&str) -> Result<String, String>|
         -> Result<Option<String>, ConfigError> {
            f(key, raw)
                .map(|field| {
                    let s = ctx.string(&field)?;
                    check(&s).map_err(|reason| ctx.invalid(&field, reason))
                })
                .transpose()
        };

        let token_file = f("token_file", raw.token_file)
            .map(|field| ctx.string(&field).map(PathBuf::from))
            .transpose()?;
        let token = f("token", raw.token)
            .map(|field| ctx.secret(&field))
            .transpose()?
            .flatten();
        let path = |key: &'static str, raw: Raw| -> Result<Option<Field>, ConfigError> {
            match f(key, raw) {
                Some(field) => Ok((!ctx.string(&field)?.is_empty()).then_some(field)),
                None => Ok(None),
            }
        };
        let located = |field: Field| -> Result<(PathBuf, FileLocation), ConfigError> {
            Ok((PathBuf::from(ctx.string(&field)?), ctx.location(field.line)))
        };
        let tls = TlsFile {
            ca_file: path("ca_file", raw.ca_file)?
                .map(|field| ctx.string(&field).map(PathBuf::from))
                .transpose()?,
            ca_path: path("ca_path", raw.ca_path)?
                .map(|field| ctx.string(&field).map(PathBuf::from))
                .transpose()?,
            cert_file: path("cert_file", raw.cert_file)?.map(located).transpose()?,
            key_file: path("key_file", raw.key_file)?.map(located).transpose()?,
            server_name: path("tls_server_name", raw.tls_server_name)?
                .map(|field| {
                    let s = ctx.string(&field)?;
                    normalize_tls_server_name(&s).map_err(|reason| ctx.invalid(&field, reason))
                })
                .transpose()?,
            ssl_verify: f("ssl_verify", raw.ssl_verify)
                .map(|field| ctx.bool(&field))
                .transpose()?,
        };
        let listen = f("listen", raw.listen)
            .map(|field| ctx.listen(&field))
            .transpose()?;
        let recursors = f("recursors", raw.recursors)
            .map(|field| ctx.recursors(&field))
            .transpose()?;
        let allow_recursion = f("allow_recursion", raw.allow_recursion)
            .map(|field| ctx.networks(&field))
            .transpose()?;
        let allow_transfer = f("allow_transfer", raw.allow_transfer)
            .map(|field| ctx.networks(&field))
            .transpose()?;
        let notify = f("notify", raw.notify)
            .map(|field| ctx.recursors(&field))
            .transpose()?;
        let notify_interval = f("notify_interval", raw.notify_interval)
            .map(|field| ctx.positive_duration(&field))
            .transpose()?;
        let transfer_journal_bytes = f("transfer_journal_bytes", raw.transfer_journal_bytes)
            .map(|field| ctx.count(&field))
            .transpose()?;
        let transfer_key_name = f("transfer_key_name", raw.transfer_key_name)
            .map(|field| ctx.string(&field))
            .transpose()?
            .filter(|s| !s.is_empty());
        let transfer_key_secret = f("transfer_key_secret", raw.transfer_key_secret)
            .map(|field| ctx.secret(&field))
            .transpose()?
            .flatten();
        let transfer_key_file = f("transfer_key_file", raw.transfer_key_file)
            .map(|field| ctx.string(&field))
            .transpose()?
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        let transfer_key_algorithm = f("transfer_key_algorithm", raw.transfer_key_algorithm)
            .map(|field| ctx.string(&field))
            .transpose()?;
        let zones = f("zones", raw.zones)
            .map(|field| ctx.string(&field).map(PathBuf::from))
            .transpose()?;
        let max_watches = f("max_watches", raw.max_watches)
            .map(|field| ctx.count(&field))
            .transpose()?;
        let consul_max_body_bytes = f("consul_max_body_bytes", raw.consul_max_body_bytes)
            .map(|field| ctx.count(&field))
            .transpose()?;
        let consul_body_budget_bytes = f("consul_body_budget_bytes", raw.consul_body_budget_bytes)
            .map(|field| ctx.count(&field))
            .transpose()?;
        let max_services = f("max_services", raw.max_services)
            .map(|field| ctx.count(&field))
            .transpose()?;
        let tcp_max_connections = f("tcp_max_connections", raw.tcp_max_connections)
            .map(|field| ctx.count(&field))
            .transpose()?;
        let tcp_max_connections_per_source = f(
            "tcp_max_connections_per_source",
            raw.tcp_max_connections_per_source,
        )
        .map(|field| ctx.count(&field))
        .transpose()?;
        let tcp_idle_timeout = f("tcp_idle_timeout", raw.tcp_idle_timeout)
            .map(|field| ctx.positive_duration(&field))
            .transpose()?;
        let tcp_total_timeout = f("tcp_total_timeout", raw.tcp_total_timeout)
            .map(|field| ctx.positive_duration(&field))
            .transpose()?;
        let tcp_write_timeout = f("tcp_write_timeout", raw.tcp_write_timeout)
            .map(|field| ctx.positive_duration(&field))
            .transpose()?;
        let dot = DotFile {
            listen: f("listen_tls", raw.listen_tls)
                .map(|field| Ok((ctx.addresses(&field)?, ctx.location(field.line))))
                .transpose()?,
            cert_file: path("tls_cert_file", raw.tls_cert_file)?
                .map(|field| ctx.string(&field).map(PathBuf::from))
                .transpose()?,
            key_file: path("tls_key_file", raw.tls_key_file)?
                .map(|field| ctx.string(&field).map(PathBuf::from))
                .transpose()?,
            max_connections: f("tls_max_connections", raw.tls_max_connections)
                .map(|field| ctx.count(&field))
                .transpose()?,
            idle_timeout: f("tls_idle_timeout", raw.tls_idle_timeout)
                .map(|field| ctx.positive_duration(&field))
                .transpose()?,
        };
        let rrl_responses_per_second = f("rrl_responses_per_second", raw.rrl_responses_per_second)
            .map(|field| ctx.u32(&field))
            .transpose()?;
        let rrl_window = f("rrl_window", raw.rrl_window)
            .map(|field| {
                let d = ctx.duration(&field)?;
                if !(Duration::from_secs(1)..=MAX_RRL_WINDOW).contains(&d) {
                    return Err(ctx.invalid(&field, "must be between 1s and 1h"));
                }
                Ok(d)
            })
            .transpose()?;
        let rrl_slip = f("rrl_slip", raw.rrl_slip)
            .map(|field| ctx.u32_at_most(&field, MAX_RRL_SLIP))
            .transpose()?;
        let rrl_ipv4_prefix_length = f("rrl_ipv4_prefix_length", raw.rrl_ipv4_prefix_length)
            .map(|field| ctx.prefix_length(&field, 32))
            .transpose()?;
        let rrl_ipv6_prefix_length = f("rrl_ipv6_prefix_length", raw.rrl_ipv6_prefix_length)
            .map(|field| ctx.prefix_length(&field, 128))
            .transpose()?;
        let watch_idle_timeout = f("watch_idle_timeout", raw.watch_idle_timeout)
            .map(|field| ctx.positive_duration(&field))
            .transpose()?;
        let startup_wait = f("startup_wait", raw.startup_wait)
            .map(|field| ctx.duration(&field))
            .transpose()?;
        let blocking_wait = f("blocking_wait", raw.blocking_wait)
            .map(|field| ctx.blocking_wait(&field))
            .transpose()?;
        let watch_all_services = f("watch_all_services", raw.watch_all_services)
            .map(|field| ctx.bool(&field))
            .transpose()?;
        let watch_poll_interval = f("watch_poll_interval", raw.watch_poll_interval)
            .map(|field| ctx.positive_duration(&field))
            .transpose()?;
        let allow_any = f("allow_any", raw.allow_any)
            .map(|field| ctx.bool(&field))
            .transpose()?;
        let translate_wan_addrs = f("translate_wan_addrs", raw.translate_wan_addrs)
            .map(|field| ctx.bool(&field))
            .transpose()?;
        let internal_cidrs = f("internal_cidrs", raw.internal_cidrs)
            .map(|field| ctx.cidrs(&field))
            .transpose()?;
        let workers = f("workers", raw.workers)
            .map(|field| ctx.count(&field))
            .transpose()?;
        let log_level = f("log_level", raw.log_level)
            .map(|field| {
                let s = ctx.string(&field)?;
                match s.as_str() {
                    "off" | "error" | "warn" | "info" | "debug" | "trace" => Ok(s),
                    _ => Err(ctx.invalid(&field, "must be off, error, warn, info, debug or trace")),
                }
            })
            .transpose()?;
        let log_format = f("log_format", raw.log_format)
            .map(|field| {
                let s = ctx.string(&field)?;
                s.parse::<LogFormat>()
                    .map_err(|reason| ctx.invalid(&field, reason))
            })
            .transpose()?;
        let query_log = f("query_log", raw.query_log)
            .map(|field| ctx.bool(&field))
            .transpose()?;
        let query_log_sample = f("query_log_sample", raw.query_log_sample)
            .map(|field| match ctx.u32(&field)? {
                0 => Err(ctx.invalid(&field, "must be at least 1")),
                n => Ok(n),
            })
            .transpose()?;
        let http_addr = f("http_addr", raw.http_addr)
            .map(|field| {
                let s = ctx.string(&field)?;
                parse_listen_addr(&s).map_err(|reason| ctx.invalid(&field, reason))
            })
            .transpose()?;

        let consul_config = f("consul_config", raw.consul_config)
            .map(|field| {
                ctx.string_list(&field)?
                    .iter()
                    .map(|item| ctx.string(item).map(PathBuf::from))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;

        Ok(FileConfig {
            consul_addr: map_string("consul_addr", raw.consul_addr, normalize_consul_addr)?,
            consul_config,
            token,
            token_file,
            tls,
            listen,
            domain: map_string("domain", raw.domain, normalize_domain)?,
            alt_domain: map_string("alt_domain", raw.alt_domain, normalize_domain)?,
            datacenter: map_string("datacenter", raw.datacenter, normalize_datacenter)?,
            recursors,
            allow_recursion,
            allow_transfer,
            notify,
            notify_interval,
            transfer_journal_bytes,
            transfer_key_name,
            transfer_key_secret,
            transfer_key_file,
            transfer_key_algorithm,
            zones,
            max_watches,
            max_services,
            consul_max_body_bytes,
            consul_body_budget_bytes,
            watch_idle_timeout,
            startup_wait,
            blocking_wait,
            watch_all_services,
            watch_poll_interval,
            http_addr,
            workers,
            internal_cidrs,
            translate_wan_addrs,
            allow_any,
            tcp_max_connections,
            tcp_max_connections_per_source,
            tcp_idle_timeout,
            tcp_total_timeout,
            tcp_write_timeout,
            dot,
            rrl_responses_per_second,
            rrl_window,
            rrl_slip,
            rrl_ipv4_prefix_length,
            rrl_ipv6_prefix_length,
            log_level,
            log_format,
            query_log,
            query_log_sample,
            dns: ctx.dns(dns)?,
        })
    }
}

/// One value from the file, with its full key path and line.
#[derive(Debug, Clone)]
pub(super) struct Field {
    pub key: String,
    pub line: Option<usize>,
    pub value: Value,
}

/// Error context: the file's path and text.
pub(super) struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
}

impl<'a> Ctx<'a> {
    /// The context of a file read by other means than the toml crate (the Consul agent's
    /// files): values carry their own lines.
    pub(super) fn new(path: &'a Path) -> Ctx<'a> {
        Ctx { path, text: "" }
    }

    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn field(&self, key: String, spanned: Spanned<Value>) -> Field {
        let line = Some(self.line_of(spanned.span().start));
        Field {
            key,
            line,
            value: spanned.into_inner(),
        }
    }

    /// A value nested in `parent` (which has no span of its own): reported at the line
    /// where the parent table or array starts.
    fn child(&self, parent: &Field, key: String, value: Value) -> Field {
        Field {
            key,
            line: parent.line,
            value,
        }
    }

    pub(super) fn location(&self, line: Option<usize>) -> FileLocation {
        FileLocation {
            path: self.path.to_path_buf(),
            line,
        }
    }

    pub(super) fn invalid(&self, field: &Field, reason: impl Into<String>) -> ConfigError {
        let value = match (&field.value, field.key.as_str()) {
            (_, "token") => None,
            (Value::String(s), _) => Some(format!("{s:?}")),
            (Value::Integer(i), _) => Some(i.to_string()),
            (Value::Float(x), _) => Some(x.to_string()),
            (Value::Boolean(b), _) => Some(b.to_string()),
            (Value::Datetime(d), _) => Some(d.to_string()),
            (Value::Array(_) | Value::Table(_), _) => None,
        };
        ConfigError::Invalid {
            key: field.key.clone(),
            value,
            file: Some(self.location(field.line)),
            reason: reason.into(),
        }
    }

    pub(super) fn type_error(&self, field: &Field, expected: &str) -> ConfigError {
        let found = type_name(&field.value);
        self.invalid(field, format!("expected {expected}, found {found}"))
    }

    fn pick(&self, name: &str, top: Raw, section: Raw) -> Result<Option<Field>, ConfigError> {
        match (top, section) {
            (Some(_), Some(s)) => {
                let field = self.field(format!("dns_config.{name}"), s);
                Err(self.invalid(
                    &field,
                    format!("\"{name}\" is also set at the top level; set it in one place"),
                ))
            }
            (Some(t), None) => Ok(Some(self.field(name.to_string(), t))),
            (None, Some(s)) => Ok(Some(self.field(format!("dns_config.{name}"), s))),
            (None, None) => Ok(None),
        }
    }

    // ---- scalar conversions ----

    pub(super) fn string(&self, field: &Field) -> Result<String, ConfigError> {
        match &field.value {
            Value::String(s) => Ok(s.clone()),
            _ => Err(self.type_error(field, "a string")),
        }
    }

    pub(super) fn bool(&self, field: &Field) -> Result<bool, ConfigError> {
        match field.value {
            Value::Boolean(b) => Ok(b),
            _ => Err(self.type_error(field, "true or false")),
        }
    }

    fn u32(&self, field: &Field) -> Result<u32, ConfigError> {
        match field.value {
            Value::Integer(i) => u32::try_from(i)
                .map_err(|_| self.invalid(field, format!("must be between 0 and {}", u32::MAX))),
            _ => Err(self.type_error(field, "an integer")),
        }
    }

    /// A Go duration string (`"10s"`, `"1m30s"`) or an integer number of seconds.
    fn duration(&self, field: &Field) -> Result<Duration, ConfigError> {
        match &field.value {
            Value::String(s) => parse_go_duration(s).map_err(|reason| self.invalid(field, reason)),
            Value::Integer(i) => u64::try_from(*i)
                .map(Duration::from_secs)
                .map_err(|_| self.invalid(field, "negative durations are not allowed")),
            _ => Err(self.type_error(
                field,
                "a duration string such as \"10s\" or an integer number of seconds",
            )),
        }
    }

    fn positive_duration(&self, field: &Field) -> Result<Duration, ConfigError> {
        let d = self.duration(field)?;
        if d.is_zero() {
            return Err(self.invalid(field, "must be greater than zero"));
        }
        Ok(d)
    }

    fn blocking_wait(&self, field: &Field) -> Result<Duration, ConfigError> {
        let d = self.duration(field)?;
        if !(MIN_BLOCKING_WAIT..=MAX_BLOCKING_WAIT).contains(&d) {
            return Err(self.invalid(
                field,
                "must be between 1s and 10m (Consul caps a blocking query's wait at 10m)",
            ));
        }
        Ok(d)
    }

    fn ttl(&self, field: &Field) -> Result<u32, ConfigError> {
        let d = self.duration(field)?;
        ttl_seconds(d).map_err(|reason| self.invalid(field, reason))
    }

    fn u32_at_most(&self, field: &Field, max: u32) -> Result<u32, ConfigError> {
        match self.u32(field)? {
            n if n <= max => Ok(n),
            _ => Err(self.invalid(field, format!("must be between 0 and {max}"))),
        }
    }

    fn prefix_length(&self, field: &Field, max: u8) -> Result<u8, ConfigError> {
        let n = self.u32_at_most(field, u32::from(max))?;
        u8::try_from(n).map_err(|_| self.invalid(field, format!("must be between 0 and {max}")))
    }

    /// An integer ≥ 1.
    fn count(&self, field: &Field) -> Result<usize, ConfigError> {
        match field.value {
            Value::Integer(i) if i >= 1 => {
                usize::try_from(i).map_err(|_| self.invalid(field, "too large for this platform"))
            }
            Value::Integer(_) => Err(self.invalid(field, "must be at least 1")),
            _ => Err(self.type_error(field, "an integer")),
        }
    }

    fn secret(&self, field: &Field) -> Result<Option<Secret>, ConfigError> {
        let s = self.string(field)?;
        Ok((!s.is_empty()).then(|| Secret::new(s)))
    }

    // ---- lists ----

    /// A list of strings; a single string is accepted as a one-element list.
    pub(super) fn string_list(&self, field: &Field) -> Result<Vec<Field>, ConfigError> {
        match &field.value {
            Value::String(_) => Ok(vec![field.clone()]),
            Value::Array(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, v)| self.child(field, format!("{}[{i}]", field.key), v.clone()))
                .collect()),
            _ => Err(self.type_error(field, "a list of strings")),
        }
    }

    fn listen(&self, field: &Field) -> Result<Vec<SocketAddr>, ConfigError> {
        let out = self.addresses(field)?;
        if out.is_empty() {
            return Err(self.invalid(field, "must list at least one address"));
        }
        Ok(out)
    }

    /// Listen addresses, none listed twice; the list may be empty.
    fn addresses(&self, field: &Field) -> Result<Vec<SocketAddr>, ConfigError> {
        let mut out = Vec::new();
        for item in self.string_list(field)? {
            let s = self.string(&item)?;
            let addr = parse_listen_addr(&s).map_err(|reason| self.invalid(&item, reason))?;
            out.push(addr);
        }
        check_listen_list(&out).map_err(|reason| self.invalid(field, reason))?;
        Ok(out)
    }

    fn cidrs(&self, field: &Field) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        let mut out = Vec::new();
        for item in self.string_list(field)? {
            let s = self.string(&item)?;
            out.push(super::values::parse_cidr(&s).map_err(|reason| self.invalid(&item, reason))?);
        }
        Ok(out)
    }

    pub(super) fn recursors(&self, field: &Field) -> Result<Vec<SocketAddr>, ConfigError> {
        let mut out: Vec<SocketAddr> = Vec::new();
        for item in self.string_list(field)? {
            let s = self.string(&item)?;
            let addr = parse_recursor(&s).map_err(|reason| self.invalid(&item, reason))?;
            // Duplicates are dropped, keeping the first, as Consul does.
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
        Ok(out)
    }

    fn networks(&self, field: &Field) -> Result<Vec<IpNet>, ConfigError> {
        let mut out: Vec<IpNet> = Vec::new();
        for item in self.string_list(field)? {
            let s = self.string(&item)?;
            let net = parse_network(&s).map_err(|reason| self.invalid(&item, reason))?;
            if !out.contains(&net) {
                out.push(net);
            }
        }
        Ok(out)
    }

    // ---- tables ----

    fn table<'v>(
        &self,
        field: &'v Field,
    ) -> Result<&'v toml::map::Map<String, Value>, ConfigError> {
        match &field.value {
            Value::Table(t) => Ok(t),
            _ => Err(self.type_error(field, "a table")),
        }
    }

    fn soa(&self, field: &Field) -> Result<SoaFile, ConfigError> {
        let mut soa = SoaFile::default();
        for (k, v) in self.table(field)? {
            let child = self.child(
                field,
                format!("{}.{}", field.key, key_segment(k)),
                v.clone(),
            );
            let slot = match k.as_str() {
                "refresh" => &mut soa.refresh,
                "retry" => &mut soa.retry,
                "expire" => &mut soa.expire,
                "min_ttl" => &mut soa.min_ttl,
                _ => {
                    return Err(self.invalid(
                        &child,
                        format!(
                            "unknown field `{k}`, expected one of `{}`",
                            SOA_KEYS.join("`, `")
                        ),
                    ))
                }
            };
            *slot = Some(self.u32(&child)?);
        }
        Ok(soa)
    }

    fn service_ttl(&self, field: &Field) -> Result<BTreeMap<String, u32>, ConfigError> {
        let mut out = BTreeMap::new();
        for (k, v) in self.table(field)? {
            let child = self.child(
                field,
                format!("{}.{}", field.key, key_segment(k)),
                v.clone(),
            );
            if k.is_empty() {
                return Err(self.invalid(&child, "empty service name"));
            }
            let ttl = self.ttl(&child)?;
            let lower = k.to_lowercase();
            if out.insert(lower.clone(), ttl).is_some() {
                return Err(self.invalid(
                    &child,
                    format!("duplicate of another key once lower-cased (\"{lower}\")"),
                ));
            }
        }
        Ok(out)
    }

    pub(super) fn dns(&self, f: DnsFields) -> Result<DnsFile, ConfigError> {
        Ok(DnsFile {
            allow_stale: f.allow_stale.map(|x| self.bool(&x)).transpose()?,
            max_stale: f.max_stale.map(|x| self.duration(&x)).transpose()?,
            node_ttl: f.node_ttl.map(|x| self.ttl(&x)).transpose()?,
            service_ttl: f.service_ttl.map(|x| self.service_ttl(&x)).transpose()?,
            enable_truncate: f.enable_truncate.map(|x| self.bool(&x)).transpose()?,
            only_passing: f.only_passing.map(|x| self.bool(&x)).transpose()?,
            recursor_strategy: f
                .recursor_strategy
                .map(|x| {
                    let s = self.string(&x)?;
                    s.parse().map_err(|reason: String| self.invalid(&x, reason))
                })
                .transpose()?,
            recursor_timeout: f
                .recursor_timeout
                .map(|x| self.positive_duration(&x))
                .transpose()?,
            disable_compression: f.disable_compression.map(|x| self.bool(&x)).transpose()?,
            // 0 is Consul's "no answers on UDP without EDNS" (the client retries over TCP).
            udp_answer_limit: f.udp_answer_limit.map(|x| self.u32(&x)).transpose()?,
            a_record_limit: f.a_record_limit.map(|x| self.u32(&x)).transpose()?,
            enable_additional_node_meta_txt: f
                .enable_additional_node_meta_txt
                .map(|x| self.bool(&x))
                .transpose()?,
            soa: f.soa.map(|x| self.soa(&x)).transpose()?.unwrap_or_default(),
            use_cache: f.use_cache.map(|x| self.bool(&x)).transpose()?,
            cache_max_age: f.cache_max_age.map(|x| self.duration(&x)).transpose()?,
            prefer_namespace: f.prefer_namespace.map(|x| self.bool(&x)).transpose()?,
        })
    }
}

fn type_name(v: &Value) -> String {
    match v {
        Value::String(s) => format!("string {s:?}"),
        Value::Integer(i) => format!("integer {i}"),
        Value::Float(x) => format!("float {x}"),
        Value::Boolean(b) => format!("boolean {b}"),
        Value::Datetime(_) => "a date-time".to_string(),
        Value::Array(_) => "an array".to_string(),
        Value::Table(_) => "a table".to_string(),
    }
}

/// A TOML key as it would be written: bare if possible, else quoted.
fn key_segment(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        k.to_string()
    } else {
        format!("{k:?}")
    }
}

/// toml's messages can span several lines; make them one.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// serde's "unknown field `x`, expected one of `a`, `b`, …" (some sixty keys on one line)
/// as "unknown key `x`: did you mean `a`?" when one key is close, else with the list
/// pointed at.
fn suggest_key(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((unknown, expected)) = rest.split_once("`, expected one of ") else {
        return message.to_string();
    };
    let closest = expected
        .split(", ")
        .map(|k| k.trim_matches('`'))
        .map(|k| (strsim::jaro_winkler(unknown, k), k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match closest {
        Some((_, key)) => format!("unknown key `{unknown}`: did you mean `{key}`?"),
        None => format!(
            "unknown key `{unknown}` (every key is in consul-dns.example.toml and the README)"
        ),
    }
}
