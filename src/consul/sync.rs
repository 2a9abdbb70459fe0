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
//!   beyond are re-read every `watch_poll_interval` until a slot frees, by one task for
//!   all of them (`Syncer::poll_services`). At most `max_services` are kept in memory.
//!
//! Request budget: with N services asked for, Consul sees at most min(N, max_watches)
//! long polls open plus the two list watches, and each change of a service costs one
//! response to its long poll and one new long poll (two requests).
//!
//! An empty answer that Consul marks as filtered by ACLs never empties data we had: it is
//! logged as an error and counted, and the previous data stays.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use moka::future::Cache;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, error, info, warn};

use super::polled::PollQueue;
use super::preparation::Preparation;
use super::queries::{PreparedQueries, QueryNames};
use super::remote::RemoteDatacenters;
use super::watch::{self, acl_would_empty, Backoff, IndexStep, Slot, WatchContext, WatchSlots};
use super::{ConsulClient, ConsulError, QueryMeta};
use crate::config::ServiceTtl;
use crate::log_limit::LogLimit;
use crate::metrics::Metrics;
use crate::model::{AgentSelf, Node, PreparedQueryListing, ServiceDirectory, ServiceEntry};
use crate::view::freshness::{ServiceBasis, ServiceData, WatchHealth, WatchStamp};
use crate::view::records::{NodeTable, RecordSettings, ServiceRecords, Settings};
use crate::view::{
    Directory, Endpoint, RemoteLists, ReverseIndex, ServiceRef, Source, SourceError, View,
};

/// Concurrent first loads with `watch_all_services`.
const EAGER_LOADS: usize = 16;

/// How the sync behaves, from the configuration.
#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// The local datacenter if configured; else learned from the agent.
    pub datacenter: Option<String>,
    /// Record settings; `datacenter` is filled in once known.
    pub settings: Settings,
    pub service_ttl: ServiceTtl,
    /// Cap on service watches holding a blocking query.
    pub max_watches: usize,
    /// Cap on services kept in memory, watched or polled (at least `max_watches`).
    pub max_services: usize,
    /// A service nobody asked for this long stops being watched.
    pub watch_idle_timeout: Duration,
    /// Re-read period of services beyond `max_watches`.
    pub watch_poll_interval: Duration,
    /// Watch every service from the start, and never let them go idle.
    pub watch_all_services: bool,
    /// `translate_wan_addrs`: answers for other datacenters use WAN addresses.
    pub translate_wan_addrs: bool,
    /// How long a prepared query's result is reused (`cache_max_age`; 0: one second).
    pub query_max_age: Duration,
}

/// The path segment of an endpoint: `/v1/health/<segment>/<name>`.
fn segment(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::Service => "service",
        Endpoint::Connect => "connect",
        Endpoint::Ingress => "ingress",
    }
}

/// The cache key of what a lookup reads; the common case (a local service) is the name
/// itself.
fn cache_key<'a>(service_ref: &ServiceRef<'a>) -> Cow<'a, str> {
    match (service_ref.endpoint, service_ref.datacenter) {
        (Endpoint::Service, None) => Cow::Borrowed(service_ref.key),
        (e, dc) => Cow::Owned(format!(
            "{}\0{}\0{}",
            segment(e),
            dc.unwrap_or(""),
            service_ref.key
        )),
    }
}

/// A service in memory: its latest prepared data, its health, and how it is kept fresh
/// (a blocking query of its own, or re-reads by the poller). The watch task and the poller
/// hold it weakly: when the cache drops it, its blocking query ends (`stop`) and the poller
/// skips it.
struct ServiceWatch {
    /// The name as registered in Consul.
    name: Arc<str>,
    endpoint: Endpoint,
    datacenter: Option<Box<str>>,
    ttl: u32,
    /// Preparation settings, and those for a response the agent already WAN-translated.
    settings: Arc<RecordSettings>,
    untranslated: Arc<RecordSettings>,
    stamp: Arc<WatchStamp>,
    current: ArcSwap<ServiceRecords>,
    health: Arc<WatchHealth>,
    /// Set for local services, whose addresses answer reverse lookups.
    reverse: Option<Arc<ReverseIndex>>,
    metrics: Arc<Metrics>,
    /// Set while re-read by the poller (counted in `watches_polling`).
    polled: AtomicBool,
    /// Ends its blocking query, once it has one.
    stop: OnceLock<DropGuard>,
}

