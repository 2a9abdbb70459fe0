//! The TOML config file: each key converted to its typed value where it is read, with
//! errors naming the file, line and key, into the file's [`Layer`].
//!
//! The text is deserialised into tables of `Spanned` keys and values (syntax errors come
//! with their line). Each key is then taken from its table by the one line that converts
//! it into its place in the layer's settings (`Parts::get`), so that a type or range error
//! names the exact key (`dns_config.soa.retry`) and its line, and the layer knows where
//! each setting came from. A key left over is unknown: the names known are those asked for
//! when an empty file is converted, and the closest is suggested.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::{Spanned, Value};

use super::duration::parse_go_duration;
use super::layer::{Layer, Origin, TokenSource};
use super::values::{
    normalize_consul_addr, normalize_datacenter, normalize_domain, normalize_tls_server_name,
    parse_listen_addr, parse_network, parse_recursor, ttl_seconds,
};
use super::{
    check_listen_list, ConfigError, ConfigPatch, ConsulTlsPatch, DnsConfigPatch, DotConfigPatch,
    FileLocation, RrlConfigPatch, Secret, ServiceTtl, SoaConfigPatch, TcpConfigPatch,
    TransferConfigPatch, MAX_BLOCKING_WAIT, MAX_RRL_SLIP, MAX_RRL_WINDOW, MAX_UDP_ANSWER_LIMIT,
    MAX_WORKERS, MIN_BLOCKING_WAIT,
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
    /// Where each key taken was set.
    origins: BTreeMap<&'static str, Origin>,
}

