//! Keeps the view in sync with Consul.
//!
//! - `/v1/agent/self` once, for the local datacenter (unless configured);
//! - `/v1/catalog/services` and `/v1/catalog/nodes`: always watched (names that exist, so an
//!   unknown name is answered without asking Consul);
//! - `/v1/health/service/<name>`: watched from the first query of that service on (or from
//!   the start with `watch_all_services`). The first load is coalesced (any number of
//!   concurrent queries for a cold service make one request); the watch lives in a moka
//!   cache with a time-to-idle, and ends when its entry is evicted (the entry owns the
//!   watch's cancellation guard). At most `max_watches` hold a blocking query; services
//!   beyond are re-read every `watch_poll_interval` until a slot frees.
//!
//! Request budget: with N services asked for, Consul sees at most min(N, max_watches)
//! long polls open plus the two list watches, and each change of a service costs one
//! response to its long poll and one new long poll (two requests).
//!
//! An empty answer that Consul marks as filtered by ACLs never empties data we had: it is
//! logged as an error and counted, and the previous data stays.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use moka::future::Cache;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, error, info, warn};

use super::model::{AgentSelf, Node, ServiceDirectory, ServiceEntry};
use super::watch::{self, Backoff, Pace, WatchContext, WatchHealth, WatchSlots};
use super::{ConsulClient, ConsulError, QueryMeta};
use crate::config::ServiceTtl;
use crate::dns::prepared::{NodeTable, PreparedService, Settings};
use crate::metrics::Metrics;
use crate::view::{Directory, ReverseIndex, View};

/// How many more services than `max_watches` are kept in memory (polled).
const POLLED_FACTOR: usize = 10;
/// Concurrent first loads with `watch_all_services`.
const EAGER_LOADS: usize = 16;

/// How the sync behaves, from the configuration.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The local datacenter if configured; else learned from the agent.
    pub datacenter: Option<String>,
    /// Preparation settings; `datacenter` is filled in once known.
    pub settings: Settings,
    pub service_ttl: ServiceTtl,
    /// Cap on service watches holding a blocking query.
    pub max_watches: usize,
    /// A service nobody asked for this long stops being watched.
    pub watch_idle_timeout: Duration,
    /// Re-read period of services beyond `max_watches`.
    pub watch_poll_interval: Duration,
    /// Watch every service from the start, and never let them go idle.
    pub watch_all_services: bool,
}

/// A service's data as the answers need it.
#[derive(Debug, Clone)]
pub struct ServiceData {
    pub prepared: Arc<PreparedService>,
    pub health: Arc<WatchHealth>,
}

/// A live watch of one service: the latest prepared data, its health, and the guard that
/// ends the watch task when the cache drops this entry.
struct ServiceWatch {
    name: String,
    current: Arc<ArcSwap<PreparedService>>,
    health: Arc<WatchHealth>,
    reverse: Arc<ReverseIndex>,
    _stop: DropGuard,
}

impl Drop for ServiceWatch {
    fn drop(&mut self) {
        self.reverse
            .replace(&self.name, &self.current.load().addresses, &[]);
    }
}

impl ServiceWatch {
    fn data(&self) -> ServiceData {
        ServiceData {
            prepared: self.current.load_full(),
            health: Arc::clone(&self.health),
        }
    }
}

/// Owns the background tasks that keep the view fresh.
pub struct Syncer {
    client: ConsulClient,
    view: Arc<View>,
    options: SyncOptions,
    settings: OnceLock<Arc<Settings>>,
    services: Cache<String, Arc<ServiceWatch>>,
    slots: Arc<WatchSlots>,
    directory_health: Arc<WatchHealth>,
    nodes_health: Arc<WatchHealth>,
    reverse: Arc<ReverseIndex>,
    cancel: CancellationToken,
}