impl Drop for ServiceWatch {
    fn drop(&mut self) {
        self.stamp.end();
        if let Some(reverse) = &self.reverse {
            reverse.replace(&self.name, &self.current.load().addresses, &[]);
        }
        self.set_polled(false);
    }
}

impl ServiceWatch {
    fn data(&self) -> ServiceData {
        ServiceData::read(&self.stamp, &self.health, || self.current.load_full())
    }

    /// `/v1/health/<endpoint>/<name>`.
    fn segments(&self) -> [&str; 4] {
        ["v1", "health", segment(self.endpoint), &self.name]
    }

    /// Whether the poller re-reads it, counted in `watches_polling`.
    fn set_polled(&self, polled: bool) {
        if self.polled.swap(polled, Ordering::Relaxed) != polled {
            if polled {
                self.metrics.watches_polling.inc();
            } else {
                self.metrics.watches_polling.dec();
            }
        }
    }

    /// Replaces the data with a new read of the service.
    fn apply(&self, entries: &[ServiceEntry], meta: &QueryMeta) {
        let old = self.current.load();
        if acl_would_empty(meta, entries.is_empty(), old.total > 0, &self.metrics) {
            if let Some(suppressed) = watch::ACL_KEPT_LINES.allow() {
                error!(
                    service = %self.name,
                    suppressed,
                    "Consul answered no instances and says ACLs filtered the result; keeping the {} known instances (check the token's service:read and node:read rights)",
                    old.total
                );
            }
            return;
        }
        let settings = if meta.translated {
            &self.untranslated
        } else {
            &self.settings
        };
        let new = ServiceRecords::build(entries, self.ttl, meta.index, settings);
        if let Some(reverse) = &self.reverse {
            reverse.replace(&self.name, &old.addresses, &new.addresses);
        }
        self.current.store(Arc::new(new));
        self.stamp.changed();
    }
}

/// The live service watches by cache key, mirrored from the moka cache (which evicts).
#[derive(Default)]
struct HotWatches(RwLock<HashMap<String, Arc<ServiceWatch>>>);

impl HotWatches {
    fn get(&self, key: &str) -> Option<Arc<ServiceWatch>> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }

    fn insert(&self, key: &str, w: &Arc<ServiceWatch>) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        map.insert(key.to_owned(), Arc::clone(w));
    }

    /// Removes `w` under `key`; not a newer watch of the same service, started before
    /// moka got round to reporting the end of `w`.
    fn remove(&self, key: &str, w: &Arc<ServiceWatch>) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        if map.get(key).is_some_and(|current| Arc::ptr_eq(current, w)) {
            map.remove(key);
        }
    }

    /// The keys of the watches used since `tick`, among `JANITOR_CHUNK` watches from the
    /// `from`th on; and whether there are more after them.
    fn used_since(&self, tick: u64, from: usize) -> (Vec<String>, bool) {
        let map = self.0.read().unwrap_or_else(|p| p.into_inner());
        let used = map
            .iter()
            .skip(from)
            .take(JANITOR_CHUNK)
            .filter(|(_, w)| w.stamp.last_used() >= tick)
            .map(|(k, _)| k.clone())
            .collect();
        (used, from + JANITOR_CHUNK < map.len())
    }
}

/// Watches the janitor looks at between two yields to the queries.
const JANITOR_CHUNK: usize = 64;

