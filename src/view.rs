//! The in-memory view of the Consul catalog that DNS answers from.
//!
//! Pure data, no I/O: the sync tasks (`consul::sync`) replace its parts when Consul reports a
//! change; queries read them without locks (`ArcSwap`). Until the first sync the view is not
//! ready and Consul names are answered SERVFAIL, never NXDOMAIN.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwapOption;
use rustc_hash::FxHashMap;
use tokio::sync::watch;

use crate::consul::model::ServiceDirectory;
use crate::dns::prepared::NodeTable;

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

/// Service addresses -> service names, for reverse lookups of container IPs. Kept up to
/// date by the service watches (so it covers the services in the view). Counted per watch,
/// so an old watch ending after its replacement started removes nothing of the new one's.
#[derive(Debug, Default)]
pub struct ReverseIndex {
    by_ip: Mutex<Addresses>,
}

/// Keyed by the address's bits, IPv4 apart: a table slot is then 32 bytes, where one keyed
/// by `IpAddr` holding a small vector was 64 (300k instances make 512k slots).
#[derive(Debug, Default)]
struct Addresses {
    v4: FxHashMap<u32, Holders>,
    v6: FxHashMap<u128, Holders>,
}

/// The services with one address and how many watches hold each; several are sorted by
/// name. One is the usual case, kept inline.
#[derive(Debug)]
enum Holders {
    One(Arc<str>, u32),
    // Boxed: a `Vec` inline would make every slot 8 bytes larger, for a rare case.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<(Arc<str>, u32)>>),
}

impl Holders {
    /// Adds a hold of `name`.
    fn add(&mut self, name: &Arc<str>) {
        match self {
            Holders::One(n, count) if **n == **name => *count += 1,
            Holders::One(n, count) => {
                let mut all = vec![(Arc::clone(n), *count), (Arc::clone(name), 1)];
                all.sort_by(|a, b| a.0.cmp(&b.0));
                *self = Holders::Many(Box::new(all));
            }
            Holders::Many(all) => match all.binary_search_by(|(n, _)| (**n).cmp(name)) {
                Ok(i) => all[i].1 += 1,
                Err(i) => all.insert(i, (Arc::clone(name), 1)),
            },
        }
    }

    /// Removes a hold of `name`, if it has one; false when no hold is left.
    fn remove(&mut self, name: &str) -> bool {
        match self {
            Holders::One(n, count) => {
                if **n == *name {
                    *count -= 1;
                }
                *count > 0
            }
            Holders::Many(all) => {
                if let Ok(i) = all.binary_search_by(|(n, _)| (**n).cmp(name)) {
                    all[i].1 -= 1;
                    if all[i].1 == 0 {
                        all.remove(i);
                    }
                }
                if let [(n, count)] = all.as_slice() {
                    *self = Holders::One(Arc::clone(n), *count);
                }
                true
            }
        }
    }

    /// The first service by name.
    fn first(&self) -> Option<&str> {
        match self {
            Holders::One(n, _) => Some(n),
            Holders::Many(all) => all.first().map(|(n, _)| &**n),
        }
    }
}

fn add_hold<K: std::hash::Hash + Eq>(map: &mut FxHashMap<K, Holders>, key: K, name: &Arc<str>) {
    map.entry(key)
        .and_modify(|h| h.add(name))
        .or_insert_with(|| Holders::One(Arc::clone(name), 1));
}

fn remove_hold<K: std::hash::Hash + Eq>(map: &mut FxHashMap<K, Holders>, key: K, name: &str) {
    if let Some(holders) = map.get_mut(&key) {
        if !holders.remove(name) {
            map.remove(&key);
        }
    }
}

impl ReverseIndex {
    /// A watch of service `name` moved from addresses `old` to `new`. The name is shared,
    /// not copied per address.
    pub fn replace(&self, name: &Arc<str>, old: &[IpAddr], new: &[IpAddr]) {
        let mut map = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        for ip in old {
            match ip {
                IpAddr::V4(v4) => remove_hold(&mut map.v4, v4.to_bits(), name),
                IpAddr::V6(v6) => remove_hold(&mut map.v6, v6.to_bits(), name),
            }
        }
        for ip in new {
            match ip {
                IpAddr::V4(v4) => add_hold(&mut map.v4, v4.to_bits(), name),
                IpAddr::V6(v6) => add_hold(&mut map.v6, v6.to_bits(), name),
            }
        }
    }

    /// The first service (by name) with this address.
    pub fn lookup(&self, ip: &IpAddr) -> Option<String> {
        let map = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        let holders = match ip {
            IpAddr::V4(v4) => map.v4.get(&v4.to_bits()),
            IpAddr::V6(v6) => map.v6.get(&v6.to_bits()),
        };
        holders.and_then(Holders::first).map(str::to_owned)
    }
}

/// The catalog as last seen.
#[derive(Debug)]
pub struct View {
    directory: ArcSwapOption<Directory>,
    directory_version: AtomicU64,
    nodes: ArcSwapOption<NodeTable>,
    /// The SOA serial, worked out when a list changes (read by every negative answer).
    serial: AtomicU32,
    /// Held while a list is replaced and the serial worked out again, so that the last
    /// serial stored is the one of the last lists stored.
    replacing: Mutex<()>,
    datacenter: OnceLock<String>,
    ready: watch::Sender<bool>,
    /// `ready`'s value, read by every answer without the channel's lock.
    is_ready: AtomicBool,
}

