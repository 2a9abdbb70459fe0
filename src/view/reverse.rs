//! Service addresses -> service names, for reverse lookups of container addresses.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashMap;

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
