//! Which services exist in a datacenter (`/v1/catalog/services`), by lower-case name,
//! with their tags and their hierarchical aliases.

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
    /// Hierarchical names: a service called `/web/customer1/site1` (Marathon's style) is
    /// also `site1.customer1.web`; alias -> lower-case service name.
    pub aliases: FxHashMap<String, String>,
    pub index: u64,
}

/// The DNS form of a hierarchical service name (`/web/customer1/site1` ->
/// `site1.customer1.web`), or None for a plain name.
pub fn hierarchical_alias(name: &str) -> Option<String> {
    let trimmed = name.trim_matches('/');
    if !trimmed.contains('/') {
        return None;
    }
    let labels: Vec<&str> = trimmed.split('/').filter(|l| !l.is_empty()).rev().collect();
    Some(labels.join(".").to_ascii_lowercase())
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
        let aliases = services
            .iter()
            .filter_map(|(key, s)| Some((hierarchical_alias(&s.name)?, key.clone())))
            .collect();
        Directory {
            services,
            aliases,
            index,
        }
    }
}
