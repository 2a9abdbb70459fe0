//! The Consul domain as a static set of records, for zone transfers: every name a client
//! could ask in the local datacenter, answered exactly as a query for it is (the records
//! come from [`ConsulZone::answer_now`], health filter and address choice included), with
//! complete RRsets (no `a_record_limit`, no UDP cut).
//!
//! Names: `<svc>.service[.<dc>]`, `<tag>.<svc>.service[.<dc>]` and the Marathon aliases
//! (A, AAAA, SRV, TXT); RFC 2782 `_<svc>._tcp|_<tag>.service[.<dc>]` (SRV); the SRV
//! targets `<hex>.addr.<dc>`; `<node>.node[.<dc>]` (A, AAAA, TXT); the apex NS. Left out,
//! as no static record can stand for them: prepared queries, other datacenters, peers,
//! `.connect`, `.ingress`, `.virtual`, and `addr` names no SRV record points at.
//!
//! A service's records are kept between builds and made again only when its data (its
//! `ServiceRecords`), the service list or the node list changed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::journal::{Delta, Part, Parts};
use super::wire::{difference, WireRecords};
use crate::dns::consul_zone::ConsulZone;
use crate::view::records::{NodeTable, ServiceRecords};
use crate::view::DomainId;
use crate::view::{Directory, KnownService, ServiceRef, Source};

/// The types asked for each kind of name.
const SERVICE_TYPES: [RecordType; 4] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::TXT,
];
const NODE_TYPES: [RecordType; 3] = [RecordType::A, RecordType::AAAA, RecordType::TXT];
const ADDR_TYPES: [RecordType; 2] = [RecordType::A, RecordType::AAAA];

/// What a service's part was made from.
struct ServiceSource {
    data: Arc<ServiceRecords>,
    tags: HashSet<String>,
    aliases: Vec<String>,
    /// The `addr` names its SRV records point at.
    addrs: Vec<Name>,
}

/// Builds the zone of one served domain, part by part: a part is made again only when
/// what it is made from changed.
pub struct ContentBuilder {
    zone: Arc<ConsulZone>,
    source: Arc<dyn Source>,
    domain: DomainId,
    /// The lists the parts were made with (held, so a pointer cannot be reused).
    lists: Option<(Arc<Directory>, Arc<NodeTable>)>,
    services: HashMap<String, ServiceSource>,
    /// How many services point at each `addr` name.
    addr_refs: HashMap<Name, usize>,
    parts: Parts,
    records: usize,
}

/// What a build found.
pub struct Built {
    /// The zone now.
    pub parts: Arc<Parts>,
    /// Its records.
    pub records: usize,
    /// What changed since the previous build (from and to left for the journal).
    pub delta: Delta,
    /// Services of the list whose data is not in memory (left out of this build).
    pub missing: usize,
    /// The highest Consul index among the data the records come from.
    pub index: u64,
}

/// Parts made again in one build: the new records (None: the part is gone).
type Changes = Vec<(Part, Option<Vec<Record>>)>;

impl ContentBuilder {
    /// `zone` must answer without `a_record_limit`; `domain` is its index of the domain.
    pub fn new(zone: Arc<ConsulZone>, source: Arc<dyn Source>, domain: DomainId) -> Self {
        ContentBuilder {
            zone,
            source,
            domain,
            lists: None,
            services: HashMap::new(),
            addr_refs: HashMap::new(),
            parts: HashMap::new(),
            records: 0,
        }
    }