impl<'c> Parts<'c> {
    fn new(ctx: &'c Ctx<'c>, top: Keys, dns: Keys) -> Parts<'c> {
        Parts {
            ctx,
            top,
            dns,
            asked: Vec::new(),
            asked_dns: Vec::new(),
            origins: BTreeMap::new(),
        }
    }

    /// A top-level key, if set.
    fn take(&mut self, key: &'static str) -> Option<Field> {
        self.asked.push(key);
        let value = self.top.remove(key)?;
        let field = self.ctx.field(key.to_string(), value);
        self.origins.insert(key, self.ctx.origin(&field));
        Some(field)
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

    /// A key whose empty string means not set (paths, names), else converted by `convert`.
    fn get_set<T>(
        &mut self,
        key: &'static str,
        convert: impl FnOnce(&Ctx<'c>, &Field) -> Result<T, ConfigError>,
    ) -> Result<Option<Option<T>>, ConfigError> {
        let ctx = self.ctx;
        match self.take(key) {
            Some(field) if matches!(&field.value, Value::String(s) if s.is_empty()) => Ok(None),
            Some(field) => Ok(Some(Some(convert(ctx, &field)?))),
            None => Ok(None),
        }
    }

    /// A `dns_config` key, if set: at the top level or in the `[dns_config]` table (its
    /// key path then says so), not both.
    fn take_dns(&mut self, key: &'static str) -> Result<Option<Field>, ConfigError> {
        self.asked_dns.push(key);
        let top = self.top.remove(key);
        let section = self.dns.remove(key);
        let field = self.ctx.pick(key, top, section)?;
        if let Some(field) = &field {
            self.origins.insert(key, self.ctx.origin(field));
        }
        Ok(field)
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

/// Reads and parses the config file at `path`. A directory, or a file named `.json` or
/// `.hcl`, is the Consul agent's configuration, not this file: the error says so.
pub(super) fn read(path: &Path) -> Result<Layer, ConfigError> {
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
    parse(path, &text)
}

/// Parses config file text; `path` is only used in error messages.
pub(super) fn parse(path: &Path, text: &str) -> Result<Layer, ConfigError> {
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
    convert(&mut known)?;
    let mut parts = Parts::new(&ctx, top, section.dns_config.unwrap_or_default());
    parts.unknown(&known)?;
    convert(&mut parts)
}

/// Converts each key of the file to its typed value, in the layer's settings.
fn convert(p: &mut Parts<'_>) -> Result<Layer, ConfigError> {
    let ctx = p.ctx;
    let token_file = p.get("token_file", Ctx::path)?;
    let token = match p.get("token", Ctx::secret)?.flatten() {
        Some(token) => Some(TokenSource::Value(token)),
        None => token_file.map(|file| TokenSource::File(file, "token_file")),
    };
    let consul_config = p.get("consul_config", |ctx, field| {
        ctx.string_list(field)?
            .iter()
            .map(|item| ctx.path(item))
            .collect::<Result<Vec<_>, _>>()
    })?;
    let settings = ConfigPatch {
        consul_addr: p.get("consul_addr", |ctx, f| {
            ctx.normalized(f, normalize_consul_addr)
        })?,
        tls: ConsulTlsPatch {
            ca_file: p.get_set("ca_file", Ctx::path)?,
            ca_path: p.get_set("ca_path", Ctx::path)?,
            cert_file: p.get_set("cert_file", Ctx::path)?,
            key_file: p.get_set("key_file", Ctx::path)?,
            server_name: p.get_set("tls_server_name", |ctx, f| {
                ctx.normalized(f, normalize_tls_server_name)
            })?,
            verify: p.get("ssl_verify", Ctx::bool)?,
        },
        listen: p.get("listen", Ctx::listen)?,
        domain: p.get("domain", |ctx, f| ctx.normalized(f, normalize_domain))?,
        alt_domain: p
            .get("alt_domain", |ctx, f| ctx.normalized(f, normalize_domain))?
            .map(Some),
        datacenter: p
            .get("datacenter", |ctx, f| {
                ctx.normalized(f, normalize_datacenter)
            })?
            .map(Some),
        recursors: p.get("recursors", Ctx::recursors)?,
        allow_recursion: p.get("allow_recursion", Ctx::networks)?,
        // An empty path serves no zones.
        zones: p
            .get("zones", Ctx::path)?
            .map(|z| Some(z).filter(|z| !z.as_os_str().is_empty())),
        transfer: TransferConfigPatch {
            allow: p.get("allow_transfer", Ctx::networks)?,
            notify: p.get("notify", Ctx::recursors)?,
            notify_interval: p.get("notify_interval", Ctx::positive_duration)?,
            journal_bytes: p.get("transfer_journal_bytes", Ctx::count)?,
            key: super::transfer_key(
                p.get("transfer_key_name", Ctx::string)?
                    .filter(|s| !s.is_empty()),
                p.get("transfer_key_secret", Ctx::secret)?.flatten(),
                p.get("transfer_key_file", Ctx::path)?
                    .filter(|f| !f.as_os_str().is_empty()),
                p.get("transfer_key_algorithm", Ctx::string)?,
            )?
            .map(Some),
        },
        max_services: p.get("max_services", Ctx::count)?,
        consul_body_budget_bytes: p.get("consul_body_budget_bytes", Ctx::count)?,
        tcp: TcpConfigPatch {
            max_connections: p.get("tcp_max_connections", Ctx::count)?,
            max_connections_per_source: p.get("tcp_max_connections_per_source", Ctx::count)?,
            idle_timeout: p.get("tcp_idle_timeout", Ctx::positive_duration)?,
            total_timeout: p.get("tcp_total_timeout", Ctx::positive_duration)?,
            write_timeout: p.get("tcp_write_timeout", Ctx::positive_duration)?,
        },
        dot: DotConfigPatch {
            listen: p.get("listen_tls", Ctx::addresses)?,
            cert_file: p.get_set("tls_cert_file", Ctx::path)?,
            key_file: p.get_set("tls_key_file", Ctx::path)?,
            // The rest of the DoT limits are TCP's.
            limits: TcpConfigPatch {
                max_connections: p.get("tls_max_connections", Ctx::count)?,
                idle_timeout: p.get("tls_idle_timeout", Ctx::positive_duration)?,
                ..TcpConfigPatch::default()
            },
        },
        rrl: RrlConfigPatch {
            responses_per_second: p.get("rrl_responses_per_second", Ctx::u32)?,
            window: p.get("rrl_window", |ctx, field| {
                let window = ctx.duration(field)?;
                match (Duration::from_secs(1)..=MAX_RRL_WINDOW).contains(&window) {
                    true => Ok(window),
                    false => Err(ctx.invalid(field, "must be between 1s and 1h")),
                }
            })?,
            slip: p.get("rrl_slip", |ctx, field| {
                ctx.u32_at_most(field, MAX_RRL_SLIP)
            })?,
            ipv4_prefix_length: p.get("rrl_ipv4_prefix_length", |ctx, field| {
                ctx.prefix_length(field, 32)
            })?,
            ipv6_prefix_length: p.get("rrl_ipv6_prefix_length", |ctx, field| {
                ctx.prefix_length(field, 128)
            })?,
        },
        watch_idle_timeout: p.get("watch_idle_timeout", Ctx::positive_duration)?,
        startup_wait: p.get("startup_wait", Ctx::duration)?,
        blocking_wait: p.get("blocking_wait", Ctx::blocking_wait)?,
        watch_all_services: p.get("watch_all_services", Ctx::bool)?,
        watch_poll_interval: p.get("watch_poll_interval", Ctx::positive_duration)?,
        allow_any: p.get("allow_any", Ctx::bool)?,
        max_watches: p.get("max_watches", Ctx::count)?,
        consul_max_body_bytes: p.get("consul_max_body_bytes", Ctx::count)?,
        internal_cidrs: p.get("internal_cidrs", Ctx::cidrs)?,
        http_addr: p
            .get("http_addr", |ctx, f| ctx.normalized(f, parse_listen_addr))?
            .map(Some),
        workers: p.get("workers", |ctx, field| match ctx.count(field)? {
            n if n > MAX_WORKERS => {
                Err(ctx.invalid(field, format!("must be at most {MAX_WORKERS}")))
            }
            n => Ok(n),
        })?,
        translate_wan_addrs: p.get("translate_wan_addrs", Ctx::bool)?,
        log_level: p.get("log_level", |ctx, field| {
            let s = ctx.string(field)?;
            match s.as_str() {
                "off" | "error" | "warn" | "info" | "debug" | "trace" => Ok(s),
                _ => Err(ctx.invalid(field, "must be off, error, warn, info, debug or trace")),
            }
        })?,
        log_format: p.get("log_format", |ctx, f| ctx.normalized(f, str::parse))?,
        query_log: p.get("query_log", Ctx::bool)?,
        query_log_sample: p.get("query_log_sample", |ctx, field| match ctx.u32(field)? {
            0 => Err(ctx.invalid(field, "must be at least 1")),
            n => Ok(n),
        })?,
        dns: ctx.dns(&mut |key| p.take_dns(key))?,
        ..ConfigPatch::default()
    };
    Ok(Layer {
        settings,
        origins: std::mem::take(&mut p.origins),
        token,
        consul_config,
    })
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

    fn origin(&self, field: &Field) -> Origin {
        Origin {
            key: field.key.clone(),
            file: Some(self.location(field.line)),
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

    /// A string converted by `check` (a normalisation or a parse).
    pub(super) fn normalized<T>(
        &self,
        field: &Field,
        check: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let s = self.string(field)?;
        check(&s).map_err(|reason| self.invalid(field, reason))
    }

    fn path(&self, field: &Field) -> Result<PathBuf, ConfigError> {
        self.string(field).map(PathBuf::from)
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
