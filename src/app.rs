//! Wires the parts together: `start` loads the static zones and the DNS-over-TLS
//! certificate, binds the sockets, starts the Consul sync and the DNS server, and returns a
//! handle that reloads the zones and the certificate and shuts everything down.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_server::proto::rr::Name;
use hickory_server::zone_handler::Catalog;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::admin;
use crate::config::{Config, DnsConfig, TransferSecret};
use crate::consul::sync::{SyncOptions, Syncer};
use crate::consul::{ClientOptions, ConsulClient, ConsulError};
use crate::dns::consul_zone::{ConsulZone, ZoneOptions};
use crate::dns::dot::{self, Certificate, CertificateError};
use crate::dns::forward::{ForwardError, Recursors};
use crate::dns::handler::{DnsHandler, RecursionPolicy, ResponseLimits};
use crate::dns::query_log::QueryLog;
use crate::dns::rrl::Rrl;
use crate::dns::sockets::{self, BindError, Sockets};
use crate::dns::static_zones::{ZoneError, ZoneSet};
use crate::dns::tcp;
use crate::dns::transfer::Transfers;
use crate::dns::tsig::{Algorithm, TsigError, TsigKey};
use crate::dns::udp;
use crate::metrics::Metrics;
use crate::view::records::Settings;
use crate::view::{Source, View};

/// The largest UDP response (DNS Flag Day 2020: no IP fragmentation).
const MAX_UDP_PAYLOAD: u16 = 1232;

