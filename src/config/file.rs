//! The TOML config file: each key converted to its typed value where it is read, with
//! errors naming the file, line and key.
//!
//! The text is deserialised into tables of `Spanned` keys and values (syntax errors come
//! with their line). Each key is then taken from its table by the one line that converts
//! it (`Parts::get`), so that a type or range error names the exact key
//! (`dns_config.soa.retry`) and its line. Keys the Consul agent's configuration has no
//! say in go straight into `FileConfig::base`, a `Config` at its defaults (into their
//! sections: `TcpConfig`, `RrlConfig`, `TransferConfig`, `DotConfig::limits`), which the
//! merge starts from; the `dns_config` keys into a `DnsConfigPatch`, layered over the
//! agent's. A
//! key left over is unknown: the names known are those asked for when an empty file is
//! converted, and the closest is suggested.

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
    check_listen_list, default_tcp_max_connections_per_source, Config, ConfigError, DnsConfigPatch,
    DotConfig, FileLocation, RrlConfig, Secret, ServiceTtl, SoaConfigPatch, TcpConfig,
    TransferConfig, MAX_BLOCKING_WAIT, MAX_RRL_SLIP, MAX_RRL_WINDOW, MAX_UDP_ANSWER_LIMIT,
    MIN_BLOCKING_WAIT,
};

type Raw = Option<Spanned<Value>>;

/// The end of the error for a file given to `--config` that is the Consul agent's
/// configuration.
const NOT_TOML: &str = ": --config takes consul-dns's own settings, in TOML (see \
                        consul-dns.example.toml); for the Consul agent's configuration \
                        (.hcl, .json, /etc/consul.d) use --consul-config";

/// One table of the file: each key (with its line) and its value (with its line).
type Keys = BTreeMap<Spanned<String>, Spanned<Value>>;

/// The `[dns_config]` table alone, read in a second pass so that its values keep their
/// lines (the first pass reads it as one value).
#[derive(Deserialize)]
struct Section {
    #[serde(default)]
    dns_config: Option<Keys>,
}

/// The file's keys while they are converted: each key is taken where it is converted, the
/// only place its name is written. Every name asked for is noted: what is left in the file
/// unasked is an unknown key, reported with the closest known name.
struct Parts<'c> {
    ctx: &'c Ctx<'c>,
    top: Keys,
    dns: Keys,
    asked: Vec<&'static str>,
    asked_dns: Vec<&'static str>,
}