impl Syncer {
    /// Starts syncing in the background. Consul being unreachable is not an error: every
    /// read is retried until it succeeds or the syncer is shut down.
    pub fn start(client: ConsulClient, view: Arc<View>, options: SyncOptions) -> Arc<Self> {
        let mut builder = Cache::builder()
            .max_capacity(options.max_watches.saturating_mul(POLLED_FACTOR) as u64)
            .eviction_listener(|name: Arc<String>, _, cause| {
                debug!(service = %name, ?cause, "service watch ended");
            });
        if !options.watch_all_services {
            builder = builder.time_to_idle(options.watch_idle_timeout);
        }
        let slots = WatchSlots::new(options.max_watches, Arc::clone(client.metrics()));
        let syncer = Arc::new(Syncer {
            client,
            view,
            options,
            settings: OnceLock::new(),
            services: builder.build(),
            slots,
            directory_health: Arc::default(),
            nodes_health: Arc::default(),
            reverse: Arc::default(),
            cancel: CancellationToken::new(),
        });
        tokio::spawn(Arc::clone(&syncer).bootstrap());
        tokio::spawn(Arc::clone(&syncer).janitor());
        syncer
    }

    pub fn view(&self) -> &Arc<View> {
        &self.view
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        self.client.metrics()
    }

    /// Health of the service list watch (decides which names exist).
    pub fn directory_health(&self) -> &WatchHealth {
        &self.directory_health
    }

    /// Health of the node list watch.
    pub fn nodes_health(&self) -> &WatchHealth {
        &self.nodes_health
    }

    /// Ends every watch.
    pub fn shutdown(&self) {
        self.cancel.cancel();
        self.services.invalidate_all();
    }

    /// The service (its Consul name) whose instances use this address, among the services
    /// in the view.
    pub fn service_at(&self, ip: &std::net::IpAddr) -> Option<String> {
        self.reverse.lookup(ip)
    }

    /// Number of services in memory (watched or polled).
    pub fn live_watches(&self) -> u64 {
        self.services.entry_count()
    }

    /// Updates the gauges that are computed rather than counted (before a scrape).
    pub fn refresh_gauges(&self) {
        let m = self.metrics();
        let secs = |h: &WatchHealth| h.stale_for().map_or(0.0, |d| d.as_secs_f64());
        m.set_watch_stale("catalog/services", secs(&self.directory_health));
        m.set_watch_stale("catalog/nodes", secs(&self.nodes_health));
        let failing = self
            .services
            .iter()
            .filter(|(_, w)| w.health.stale_for().is_some())
            .count();
        m.service_watches_failing
            .set(i64::try_from(failing).unwrap_or(i64::MAX));
        let excluded: usize = self
            .services
            .iter()
            .map(|(_, w)| w.current.load().excluded)
            .sum();
        m.instances_outside_internal_cidrs
            .set(i64::try_from(excluded).unwrap_or(i64::MAX));
    }