/// Why the server could not start. Each is a configuration or environment problem that a
/// retry will not fix.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Consul(#[from] ConsulError),
    #[error("invalid domain {0:?}")]
    Domain(String),
    #[error(transparent)]
    Zone(#[from] ZoneError),
    #[error(transparent)]
    Forward(#[from] ForwardError),
    #[error("cannot start serving UDP: {0}")]
    Udp(#[source] std::io::Error),
    #[error(transparent)]
    Certificate(#[from] CertificateError),
    #[error("DNS over TLS needs tls_cert_file and tls_key_file")]
    NoCertificate,
    #[error("transfer key: {0}")]
    TransferKey(#[from] TsigError),
}

/// A running server.
pub struct Running {
    /// The bound DNS addresses (UDP and TCP on each), port 0 resolved.
    pub dns_addrs: Vec<SocketAddr>,
    /// The bound DNS-over-TLS addresses, port 0 resolved.
    pub tls_addrs: Vec<SocketAddr>,
    /// The bound metrics and health endpoint, when configured.
    pub http_addr: Option<SocketAddr>,
    /// Stops the UDP loops (`dns::udp`) and the TCP and TLS listeners (`dns::tcp`).
    stop_dns: CancellationToken,
    /// The UDP loops; each ends once its thread has (at most `udp::STOP_CHECK` after
    /// `stop_dns`).
    udp: Vec<JoinHandle<()>>,
    /// The TCP listeners; each ends once its connections have finished.
    tcp: Vec<JoinHandle<()>>,
    /// The DNS-over-TLS listeners, likewise.
    tls: Vec<JoinHandle<()>>,
    /// The DNS-over-TLS certificate, when DNS over TLS is on.
    certificate: Option<Arc<Certificate>>,
    syncer: Arc<Syncer>,
    stop_http: CancellationToken,
    zones: Arc<StaticZones>,
    handler: Arc<DnsHandler>,
}

/// What reloading the zones needs: the directory, the zones served now, the Catalog the
/// handler reads.
struct StaticZones {
    dir: Option<PathBuf>,
    /// The Consul domains (no static zone may be inside them).
    reserved: Vec<Name>,
    current: Mutex<ZoneSet>,
    catalog: Arc<ArcSwap<Catalog>>,
}

impl StaticZones {
    fn catalog(&self, zones: &ZoneSet) -> Catalog {
        let mut catalog = Catalog::new();
        zones.register(&mut catalog);
        catalog
    }
}

/// The outcome of [`Running::reload_zones`].
#[derive(Debug)]
pub struct ReloadSummary {
    /// Zones served after the reload.
    pub served: usize,
    /// Zones that failed (each keeps its previous version, if it had one).
    pub failed: Vec<String>,
    /// Zones dropped because their file is gone.
    pub removed: Vec<String>,
}

impl Running {
    pub fn syncer(&self) -> &Arc<Syncer> {
        &self.syncer
    }

    /// The request handler the sockets use (for the fuzz harness, `fuzzing.rs`).
    #[doc(hidden)]
    pub fn handler(&self) -> &Arc<DnsHandler> {
        &self.handler
    }

    /// Reloads the static zones (SIGHUP): a zone that fails to load keeps its previous
    /// version and the reason is logged.
    pub async fn reload_zones(&self) -> ReloadSummary {
        let z = &self.zones;
        let Some(dir) = &z.dir else {
            info!("reload: no zones directory configured");
            return ReloadSummary {
                served: 0,
                failed: Vec::new(),
                removed: Vec::new(),
            };
        };
        let mut current = z.current.lock().await;
        let reload = current.reload(dir, &z.reserved).await;
        for e in &reload.errors {
            if reload.zones.zones().any(|z| z.path == e.path()) {
                warn!("reload: {e}; still serving its previous version");
            } else {
                warn!("reload: {e}; not served");
            }
        }
        for origin in &reload.removed {
            info!(zone = %origin, "reload: zone file gone; {origin} is no longer served");
        }
        for zone in reload.zones.zones() {
            info!(zone = %zone.origin, file = %zone.path.display(), records = zone.records, "serving zone {}", zone.origin);
        }
        z.catalog.store(Arc::new(z.catalog(&reload.zones)));
        info!(
            zones = reload.zones.len(),
            failed = reload.errors.len(),
            "zones reloaded from {}",
            dir.display()
        );
        let summary = ReloadSummary {
            served: reload.zones.len(),
            failed: reload.errors.iter().map(ToString::to_string).collect(),
            removed: reload.removed.iter().map(ToString::to_string).collect(),
        };
        *current = reload.zones;
        summary
    }

    /// Reads the DNS-over-TLS certificate and key again (SIGHUP): new connections get the
    /// new certificate; on an error the previous one is kept and the reason logged. None
    /// when DNS over TLS is off.
    pub fn reload_certificate(&self) -> Option<Result<(), CertificateError>> {
        let certificate = self.certificate.as_ref()?;
        let result = certificate.reload();
        match &result {
            Ok(()) => info!(
                file = %certificate.cert_file().display(),
                "reload: DNS-over-TLS certificate read again"
            ),
            Err(e) => warn!("reload: {e}; still serving the previous DNS-over-TLS certificate"),
        }
        Some(result)
    }

    /// Stops listening, lets in-flight queries finish, ends the Consul watches.
    pub async fn shutdown(self) {
        self.stop_dns.cancel();
        for udp in self.udp {
            if let Err(e) = udp.await {
                warn!(error = %e, "UDP loop stopped with an error");
            }
        }
        for listener in self.tcp {
            if let Err(e) = listener.await {
                warn!(error = %e, "TCP listener stopped with an error");
            }
        }
        for listener in self.tls {
            if let Err(e) = listener.await {
                warn!(error = %e, "DNS-over-TLS listener stopped with an error");
            }
        }
        self.syncer.shutdown();
        self.stop_http.cancel();
    }
}

/// Starts serving `config`. Consul need not be reachable: the sync retries in the background
/// and Consul names are SERVFAIL until the first sync.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    let domains = served_domains(config)?;
    let certificate = load_certificate(config)?;
    let transfer_key = transfer_key(config)?;
    let metrics = Arc::new(Metrics::new());
    let client = consul_client(config, &metrics)?;
    let sockets = sockets::bind(&config.listen, config.workers).await?;
    let tls_listeners = match &certificate {
        Some(_) => sockets::bind_tls(&config.dot.listen)?,
        None => Vec::new(),
    };
    let http = match config.http_addr {
        Some(addr) => Some(bind_http(addr).await?),
        None => None,
    };
    log_consul_config(config);
    warn_unsupported(&config.dns);
    let zones = load_zones(config, &domains).await?;
    let recursors = recursors(config)?;
    let syncer = start_sync(config, client, &domains);
    let zone = Arc::new(ConsulZone::new(
        zone_options(config, domains.clone()),
        Arc::clone(&syncer) as Arc<dyn Source>,
        Arc::clone(&metrics),
        recursors.clone(),
    ));
    let static_zones = Arc::new(StaticZones {
        dir: config.zones.clone(),
        reserved: domains,
        current: Mutex::new(ZoneSet::default()),
        catalog: Arc::new(ArcSwap::from_pointee(Catalog::new())),
    });
    static_zones
        .catalog
        .store(Arc::new(static_zones.catalog(&zones)));
    *static_zones.current.lock().await = zones;
    let stop_dns = CancellationToken::new();
    let transfers = config.transfer.enabled().then(|| {
        Transfers::start(
            &zone,
            Arc::clone(&syncer) as Arc<dyn Source>,
            config.transfer.clone(),
            transfer_key,
            Arc::clone(&metrics),
            &stop_dns,
        )
    });
    let handler = Arc::new(
        DnsHandler::new(
            zone,
            Arc::clone(&static_zones.catalog),
            ResponseLimits {
                udp_answer_limit: config.dns.udp_answer_limit as usize,
                max_udp_payload: MAX_UDP_PAYLOAD,
                allow_any: config.allow_any,
            },
            RecursionPolicy {
                recursors,
                allow: config.allow_recursion.clone(),
            },
            Arc::clone(&metrics),
            transfers,
        )
        .with_query_log(
            config
                .query_log
                .then(|| QueryLog::new(config.query_log_sample)),
        ),
    );
    let dns_addrs = sockets.addrs.clone();
    let (udp, tcp) = serve_dns(config, sockets, &handler, &metrics, &stop_dns)?;
    let tls_addrs: Vec<SocketAddr> = tls_listeners.iter().map(|(_, addr)| *addr).collect();
    let tls = match &certificate {
        Some(certificate) => serve_dot(
            config,
            tls_listeners,
            certificate,
            &handler,
            &metrics,
            &stop_dns,
        ),
        None => Vec::new(),
    };
    let stop_http = CancellationToken::new();
    let http_addr = http.map(|(listener, bound)| {
        admin::serve(listener, Arc::clone(&syncer), stop_http.clone());
        info!(addr = %bound, "metrics on http://{bound}/metrics, health on /health/live and /health/ready");
        bound
    });
    Ok(Running {
        dns_addrs,
        tls_addrs,
        http_addr,
        stop_dns,
        udp,
        tcp,
        tls,
        certificate,
        syncer,
        zones: static_zones,
        stop_http,
        handler,
    })
}

/// The served domains (`domain`, then `alt_domain`), lower-case.
fn served_domains(config: &Config) -> Result<Vec<Name>, StartError> {
    std::iter::once(&config.domain)
        .chain(config.alt_domain.iter())
        .map(|d| {
            Name::from_ascii(d)
                .map(|n| n.to_lowercase())
                .map_err(|_| StartError::Domain(d.clone()))
        })
        .collect()
}

fn consul_client(config: &Config, metrics: &Arc<Metrics>) -> Result<ConsulClient, StartError> {
    Ok(ConsulClient::new(
        &config.consul_addr,
        config.token.as_ref().map(|t| t.expose()),
        ClientOptions {
            stale: config.dns.allow_stale,
            wait: config.blocking_wait,
            max_response_bytes: config.consul_max_body_bytes,
            body_budget: config.consul_body_budget_bytes,
            tls: config.tls.clone(),
        },
        Arc::clone(metrics),
    )?)
}

/// The metrics and health endpoint's listener, and the address it got.
async fn bind_http(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BindError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| BindError {
        addr,
        flag: "--http-addr",
        source,
    })?;
    let bound = listener.local_addr().map_err(|source| BindError {
        addr,
        flag: "--http-addr",
        source,
    })?;
    Ok((listener, bound))
}

/// The DNS-over-TLS certificate, when DNS over TLS is on.
fn load_certificate(config: &Config) -> Result<Option<Arc<Certificate>>, StartError> {
    let dot = &config.dot;
    if dot.listen.is_empty() {
        if dot.cert_file.is_some() || dot.key_file.is_some() {
            warn!("tls_cert_file and tls_key_file are not used without listen_tls (--listen-tls)");
        }
        return Ok(None);
    }
    match (&dot.cert_file, &dot.key_file) {
        (Some(cert), Some(key)) => Ok(Some(Arc::new(Certificate::load(cert, key)?))),
        _ => Err(StartError::NoCertificate),
    }
}

/// The Consul agent's configuration read (`--consul-config`), and what of it is not used.
fn log_consul_config(config: &Config) {
    if !config.consul_config_files.is_empty() {
        let files: Vec<String> = config
            .consul_config_files
            .iter()
            .map(|f| f.display().to_string())
            .collect();
        info!(files = %files.join(", "), "read the Consul agent's configuration");
    }
    for warning in &config.consul_config_warnings {
        warn!("{warning}");
    }
}

/// Consul options accepted without effect, said once at start.
fn warn_unsupported(dns: &DnsConfig) {
    if dns.disable_compression {
        tracing::warn!("disable_compression is not supported: responses are always compressed");
    }
    if dns.prefer_namespace {
        tracing::warn!("prefer_namespace has no effect: namespaces are not supported");
    }
}

async fn load_zones(config: &Config, domains: &[Name]) -> Result<ZoneSet, StartError> {
    let Some(dir) = &config.zones else {
        info!(
            "no zones directory: static zones off (--zones DIR, or ./{} in the working directory)",
            crate::config::DEFAULT_ZONES_DIR
        );
        return Ok(ZoneSet::default());
    };
    let shown = std::path::absolute(dir).unwrap_or_else(|_| dir.clone());
    info!(dir = %shown.display(), "zones directory");
    let zones = ZoneSet::load(dir, domains).await?;
    for zone in zones.zones() {
        info!(zone = %zone.origin, file = %zone.path.display(), records = zone.records, "serving zone {}", zone.origin);
    }
    if zones.is_empty() {
        info!("no zone files (*.zone) in {}", dir.display());
    }
    Ok(zones)
}

fn recursors(config: &Config) -> Result<Option<Arc<Recursors>>, StartError> {
    if config.recursors.is_empty() {
        return Ok(None);
    }
    let dns = &config.dns;
    let recursors = Recursors::new(
        &config.recursors,
        dns.recursor_strategy,
        dns.recursor_timeout,
    )?;
    info!(
        recursors = ?config.recursors,
        allow_recursion = ?config.allow_recursion,
        "forwarding other names to the recursors"
    );
    Ok(Some(Arc::new(recursors)))
}

/// Starts keeping the view in sync with Consul.
fn start_sync(config: &Config, client: ConsulClient, domains: &[Name]) -> Arc<Syncer> {
    let dns = &config.dns;
    let settings = Settings {
        domains: domains.to_vec(),
        datacenter: String::new(),
        only_passing: dns.only_passing,
        node_ttl: dns.node_ttl,
        node_meta_txt: dns.enable_additional_node_meta_txt,
        internal_cidrs: config.internal_cidrs.clone(),
        wan: false,
    };
    Syncer::start(
        client,
        View::new(),
        SyncOptions {
            datacenter: config.datacenter.clone(),
            settings,
            service_ttl: dns.service_ttl.clone(),
            max_watches: config.max_watches,
            max_services: config.max_services.max(config.max_watches),
            watch_idle_timeout: config.watch_idle_timeout,
            watch_poll_interval: config.watch_poll_interval,
            // A transfer holds every service: each is watched.
            watch_all_services: config.watch_all_services || config.transfer.enabled(),
            translate_wan_addrs: config.translate_wan_addrs,
            query_max_age: dns.cache_max_age,
        },
    )
}

/// The TSIG key of zone transfers, read now so that a bad one stops the start.
fn transfer_key(config: &Config) -> Result<Option<TsigKey>, TsigError> {
    let Some(key) = &config.transfer.key else {
        return Ok(None);
    };
    let algorithm: Algorithm = key.algorithm.parse()?;
    let key = match &key.secret {
        TransferSecret::Base64(secret) => {
            TsigKey::with_algorithm(&key.name, secret.expose(), algorithm)?
        }
        TransferSecret::File(path) => TsigKey::from_file(&key.name, path)?,
    };
    Ok(Some(key))
}

fn zone_options(config: &Config, domains: Vec<Name>) -> ZoneOptions {
    let dns = &config.dns;
    ZoneOptions {
        domains,
        node_ttl: dns.node_ttl,
        service_ttl: dns.service_ttl.clone(),
        soa: dns.soa,
        a_record_limit: dns.a_record_limit as usize,
        node_meta_txt: dns.enable_additional_node_meta_txt,
        startup_wait: config.startup_wait,
        max_stale: dns.max_stale,
        complete: false,
    }
}

/// The tasks of the UDP loops, or of the TCP or TLS servers.
type Servers = Vec<JoinHandle<()>>;

/// The DNS-over-TLS servers on the bound listeners, until `stop`: the TCP servers' code
/// behind the TLS handshake, with limits of their own.
fn serve_dot(
    config: &Config,
    listeners: Vec<(TcpListener, SocketAddr)>,
    certificate: &Arc<Certificate>,
    handler: &Arc<DnsHandler>,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
) -> Servers {
    let handshake = Arc::new(dot::TlsHandshake::new(Arc::clone(certificate), metrics));
    listeners
        .into_iter()
        .map(|(listener, addr)| {
            info!(%addr, certificate = %certificate.cert_file().display(), "DNS over TLS: listening on {addr}");
            tokio::spawn(tcp::serve(
                listener,
                Arc::clone(handler),
                Arc::clone(&handshake),
                metrics.tls.clone(),
                config.dot.limits,
                stop.clone(),
            ))
        })
        .collect()
}

/// The UDP loops and TCP servers on the bound sockets, until `stop`.
fn serve_dns(
    config: &Config,
    sockets: Sockets,
    handler: &Arc<DnsHandler>,
    metrics: &Arc<Metrics>,
    stop: &CancellationToken,
) -> Result<(Servers, Servers), StartError> {
    let rrl = Rrl::new(config.rrl).map(Arc::new);
    if let Some(rrl) = &rrl {
        info!(?rrl, "response-rate limiting of UDP answers is on");
    }
    let udp = sockets
        .udp
        .into_iter()
        .enumerate()
        .map(|(worker, socket)| {
            let (handler, metrics) = (Arc::clone(handler), Arc::clone(metrics));
            udp::spawn(worker, socket, handler, metrics, rrl.clone(), stop)
        })
        .collect::<Result<_, _>>()
        .map_err(StartError::Udp)?;
    let tcp = sockets
        .tcp
        .into_iter()
        .map(|listener| {
            tokio::spawn(tcp::serve(
                listener,
                Arc::clone(handler),
                Arc::new(tcp::Plain),
                metrics.tcp.clone(),
                config.tcp,
                stop.clone(),
            ))
        })
        .collect();
    for addr in &sockets.addrs {
        info!(%addr, workers = config.workers, "listening on {addr} (udp: {} sockets, each with its thread; tcp)", config.workers);
    }
    Ok((udp, tcp))
}