/// Owns the background tasks that keep the view fresh.
pub struct Syncer {
    client: ConsulClient,
    view: Arc<View>,
    options: SyncOptions,
    preparation: Arc<Preparation>,
    services: Cache<String, Arc<ServiceWatch>>,
    /// The live watches again, for the query path: a read lock and a hash lookup, where
    /// moka's lookup also does its time-to-idle bookkeeping on every read (its cost:
    /// bench/README.md). The janitor tells moka which watches were used.
    hot: Arc<HotWatches>,
    /// Janitor ticks; a watch notes the tick it was last used in.
    ticks: Arc<AtomicU64>,
    slots: Arc<WatchSlots>,
    /// Services kept in memory without a blocking query, due to be re-read.
    polled: PollQueue<ServiceWatch>,
    /// Polled reads failed in a row (for the log).
    poll_failures: AtomicU32,
    directory_health: Arc<WatchHealth>,
    nodes_health: Arc<WatchHealth>,
    queries_health: Arc<WatchHealth>,
    reverse: Arc<ReverseIndex>,
    /// Other datacenters: which exist, and the lists of those asked for.
    remote: Arc<RemoteDatacenters>,
    queries: PreparedQueries,
    cancel: CancellationToken,
}

impl Syncer {
    /// Starts syncing in the background. Consul being unreachable is not an error: every
    /// read is retried until it succeeds or the syncer is shut down.
    pub fn start(client: ConsulClient, view: Arc<View>, options: SyncOptions) -> Arc<Self> {
        let hot: Arc<HotWatches> = Arc::default();
        let evicted = Arc::clone(&hot);
        let mut builder = Cache::builder()
            .max_capacity(options.max_services as u64)
            .eviction_listener(move |name: Arc<String>, w, cause| {
                debug!(service = %name, ?cause, "service watch ended");
                evicted.remove(&name, &w);
            });
        if !options.watch_all_services {
            builder = builder.time_to_idle(options.watch_idle_timeout);
        }
        let slots = WatchSlots::new(options.max_watches, Arc::clone(client.metrics()));
        let (idle, query_max_age) = (options.watch_idle_timeout, options.query_max_age);
        let poll_interval = options.watch_poll_interval;
        let preparation = Arc::new(Preparation::new(
            options.settings.clone(),
            options.translate_wan_addrs,
            options.service_ttl.clone(),
        ));
        let cancel = CancellationToken::new();
        let remote = RemoteDatacenters::new(
            client.clone(),
            Arc::clone(&preparation),
            cancel.child_token(),
            idle,
        );
        let queries = PreparedQueries::new(client.clone(), Arc::clone(&preparation), query_max_age);
        let syncer = Arc::new(Syncer {
            client,
            view,
            options,
            preparation,
            services: builder.build(),
            hot,
            ticks: Arc::default(),
            slots,
            polled: PollQueue::new(poll_interval),
            poll_failures: AtomicU32::new(0),
            directory_health: Arc::default(),
            nodes_health: Arc::default(),
            queries_health: Arc::default(),
            reverse: Arc::default(),
            remote: Arc::new(remote),
            queries,
            cancel,
        });
        // Not read yet: stale since the start, so that neither the metrics nor a stored
        // answer take the lists for fresh before Consul has answered.
        syncer.directory_health.failed();
        syncer.nodes_health.failed();
        tokio::spawn(Arc::clone(&syncer).bootstrap());
        tokio::spawn(Arc::clone(&syncer).janitor());
        tokio::spawn(Arc::clone(&syncer).poll_services());
        syncer
    }

    pub fn view(&self) -> &Arc<View> {
        &self.view
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        self.client.metrics()
    }

    /// Ends every watch.
    pub fn shutdown(&self) {
        self.cancel.cancel();
        self.services.invalidate_all();
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
        let lists = [
            ("catalog/services", &self.directory_health),
            ("catalog/nodes", &self.nodes_health),
            ("query", &self.queries_health),
        ];
        for (watch, health) in lists {
            m.set_watch_last_success(watch, Some(health.current_until()));
        }
        let (mut failing, mut oldest) = (0usize, None::<f64>);
        for (_, w) in self.services.iter() {
            if w.health.stale_for().is_some() {
                failing += 1;
            }
            let until = w.health.current_until();
            oldest = Some(oldest.map_or(until, |o| o.min(until)));
        }
        m.service_watches_failing
            .set(i64::try_from(failing).unwrap_or(i64::MAX));
        // The service watches as one kind: the least current of them (no series without
        // any).
        m.set_watch_last_success("health/service", oldest);
        let view = &self.view;
        let (services, nodes) = view.size();
        m.catalog_services
            .set(i64::try_from(services).unwrap_or(i64::MAX));
        m.catalog_nodes
            .set(i64::try_from(nodes).unwrap_or(i64::MAX));
        m.synced.set(i64::from(view.is_ready()));
        let excluded: usize = self
            .services
            .iter()
            .map(|(_, w)| w.current.load().excluded)
            .sum();
        m.instances_outside_internal_cidrs
            .set(i64::try_from(excluded).unwrap_or(i64::MAX));
    }

