//! Which services exist in a datacenter (`/v1/catalog/services`), by lower-case name,
//! with their tags and the other names Marathon's apps answer to.
//!
//! A Marathon app `/web/customer1/site1` is registered by the bridges either with its path
//! (`/web/customer1/site1`) or dotted (`web.customer1.site1`, allegro/marathon-consul's
//! default separator). Both answer as themselves where a DNS name can spell them (the
//! dotted one does: `web.customer1.site1.service.consul`) and both as the app's DNS form,
//! its path reversed: `site1.customer1.web.service.consul` (an alias here).

use std::collections::HashSet;

use rustc_hash::FxHashMap;

use crate::model::ServiceDirectory;

/// A service known to the catalog.
#[derive(Debug, Clone)]
pub struct KnownService {
    /// The name as registered in Consul (used in API paths).
    pub name: String,
    /// Every tag of the service, lower-case.
    pub tags: HashSet<String>,
}

/// Every service of the local datacenter, by lower-case name (`/v1/catalog/services`).
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub services: FxHashMap<String, KnownService>,
    /// Marathon apps' DNS forms: a service called `/web/customer1/site1` or
    /// `web.customer1.site1` is also `site1.customer1.web`; alias -> lower-case service
    /// name. Where two services would have the same alias, the one registered with its
    /// path has it (then the first by name).
    pub aliases: FxHashMap<String, String>,
    pub index: u64,
}

/// The DNS form of a Marathon app's service name, its path reversed
/// (`/web/customer1/site1` and `web.customer1.site1` -> `site1.customer1.web`), with
/// whether it came from a path; None for a plain name.
pub fn hierarchical_alias(name: &str) -> Option<(String, bool)> {
    let trimmed = name.trim_matches('/');
    let (separator, path) = if trimmed.contains('/') {
        ('/', true)
    } else if trimmed.contains('.') {
        ('.', false)
    } else {
        return None;
    };
    let labels: Vec<&str> = trimmed
        .split(separator)
        .filter(|l| !l.is_empty())
        .rev()
        .collect();
    Some((labels.join(".").to_ascii_lowercase(), path))
}

impl Directory {
    pub fn build(services: ServiceDirectory, index: u64) -> Self {
        let services = services
            .into_iter()
            .map(|(name, tags)| {
                (
                    name.to_ascii_lowercase(),
                    KnownService {
                        tags: tags.iter().map(|t| t.to_ascii_lowercase()).collect(),
                        name,
                    },
                )
            })
            .collect::<FxHashMap<String, KnownService>>();
        // Paths first, then by name: the first to claim an alias keeps it.
        let mut claims: Vec<(String, bool, &String)> = services
            .iter()
            .filter_map(|(key, s)| {
                let (alias, path) = hierarchical_alias(&s.name)?;
                Some((alias, path, key))
            })
            .collect();
        claims.sort_by(|a, b| (!a.1, a.2).cmp(&(!b.1, b.2)));
        let mut aliases = FxHashMap::default();
        for (alias, _, key) in claims {
            if let Some(first) = aliases.get(&alias) {
                tracing::debug!(alias = %alias, kept = %first, also = %key, "two services answer to the same name; the first keeps it");
            } else {
                aliases.insert(alias, key.clone());
            }
        }
        Directory {
            services,
            aliases,
            index,
        }
    }
}