impl Default for View {
    fn default() -> Self {
        View {
            directory: ArcSwapOption::empty(),
            directory_version: AtomicU64::new(0),
            nodes: ArcSwapOption::empty(),
            serial: AtomicU32::new(0),
            replacing: Mutex::new(()),
            datacenter: OnceLock::new(),
            ready: watch::channel(false).0,
            is_ready: AtomicBool::new(false),
        }
    }
}

impl View {
    pub fn new() -> Arc<Self> {
        Arc::new(View::default())
    }

    /// The local datacenter (lower-case), once known.
    pub fn datacenter(&self) -> Option<&str> {
        self.datacenter.get().map(String::as_str)
    }

    /// Sets the local datacenter; it never changes afterwards.
    pub fn set_datacenter(&self, dc: &str) {
        let _ = self.datacenter.set(dc.to_ascii_lowercase());
        self.update_ready();
    }

    pub fn directory(&self) -> Option<Arc<Directory>> {
        self.directory.load_full()
    }

    /// The service list and its version (the number of times it was replaced), read in
    /// that order so the version is never newer than the list.
    pub fn directory_versioned(&self) -> (u64, Option<Arc<Directory>>) {
        let version = self.directory_version.load(Ordering::Acquire);
        (version, self.directory.load_full())
    }

    pub fn directory_version(&self) -> u64 {
        self.directory_version.load(Ordering::Acquire)
    }

    pub fn set_directory(&self, d: Directory) {
        let d = Arc::new(d);
        {
            let _replacing = self.replacing.lock().unwrap_or_else(|p| p.into_inner());
            self.directory.store(Some(d));
            self.update_serial();
        }
        self.directory_version.fetch_add(1, Ordering::Release);
        crate::consul::changes::note();
        self.update_ready();
    }

    pub fn nodes(&self) -> Option<Arc<NodeTable>> {
        self.nodes.load_full()
    }

    pub fn set_nodes(&self, n: NodeTable) {
        let n = Arc::new(n);
        {
            let _replacing = self.replacing.lock().unwrap_or_else(|p| p.into_inner());
            self.nodes.store(Some(n));
            self.update_serial();
        }
        self.update_ready();
    }

    /// Ready once the datacenter, the service list and the node list are all known.
    pub fn is_ready(&self) -> bool {
        self.is_ready.load(Ordering::Acquire)
    }

    /// Waits until ready or until `timeout`; returns whether ready.
    pub async fn wait_ready(&self, timeout: std::time::Duration) -> bool {
        let mut rx = self.ready.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The SOA serial: moves whenever the service list or the node list moves.
    pub fn serial(&self) -> u32 {
        self.serial.load(Ordering::Acquire)
    }

    fn update_serial(&self) {
        let d = self.directory.load().as_ref().map_or(0, |d| d.index);
        let n = self.nodes.load().as_ref().map_or(0, |n| n.index);
        // Consul indexes are u64; the serial is the low 32 bits of their sum, which is
        // monotonic in practice and wraps per RFC 1982 otherwise.
        let serial = (d.wrapping_add(n) & u64::from(u32::MAX)) as u32;
        self.serial.store(serial, Ordering::Release);
    }

    fn update_ready(&self) {
        let ready = self.datacenter.get().is_some()
            && self.directory.load().is_some()
            && self.nodes.load().is_some();
        if ready && !*self.ready.borrow() {
            self.is_ready.store(true, Ordering::Release);
            self.ready.send_replace(true);
        }
    }
}

#[cfg(test)]
mod reverse_tests {
    use super::*;

    #[test]
    fn an_address_names_its_first_service_while_any_watch_holds_it() {
        let index = ReverseIndex::default();
        let (web, api, db): (Arc<str>, Arc<str>, Arc<str>) =
            ("web".into(), "api".into(), "db".into());
        let ip: IpAddr = "10.2.0.1".parse().unwrap();
        let other: IpAddr = "10.2.0.2".parse().unwrap();
        index.replace(&web, &[], &[ip]);
        index.replace(&api, &[], &[ip, other]);
        assert_eq!(index.lookup(&ip).as_deref(), Some("api"), "first by name");
        assert_eq!(index.lookup(&other).as_deref(), Some("api"));
        // A new watch of `api` starts before the old one ends: the old one's end keeps it.
        index.replace(&api, &[], &[ip]);
        index.replace(&api, &[ip, other], &[]);
        assert_eq!(index.lookup(&ip).as_deref(), Some("api"));
        assert_eq!(index.lookup(&other), None, "no watch holds it any more");
        index.replace(&api, &[ip], &[]);
        assert_eq!(index.lookup(&ip).as_deref(), Some("web"));
        index.replace(&web, &[ip], &[]);
        assert_eq!(index.lookup(&ip), None);
        // Removing what was never added changes nothing.
        index.replace(&db, &[ip], &[]);
        assert_eq!(index.lookup(&ip), None);
        // IPv6 addresses are kept apart from IPv4 ones.
        let v6: IpAddr = "fd00::a02:1".parse().unwrap();
        index.replace(&db, &[], &[v6]);
        assert_eq!(index.lookup(&v6).as_deref(), Some("db"));
        assert_eq!(index.lookup(&"10.2.0.1".parse().unwrap()), None);
        index.replace(&db, &[v6], &[]);
        assert_eq!(index.lookup(&v6), None);
    }
}
