//! Other datacenters: the list of datacenters (polled: Consul has no blocking query for it)
//! and, for each datacenter asked for, its service and node lists, watched while it is
//! asked for. Unknown datacenters and unknown names in a known one cost Consul nothing.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::DropGuard;
use tracing::{debug, error, warn};

use super::model::{Datacenters, Node, ServiceDirectory};
use super::sync::{acl_would_empty, Syncer};
use super::watch::{self, Backoff, WatchContext, WatchHealth};
use super::{ConsulError, QueryMeta};
use crate::dns::prepared::NodeTable;
use crate::view::Directory;

/// How often the list of datacenters is re-read.
const DATACENTERS_PERIOD: Duration = Duration::from_secs(30);

/// The service and node lists of another datacenter.
pub struct RemoteDc {
    pub directory: Arc<ArcSwap<Directory>>,
    pub nodes: Arc<ArcSwap<NodeTable>>,
    pub directory_health: Arc<WatchHealth>,
    pub nodes_health: Arc<WatchHealth>,
    _stop: DropGuard,
}

impl Syncer {
    /// Whether `dc` (lower-case) is a datacenter Consul knows, as last listed.
    pub fn datacenter_known(&self, dc: &str) -> bool {
        self.datacenters.load().iter().any(|d| d == dc)
    }

    /// The lists of datacenter `dc`, loaded on first use (concurrent callers share the
    /// load) and watched while asked for.
    pub async fn remote(&self, dc: &str) -> Result<Arc<RemoteDc>, Arc<ConsulError>> {
        if let Some(r) = self.remote.get(dc).await {
            return Ok(r);
        }
        self.remote
            .try_get_with_by_ref(dc, self.start_remote(dc))
            .await
    }

    async fn start_remote(&self, dc: &str) -> Result<Arc<RemoteDc>, ConsulError> {
        let services_path = ["v1", "catalog", "services"];
        let nodes_path = ["v1", "catalog", "nodes"];
        let (services, smeta) = self
            .client()
            .get_in::<ServiceDirectory>(&services_path, Some(dc), 0)
            .await?;
        let (nodes, nmeta) = self
            .client()
            .get_in::<Vec<Node>>(&nodes_path, Some(dc), 0)
            .await?;
        let wan = self.settings_for(Some(dc), nmeta.translated)?.wan;
        let stop = self.cancel.child_token();
        let remote = RemoteDc {
            directory: Arc::new(ArcSwap::from_pointee(Directory::build(
                services,
                smeta.index,
            ))),
            nodes: Arc::new(ArcSwap::from_pointee(NodeTable::build(
                &nodes,
                nmeta.index,
                wan,
            ))),
            directory_health: Arc::default(),
            nodes_health: Arc::default(),
            _stop: stop.clone().drop_guard(),
        };
        debug!(
            datacenter = dc,
            "watching another datacenter's service and node lists"
        );
        let ctx = |health: &Arc<WatchHealth>| WatchContext {
            client: self.client().clone(),
            datacenter: Some(dc.to_owned()),
            health: Arc::clone(health),
            cancel: stop.child_token(),
        };
        let (target, metrics) = (Arc::clone(&remote.directory), Arc::clone(self.metrics()));
        tokio::spawn(watch::run(
            ctx(&remote.directory_health),
            services_path.map(String::from).to_vec(),
            watch::next_index(0, smeta.index).1,
            None,
            move |services: ServiceDirectory, meta: QueryMeta, _| {
                let had = !target.load().services.is_empty();
                if acl_would_empty(&meta, services.is_empty(), had, &metrics) {
                    error!("Consul answered an empty service list for another datacenter and says ACLs filtered it; keeping the known services");
                    return;
                }
                target.store(Arc::new(Directory::build(services, meta.index)));
            },
        ));
        let (target, metrics) = (Arc::clone(&remote.nodes), Arc::clone(self.metrics()));
        let translate = self.translate_wan_addrs();
        tokio::spawn(watch::run(
            ctx(&remote.nodes_health),
            nodes_path.map(String::from).to_vec(),
            watch::next_index(0, nmeta.index).1,
            None,
            move |nodes: Vec<Node>, meta: QueryMeta, _| {
                let had = !target.load().by_name.is_empty();
                if acl_would_empty(&meta, nodes.is_empty(), had, &metrics) {
                    error!("Consul answered an empty node list for another datacenter and says ACLs filtered it; keeping the known nodes");
                    return;
                }
                let wan = translate && !meta.translated;
                target.store(Arc::new(NodeTable::build(&nodes, meta.index, wan)));
            },
        ));
        Ok(Arc::new(remote))
    }

    /// Keeps the list of datacenters current until shutdown.
    pub(super) async fn poll_datacenters(self: Arc<Self>) {
        let mut backoff = Backoff::default();
        loop {
            let result = tokio::select! {
                _ = self.cancel.cancelled() => return,
                r = self.client().get::<Datacenters>(&["v1", "catalog", "datacenters"], 0) => r,
            };
            let delay = match result {
                Ok((dcs, _)) => {
                    backoff.reset();
                    let dcs: Vec<String> = dcs.iter().map(|d| d.to_ascii_lowercase()).collect();
                    self.datacenters.store(Arc::new(dcs));
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