    /// The zone now; None before the view is ready.
    pub fn build(&mut self) -> Option<Built> {
        let view = Arc::clone(self.source.view());
        if !view.is_ready() {
            return None;
        }
        let (directory, nodes) = (view.directory()?, view.nodes()?);
        let dc = view.datacenter()?.to_owned();
        let domain = self.zone.domain(self.domain).clone();
        let at = NamesOf {
            addr_suffix: Name::from_ascii(format!("addr.{dc}"))
                .and_then(|n| n.append_domain(&domain))
                .ok(),
            dc,
            domain,
        };
        let (same_directory, same_nodes) = match &self.lists {
            Some((d, n)) => (Arc::ptr_eq(d, &directory), Arc::ptr_eq(n, &nodes)),
            None => (false, false),
        };
        let mut changes = Changes::new();
        let mut addr_moves: Vec<(Name, bool)> = Vec::new();
        let mut missing = 0;
        let mut index = directory.index.max(nodes.index);

        let mut aliases: HashMap<&str, Vec<String>> = HashMap::new();
        if !same_directory {
            for (alias, key) in &directory.aliases {
                aliases.entry(key.as_str()).or_default().push(alias.clone());
            }
            for v in aliases.values_mut() {
                v.sort();
            }
            let gone: Vec<String> = self
                .services
                .keys()
                .filter(|k| !directory.services.contains_key(*k))
                .cloned()
                .collect();
            for key in gone {
                self.drop_service(&key, &mut changes, &mut addr_moves);
            }
        }
        for (key, known) in &directory.services {
            let Some(data) = self
                .source
                .records_in_memory(ServiceRef::local_service(key, &known.name))
            else {
                missing += 1;
                self.drop_service(key, &mut changes, &mut addr_moves);
                continue;
            };
            index = index.max(data.index);
            let key_aliases = aliases.get(key.as_str());
            let unchanged = self.services.get(key).is_some_and(|s| {
                Arc::ptr_eq(&s.data, &data)
                    && (same_directory
                        || (s.tags == known.tags
                            && s.aliases.as_slice() == key_aliases.map_or(&[][..], Vec::as_slice)))
            });
            if unchanged {
                continue;
            }
            let aliases = key_aliases.cloned().unwrap_or_default();
            let (records, addrs) = self.service_records(key, known, &aliases, &at);
            let old = self.services.insert(
                key.clone(),
                ServiceSource {
                    data,
                    tags: known.tags.clone(),
                    aliases,
                    addrs: addrs.clone(),
                },
            );
            addr_moves.extend(old.into_iter().flat_map(|o| o.addrs).map(|a| (a, false)));
            addr_moves.extend(addrs.into_iter().map(|a| (a, true)));
            changes.push((Part::Service(key.clone()), Some(records)));
        }
        // Netted first: a service made again lets go of its `addr` names and takes them
        // back, which must not take them out of the zone and put them in again.
        let mut net: HashMap<Name, isize> = HashMap::new();
        for (addr, added) in addr_moves {
            *net.entry(addr).or_default() += if added { 1 } else { -1 };
        }
        for (addr, moved) in net {
            let count = self.addr_refs.entry(addr.clone()).or_default();
            let was = *count;
            *count = count.saturating_add_signed(moved);
            match (was, *count) {
                (0, n) if n > 0 => {
                    let mut records = Vec::new();
                    self.collect(&addr, &ADDR_TYPES, &mut records, None, None);
                    changes.push((Part::Addr(addr), Some(records)));
                }
                (w, 0) if w > 0 => {
                    self.addr_refs.remove(&addr);
                    changes.push((Part::Addr(addr), None));
                }
                (0, 0) => {
                    self.addr_refs.remove(&addr);
                }
                _ => {}
            }
        }
        if !same_nodes {
            let gone: Vec<Part> = self
                .parts
                .keys()
                .filter(|p| matches!(p, Part::Node(n) if !nodes.by_name.contains_key(n)))
                .cloned()
                .collect();
            changes.extend(gone.into_iter().map(|p| (p, None)));
            for node in nodes.by_name.keys() {
                let mut records = Vec::new();
                for name in with_and_without_dc(&[node.as_str(), "node"], &at.dc, &at.domain) {
                    self.collect(&name, &NODE_TYPES, &mut records, None, None);
                }
                changes.push((Part::Node(node.clone()), Some(records)));
            }
        }
        let mut apex = Vec::new();
        self.collect(&at.domain, &[RecordType::NS], &mut apex, None, None);
        changes.push((Part::Apex, Some(apex)));
        self.lists = Some((directory, nodes));

        let delta = self.apply(changes);
        Some(Built {
            parts: Arc::new(self.parts.clone()),
            records: self.records,
            delta,
            missing,
            index,
        })
    }

    /// Takes service `key` out of the zone, when it is in.
    fn drop_service(&mut self, key: &str, changes: &mut Changes, moves: &mut Vec<(Name, bool)>) {
        if let Some(old) = self.services.remove(key) {
            moves.extend(old.addrs.into_iter().map(|a| (a, false)));
            changes.push((Part::Service(key.to_owned()), None));
        }
    }

    /// Makes `changes` the parts; what they add and remove.
    fn apply(&mut self, changes: Changes) -> Delta {
        let mut delta = Delta::default();
        let none = WireRecords::default();
        for (part, records) in changes {
            let new = records.map(|r| Arc::new(WireRecords::encode(&canonical(r))));
            let old = match &new {
                Some(new) => self.parts.insert(part, Arc::clone(new)),
                None => self.parts.remove(&part),
            };
            let (removed, added) = difference(
                old.as_deref().unwrap_or(&none),
                new.as_deref().unwrap_or(&none),
            );
            self.records = self.records + added.len() - removed.len();
            if !removed.is_empty() {
                delta.removed.push(removed);
            }
            if !added.is_empty() {
                delta.added.push(added);
            }
        }
        delta
    }

