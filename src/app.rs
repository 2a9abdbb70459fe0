//! Wires the parts together: `start` binds the sockets, starts the Consul sync and the DNS
//! server, and returns a handle that shuts everything down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::proto::rr::Name;
use hickory_server::zone_handler::Catalog;
use hickory_server::Server;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::admin;
use crate::config::Config;
use crate::consul::sync::{SyncOptions, Syncer};
use crate::consul::{ClientOptions, ConsulClient, ConsulError};
use crate::dns::handler::{DnsHandler, ResponseLimits};
use crate::dns::prepared::Settings;
use crate::dns::server::{self, BindError};
use crate::dns::zone::{ConsulZone, SoaTimers, ZoneOptions};
use crate::metrics::Metrics;
use crate::view::View;

/// How long an idle TCP connection is kept.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
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
}

/// A running server.
pub struct Running {
    /// The bound DNS addresses (UDP and TCP on each), port 0 resolved.
    pub dns_addrs: Vec<SocketAddr>,
    /// The bound metrics and health endpoint, when configured.
    pub http_addr: Option<SocketAddr>,
    server: Server<DnsHandler>,
    syncer: Arc<Syncer>,
    stop_http: CancellationToken,
}

impl Running {
    pub fn syncer(&self) -> &Arc<Syncer> {
        &self.syncer
    }

    /// Stops listening, lets in-flight queries finish, ends the Consul watches.
    pub async fn shutdown(mut self) {
        if let Err(e) = self.server.shutdown_gracefully().await {
            tracing::warn!(error = %e, "DNS server stopped with an error");
        }
        self.syncer.shutdown();
        self.stop_http.cancel();
    }
}

/// Starts serving `config`. Consul need not be reachable: the sync retries in the background
/// and Consul names are SERVFAIL until the first sync.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    let mut domains = Vec::new();
    for d in std::iter::once(&config.domain).chain(config.alt_domain.iter()) {
        let name = Name::from_ascii(d).map_err(|_| StartError::Domain(d.clone()))?;
        domains.push(name.to_lowercase());
    }
    let dns = &config.dns;
    let metrics = Arc::new(Metrics::new());
    let client = ConsulClient::new(
        &config.consul_addr,
        config.token.as_ref().map(|t| t.expose()),
        ClientOptions {
            stale: dns.allow_stale,
            wait: config.blocking_wait,
        },
        Arc::clone(&metrics),
    )?;
    let sockets = server::bind(&config.listen).await?;
    let http = match config.http_addr {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| BindError { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| BindError { addr, source })?;
            Some((listener, bound))
        }
        None => None,
    };
    if dns.disable_compression {
        tracing::warn!("disable_compression is not supported: responses are always compressed");
    }
    if dns.prefer_namespace {
        tracing::warn!("prefer_namespace has no effect: namespaces are not supported");
    }
    if !config.recursors.is_empty() {
        tracing::warn!("recursors are configured, but forwarding is not implemented yet: names outside the Consul domain are REFUSED");
    }

    let settings = Settings {
        domains: domains.clone(),
        datacenter: String::new(),
        only_passing: dns.only_passing,
        node_ttl: dns.node_ttl,
        node_meta_txt: dns.enable_additional_node_meta_txt,
        internal_cidrs: config.internal_cidrs.clone(),
        wan: false,
    };
    let syncer = Syncer::start(
        client,
        View::new(),
        SyncOptions {
            datacenter: config.datacenter.clone(),
            settings,
            service_ttl: dns.service_ttl.clone(),
            max_watches: config.max_watches,
            watch_idle_timeout: config.watch_idle_timeout,
            watch_poll_interval: config.watch_poll_interval,
            watch_all_services: config.watch_all_services,
            translate_wan_addrs: config.translate_wan_addrs,
            query_max_age: dns.cache_max_age,
        },
    );
    let zone = Arc::new(ConsulZone::new(
        ZoneOptions {
            domains,
            node_ttl: dns.node_ttl,
            service_ttl: dns.service_ttl.clone(),
            soa: SoaTimers {
                refresh: dns.soa.refresh,
                retry: dns.soa.retry,
                expire: dns.soa.expire,
                min_ttl: dns.soa.min_ttl,
            },
            a_record_limit: dns.a_record_limit as usize,
            node_meta_txt: dns.enable_additional_node_meta_txt,
            startup_wait: config.startup_wait,
            max_stale: dns.max_stale,
        },
        Arc::clone(&syncer),
    ));
    let handler = DnsHandler::new(
        zone,
        Catalog::new(),
        ResponseLimits {
            udp_answer_limit: dns.udp_answer_limit as usize,
            max_udp_payload: MAX_UDP_PAYLOAD,
            // Forwarding is not implemented yet: never claim recursion.
            recursion_available: false,
        },
        Arc::clone(&metrics),
    );
    let mut server = Server::new(handler);
    for udp in sockets.udp {
        server.register_socket(udp);
    }
    for tcp in sockets.tcp {
        server.register_listener(tcp, TCP_IDLE_TIMEOUT, 64);
    }
    for addr in &sockets.addrs {
        info!(%addr, "listening on {addr} (udp, tcp)");
    }
    let stop_http = CancellationToken::new();
    let http_addr = http.map(|(listener, bound)| {
        admin::serve(listener, Arc::clone(&syncer), stop_http.clone());
        info!(addr = %bound, "metrics on http://{bound}/metrics, health on /health/live and /health/ready");
        bound
    });
    Ok(Running {
        dns_addrs: sockets.addrs,
        http_addr,
        server,
        syncer,
        stop_http,
    })
}
