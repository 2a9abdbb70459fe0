//! Keeps the view in sync with Consul.
//!
//! - `/v1/agent/self` once, for the local datacenter (unless configured);
//! - `/v1/catalog/services` and `/v1/catalog/nodes`: always watched (names that exist, so an
//!   unknown name is answered without asking Consul);
//! - `/v1/health/service/<name>`: watched from the first query of that service on. The first
//!   load is coalesced (any number of concurrent queries for a cold service make one request),
//!   the watch lives in a moka cache with a time-to-idle and a capacity, and ends when its
//!   entry is evicted (the entry owns the watch's cancellation guard).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use moka::future::Cache;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, info, warn};

use super::model::{AgentSelf, Node, ServiceDirectory, ServiceEntry};
use super::watch::{self, Backoff};
use super::{ConsulClient, ConsulError};
use crate::config::ServiceTtl;
use crate::dns::prepared::{NodeTable, PreparedService, Settings};
use crate::view::{Directory, View};

/// How the sync behaves, from the configuration.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The local datacenter if configured; else learned from the agent.
    pub datacenter: Option<String>,
    /// Preparation settings; `datacenter` is filled in once known.
    pub settings: Settings,
    pub service_ttl: ServiceTtl,
    /// Cap on live per-service watches.
    pub max_watches: usize,
    /// A service nobody asked for this long stops being watched.
    pub watch_idle_timeout: Duration,
}

/// A live watch of one service: the latest prepared data, and the guard that ends the watch
/// task when the cache drops this entry.
struct ServiceWatch {
    current: Arc<ArcSwap<PreparedService>>,
    _stop: DropGuard,
}

/// Owns the background tasks that keep the view fresh.
pub struct Syncer {
    client: ConsulClient,
    view: Arc<View>,
    options: SyncOptions,
    settings: OnceLock<Arc<Settings>>,
    services: Cache<String, Arc<ServiceWatch>>,
    cancel: CancellationToken,
}

impl Syncer {
    /// Starts syncing in the background. Consul being unreachable is not an error: every
    /// read is retried until it succeeds or the syncer is shut down.
    pub fn start(client: ConsulClient, view: Arc<View>, options: SyncOptions) -> Arc<Self> {
        let services = Cache::builder()
            .max_capacity(options.max_watches as u64)
            .time_to_idle(options.watch_idle_timeout)
            .eviction_listener(|name: Arc<String>, _, cause| {
                debug!(service = %name, ?cause, "service watch ended");
            })
            .build();
        let syncer = Arc::new(Syncer {
            client,
            view,
            options,
            settings: OnceLock::new(),
            services,
            cancel: CancellationToken::new(),
        });
        tokio::spawn(Arc::clone(&syncer).bootstrap());
        tokio::spawn(Arc::clone(&syncer).janitor());
        syncer
    }

    pub fn view(&self) -> &Arc<View> {
        &self.view
    }

    /// Ends every watch.
    pub fn shutdown(&self) {
        self.cancel.cancel();
        self.services.invalidate_all();
    }

    /// Number of live service watches.
    pub fn live_watches(&self) -> u64 {
        self.services.entry_count()
    }

    /// The prepared data of a service, from memory when it is watched; otherwise loaded once
    /// (concurrent callers share the load) and watched from then on.
    pub async fn service(
        &self,
        key: &str,
        consul_name: &str,
    ) -> Result<Arc<PreparedService>, Arc<ConsulError>> {
        if let Some(w) = self.services.get(key).await {
            return Ok(w.current.load_full());
        }
        let w = self
            .services
            .try_get_with_by_ref(key, self.start_service_watch(key, consul_name))
            .await?;
        Ok(w.current.load_full())
    }

    async fn start_service_watch(
        &self,
        key: &str,
        consul_name: &str,
    ) -> Result<Arc<ServiceWatch>, ConsulError> {
        let settings =
            self.settings.get().cloned().ok_or_else(|| {
                ConsulError::Config("the local datacenter is not known yet".into())
            })?;
        let segments = vec![
            "v1".to_owned(),
            "health".to_owned(),
            "service".to_owned(),
            consul_name.to_owned(),
        ];
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        let (entries, meta) = self.client.get::<Vec<ServiceEntry>>(&segs, 0).await?;
        let ttl = self.options.service_ttl.ttl_for(key);
        let current = Arc::new(ArcSwap::from_pointee(PreparedService::build(
            &entries, ttl, meta.index, &settings,
        )));
        debug!(
            service = consul_name,
            instances = entries.len(),
            "service watch started"
        );
        let stop = self.cancel.child_token();
        let target = Arc::clone(&current);
        let (_, index) = watch::next_index(0, meta.index);
        tokio::spawn(watch::run(
            self.client.clone(),
            segments,
            index,
            stop.clone(),
            move |entries: Vec<ServiceEntry>, meta, _| {
                target.store(Arc::new(PreparedService::build(
                    &entries, ttl, meta.index, &settings,
                )));
            },
        ));
        Ok(Arc::new(ServiceWatch {
            current,
            _stop: stop.drop_guard(),
        }))
    }

    async fn bootstrap(self: Arc<Self>) {
        let dc = match self.options.datacenter.clone() {
            Some(dc) => dc,
            None => match self.learn_datacenter().await {
                Some(dc) => dc,
                None => return,
            },
        };
        info!(datacenter = %dc, "local datacenter");
        let settings = Settings {
            datacenter: dc.to_ascii_lowercase(),
            ..self.options.settings.clone()
        };
        let _ = self.settings.set(Arc::new(settings));
        self.view.set_datacenter(&dc);

        let view = Arc::clone(&self.view);
        tokio::spawn(watch::run(
            self.client.clone(),
            vec!["v1".into(), "catalog".into(), "services".into()],
            0,
            self.cancel.child_token(),
            move |services: ServiceDirectory, meta, _| {
                debug!(
                    services = services.len(),
                    index = meta.index,
                    "service list updated"
                );
                view.set_directory(Directory::build(services, meta.index));
            },
        ));
        let view = Arc::clone(&self.view);
        tokio::spawn(watch::run(
            self.client.clone(),
            vec!["v1".into(), "catalog".into(), "nodes".into()],
            0,
            self.cancel.child_token(),
            move |nodes: Vec<Node>, meta, _| {
                debug!(nodes = nodes.len(), index = meta.index, "node list updated");
                view.set_nodes(NodeTable::build(&nodes, meta.index));
            },
        ));
    }

    async fn learn_datacenter(&self) -> Option<String> {
        let mut backoff = Backoff::default();
        loop {
            let result = tokio::select! {
                _ = self.cancel.cancelled() => return None,
                r = self.client.get::<AgentSelf>(&["v1", "agent", "self"], 0) => r,
            };
            match result {
                Ok((agent, _)) if !agent.config.datacenter.is_empty() => {
                    return Some(agent.config.datacenter)
                }
                Ok(_) => warn!("/v1/agent/self names no datacenter; retrying"),
                Err(e) => {
                    if backoff.failures() == 0 {
                        warn!(error = %e, "cannot reach Consul to learn the datacenter; retrying");
                    }
                }
            }
            let delay = backoff.next_delay(false);
            tokio::select! {
                _ = self.cancel.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// moka evicts idle entries lazily; this makes idle watches end on time even when no
    /// query touches the cache.
    async fn janitor(self: Arc<Self>) {
        let period = (self.options.watch_idle_timeout / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(period) => self.services.run_pending_tasks().await,
            }
        }
    }
}