impl<'c> Parts<'c> {
    fn new(ctx: &'c Ctx<'c>, top: Keys, dns: Keys) -> Parts<'c> {
        Parts {
            ctx,
            top,
            dns,
            asked: Vec::new(),
            asked_dns: Vec::new(),
        }
    }

    /// A top-level key, if set.
    fn take(&mut self, key: &'static str) -> Option<Field> {
        self.asked.push(key);
        let value = self.top.remove(key)?;
        Some(self.ctx.field(key.to_string(), value))
    }

    /// A top-level key converted by `convert`, if set.
    fn get<T>(
        &mut self,
        key: &'static str,
        convert: impl FnOnce(&Ctx<'c>, &Field) -> Result<T, ConfigError>,
    ) -> Result<Option<T>, ConfigError> {
        let ctx = self.ctx;
        self.take(key).map(|field| convert(ctx, &field)).transpose()
    }

    /// Key `key` converted by `convert`, or `default` when it is not set.
    fn get_or<T>(
        &mut self,
        key: &'static str,
        convert: impl FnOnce(&Ctx<'c>, &Field) -> Result<T, ConfigError>,
        default: T,
    ) -> Result<T, ConfigError> {
        Ok(self.get(key, convert)?.unwrap_or(default))
    }

    /// A `dns_config` key, if set: at the top level or in the `[dns_config]` table (its
    /// key path then says so), not both.
    fn take_dns(&mut self, key: &'static str) -> Result<Option<Field>, ConfigError> {
        self.asked_dns.push(key);
        let top = self.top.remove(key);
        let section = self.dns.remove(key);
        self.ctx.pick(key, top, section)
    }

    /// The first key in file order that `known` (an empty file converted) never asked for,
    /// as an unknown key.
    fn unknown(&self, known: &Parts<'_>) -> Result<(), ConfigError> {
        let top = known
            .asked
            .iter()
            .chain(&known.asked_dns)
            .copied()
            .chain(["dns_config"]);
        let left = [
            (&self.top, top.collect::<Vec<_>>()),
            (&self.dns, known.asked_dns.clone()),
        ];
        let first = left
            .iter()
            .flat_map(|(keys, known)| keys.keys().map(move |k| (k, known)))
            .filter(|(k, known)| !known.contains(&k.get_ref().as_str()))
            .min_by_key(|(k, _)| k.span().start);
        match first {
            None => Ok(()),
            Some((key, known)) => Err(ConfigError::Parse {
                path: self.ctx.path.to_path_buf(),
                line: Some(self.ctx.line_of(key.span().start)),
                message: suggest_key(key.get_ref(), known),
            }),
        }
    }
}

/// Keys of the `soa` table.
const SOA_KEYS: [&str; 4] = ["refresh", "retry", "expire", "min_ttl"];

/// Typed values read from a config file: `base`, and the keys layered over the agent's
/// configuration (`None` = not set in the file).
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct FileConfig {
    /// The keys the Consul agent's configuration has no say in, read over their defaults:
    /// what the merge starts from (putting a flag over its key where there is one).
    pub base: Config,
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
    pub zones: Option<PathBuf>,
    pub max_services: Option<usize>,
    pub consul_body_budget_bytes: Option<usize>,
    pub translate_wan_addrs: Option<bool>,
    pub dot: DotFile,
    pub dns: DnsConfigPatch,
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
        let not_toml = |e: toml::de::Error| {
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
                    message: one_line(e.message()),
                },
            }
        };
        let mut top: Keys = toml::from_str(text).map_err(not_toml)?;
        let section: Section = toml::from_str(text).map_err(not_toml)?;
        top.remove("dns_config");
        // The names known: those an empty file is asked for.
        let mut known = Parts::new(&ctx, Keys::new(), Keys::new());
        FileConfig::convert(&mut known)?;
        let mut parts = Parts::new(&ctx, top, section.dns_config.unwrap_or_default());
        parts.unknown(&known)?;
        FileConfig::convert(&mut parts)
    }

    /// Converts each key of the file to its typed value.
    fn convert(p: &mut Parts<'_>) -> Result<FileConfig, ConfigError> {
        let ctx = p.ctx;
        let map_string = |field: Option<Field>,
                          check: fn(&str) -> Result<String, String>|
         -> Result<Option<String>, ConfigError> {
            field
                .map(|field| {
                    let s = ctx.string(&field)?;
                    check(&s).map_err(|reason| ctx.invalid(&field, reason))
                })
                .transpose()
        };

        let token_file = p
            .take("token_file")
            .map(|field| ctx.string(&field).map(PathBuf::from))
            .transpose()?;
        let token = p.get("token", Ctx::secret)?.flatten();
        let path = |field: Option<Field>| -> Result<Option<Field>, ConfigError> {
            match field {
                Some(field) => Ok((!ctx.string(&field)?.is_empty()).then_some(field)),
                None => Ok(None),
            }
        };
        let located = |field: Field| -> Result<(PathBuf, FileLocation), ConfigError> {
            Ok((PathBuf::from(ctx.string(&field)?), ctx.location(field.line)))
        };
        let tls = TlsFile {
            ca_file: path(p.take("ca_file"))?
                .map(|field| ctx.string(&field).map(PathBuf::from))
                .transpose()?,
            ca_path: path(p.take("ca_path"))?
                .map(|field| ctx.string(&field).map(PathBuf::from))
                .transpose()?,
            cert_file: path(p.take("cert_file"))?.map(located).transpose()?,
            key_file: path(p.take("key_file"))?.map(located).transpose()?,
            server_name: path(p.take("tls_server_name"))?
                .map(|field| {
                    let s = ctx.string(&field)?;
                    normalize_tls_server_name(&s).map_err(|reason| ctx.invalid(&field, reason))
                })
                .transpose()?,
            ssl_verify: p.get("ssl_verify", Ctx::bool)?,
        };
        let listen = p.get("listen", Ctx::listen)?;
        let recursors = p.get("recursors", Ctx::recursors)?;
        // Zone transfers (their flags replace `allow_transfer` and `notify`).
        let d = TransferConfig::default();
        let allow_transfer = p.get("allow_transfer", Ctx::networks)?;
        let notify = p.get("notify", Ctx::recursors)?;
        let notify_interval = p.get("notify_interval", Ctx::positive_duration)?;
        let journal_bytes = p.get("transfer_journal_bytes", Ctx::count)?;
        let key = super::transfer_key(
            p.get("transfer_key_name", Ctx::string)?
                .filter(|s| !s.is_empty()),
            p.get("transfer_key_secret", Ctx::secret)?.flatten(),
            p.get("transfer_key_file", Ctx::string)?
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            p.get("transfer_key_algorithm", Ctx::string)?,
        )?;
        let transfer = TransferConfig {
            allow: allow_transfer.unwrap_or(d.allow),
            notify: notify.unwrap_or(d.notify),
            notify_interval: notify_interval.unwrap_or(d.notify_interval),
            journal_bytes: journal_bytes.unwrap_or(d.journal_bytes),
            key,
        };
        let zones = p
            .take("zones")
            .map(|field| ctx.string(&field).map(PathBuf::from))
            .transpose()?;
        let consul_body_budget_bytes = p.get("consul_body_budget_bytes", Ctx::count)?;
        let max_services = p.get("max_services", Ctx::count)?;
        // The TCP limits, straight into their section (no flags, nor agent keys).
        let d = TcpConfig::default();
        let max_connections = p.get("tcp_max_connections", Ctx::count)?;
        let max_connections = max_connections.unwrap_or(d.max_connections);
        let tcp = TcpConfig {
            max_connections,
            max_connections_per_source: p
                .get("tcp_max_connections_per_source", Ctx::count)?
                .unwrap_or(default_tcp_max_connections_per_source(max_connections)),
            idle_timeout: p.get_or("tcp_idle_timeout", Ctx::positive_duration, d.idle_timeout)?,
            total_timeout: p.get_or(
                "tcp_total_timeout",
                Ctx::positive_duration,
                d.total_timeout,
            )?,
            write_timeout: p.get_or(
                "tcp_write_timeout",
                Ctx::positive_duration,
                d.write_timeout,
            )?,
        };
        let dot = DotFile {
            listen: p
                .take("listen_tls")
                .map(|field| Ok((ctx.addresses(&field)?, ctx.location(field.line))))
                .transpose()?,
            cert_file: path(p.take("tls_cert_file"))?
                .map(|field| ctx.string(&field).map(PathBuf::from))
                .transpose()?,
            key_file: path(p.take("tls_key_file"))?
                .map(|field| ctx.string(&field).map(PathBuf::from))
                .transpose()?,
        };
        let d = DotConfig::default().limits;
        let dot_limits = super::dot_limits(
            p.get_or("tls_max_connections", Ctx::count, d.max_connections)?,
            p.get_or("tls_idle_timeout", Ctx::positive_duration, d.idle_timeout)?,
            &tcp,
        );
        // Response-rate limiting, straight into its section.
        let d = RrlConfig::default();
        let rrl = RrlConfig {
            responses_per_second: p.get_or(
                "rrl_responses_per_second",
                Ctx::u32,
                d.responses_per_second,
            )?,
            window: p
                .get("rrl_window", |ctx, field| {
                    let window = ctx.duration(field)?;
                    match (Duration::from_secs(1)..=MAX_RRL_WINDOW).contains(&window) {
                        true => Ok(window),
                        false => Err(ctx.invalid(field, "must be between 1s and 1h")),
                    }
                })?
                .unwrap_or(d.window),
            slip: p
                .get("rrl_slip", |ctx, field| {
                    ctx.u32_at_most(field, MAX_RRL_SLIP)
                })?
                .unwrap_or(d.slip),
            ipv4_prefix_length: p
                .get("rrl_ipv4_prefix_length", |ctx, field| {
                    ctx.prefix_length(field, 32)
                })?
                .unwrap_or(d.ipv4_prefix_length),
            ipv6_prefix_length: p
                .get("rrl_ipv6_prefix_length", |ctx, field| {
                    ctx.prefix_length(field, 128)
                })?
                .unwrap_or(d.ipv6_prefix_length),
        };
        let defaults = Config::default();
        let translate_wan_addrs = p.get("translate_wan_addrs", Ctx::bool)?;
        let base = Config {
            watch_idle_timeout: p.get_or(
                "watch_idle_timeout",
                Ctx::positive_duration,
                defaults.watch_idle_timeout,
            )?,
            startup_wait: p.get_or("startup_wait", Ctx::duration, defaults.startup_wait)?,
            blocking_wait: p.get_or("blocking_wait", Ctx::blocking_wait, defaults.blocking_wait)?,
            watch_all_services: p.get_or(
                "watch_all_services",
                Ctx::bool,
                defaults.watch_all_services,
            )?,
            watch_poll_interval: p.get_or(
                "watch_poll_interval",
                Ctx::positive_duration,
                defaults.watch_poll_interval,
            )?,
            allow_any: p.get_or("allow_any", Ctx::bool, defaults.allow_any)?,
            max_watches: p.get_or("max_watches", Ctx::count, defaults.max_watches)?,
            consul_max_body_bytes: p.get_or(
                "consul_max_body_bytes",
                Ctx::count,
                defaults.consul_max_body_bytes,
            )?,
            allow_recursion: p.get_or(
                "allow_recursion",
                Ctx::networks,
                defaults.allow_recursion,
            )?,
            internal_cidrs: p.get_or("internal_cidrs", Ctx::cidrs, defaults.internal_cidrs)?,
            http_addr: p.get("http_addr", |ctx, field| {
                let s = ctx.string(field)?;
                parse_listen_addr(&s).map_err(|reason| ctx.invalid(field, reason))
            })?,
            workers: p.get_or("workers", Ctx::count, defaults.workers)?,
            log_level: p
                .get("log_level", |ctx, field| {
                    let s = ctx.string(field)?;
                    match s.as_str() {
                        "off" | "error" | "warn" | "info" | "debug" | "trace" => Ok(s),
                        _ => {
                            Err(ctx
                                .invalid(field, "must be off, error, warn, info, debug or trace"))
                        }
                    }
                })?
                .unwrap_or(defaults.log_level),
            log_format: p
                .get("log_format", |ctx, field| {
                    let s = ctx.string(field)?;
                    s.parse().map_err(|reason| ctx.invalid(field, reason))
                })?
                .unwrap_or(defaults.log_format),
            query_log: p.get_or("query_log", Ctx::bool, defaults.query_log)?,
            query_log_sample: p
                .get("query_log_sample", |ctx, field| match ctx.u32(field)? {
                    0 => Err(ctx.invalid(field, "must be at least 1")),
                    n => Ok(n),
                })?
                .unwrap_or(defaults.query_log_sample),
            tcp,
            dot: DotConfig {
                limits: dot_limits,
                ..defaults.dot
            },
            rrl,
            transfer,
            ..defaults
        };
        let consul_config = p
            .take("consul_config")
            .map(|field| {
                ctx.string_list(&field)?
                    .iter()
                    .map(|item| ctx.string(item).map(PathBuf::from))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;

        Ok(FileConfig {
            base,
            consul_addr: map_string(p.take("consul_addr"), normalize_consul_addr)?,
            consul_config,
            token,
            token_file,
            tls,
            listen,
            domain: map_string(p.take("domain"), normalize_domain)?,
            alt_domain: map_string(p.take("alt_domain"), normalize_domain)?,
            datacenter: map_string(p.take("datacenter"), normalize_datacenter)?,
            recursors,
            zones,
            max_services,
            consul_body_budget_bytes,
            translate_wan_addrs,
            dot,
            dns: ctx.dns(&mut |key| p.take_dns(key))?,
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

    fn soa(&self, field: &Field) -> Result<SoaConfigPatch, ConfigError> {
        let mut soa = SoaConfigPatch::default();
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

    /// `field` converted by `convert`, if set.
    fn opt<T>(
        &self,
        field: Option<Field>,
        convert: fn(&Self, &Field) -> Result<T, ConfigError>,
    ) -> Result<Option<T>, ConfigError> {
        field.map(|field| convert(self, &field)).transpose()
    }

    /// The `dns_config` keys, each taken by `take` (from the file: at its top level or in
    /// `[dns_config]`; from the Consul agent's files: in `dns_config`).
    pub(super) fn dns(
        &self,
        take: &mut dyn FnMut(&'static str) -> Result<Option<Field>, ConfigError>,
    ) -> Result<DnsConfigPatch, ConfigError> {
        Ok(DnsConfigPatch {
            allow_stale: self.opt(take("allow_stale")?, Ctx::bool)?,
            max_stale: self.opt(take("max_stale")?, Ctx::duration)?,
            node_ttl: self.opt(take("node_ttl")?, Ctx::ttl)?,
            service_ttl: take("service_ttl")?
                .map(|x| self.service_ttl(&x).map(ServiceTtl::new))
                .transpose()?,
            enable_truncate: self.opt(take("enable_truncate")?, Ctx::bool)?,
            only_passing: self.opt(take("only_passing")?, Ctx::bool)?,
            recursor_strategy: take("recursor_strategy")?
                .map(|x| {
                    let s = self.string(&x)?;
                    s.parse().map_err(|reason: String| self.invalid(&x, reason))
                })
                .transpose()?,
            recursor_timeout: self.opt(take("recursor_timeout")?, Ctx::positive_duration)?,
            disable_compression: self.opt(take("disable_compression")?, Ctx::bool)?,
            // 0 is Consul's "no answers on UDP without EDNS" (the client retries over TCP).
            // Consul trims non-EDNS UDP answers to min(8, udp_answer_limit); the effective
            // value is kept so the DNS code need not know the cap.
            udp_answer_limit: self
                .opt(take("udp_answer_limit")?, Ctx::u32)?
                .map(|n| n.min(MAX_UDP_ANSWER_LIMIT)),
            a_record_limit: self.opt(take("a_record_limit")?, Ctx::u32)?,
            enable_additional_node_meta_txt: self
                .opt(take("enable_additional_node_meta_txt")?, Ctx::bool)?,
            soa: take("soa")?
                .map(|x| self.soa(&x))
                .transpose()?
                .unwrap_or_default(),
            use_cache: self.opt(take("use_cache")?, Ctx::bool)?,
            cache_max_age: self.opt(take("cache_max_age")?, Ctx::duration)?,
            prefer_namespace: self.opt(take("prefer_namespace")?, Ctx::bool)?,
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

/// "unknown key `x`: did you mean `a`?" when one of the `known` keys is close, else with
/// the list pointed at.
fn suggest_key(unknown: &str, known: &[&str]) -> String {
    let closest = known
        .iter()
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
