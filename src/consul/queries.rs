//! Prepared queries (`<name>.query[.<dc>].<domain>`): `/v1/query/<name>/execute`, whose
//! result cannot be watched, reused for `cache_max_age` (at least a second; concurrent
//! lookups share one request).
//!
//! Names come from the network, so a flood of distinct names must not become a flood of
//! requests: which queries exist in the local datacenter is watched (`GET /v1/query`, a
//! blocking query), and a name that is neither a listed query's name or ID nor matched by
//! a template is unknown without asking Consul. What the list cannot settle (a template's
//! match, another datacenter, a list hidden by ACLs or not read yet) is asked within a
//! budget of [`UNLISTED_BURST`] requests, then [`UNLISTED_PER_SECOND`] a second.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use moka::future::Cache;

use super::preparation::Preparation;
use super::watch::RateLimit;
use super::{ConsulClient, ConsulError};
use crate::config::parse_go_duration;
use crate::model::{PreparedQueryListing, PreparedQueryResult};
use crate::view::records::{RecordSettings, ServiceRecords, Settings};

/// Requests for names the list cannot settle, at once and then per second.
pub const UNLISTED_BURST: u32 = 20;
pub const UNLISTED_PER_SECOND: f64 = 10.0;
/// Results kept (each bounded by the size of a Consul answer).
const MAX_RESULTS: u64 = 10_000;

/// Which prepared queries exist, from `GET /v1/query`.
#[derive(Debug, Default)]
pub struct QueryNames {
    /// Lower-case names and IDs of plain queries and templates.
    exact: HashSet<String>,
    /// Lower-case names of `name_prefix_match` templates (empty: matches every name).
    prefixes: Vec<String>,
    /// ACLs hid some queries: a name not listed may still exist.
    partial: bool,
}

/// What the list says of a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    /// A query of that name or ID exists.
    Yes,
    /// No query answers to it.
    No,
    /// Only Consul can tell (a template's match, a hidden or unread list).
    Maybe,
}

impl QueryNames {
    pub fn build(list: &[PreparedQueryListing], filtered_by_acls: bool) -> Self {
        let mut names = QueryNames {
            partial: filtered_by_acls,
            ..QueryNames::default()
        };
        for q in list {
            names.exact.insert(q.id.to_ascii_lowercase());
            if q.template.kind == "name_prefix_match" {
                names.prefixes.push(q.name.to_ascii_lowercase());
            } else if !q.template.kind.is_empty() {
                // A template type this server does not know: let Consul decide.
                names.partial = true;
            }
            if !q.name.is_empty() {
                names.exact.insert(q.name.to_ascii_lowercase());
            }
        }
        names
    }

    /// `name` in lower case.
    fn lookup(&self, name: &str) -> Presence {
        if self.exact.contains(name) {
            Presence::Yes
        } else if self.partial || self.prefixes.iter().any(|p| name.starts_with(p.as_str())) {
            Presence::Maybe
        } else {
            Presence::No
        }
    }
}

/// Prepared query results by datacenter and name.
pub struct PreparedQueries {
    client: ConsulClient,
    preparation: Arc<Preparation>,
    /// The local datacenter's queries; None until first read.
    names: ArcSwapOption<QueryNames>,
    unlisted: Mutex<RateLimit>,
    /// None: no such query.
    results: Cache<String, Option<Arc<ServiceRecords>>>,
}

impl PreparedQueries {
    /// Results are reused for `max_age` (at least a second).
    pub fn new(client: ConsulClient, preparation: Arc<Preparation>, max_age: Duration) -> Self {
        PreparedQueries {
            client,
            preparation,
            names: ArcSwapOption::empty(),
            unlisted: Mutex::new(RateLimit::new(UNLISTED_BURST, UNLISTED_PER_SECOND)),
            results: Cache::builder()
                .max_capacity(MAX_RESULTS)
                .time_to_live(max_age.max(Duration::from_secs(1)))
                .build(),
        }
    }

    /// The local datacenter's list changed: results read before may be of a query since
    /// changed or deleted.
    pub fn set_names(&self, names: QueryNames) {
        self.names.store(Some(Arc::new(names)));
        self.results.invalidate_all();
    }

    /// The query's instances, in the order Consul gave them; None when there is no such
    /// query.
    pub async fn execute(
        &self,
        name: &str,
        dc: Option<&str>,
    ) -> Result<Option<Arc<ServiceRecords>>, Arc<ConsulError>> {
        let name = name.to_ascii_lowercase();
        let key = format!("{}\0{}", dc.unwrap_or(""), name);
        if let Some(known) = self.results.get(&key).await {
            return Ok(known);
        }
        match self.listed(&name, dc) {
            Presence::Yes => {}
            Presence::No => {
                self.client.metrics().query_names_unlisted.inc();
                return Ok(None);
            }
            Presence::Maybe => {
                let allowed = self
                    .unlisted
                    .lock()
                    .map(|mut b| b.try_take())
                    .unwrap_or(false);
                if !allowed {
                    self.client.metrics().query_names_over_budget.inc();
                    return Err(Arc::new(ConsulError::OverBudget(
                        "a prepared query the query list does not name",
                    )));
                }
            }
        }
        self.results.try_get_with(key, self.read(&name, dc)).await
    }

    fn listed(&self, name: &str, dc: Option<&str>) -> Presence {
        let local = self.preparation.local_datacenter();
        if dc.is_some_and(|dc| Some(dc) != local) {
            return Presence::Maybe;
        }
        self.names
            .load()
            .as_deref()
            .map_or(Presence::Maybe, |names| names.lookup(name))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::QueryTemplate;

    fn q(id: &str, name: &str, template: &str) -> PreparedQueryListing {
        PreparedQueryListing {
            id: id.into(),
            name: name.into(),
            template: QueryTemplate {
                kind: template.into(),
            },
        }
    }

    #[test]
    fn names_ids_and_templates() {
        let list = [
            q("8f246b77-f3e1-ff88-5b48-8ec93abf3e05", "Primary", ""),
            q(
                "2b2b2b2b-0000-0000-0000-000000000000",
                "geo-",
                "name_prefix_match",
            ),
        ];
        let names = QueryNames::build(&list, false);
        assert_eq!(names.lookup("primary"), Presence::Yes);
        assert_eq!(
            names.lookup("8f246b77-f3e1-ff88-5b48-8ec93abf3e05"),
            Presence::Yes
        );
        assert_eq!(names.lookup("geo-"), Presence::Yes);
        assert_eq!(names.lookup("geo-web"), Presence::Maybe);
        assert_eq!(names.lookup("secondary"), Presence::No);
        assert_eq!(
            QueryNames::build(&list, true).lookup("secondary"),
            Presence::Maybe
        );
        let catch_all = QueryNames::build(&[q("1", "", "name_prefix_match")], false);
        assert_eq!(catch_all.lookup("anything"), Presence::Maybe);
    }
}