    /// The records of every name of service `key`, and the `addr` names its SRV records
    /// point at.
    fn service_records(
        &self,
        key: &str,
        known: &KnownService,
        aliases: &[String],
        at: &NamesOf,
    ) -> (Vec<Record>, Vec<Name>) {
        let (dc, domain) = (at.dc.as_str(), &at.domain);
        let mut records = Vec::new();
        let mut addrs = Vec::new();
        let mut names: Vec<Vec<String>> = vec![vec![key.to_owned()]];
        names.extend(aliases.iter().map(|alias| vec![alias.clone()]));
        for tag in &known.tags {
            names.push(vec![tag.clone(), key.to_owned()]);
        }
        let suffix = at.addr_suffix.as_ref();
        for labels in &names {
            let mut labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            labels.push("service");
            for name in with_and_without_dc(&labels, dc, domain) {
                self.collect(
                    &name,
                    &SERVICE_TYPES,
                    &mut records,
                    Some(&mut addrs),
                    suffix,
                );
            }
        }
        if !key.contains('.') {
            let service = format!("_{key}");
            let mut protocols = vec!["_tcp".to_owned()];
            protocols.extend(known.tags.iter().map(|t| format!("_{t}")));
            for protocol in &protocols {
                let labels = [service.as_str(), protocol.as_str(), "service"];
                for name in with_and_without_dc(&labels, dc, domain) {
                    let addrs = Some(&mut addrs);
                    self.collect(&name, &[RecordType::SRV], &mut records, addrs, suffix);
                }
            }
        }
        addrs.sort();
        addrs.dedup();
        (records, addrs)
    }
    /// Adds the records owned by `name` that queries for `types` answer; with `addrs`,
    /// notes the `addr` names (below `addr_suffix`) SRV records point at.
    fn collect(
        &self,
        name: &Name,
        types: &[RecordType],
        out: &mut Vec<Record>,
        mut addrs: Option<&mut Vec<Name>>,
        addr_suffix: Option<&Name>,
    ) {
        for &qtype in types {
            let Some(answer) = self.zone.answer_now(name, qtype, self.domain) else {
                continue;
            };
            for record in answer.answers {
                if let (RData::SRV(srv), Some(addrs), Some(suffix)) =
                    (&record.data, addrs.as_deref_mut(), addr_suffix)
                {
                    if suffix.zone_of(&srv.target) {
                        addrs.push(srv.target.to_lowercase());
                    }
                }
                if record.name == *name {
                    out.push(record);
                }
            }
        }
    }
}

/// Where the names of the zone are.
struct NamesOf {
    dc: String,
    domain: Name,
    /// `addr.<dc>.<domain>`: SRV targets below it are names of the zone.
    addr_suffix: Option<Name>,
}

/// `<labels>.<domain>` and `<labels>.<dc>.<domain>`, the names that parse.
fn with_and_without_dc(labels: &[&str], dc: &str, domain: &Name) -> Vec<Name> {
    let mut names = Vec::with_capacity(2);
    let relative = labels.join(".");
    for text in [relative.clone(), format!("{relative}.{dc}")] {
        if let Ok(name) = Name::from_ascii(&text).and_then(|n| n.append_domain(domain)) {
            names.push(name.to_lowercase());
        }
    }
    names
}

/// `records` sorted and without duplicates; a CNAME where other data is at the same name
/// (or a second CNAME) cannot be in a zone (RFC 1034 §3.6.2): such CNAMEs are left out.
fn canonical(mut records: Vec<Record>) -> Vec<Record> {
    records.sort_unstable();
    records.dedup_by(|a, b| a == b);
    let mut keep = vec![true; records.len()];
    let mut start = 0;
    while start < records.len() {
        let end = start
            + records[start..]
                .iter()
                .take_while(|r| r.name == records[start].name)
                .count();
        let owned = &records[start..end];
        let cnames = owned
            .iter()
            .filter(|r| r.record_type() == RecordType::CNAME)
            .count();
        if cnames > 0 && (cnames > 1 || owned.len() > 1) {
            for (i, r) in owned.iter().enumerate() {
                if r.record_type() == RecordType::CNAME {
                    keep[start + i] = false;
                }
            }
        }
        start = end;
    }
    let mut keep = keep.into_iter();
    records.retain(|_| keep.next().unwrap_or(true));
    records
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, CNAME};

    fn rec(name: &str, data: RData) -> Record {
        Record::from_rdata(Name::from_ascii(name).unwrap(), 30, data)
    }

    #[test]
    fn canonical_sorts_dedups_and_drops_cnames_beside_other_data() {
        let a = RData::A(A::new(10, 0, 0, 1));
        let cname = RData::CNAME(CNAME(Name::from_ascii("x.example.").unwrap()));
        let records = canonical(vec![
            rec("b.consul.", a.clone()),
            rec("a.consul.", a.clone()),
            rec("B.consul.", a.clone()),
            rec("b.consul.", cname.clone()),
            rec("c.consul.", cname.clone()),
        ]);
        let shown: Vec<String> = records
            .iter()
            .map(|r| format!("{} {}", r.name, r.record_type()))
            .collect();
        assert_eq!(shown, ["a.consul. A", "b.consul. A", "c.consul. CNAME"]);
    }
}