    /// The data of a service, from memory when it is watched; otherwise loaded once
    /// (concurrent callers share the load) and watched from then on.
    async fn load(&self, service_ref: ServiceRef<'_>) -> Result<ServiceData, Arc<ConsulError>> {
        if let Some(data) = self.instances_in_memory(service_ref) {
            return Ok(data);
        }
        let key = cache_key(&service_ref);
        let key = key.as_ref();
        let w = match self.services.get(key).await {
            Some(w) => {
                self.metrics().view_hits.inc();
                w
            }
            None => {
                self.metrics().view_misses.inc();
                let w = self
                    .services
                    .try_get_with_by_ref(key, self.start_service_watch(service_ref))
                    .await?;
                // moka applies `max_services` in its maintenance, which otherwise runs
                // only on the janitor's tick: until then watches past the cap would run.
                self.services.run_pending_tasks().await;
                w
            }
        };
        self.hot.insert(key, &w);
        // Evicted (or never admitted) before it was put in `hot`: the eviction listener
        // has already run, so it must not stay there (it would run on, past the cap).
        if !self.services.contains_key(key) {
            self.hot.remove(key, &w);
        }
        Ok(w.data())
    }

    async fn start_service_watch(
        &self,
        service_ref: ServiceRef<'_>,
    ) -> Result<Arc<ServiceWatch>, ConsulError> {
        let segments = [
            "v1",
            "health",
            segment(service_ref.endpoint),
            service_ref.name,
        ];
        self.metrics().service_loads.inc();
        let (entries, meta) = self
            .client
            .get_in::<Vec<ServiceEntry>>(&segments, service_ref.datacenter, 0)
            .await?;
        let w = Arc::new(ServiceWatch {
            name: service_ref.name.into(),
            endpoint: service_ref.endpoint,
            datacenter: service_ref.datacenter.map(Box::from),
            ttl: self.preparation.service_ttl(service_ref.key),
            settings: self
                .preparation
                .settings_for(service_ref.datacenter, false)?,
            untranslated: self
                .preparation
                .settings_for(service_ref.datacenter, true)?,
            stamp: Arc::new(WatchStamp::new(self.ticks.load(Ordering::Relaxed))),
            current: ArcSwap::default(),
            health: Arc::default(),
            reverse: service_ref
                .is_local_service()
                .then(|| Arc::clone(&self.reverse)),
            metrics: Arc::clone(self.metrics()),
            polled: AtomicBool::new(false),
            stop: OnceLock::new(),
        });
        w.apply(&entries, &meta);
        // Its first read: the data is current as of now.
        w.health.succeeded();
        debug!(
            service = service_ref.name,
            endpoint = segment(service_ref.endpoint),
            datacenter = service_ref.datacenter,
            instances = entries.len(),
            "service watch started"
        );
        match self.slots.try_acquire() {
            Some(slot) => self.watch_blocking(&w, slot),
            None => {
                debug!(
                    service = service_ref.name,
                    "max_watches reached: service re-read on a timer"
                );
                w.set_polled(true);
                self.polled.push(Arc::downgrade(&w));
            }
        }
        Ok(w)
    }

    /// Starts the blocking query that keeps `w` fresh, holding `slot`; it ends when `w` is
    /// dropped.
    fn watch_blocking(&self, w: &Arc<ServiceWatch>, slot: Slot) {
        let ctx = WatchContext {
            client: self.client.clone(),
            datacenter: w.datacenter.as_deref().map(str::to_owned),
            health: Arc::clone(&w.health),
            cancel: self.cancel.child_token(),
        };
        let _ = w.stop.set(ctx.cancel.clone().drop_guard());
        let (_, index) = watch::next_index(0, w.current.load().index);
        let weak = Arc::downgrade(w);
        tokio::spawn(watch::run(
            ctx,
            w.segments().map(str::to_owned).to_vec(),
            index,
            Some(slot),
            move |entries: Vec<ServiceEntry>, meta: QueryMeta, _| {
                if let Some(w) = weak.upgrade() {
                    w.apply(&entries, &meta);
                }
            },
        ));
    }

