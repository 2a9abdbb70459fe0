//! One [`Config`] of the layers of configuration.
//!
//! [`resolve`] applies the layers in order over [`Config::default`], so a key is merged
//! without being named here. What is named here is only what depends on more than one
//! key: defaults derived from another setting, values the agent gives when nothing else
//! does, and the checks across keys, each error naming the key (and file and line) that
//! set the value at fault.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use struct_patch::Patch;

use super::agent::AgentConfig;
use super::layer::{Layer, Origin, TokenSource};
use super::{
    default_tcp_max_connections_per_source, dot_limits, Config, ConfigError, Secret,
    DEFAULT_LISTEN, DEFAULT_SERVICES_PER_WATCH,
};

/// The origins of every layer, the later one's where two set a key.
struct Origins(BTreeMap<&'static str, Origin>);

impl Origins {
    fn sets(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// An error in `key`'s value, named as the layer that set it named it.
    fn invalid(&self, key: &str, value: Option<String>, reason: impl Into<String>) -> ConfigError {
        let plain = Origin {
            key: key.to_string(),
            file: None,
        };
        self.0.get(key).unwrap_or(&plain).invalid(value, reason)
    }
}

/// `layers` (the agent's, the file's, the flags', in that order) over the defaults, with
/// what the agent gives when no layer does, checked across keys.
pub(super) fn resolve(layers: Vec<Layer>, agent: &AgentConfig) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    let mut origins = Origins(BTreeMap::new());
    let mut token = None;
    for layer in layers {
        config.apply(layer.settings);
        origins.0.extend(layer.origins);
        token = layer.token.or(token);
    }
    config.token = match token {
        Some(TokenSource::Value(token)) => Some(token),
        Some(TokenSource::File(path, key)) => read_token_file(key, &path)?,
        None => None,
    };
    config.consul_config_files = agent.files.clone();
    config.consul_config_warnings = agent.warnings.clone();

    if agent.is_used() {
        // Beside the agent, its HTTP API (not with --dev, whose emulator answers).
        if !origins.sets("consul_addr") && !config.dev {
            config.consul_addr = agent.http_url()?;
        }
        // The agent's DNS is off: consul-dns takes its place.
        if !origins.sets("listen") && agent.dns_port().is_none() {
            config.listen = agent
                .dns_ips("--listen")?
                .into_iter()
                .map(|ip| SocketAddr::new(ip, DEFAULT_LISTEN.port()))
                .collect();
        }
    }
    agent.check_dns_clash(&config.listen)?;

    if config.alt_domain.as_deref() == Some(config.domain.as_str()) {
        let value = Some(format!("{:?}", config.domain));
        return Err(origins.invalid("alt_domain", value, "must differ from the domain"));
    }
    check_client_certificate(&config, &origins)?;
    if !config.transfer.notify.is_empty() && !config.transfer.enabled() {
        return Err(origins.invalid(
            "notify",
            None,
            "needs allow_transfer (--allow-transfer): secondaries notified must be able to \
             transfer the zone",
        ));
    }

    // In dev mode the DNS server reads from the embedded emulator, whatever
    // --consul-addr / CONSUL_HTTP_ADDR / consul_addr say.
    if config.dev {
        if origins.sets("consul_addr") {
            config.dev_replaced = Some(config.consul_addr.clone());
        }
        config.consul_addr = format!("http://{}", config.dev_http);
    }

    let max_watches = config.max_watches;
    if !origins.sets("max_services") {
        // A zone transfer holds every service: none may leave memory.
        config.max_services = match config.transfer.enabled() {
            true => usize::MAX,
            false => max_watches.saturating_mul(DEFAULT_SERVICES_PER_WATCH),
        };
    } else if config.max_services < max_watches {
        return Err(origins.invalid(
            "max_services",
            Some(config.max_services.to_string()),
            format!(
                "must be at least max_watches ({max_watches}): a watched service is kept in \
                 memory"
            ),
        ));
    }
    let largest_body = config.consul_max_body_bytes;
    if !origins.sets("consul_body_budget_bytes") {
        config.consul_body_budget_bytes = config.consul_body_budget_bytes.max(largest_body);
    } else if config.consul_body_budget_bytes < largest_body {
        return Err(origins.invalid(
            "consul_body_budget_bytes",
            Some(config.consul_body_budget_bytes.to_string()),
            format!(
                "must be at least consul_max_body_bytes ({largest_body}): the largest body \
                 must fit in it"
            ),
        ));
    }

    if !origins.sets("tcp_max_connections_per_source") {
        config.tcp.max_connections_per_source =
            default_tcp_max_connections_per_source(config.tcp.max_connections);
    }
    let dot = &config.dot.limits;
    config.dot.limits = dot_limits(dot.max_connections, dot.idle_timeout, &config.tcp);
    check_dot(&config, &origins)?;
    Ok(config)
}

/// The client certificate and its key for TLS to Consul come together.
fn check_client_certificate(config: &Config, origins: &Origins) -> Result<(), ConfigError> {
    let (set, missing) = match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(_), Some(_)) | (None, None) => return Ok(()),
        (Some(cert), None) => (
            ("cert_file", cert),
            "the client key (--client-key, CONSUL_CLIENT_KEY or key_file)",
        ),
        (None, Some(key)) => (
            ("key_file", key),
            "the client certificate (--client-cert, CONSUL_CLIENT_CERT or cert_file)",
        ),
    };
    let (key, path) = set;
    Err(origins.invalid(
        key,
        Some(format!("{:?}", path.display().to_string())),
        format!("is set without {missing}: give both or neither"),
    ))
}

/// A DNS-over-TLS address needs the certificate and the key, and must not be a plain DNS
/// address too.
fn check_dot(config: &Config, origins: &Origins) -> Result<(), ConfigError> {
    let dot = &config.dot;
    if !dot.listen.is_empty() {
        let missing: Vec<&str> = [
            (dot.cert_file.is_none(), "tls_cert_file (--tls-cert-file)"),
            (dot.key_file.is_none(), "tls_key_file (--tls-key-file)"),
        ]
        .into_iter()
        .filter_map(|(missing, name)| missing.then_some(name))
        .collect();
        if !missing.is_empty() {
            return Err(origins.invalid(
                "listen_tls",
                None,
                format!(
                    "DNS over TLS needs {}: PEM files of the certificate chain and its private \
                     key",
                    missing.join(" and ")
                ),
            ));
        }
    }
    match dot
        .listen
        .iter()
        .find(|a| a.port() != 0 && config.listen.contains(a))
    {
        Some(a) => Err(origins.invalid(
            "listen_tls",
            None,
            format!(
                "{a} is also a listen address, where DNS over TCP is served: give it another port"
            ),
        )),
        None => Ok(()),
    }
}

/// The token in `path`: its first line, trimmed; an empty file means no token.
fn read_token_file(key: &str, path: &Path) -> Result<Option<Secret>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
        key: key.to_string(),
        value: Some(format!("{:?}", path.display().to_string())),
        file: None,
        reason: format!("cannot read the token file: {e}"),
    })?;
    let token = text.lines().next().unwrap_or("").trim();
    Ok((!token.is_empty()).then(|| Secret::new(token)))
}
