//! What an answer of the Consul zone needs beyond memory, and what was fetched for it.
//!
//! The zone works an answer out synchronously, from the view (`ConsulZone::resolve`).
//! When that needs something that is not in memory (the first sync, a service nobody
//! asked for lately, another datacenter's lists, a prepared query, the addresses of a
//! hostname from the recursors) it says so with a
//! [`Need`] instead of waiting; the caller fetches it into [`Fetched`] and works the
//! answer out again, which then finds it there. So the common answer, all from memory,
//! costs no future and no allocation, and only the rare one waits.

use std::sync::Arc;
use std::time::Duration;

use hickory_proto::rr::{Name, Record, RecordType};

use super::forward::Recursors;
use crate::view::freshness::ServiceData;
use crate::view::records::ServiceRecords;
use crate::view::{Endpoint, RemoteLists, ServiceRef, Source, SourceError};

/// Something an answer needs that memory does not hold.
#[derive(Debug)]
pub enum Need {
    /// The first sync with Consul (bounded by the startup wait).
    Sync,
    /// A service's instances: a load the watch's start makes (shared with other queries).
    Instances(OwnedServiceRef),
    /// Another datacenter's service and node lists.
    Remote(String),
    /// A prepared query's result: its name and datacenter.
    PreparedQuery(String, Option<String>),
    /// The addresses of a hostname outside the served domains (a service or node address),
    /// from the recursors.
    Host(Name),
}

/// A [`ServiceRef`] that owns its strings, to be fetched after the answer's borrow ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedServiceRef {
    endpoint: Endpoint,
    datacenter: Option<String>,
    key: String,
    name: String,
}

impl From<ServiceRef<'_>> for OwnedServiceRef {
    fn from(s: ServiceRef<'_>) -> Self {
        OwnedServiceRef {
            endpoint: s.endpoint,
            datacenter: s.datacenter.map(str::to_owned),
            key: s.key.to_owned(),
            name: s.name.to_owned(),
        }
    }
}

impl OwnedServiceRef {
    fn is(&self, s: &ServiceRef<'_>) -> bool {
        self.endpoint == s.endpoint
            && self.datacenter.as_deref() == s.datacenter
            && self.key == s.key
    }

    fn as_service_ref(&self) -> ServiceRef<'_> {
        ServiceRef {
            endpoint: self.endpoint,
            datacenter: self.datacenter.as_deref(),
            key: &self.key,
            name: &self.name,
        }
    }
}

type Loaded<T> = Result<T, SourceError>;
/// A prepared query's name and datacenter.
type QueryKey = (String, Option<String>);

/// What was fetched for one answer.
#[derive(Default)]
pub struct Fetched {
    waited_for_sync: bool,
    instances: Vec<(OwnedServiceRef, Loaded<ServiceData>)>,
    remotes: Vec<(String, Loaded<Arc<RemoteLists>>)>,
    queries: Vec<(QueryKey, Loaded<Option<Arc<ServiceRecords>>>)>,
    /// Hostnames resolved by the recursors: the CNAMEs leading to their addresses, then
    /// their A and AAAA records.
    hosts: Vec<(Name, Vec<Record>)>,
}

impl Fetched {
    /// Nothing fetched: an answer from memory alone.
    pub const NOTHING: Fetched = Fetched {
        waited_for_sync: false,
        instances: Vec::new(),
        remotes: Vec::new(),
        queries: Vec::new(),
        hosts: Vec::new(),
    };

    /// Whether the first sync was waited for (whether or not it came).
    pub fn waited_for_sync(&self) -> bool {
        self.waited_for_sync
    }

    pub fn instances(&self, service_ref: &ServiceRef<'_>) -> Option<&Loaded<ServiceData>> {
        self.instances
            .iter()
            .find(|(s, _)| s.is(service_ref))
            .map(|(_, r)| r)
    }

    pub fn remote(&self, dc: &str) -> Option<&Loaded<Arc<RemoteLists>>> {
        self.remotes.iter().find(|(d, _)| d == dc).map(|(_, r)| r)
    }

    pub fn prepared_query(
        &self,
        name: &str,
        dc: Option<&str>,
    ) -> Option<&Loaded<Option<Arc<ServiceRecords>>>> {
        self.queries
            .iter()
            .find(|((n, d), _)| n == name && d.as_deref() == dc)
            .map(|(_, r)| r)
    }

    /// What the recursors made of `host`, if they were asked.
    pub fn host(&self, host: &Name) -> Option<&[Record]> {
        self.hosts
            .iter()
            .find(|(h, _)| h == host)
            .map(|(_, r)| r.as_slice())
    }

    /// Fetches `need` (waiting at most `startup_wait` for the first sync); false when it
    /// was fetched already, which would make the answer loop.
    pub async fn fetch(
        &mut self,
        need: Need,
        source: &dyn Source,
        recursors: Option<&Recursors>,
        startup_wait: Duration,
    ) -> bool {
        match need {
            Need::Sync => {
                if self.waited_for_sync {
                    return false;
                }
                source.view().wait_ready(startup_wait).await;
                self.waited_for_sync = true;
            }
            Need::Instances(service_ref) => {
                if self.instances(&service_ref.as_service_ref()).is_some() {
                    return false;
                }
                let loaded = source.instances(service_ref.as_service_ref()).await;
                self.instances.push((service_ref, loaded));
            }
            Need::Remote(dc) => {
                if self.remote(&dc).is_some() {
                    return false;
                }
                let loaded = source.remote(&dc).await;
                self.remotes.push((dc, loaded));
            }
            Need::PreparedQuery(name, dc) => {
                if self.prepared_query(&name, dc.as_deref()).is_some() {
                    return false;
                }
                let loaded = source.prepared_query(&name, dc.as_deref()).await;
                self.queries.push(((name, dc), loaded));
            }
            Need::Host(host) => {
                if self.host(&host).is_some() {
                    return false;
                }
                let mut records = Vec::new();
                if let Some(recursors) = recursors {
                    let (v4, v6) = tokio::join!(
                        recursors.resolve(&host, RecordType::A),
                        recursors.resolve(&host, RecordType::AAAA)
                    );
                    // Both lookups lead through the same CNAMEs: keep them once.
                    let v6: Vec<Record> = v6
                        .into_iter()
                        .filter(|r| r.record_type() != RecordType::CNAME || !v4.contains(r))
                        .collect();
                    records = v4;
                    records.extend(v6);
                }
                self.hosts.push((host, records));
            }
        }
        true
    }
}
