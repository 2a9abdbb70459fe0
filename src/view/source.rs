//! What the DNS side asks of whoever keeps the view (`consul::Syncer`), as CoreDNS's
//! kubernetes plugin asks its `dnsController`: the data in memory at once, and what is not
//! there (a service nobody asked for lately, another datacenter's lists, a prepared query)
//! loaded on demand. The DNS side knows nothing of HTTP; the Consul side nothing of DNS
//! messages.

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::directory::Directory;
use super::freshness::{ServiceBasis, ServiceData, WatchHealth};
use super::records::{NodeTable, ServiceRecords};
use super::View;

/// Which instances of a service a lookup reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The service's instances.
    Service,
    /// Its Connect-capable instances (sidecar proxies and native apps).
    Connect,
    /// The ingress gateways in front of it.
    Ingress,
}

/// What a service lookup reads: a service through one endpoint, in one datacenter.
#[derive(Debug, Clone, Copy)]
pub struct ServiceRef<'a> {
    pub endpoint: Endpoint,
    /// None: the local datacenter.
    pub datacenter: Option<&'a str>,
    /// The lower-case service name.
    pub key: &'a str,
    /// The name as registered in Consul.
    pub name: &'a str,
}

impl<'a> ServiceRef<'a> {
    /// A service of the local datacenter: `key` lower-case, `name` as registered.
    pub fn local_service(key: &'a str, name: &'a str) -> Self {
        ServiceRef {
            endpoint: Endpoint::Service,
            datacenter: None,
            key,
            name,
        }
    }

    pub fn is_local_service(&self) -> bool {
        self.endpoint == Endpoint::Service && self.datacenter.is_none()
    }
}

/// Another datacenter's service and node lists, kept fresh while asked for.
#[derive(Debug, Default)]
pub struct RemoteLists {
    pub directory: ArcSwap<Directory>,
    pub nodes: ArcSwap<NodeTable>,
    pub directory_health: Arc<WatchHealth>,
    pub nodes_health: Arc<WatchHealth>,
}

/// Why something could not be loaded (the source's own error, shared by every lookup
/// that waited for the same load).
pub type SourceError = Arc<dyn std::error::Error + Send + Sync>;

/// The keeper of the view, as the DNS side sees it.
#[async_trait::async_trait]
pub trait Source: Send + Sync {
    /// The local datacenter's lists, serial and readiness.
    fn view(&self) -> &Arc<View>;

    /// Health of the watch of the local service list (which names exist).
    fn directory_health(&self) -> &Arc<WatchHealth>;

    /// Health of the watch of the local node list.
    fn nodes_health(&self) -> &Arc<WatchHealth>;

    /// Whether `dc` (lower-case) is a datacenter Consul knows.
    fn datacenter_known(&self, dc: &str) -> bool;

    /// A service's data when it is in memory and asked for lately (no waiting, no lock).
    fn instances_in_memory(&self, service_ref: ServiceRef<'_>) -> Option<ServiceData>;

    /// A service's records when in memory, without counting a lookup or a use (for
    /// zone transfers, which read every service whenever the catalog changes).
    fn records_in_memory(&self, service_ref: ServiceRef<'_>) -> Option<Arc<ServiceRecords>> {
        self.instances_in_memory(service_ref)
            .map(|data| data.records)
    }

    /// A service's data, loaded if it is not in memory (concurrent callers share the
    /// load) and kept fresh from then on.
    async fn instances(&self, service_ref: ServiceRef<'_>) -> Result<ServiceData, SourceError>;

    /// Another datacenter's lists, loaded on first use and kept fresh while asked for.
    async fn remote(&self, dc: &str) -> Result<Arc<RemoteLists>, SourceError>;

    /// A prepared query's instances, in the order Consul gave them; None when there is no
    /// such query.
    async fn prepared_query(
        &self,
        name: &str,
        dc: Option<&str>,
    ) -> Result<Option<Arc<ServiceRecords>>, SourceError>;

    /// The basis of an answer built from the local service list at `directory_version`
    /// and `data` (see [`ServiceBasis`]).
    fn basis(&self, directory_version: u64, data: &ServiceData) -> ServiceBasis;

    /// The service (its Consul name) whose instances use this address, among the services
    /// in memory.
    fn service_at(&self, ip: &IpAddr) -> Option<String>;
}
