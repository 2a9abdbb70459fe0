//! The Consul agent's own configuration (`--consul-config`, `consul_config`): its HCL and
//! JSON files, read as Consul reads them, from which the DNS settings are taken; every
//! other key of the agent is ignored.
//!
//! As Consul: a path is a file (`.hcl` or `.json`) or a directory whose `.hcl` and `.json`
//! files are read in lexical order (other files and subdirectories are skipped); paths are
//! read in the order given; each file must parse on its own; a later file merges over the
//! earlier ones (`agent/config/merge.go`): a value replaces, `recursors` are appended,
//! `dns_config.service_ttl` is replaced by a later non-empty table, `dns_config.soa` is
//! replaced whole.
//!
//! Taken: `domain`, `alt_domain`, `datacenter`, `recursors`, `translate_wan_addrs`, the
//! `dns_config` options consul-dns knows (another `dns_config` key is reported once, not an
//! error), and `ports`, `addresses`, `client_addr`: where the agent serves DNS (what
//! consul-dns takes over once the agent's DNS is off) and its HTTP API (what consul-dns
//! reads the catalog from).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use struct_patch::Merge;

use super::file::{Ctx, Field};
use super::hcl::{self, Node, Object, Value};
use super::layer::{Layer, Origin};
use super::values::{normalize_datacenter, normalize_domain};
use super::{ConfigError, ConfigPatch, DnsConfigPatch, FileLocation, ServiceTtl, SoaConfigPatch};

/// Consul's defaults (`agent/config/default.go`).
const DEFAULT_CLIENT_ADDR: &str = "127.0.0.1";
const DEFAULT_DNS_PORT: i64 = 8600;
const DEFAULT_HTTP_PORT: i64 = 8500;
const DEFAULT_HTTPS_PORT: i64 = -1;

/// A value and where it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Located<T> {
    pub value: T,
    pub at: FileLocation,
}

/// What consul-dns takes of the agent's configuration, merged over its files.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct AgentConfig {
    /// The files read, in the order read.
    pub files: Vec<PathBuf>,
    /// What the files set of consul-dns's own settings: `domain`, `alt_domain`,
    /// `datacenter`, `recursors` (appended across files, without duplicates, the first
    /// kept), `translate_wan_addrs` and `dns`.
    pub settings: ConfigPatch,
    /// Where each of them was set.
    pub origins: BTreeMap<&'static str, Origin>,
    /// `client_addr`: space-separated addresses, Consul's default for every `addresses.*`.
    pub client_addr: Option<Located<String>>,
    pub dns_port: Option<Located<i64>>,
    pub http_port: Option<Located<i64>>,
    pub https_port: Option<Located<i64>>,
    pub dns_addr: Option<Located<String>>,
    pub http_addr: Option<Located<String>>,
    pub https_addr: Option<Located<String>>,
    /// What was read and is not used, said once at start (one line each).
    pub warnings: Vec<String>,
}

impl AgentConfig {
    /// Reads the files and directories at `paths`, in order, merged as Consul merges them.
    pub fn read(paths: &[PathBuf]) -> Result<AgentConfig, ConfigError> {
        let mut out = AgentConfig::default();
        for path in paths {
            let io = |source| ConfigError::Io {
                path: path.clone(),
                source,
            };
            if std::fs::metadata(path).map_err(io)?.is_dir() {
                let mut files = Vec::new();
                for entry in std::fs::read_dir(path).map_err(io)? {
                    let file = entry.map_err(io)?.path();
                    // Symbolic links are followed, as Consul follows them.
                    if format_of(&file).is_some() && file.is_file() {
                        files.push(file);
                    }
                }
                files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
                if files.is_empty() {
                    out.warnings.push(format!(
                        "consul config {}: no .hcl or .json file in this directory",
                        path.display()
                    ));
                }
                for file in files {
                    out.merge(AgentConfig::read_file(&file)?);
                }
            } else {
                out.merge(AgentConfig::read_file(path)?);
            }
        }
        Ok(out)
    }