    /// The prepared data of a service, from memory when it is watched; otherwise loaded once
    /// (concurrent callers share the load) and watched from then on.
    pub async fn service(
        &self,
        key: &str,
        consul_name: &str,
    ) -> Result<ServiceData, Arc<ConsulError>> {
        if let Some(w) = self.services.get(key).await {
            self.metrics().view_hits.inc();
            return Ok(w.data());
        }
        self.metrics().view_misses.inc();
        let w = self
            .services
            .try_get_with_by_ref(key, self.start_service_watch(key, consul_name))
            .await?;
        Ok(w.data())
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
        self.metrics().service_loads.inc();
        let (entries, meta) = self.client.get::<Vec<ServiceEntry>>(&segs, 0).await?;
        let ttl = self.options.service_ttl.ttl_for(key);
        let current = Arc::new(ArcSwap::from_pointee(PreparedService::build(
            &entries, ttl, meta.index, &settings,
        )));
        let pace = match self.slots.try_acquire() {
            Some(slot) => Pace::Blocking(Some(slot)),
            None => {
                debug!(
                    service = consul_name,
                    "max_watches reached: service re-read on a timer"
                );
                Pace::Polling {
                    interval: self.options.watch_poll_interval,
                    slots: Arc::clone(&self.slots),
                }
            }
        };
        debug!(
            service = consul_name,
            instances = entries.len(),
            "service watch started"
        );
        let ctx = WatchContext {
            client: self.client.clone(),
            health: Arc::default(),
            cancel: self.cancel.child_token(),
        };
        let health = Arc::clone(&ctx.health);
        let stop = ctx.cancel.clone();
        let target = Arc::clone(&current);
        let metrics = Arc::clone(self.metrics());
        let name = consul_name.to_owned();
        let reverse = Arc::clone(&self.reverse);
        self.reverse
            .replace(consul_name, &[], &current.load().addresses);
        let (_, index) = watch::next_index(0, meta.index);
        tokio::spawn(watch::run(
            ctx,
            segments,
            index,
            pace,
            move |entries: Vec<ServiceEntry>, meta: QueryMeta, _| {
                let old = target.load();
                if acl_would_empty(&meta, entries.is_empty(), old.total > 0, &metrics) {
                    error!(
                        service = %name,
                        "Consul answered no instances and says ACLs filtered the result; keeping the {} known instances (check the token's service:read and node:read rights)",
                        old.total
                    );
                    return;
                }
                let new = PreparedService::build(&entries, ttl, meta.index, &settings);
                reverse.replace(&name, &old.addresses, &new.addresses);
                target.store(Arc::new(new));
            },
        ));
        Ok(Arc::new(ServiceWatch {
            name: consul_name.to_owned(),
            current,
            health,
            reverse: Arc::clone(&self.reverse),
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

        let ctx = |health: &Arc<WatchHealth>| WatchContext {
            client: self.client.clone(),
            health: Arc::clone(health),
            cancel: self.cancel.child_token(),
        };
        let me = Arc::clone(&self);
        tokio::spawn(watch::run(
            ctx(&self.directory_health),
            vec!["v1".into(), "catalog".into(), "services".into()],
            0,
            Pace::Blocking(None),
            move |services: ServiceDirectory, meta: QueryMeta, _| {
                let had = me.view.directory().is_some_and(|d| !d.services.is_empty());
                if acl_would_empty(&meta, services.is_empty(), had, me.metrics()) {
                    error!("Consul answered an empty service list and says ACLs filtered it; keeping the known services (check the token's service:read rights)");
                    return;
                }
                debug!(
                    services = services.len(),
                    index = meta.index,
                    "service list updated"
                );
                me.view
                    .set_directory(Directory::build(services, meta.index));
                if me.options.watch_all_services {
                    tokio::spawn(Arc::clone(&me).watch_every_service());
                }
            },
        ));
        let view = Arc::clone(&self.view);
        let metrics = Arc::clone(self.metrics());
        tokio::spawn(watch::run(
            ctx(&self.nodes_health),
            vec!["v1".into(), "catalog".into(), "nodes".into()],
            0,
            Pace::Blocking(None),
            move |nodes: Vec<Node>, meta: QueryMeta, _| {
                let had = view.nodes().is_some_and(|n| !n.by_name.is_empty());
                if acl_would_empty(&meta, nodes.is_empty(), had, &metrics) {
                    error!("Consul answered an empty node list and says ACLs filtered it; keeping the known nodes (check the token's node:read rights)");
                    return;
                }
                debug!(nodes = nodes.len(), index = meta.index, "node list updated");
                view.set_nodes(NodeTable::build(&nodes, meta.index));
            },
        ));
    }

    /// With `watch_all_services`: starts a watch for every listed service that has none,
    /// and ends the watches of services that left the catalog.
    async fn watch_every_service(self: Arc<Self>) {
        let Some(dir) = self.view.directory() else {
            return;
        };
        for (key, _) in self.services.iter() {
            if !dir.services.contains_key(key.as_str()) {
                self.services.invalidate(key.as_str()).await;
            }
        }
        futures_util::stream::iter(dir.services.iter())
            .for_each_concurrent(EAGER_LOADS, |(key, known)| {
                let me = Arc::clone(&self);
                async move {
                    if !me.services.contains_key(key.as_str()) {
                        if let Err(e) = me.service(key, &known.name).await {
                            debug!(service = %known.name, error = %e, "eager load failed; retried on the next change");
                        }
                    }
                }
            })
            .await;
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

/// Whether an answer is an ACL-filtered empty result that would wipe data we had; counts it.
fn acl_would_empty(meta: &QueryMeta, empty: bool, had_data: bool, metrics: &Metrics) -> bool {
    let wipe = meta.filtered_by_acls && empty && had_data;
    if wipe {
        metrics.acl_filtered_ignored.inc();
    }
    wipe
}
