//! Prepared queries (`<name>.query[.<dc>].<domain>`): `/v1/query/<name>/execute`, whose
//! result cannot be watched, reused for `cache_max_age` (at least a second; concurrent
//! lookups share one request), an unknown query remembered as such for as long.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use super::preparation::Preparation;
use super::{ConsulClient, ConsulError};
use crate::config::parse_go_duration;
use crate::model::PreparedQueryResult;
use crate::view::records::{RecordSettings, ServiceRecords, Settings};

/// Prepared query results by datacenter and name.
pub struct PreparedQueries {
    client: ConsulClient,
    preparation: Arc<Preparation>,
    /// None: no such query.
    results: Cache<String, Option<Arc<ServiceRecords>>>,
}

impl PreparedQueries {
    /// Results are reused for `max_age` (at least a second).
    pub fn new(client: ConsulClient, preparation: Arc<Preparation>, max_age: Duration) -> Self {
        PreparedQueries {
            client,
            preparation,
            results: Cache::builder()
                .max_capacity(10_000)
                .time_to_live(max_age.max(Duration::from_secs(1)))
                .build(),
        }
    }

    /// The query's instances, in the order Consul gave them; None when there is no such
    /// query.
    pub async fn execute(
        &self,
        name: &str,
        dc: Option<&str>,
    ) -> Result<Option<Arc<ServiceRecords>>, Arc<ConsulError>> {
        let key = format!("{}\0{}", dc.unwrap_or(""), name);
        self.results.try_get_with(key, self.read(name, dc)).await
    }

    async fn read(
        &self,
        name: &str,
        dc: Option<&str>,
    ) -> Result<Option<Arc<ServiceRecords>>, ConsulError> {
        let path = ["v1", "query", name, "execute"];
        let (result, meta) = match self
            .client
            .get_in::<PreparedQueryResult>(&path, dc, 0)
            .await
        {
            Ok(r) => r,
            Err(ConsulError::Status { status: 404, .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let service = result.service.to_ascii_lowercase();
        // The query's own TTL, else the service's (dns-spec.md §6.5).
        let ttl =
            query_ttl(&result.dns.ttl).unwrap_or_else(|| self.preparation.service_ttl(&service));
        let local = self.preparation.settings_for(None, false)?;
        let answered_in = result.datacenter.to_ascii_lowercase();
        let remote = (!answered_in.is_empty() && answered_in != local.datacenter)
            .then_some(answered_in.as_str());
        let base = self.preparation.settings_for(remote, meta.translated)?;
        // Health filtering is the query's own (OnlyPassing), not only_passing.
        let settings = Arc::new(RecordSettings::new(Settings {
            only_passing: false,
            ..base.settings().clone()
        }));
        Ok(Some(Arc::new(ServiceRecords::build(
            &result.nodes,
            ttl,
            meta.index,
            &settings,
        ))))
    }
}

/// A prepared query's `DNS.TTL` (a Go duration) in seconds; None when unset or unreadable.
pub(crate) fn query_ttl(ttl: &str) -> Option<u32> {
    if ttl.is_empty() {
        return None;
    }
    let d = parse_go_duration(ttl).ok()?;
    Some(u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}