    fn read_file(path: &Path) -> Result<AgentConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        AgentConfig::parse(path, &text)
    }

    /// Parses one file of the agent's configuration; its format is its extension's, as
    /// Consul requires.
    pub fn parse(path: &Path, text: &str) -> Result<AgentConfig, ConfigError> {
        let parse_error = |line: Option<usize>, message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            message,
        };
        // HCL 1 reads a text that starts with `{` as JSON, whatever the file's name.
        let format = match format_of(path) {
            Some(Format::Hcl) if text.trim_start().starts_with('{') => Some(Format::Json),
            format => format,
        };
        let top = match format {
            Some(Format::Hcl) => hcl::parse(text)
                .map_err(|e| parse_error(Some(e.line), format!("HCL: {}", e.message)))?,
            Some(Format::Json) => {
                let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                    let message = e.to_string();
                    let message = match message.rfind(" at line ") {
                        Some(i) => &message[..i],
                        None => &message,
                    };
                    parse_error(Some(e.line()), format!("JSON: {message}"))
                })?;
                match from_json(value).map(|n| n.value) {
                    Some(Value::Object(o)) => o,
                    _ => {
                        return Err(parse_error(
                            None,
                            "JSON: expected an object of agent options, `{ … }`".to_string(),
                        ))
                    }
                }
            }
            None => {
                return Err(parse_error(
                    None,
                    "a Consul agent configuration file ends in .hcl or .json, as Consul \
                     requires (consul-dns's own TOML goes to --config)"
                        .to_string(),
                ))
            }
        };
        AgentConfig::take(path, top)
    }

    /// The options consul-dns uses, out of a file's top-level object.
    fn take(path: &Path, top: Object) -> Result<AgentConfig, ConfigError> {
        let ctx = Ctx::new(path);
        let mut top: BTreeMap<String, Node> = top.into_iter().collect();
        let mut origins = BTreeMap::new();
        let mut take_node = |key: &str| top.remove(key);
        let mut take = |key: &'static str| {
            let field = field(key.to_string(), take_node(key)?);
            let file = Some(ctx.location(field.line));
            origins.insert(
                key,
                Origin {
                    key: key.to_string(),
                    file,
                },
            );
            Some(field)
        };
        let located = |value: String, field: &Field| Located {
            value,
            at: ctx.location(field.line),
        };
        let normalized =
            |field: Field, check: fn(&str) -> Result<String, String>| ctx.normalized(&field, check);

        let mut out = AgentConfig {
            files: vec![path.to_path_buf()],
            ..AgentConfig::default()
        };
        let settings = &mut out.settings;
        settings.domain = take("domain")
            .map(|f| normalized(f, normalize_domain))
            .transpose()?;
        settings.alt_domain = take("alt_domain")
            .map(|f| normalized(f, normalize_domain).map(Some))
            .transpose()?;
        settings.datacenter = take("datacenter")
            .map(|f| normalized(f, normalize_datacenter).map(Some))
            .transpose()?;
        settings.recursors = take("recursors").map(|f| ctx.recursors(&f)).transpose()?;
        settings.translate_wan_addrs = take("translate_wan_addrs")
            .map(|f| ctx.bool(&f))
            .transpose()?;
        out.client_addr = take("client_addr")
            .map(|f| Ok::<_, ConfigError>(located(ctx.string(&f)?, &f)))
            .transpose()?;

        out.origins = origins;

        let mut ports = table(&ctx, "ports", take_node("ports"))?;
        let mut port = |name: &str| {
            ports
                .remove(name)
                .map(|f| match f.value {
                    toml::Value::Integer(p) if p <= 65535 => Ok(Located {
                        value: p,
                        at: ctx.location(f.line),
                    }),
                    toml::Value::Integer(_) => {
                        Err(ctx.invalid(&f, "not a port (at most 65535; -1 turns it off)"))
                    }
                    _ => Err(ctx.type_error(&f, "an integer (a port; -1 turns it off)")),
                })
                .transpose()
        };
        out.dns_port = port("dns")?;
        out.http_port = port("http")?;
        out.https_port = port("https")?;

        let mut addresses = table(&ctx, "addresses", take_node("addresses"))?;
        let mut address = |name: &str| {
            addresses
                .remove(name)
                .map(|f| Ok::<_, ConfigError>(located(ctx.string(&f)?, &f)))
                .transpose()
        };
        out.dns_addr = address("dns")?;
        out.http_addr = address("http")?;
        out.https_addr = address("https")?;

        let mut dns = table(&ctx, "dns_config", take_node("dns_config"))?;
        out.settings.dns = ctx.dns(&mut |key| Ok(dns.remove(key)))?;
        for (_, f) in dns {
            out.warnings.push(format!(
                "consul config {}: {} is not a dns_config option consul-dns knows: ignored",
                ctx.location(f.line),
                f.key
            ));
        }
        Ok(out)
    }

    /// Merges a later file over this configuration, as Consul does.
    fn merge(&mut self, mut later: AgentConfig) {
        fn over<T>(earlier: &mut Option<T>, later: Option<T>) {
            if later.is_some() {
                *earlier = later;
            }
        }
        self.files.extend(later.files);
        let mut recursors = self.settings.recursors.take().unwrap_or_default();
        for r in later.settings.recursors.iter().flatten() {
            if !recursors.contains(r) {
                recursors.push(*r);
            }
        }
        // A map replaces only when it is not empty; the SOA is one value.
        let mut dns = std::mem::take(&mut later.settings.dns);
        if dns.service_ttl.as_ref().is_some_and(ServiceTtl::is_empty) {
            dns.service_ttl = None;
        }
        if dns.soa != SoaConfigPatch::default() {
            self.settings.dns.soa = SoaConfigPatch::default();
        }
        let dns = dns_over(std::mem::take(&mut self.settings.dns), dns);
        // The rest: a value set later replaces (`dns`, the one nested section set here, is
        // merged above).
        self.settings = std::mem::take(&mut self.settings).merge(later.settings);
        self.settings.recursors = (!recursors.is_empty()).then_some(recursors);
        self.settings.dns = dns;
        self.origins.extend(later.origins);
        over(&mut self.client_addr, later.client_addr);
        over(&mut self.dns_port, later.dns_port);
        over(&mut self.http_port, later.http_port);
        over(&mut self.https_port, later.https_port);
        over(&mut self.dns_addr, later.dns_addr);
        over(&mut self.http_addr, later.http_addr);
        over(&mut self.https_addr, later.https_addr);
        self.warnings.extend(later.warnings);
    }

    /// What the agent's files set, under the config file and the flags. Its HTTP API and
    /// DNS address are not in it: they are used only where nothing else sets the Consul
    /// address or the listen addresses (see `resolve.rs`).
    pub fn layer(&self) -> Layer {
        Layer {
            settings: self.settings.clone(),
            origins: self.origins.clone(),
            ..Layer::default()
        }
    }

    /// Refuses a listen address where the Consul agent serves DNS itself (its configuration
    /// says so): the bind would fail, and this says what to do.
    pub fn check_dns_clash(&self, listen: &[SocketAddr]) -> Result<(), ConfigError> {
        let Some(port) = self.is_used().then(|| self.dns_port()).flatten() else {
            return Ok(());
        };
        // Addresses that cannot be read are no clash to report; listening tells.
        let Ok(ips) = self.dns_ips("--listen") else {
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
        let (value, file) = self.dns_port_setting();
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

    /// Whether any file was read.
    pub fn is_used(&self) -> bool {
        !self.files.is_empty()
    }

    /// The port the agent serves DNS on; `None` when its DNS is off (`ports.dns` ≤ 0).
    pub fn dns_port(&self) -> Option<u16> {
        let port = self.dns_port.as_ref().map_or(DEFAULT_DNS_PORT, |p| p.value);
        u16::try_from(port).ok().filter(|&p| p > 0)
    }

    /// Describes `ports.dns` for a message: where it is set, or Consul's default.
    pub fn dns_port_setting(&self) -> (String, Option<FileLocation>) {
        match &self.dns_port {
            Some(p) => (p.value.to_string(), Some(p.at.clone())),
            None => (DEFAULT_DNS_PORT.to_string(), None),
        }
    }

    /// The addresses of the agent's DNS: `addresses.dns`, else `client_addr`, else
    /// Consul's 127.0.0.1. `flag` is what to give instead when they cannot be used.
    pub fn dns_ips(&self, flag: &str) -> Result<Vec<IpAddr>, ConfigError> {
        let (key, setting) = self.addresses("addresses.dns", &self.dns_addr);
        let mut out = Vec::new();
        for word in setting.value.split_whitespace() {
            let ip = ip(key, &setting, word, flag)?.ok_or_else(|| {
                invalid(
                    key,
                    &setting,
                    format!("a unix socket ({word}) cannot serve DNS: give {flag}"),
                )
            })?;
            if !out.contains(&ip) {
                out.push(ip);
            }
        }
        if out.is_empty() {
            return Err(invalid(key, &setting, format!("no address: give {flag}")));
        }
        Ok(out)
    }

    /// The URL of the agent's HTTP API, as a client beside it reaches it: `ports.http` on
    /// `addresses.http` (else `client_addr`), or HTTPS on `ports.https` when HTTP is off; a
    /// loopback address first, an unspecified one (`0.0.0.0`, `::`) as loopback.
    pub fn http_url(&self) -> Result<String, ConfigError> {
        let http = self
            .http_port
            .as_ref()
            .map_or(DEFAULT_HTTP_PORT, |p| p.value);
        let https = self
            .https_port
            .as_ref()
            .map_or(DEFAULT_HTTPS_PORT, |p| p.value);
        let (scheme, port, key, own) = match (u16::try_from(http), u16::try_from(https)) {
            (Ok(p), _) if p > 0 => ("http", p, "addresses.http", &self.http_addr),
            (_, Ok(p)) if p > 0 => ("https", p, "addresses.https", &self.https_addr),
            _ => {
                let (value, file) = match &self.http_port {
                    Some(p) => (p.value.to_string(), Some(p.at.clone())),
                    None => (http.to_string(), None),
                };
                return Err(ConfigError::Invalid {
                    key: "ports.http".to_string(),
                    value: Some(value),
                    file,
                    reason: "the Consul agent serves no HTTP API (ports.http and ports.https \
                             are off) for consul-dns to read the catalog from: give its \
                             address with --consul-addr (CONSUL_HTTP_ADDR)"
                        .to_string(),
                });
            }
        };
        let (key, setting) = self.addresses(key, own);
        let mut ips = Vec::new();
        for word in setting.value.split_whitespace() {
            // A unix socket is skipped: consul-dns speaks HTTP over TCP.
            if let Some(ip) = ip(key, &setting, word, "--consul-addr")? {
                ips.push(ip);
            }
        }
        let Some(ip) = ips
            .iter()
            .find(|ip| ip.is_loopback())
            .or(ips.first())
            .copied()
        else {
            return Err(invalid(
                key,
                &setting,
                "no TCP address (unix sockets are not supported): give --consul-addr".to_string(),
            ));
        };
        let ip = match ip {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Ok(format!("{scheme}://{}", SocketAddr::new(ip, port)))
    }

    /// `own` (an `addresses.*` key) when set, else `client_addr`, else Consul's default;
    /// the key it came from.
    fn addresses<'s>(
        &'s self,
        key: &'static str,
        own: &'s Option<Located<String>>,
    ) -> (&'static str, std::borrow::Cow<'s, Located<String>>) {
        if let Some(own) = own {
            return (key, std::borrow::Cow::Borrowed(own));
        }
        match &self.client_addr {
            Some(c) => ("client_addr", std::borrow::Cow::Borrowed(c)),
            None => (
                "client_addr",
                std::borrow::Cow::Owned(Located {
                    value: DEFAULT_CLIENT_ADDR.to_string(),
                    at: FileLocation {
                        path: self.files.first().cloned().unwrap_or_default(),
                        line: None,
                    },
                }),
            ),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Hcl,
    Json,
}

/// A file's format by its extension, as Consul tells it.
fn format_of(path: &Path) -> Option<Format> {
    match path.extension()?.to_str()? {
        "hcl" => Some(Format::Hcl),
        "json" => Some(Format::Json),
        _ => None,
    }
}

/// One address of a space-separated list: an IP, `None` for a unix socket.
fn ip(
    key: &str,
    setting: &Located<String>,
    word: &str,
    flag: &str,
) -> Result<Option<IpAddr>, ConfigError> {
    if word.starts_with("unix://") {
        return Ok(None);
    }
    if word.contains("{{") {
        return Err(invalid(
            key,
            setting,
            format!("go-sockaddr templates are not evaluated by consul-dns: give {flag}"),
        ));
    }
    word.parse().map(Some).map_err(|_| {
        invalid(
            key,
            setting,
            format!("{word:?} is not an IP address: give {flag}"),
        )
    })
}

fn invalid(key: &str, setting: &Located<String>, reason: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: Some(format!("{:?}", setting.value)),
        file: Some(setting.at.clone()),
        reason,
    }
}

/// A value of the file as a field of the TOML file's checks (same conversions, same
/// messages).
fn field(key: String, node: Node) -> Field {
    Field {
        key,
        line: node.line,
        value: to_toml(node.value),
    }
}

fn to_toml(value: Value) -> toml::Value {
    match value {
        Value::String(s) => toml::Value::String(s),
        Value::Integer(i) => toml::Value::Integer(i),
        Value::Float(x) => toml::Value::Float(x),
        Value::Bool(b) => toml::Value::Boolean(b),
        Value::List(items) => {
            toml::Value::Array(items.into_iter().map(|n| to_toml(n.value)).collect())
        }
        Value::Object(o) => {
            toml::Value::Table(o.into_iter().map(|(k, n)| (k, to_toml(n.value))).collect())
        }
    }
}

/// The block `name` (`ports { … }`) as its keys' fields, each named `name.key`.
fn table(
    ctx: &Ctx<'_>,
    name: &str,
    node: Option<Node>,
) -> Result<BTreeMap<String, Field>, ConfigError> {
    let Some(node) = node else {
        return Ok(BTreeMap::new());
    };
    match node.value {
        Value::Object(o) => Ok(o
            .into_iter()
            .map(|(k, n)| {
                let f = field(format!("{name}.{k}"), n);
                (k, f)
            })
            .collect()),
        value => Err(ctx.type_error(
            &field(
                name.to_string(),
                Node {
                    line: node.line,
                    value,
                },
            ),
            "a block of options (`{ … }`)",
        )),
    }
}

/// JSON as the values HCL gives; `null` is not set (`None`), as for Consul.
fn from_json(value: serde_json::Value) -> Option<Node> {
    let value = match value {
        serde_json::Value::Null => return None,
        serde_json::Value::Bool(b) => Value::Bool(b),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        serde_json::Value::String(s) => Value::String(s),
        serde_json::Value::Array(items) => {
            Value::List(items.into_iter().filter_map(from_json).collect())
        }
        serde_json::Value::Object(map) => {
            let mut object = Object::new();
            for (k, v) in map {
                if let Some(node) = from_json(v) {
                    hcl::insert(&mut object, k, node);
                }
            }
            Value::Object(object)
        }
    };
    Some(Node { line: None, value })
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