    /// Re-reads the services beyond `max_watches`, each every `watch_poll_interval`, at
    /// most `MAX_POLLS_IN_FLIGHT` at once (or `max_watches` if fewer). A service due while
    /// a blocking slot is free gets a blocking query instead.
    async fn poll_services(self: Arc<Self>) {
        loop {
            let w = tokio::select! {
                _ = self.cancel.cancelled() => return,
                w = self.polled.next_due() => w,
            };
            if let Some(slot) = self.slots.try_acquire() {
                debug!(service = %w.name, "watch slot free: polling becomes a blocking query");
                w.set_polled(false);
                self.watch_blocking(&w, slot);
                continue;
            }
            let permit = tokio::select! {
                _ = self.cancel.cancelled() => return,
                p = Arc::clone(self.slots.polls()).acquire_owned() => p,
            };
            let Ok(permit) = permit else { return };
            let me = Arc::clone(&self);
            tokio::spawn(async move {
                let segments = w.segments();
                let read =
                    me.client
                        .get_in::<Vec<ServiceEntry>>(&segments, w.datacenter.as_deref(), 0);
                let result = tokio::select! {
                    _ = me.cancel.cancelled() => return,
                    r = read => r,
                };
                drop(permit);
                match result {
                    Ok((entries, meta)) => {
                        if me.poll_failures.swap(0, Ordering::Relaxed) > 0 {
                            watch::answers_again("polled services");
                        }
                        let index = w.current.load().index;
                        let (step, _) =
                            watch::read_answered(me.metrics(), &w.name, &w.health, index, &meta);
                        if step != IndexStep::Unchanged {
                            w.apply(&entries, &meta);
                            watch::view_updated(me.metrics(), &meta);
                        }
                    }
                    Err(e) => {
                        w.health.failed();
                        let failures = me.poll_failures.fetch_add(1, Ordering::Relaxed) + 1;
                        watch::log_failure(
                            "polled services",
                            &e,
                            failures,
                            me.options.watch_poll_interval,
                        );
                    }
                }
                me.polled.push(Arc::downgrade(&w));
            });
        }
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
        self.preparation.set_datacenter(&dc);
        self.view.set_datacenter(&dc);
        tokio::spawn(Arc::clone(&self.remote).poll_datacenters());

        let ctx = |health: &Arc<WatchHealth>| WatchContext {
            client: self.client.clone(),
            datacenter: None,
            health: Arc::clone(health),
            cancel: self.cancel.child_token(),
        };
        let me = Arc::clone(&self);
        tokio::spawn(watch::run(
            ctx(&self.directory_health),
            vec!["v1".into(), "catalog".into(), "services".into()],
            0,
            None,
            move |services: ServiceDirectory, meta: QueryMeta, _| {
                let had = me.view.directory().is_some_and(|d| !d.services.is_empty());
                if acl_would_empty(&meta, services.is_empty(), had, me.metrics()) {
                    if let Some(suppressed) = watch::ACL_KEPT_LINES.allow() {
                        error!(suppressed, "Consul answered an empty service list and says ACLs filtered it; keeping the known services (check the token's service:read rights)");
                    }
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
        let me = Arc::clone(&self);
        tokio::spawn(watch::run(
            ctx(&self.queries_health),
            vec!["v1".into(), "query".into()],
            0,
            None,
            move |list: Vec<PreparedQueryListing>, meta: QueryMeta, _| {
                debug!(
                    queries = list.len(),
                    index = meta.index,
                    "prepared query list updated"
                );
                me.queries
                    .set_names(QueryNames::build(&list, meta.filtered_by_acls));
            },
        ));
        let view = Arc::clone(&self.view);
        let metrics = Arc::clone(self.metrics());
        tokio::spawn(watch::run(
            ctx(&self.nodes_health),
            vec!["v1".into(), "catalog".into(), "nodes".into()],
            0,
            None,
            move |nodes: Vec<Node>, meta: QueryMeta, _| {
                let had = view.nodes().is_some_and(|n| !n.by_name.is_empty());
                if acl_would_empty(&meta, nodes.is_empty(), had, &metrics) {
                    if let Some(suppressed) = watch::ACL_KEPT_LINES.allow() {
                        error!(suppressed, "Consul answered an empty node list and says ACLs filtered it; keeping the known nodes (check the token's node:read rights)");
                    }
                    return;
                }
                debug!(nodes = nodes.len(), index = meta.index, "node list updated");
                view.set_nodes(NodeTable::build(&nodes, meta.index, false));
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
                        if let Err(e) = me.load(ServiceRef::local_service(key, &known.name)).await {
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
                Ok(_) => {
                    // Retried as fast as the backoff lets: one line per interval.
                    static NO_DATACENTER: LogLimit = LogLimit::every_interval();
                    if let Some(suppressed) = NO_DATACENTER.allow() {
                        warn!(suppressed, "/v1/agent/self names no datacenter; retrying");
                    }
                }
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
                _ = tokio::time::sleep(period) => {}
            }
            // Watches used through `hot` since the last tick: tell moka (time-to-idle). In
            // chunks, yielding between them: this runs on the runtime's workers, which also
            // answer queries, and a watch's stamp is rarely in the CPU's cache (scanning
            // 1,000 at once held queries up for 5 to 10 ms here).
            let tick = self.ticks.fetch_add(1, Ordering::Relaxed);
            // A change of the catalog's size held back from the log goes out now.
            self.view.log_size();
            let mut from = 0;
            loop {
                let (used, more) = self.hot.used_since(tick, from);
                for key in used {
                    let _ = self.services.get(&key).await;
                }
                // moka logs reads in a bounded buffer and drops those past it: applied
                // per chunk, none is lost (a lost read let a watch in use expire).
                self.services.run_pending_tasks().await;
                tokio::task::yield_now().await;
                if !more {
                    break;
                }
                from += JANITOR_CHUNK;
            }
        }
    }
}

#[async_trait::async_trait]
impl Source for Syncer {
    fn view(&self) -> &Arc<View> {
        &self.view
    }

    fn directory_health(&self) -> &Arc<WatchHealth> {
        &self.directory_health
    }

    fn nodes_health(&self) -> &Arc<WatchHealth> {
        &self.nodes_health
    }

    fn datacenter_known(&self, dc: &str) -> bool {
        self.remote.known(dc)
    }

    fn instances_in_memory(&self, service_ref: ServiceRef<'_>) -> Option<ServiceData> {
        let w = self.hot.get(cache_key(&service_ref).as_ref())?;
        w.stamp.use_in(self.ticks.load(Ordering::Relaxed));
        self.metrics().view_hits.inc();
        Some(w.data())
    }

    fn records_in_memory(&self, service_ref: ServiceRef<'_>) -> Option<Arc<ServiceRecords>> {
        let w = self.hot.get(cache_key(&service_ref).as_ref())?;
        Some(w.current.load_full())
    }

    async fn instances(&self, service_ref: ServiceRef<'_>) -> Result<ServiceData, SourceError> {
        self.load(service_ref).await.map_err(shared)
    }

    async fn remote(&self, dc: &str) -> Result<Arc<RemoteLists>, SourceError> {
        self.remote.lists(dc).await.map_err(shared)
    }

    async fn prepared_query(
        &self,
        name: &str,
        dc: Option<&str>,
    ) -> Result<Option<Arc<ServiceRecords>>, SourceError> {
        self.queries.execute(name, dc).await.map_err(shared)
    }

    fn basis(&self, directory_version: u64, data: &ServiceData) -> ServiceBasis {
        ServiceBasis::new(
            &self.view,
            directory_version,
            &self.directory_health,
            data,
            &self.ticks,
        )
    }

    fn service_at(&self, ip: &IpAddr) -> Option<String> {
        self.reverse.lookup(ip)
    }
}

/// A Consul error shared by every lookup that waited for the same load, as the DNS side
/// sees it.
fn shared(e: Arc<ConsulError>) -> SourceError {
    e
}
