//! Other datacenters: the list of datacenters (polled: Consul has no blocking query for it)
//! and, for each datacenter asked for, its service and node lists, watched while it is
//! asked for. Unknown datacenters and unknown names in a known one cost Consul nothing.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use moka::future::Cache;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, error, warn};

use super::preparation::Preparation;
use super::watch::{self, acl_would_empty, Backoff, WatchContext};
use super::{ConsulClient, ConsulError, QueryMeta};
use crate::model::{Datacenters, Node, ServiceDirectory};
use crate::view::freshness::WatchHealth;
use crate::view::{Directory, NodeTable, RemoteLists};

/// How often the list of datacenters is re-read.
const DATACENTERS_PERIOD: Duration = Duration::from_secs(30);

/// The lists of one other datacenter and the watches keeping them fresh (they end when
/// it is dropped).
struct RemoteDc {
    lists: Arc<RemoteLists>,
    _stop: DropGuard,
}

/// The other datacenters: which exist, and the lists of those asked for lately.
pub struct RemoteDatacenters {
    client: ConsulClient,
    preparation: Arc<Preparation>,
    /// Ends every watch of a remote datacenter.
    cancel: CancellationToken,
    /// By lower-case datacenter, while asked for (time-to-idle).
    lists: Cache<String, Arc<RemoteDc>>,
    /// Known datacenters (`/v1/catalog/datacenters`, polled), lower-case.
    known: ArcSwap<Vec<String>>,
}

impl RemoteDatacenters {
    /// Lists of a datacenter nobody asks for during `idle` stop being watched.
    pub fn new(
        client: ConsulClient,
        preparation: Arc<Preparation>,
        cancel: CancellationToken,
        idle: Duration,
    ) -> Self {
        RemoteDatacenters {
            client,
            preparation,
            cancel,
            lists: Cache::builder().max_capacity(64).time_to_idle(idle).build(),
            known: ArcSwap::default(),
        }
    }

    /// Whether `dc` (lower-case) is a datacenter Consul knows, as last listed.
    pub fn known(&self, dc: &str) -> bool {
        self.known.load().iter().any(|d| d == dc)
    }

    /// The lists of datacenter `dc`, loaded on first use (concurrent callers share the
    /// load) and watched while asked for.
    pub async fn lists(&self, dc: &str) -> Result<Arc<RemoteLists>, Arc<ConsulError>> {
        if let Some(r) = self.lists.get(dc).await {
            return Ok(Arc::clone(&r.lists));
        }
        let r = self.lists.try_get_with_by_ref(dc, self.start(dc)).await?;
        Ok(Arc::clone(&r.lists))
    }

    async fn start(&self, dc: &str) -> Result<Arc<RemoteDc>, ConsulError> {
        let services_path = ["v1", "catalog", "services"];
        let nodes_path = ["v1", "catalog", "nodes"];
        let (services, smeta) = self
            .client
            .get_in::<ServiceDirectory>(&services_path, Some(dc), 0)
            .await?;
        let (nodes, nmeta) = self
            .client
            .get_in::<Vec<Node>>(&nodes_path, Some(dc), 0)
            .await?;
        let wan = self
            .preparation
            .settings_for(Some(dc), nmeta.translated)?
            .wan;
        let stop = self.cancel.child_token();
        let lists = Arc::new(RemoteLists {
            directory: ArcSwap::from_pointee(Directory::build(services, smeta.index)),
            nodes: ArcSwap::from_pointee(NodeTable::build(&nodes, nmeta.index, wan)),
            directory_health: Arc::default(),
            nodes_health: Arc::default(),
        });
        debug!(
            datacenter = dc,
            "watching another datacenter's service and node lists"
        );
        let ctx = |health: &Arc<WatchHealth>| WatchContext {
            client: self.client.clone(),
            datacenter: Some(dc.to_owned()),
            health: Arc::clone(health),
            cancel: stop.child_token(),
        };
        let (target, metrics) = (Arc::clone(&lists), Arc::clone(self.client.metrics()));
        let dc_name = dc.to_owned();
        tokio::spawn(watch::run(
            ctx(&lists.directory_health),
            services_path.map(String::from).to_vec(),
            watch::next_index(0, smeta.index).1,
            None,
            move |services: ServiceDirectory, meta: QueryMeta, _| {
                let had = !target.directory.load().services.is_empty();
                if acl_would_empty(&meta, services.is_empty(), had, &metrics) {
                    if let Some(suppressed) = watch::ACL_KEPT_LINES.allow() {
                        error!(datacenter = %dc_name, suppressed, "Consul answered an empty service list for another datacenter and says ACLs filtered it; keeping the known services");
                    }
                    return;
                }
                target
                    .directory
                    .store(Arc::new(Directory::build(services, meta.index)));
            },
        ));
        let (target, metrics) = (Arc::clone(&lists), Arc::clone(self.client.metrics()));
        let dc_name = dc.to_owned();
        let translate = self.preparation.translate_wan_addrs();
        tokio::spawn(watch::run(
            ctx(&lists.nodes_health),
            nodes_path.map(String::from).to_vec(),
            watch::next_index(0, nmeta.index).1,
            None,
            move |nodes: Vec<Node>, meta: QueryMeta, _| {
                let had = !target.nodes.load().by_name.is_empty();
                if acl_would_empty(&meta, nodes.is_empty(), had, &metrics) {
                    if let Some(suppressed) = watch::ACL_KEPT_LINES.allow() {
                        error!(datacenter = %dc_name, suppressed, "Consul answered an empty node list for another datacenter and says ACLs filtered it; keeping the known nodes");
                    }
                    return;
                }
                let wan = translate && !meta.translated;
                target
                    .nodes
                    .store(Arc::new(NodeTable::build(&nodes, meta.index, wan)));
            },
        ));
        Ok(Arc::new(RemoteDc {
            lists,
            _stop: stop.drop_guard(),
        }))
    }

    /// Keeps the list of datacenters current until `cancel` fires.
    pub async fn poll_datacenters(self: Arc<Self>) {
        let mut backoff = Backoff::default();
        loop {
            let result = tokio::select! {
                _ = self.cancel.cancelled() => return,
                r = self.client.get::<Datacenters>(&["v1", "catalog", "datacenters"], 0) => r,
            };
            let delay = match result {
                Ok((dcs, _)) => {
                    backoff.reset();
                    let dcs: Vec<String> = dcs.iter().map(|d| d.to_ascii_lowercase()).collect();
                    self.known.store(Arc::new(dcs));
                    DATACENTERS_PERIOD
                }
                Err(e) => {
                    if backoff.failures() == 0 {
                        warn!(error = %e, "cannot list datacenters; retrying");
                    }
                    backoff.next_delay(e.is_forbidden())
                }
            };
            tokio::select! {
                _ = self.cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}
