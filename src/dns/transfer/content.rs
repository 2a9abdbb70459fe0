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

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::dns::consul_zone::ConsulZone;
use crate::view::records::{NodeTable, ServiceRecords};
use crate::view::{Directory, Source, Subject};

/// The types asked for each kind of name.
const SERVICE_TYPES: [RecordType; 4] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::TXT,
];
const NODE_TYPES: [RecordType; 3] = [RecordType::A, RecordType::AAAA, RecordType::TXT];
const ADDR_TYPES: [RecordType; 2] = [RecordType::A, RecordType::AAAA];

/// One service's part of the zone, and what it was made from.
struct ServicePart {
    data: Arc<ServiceRecords>,
    records: Vec<Record>,
    /// The `addr` names its SRV records point at.
    addrs: Vec<Name>,
}

/// Builds the zone of one served domain, keeping each service's part between builds.
pub struct ContentBuilder {
    zone: Arc<ConsulZone>,
    source: Arc<dyn Source>,
    domain: usize,
    /// The lists the kept parts were made with (held, so a pointer cannot be reused).
    lists: Option<(Arc<Directory>, Arc<NodeTable>)>,
    parts: HashMap<String, ServicePart>,
}

/// What a build found.
pub struct Built {
    /// Sorted (RFC 4034 canonical order), without duplicates, without the SOA.
    pub records: Vec<Record>,
    /// Services of the list whose data is not in memory (left out of this build).
    pub missing: usize,
    /// The highest Consul index among the data the records come from.
    pub index: u64,
}

impl ContentBuilder {
    /// `zone` must answer without `a_record_limit`; `domain` is its index of the domain.
    pub fn new(zone: Arc<ConsulZone>, source: Arc<dyn Source>, domain: usize) -> Self {
        ContentBuilder {
            zone,
            source,
            domain,
            lists: None,
            parts: HashMap::new(),
        }
    }

    /// The zone now; None before the view is ready.
    pub fn build(&mut self) -> Option<Built> {
        let view = Arc::clone(self.source.view());
        if !view.is_ready() {
            return None;
        }
        let (directory, nodes) = (view.directory()?, view.nodes()?);
        let same_lists = self
            .lists
            .as_ref()
            .is_some_and(|(d, n)| Arc::ptr_eq(d, &directory) && Arc::ptr_eq(n, &nodes));
        if !same_lists {
            self.parts.clear();
            self.lists = Some((Arc::clone(&directory), Arc::clone(&nodes)));
        }
        let dc = view.datacenter()?.to_owned();
        let domain = self.zone.domain(self.domain).clone();
        let addr_suffix = Name::from_ascii(format!("addr.{dc}"))
            .and_then(|n| n.append_domain(&domain))
            .ok();
        let mut missing = 0;
        let mut index = directory.index.max(nodes.index);
        let mut kept = HashMap::with_capacity(directory.services.len());
        for (key, known) in &directory.services {
            let subject = Subject::local_service(key, &known.name);
            let Some(data) = self.source.instances_in_memory(subject) else {
                missing += 1;
                continue;
            };
            index = index.max(data.records.index);
            let part = match self.parts.remove(key) {
                Some(part) if Arc::ptr_eq(&part.data, &data.records) => part,
                _ => {
                    let names = NamesOf {
                        dc: &dc,
                        domain: &domain,
                        addr_suffix: addr_suffix.as_ref(),
                    };
                    self.service_part(key, &known.tags, &directory, &names, data.records)
                }
            };
            kept.insert(key.clone(), part);
        }
        self.parts = kept;

        let mut records: Vec<Record> = Vec::new();
        let mut addrs = BTreeSet::new();
        for part in self.parts.values() {
            records.extend(part.records.iter().cloned());
            addrs.extend(part.addrs.iter().cloned());
        }
        for addr in addrs {
            self.collect(&addr, &ADDR_TYPES, &mut records, None, None);
        }
        for node in nodes.by_name.keys() {
            for name in with_and_without_dc(&[node.as_str(), "node"], &dc, &domain) {
                self.collect(&name, &NODE_TYPES, &mut records, None, None);
            }
        }
        self.collect(&domain, &[RecordType::NS], &mut records, None, None);
        Some(Built {
            records: canonical(records),
            missing,
            index,
        })
    }

    /// The records of every name of service `key`.
    fn service_part(
        &self,
        key: &str,
        tags: &std::collections::HashSet<String>,
        directory: &Directory,
        at: &NamesOf<'_>,
        data: Arc<ServiceRecords>,
    ) -> ServicePart {
        let (dc, domain) = (at.dc, at.domain);
        let mut records = Vec::new();
        let mut addrs = Vec::new();
        let mut names: Vec<Vec<String>> = vec![vec![key.to_owned()]];
        names.extend(
            directory
                .aliases
                .iter()
                .filter(|(_, service)| service.as_str() == key)
                .map(|(alias, _)| vec![alias.clone()]),
        );
        for tag in tags {
            names.push(vec![tag.clone(), key.to_owned()]);
        }
        for labels in &names {
            let mut labels: Vec<&str> = labels.iter().map(String::as_str).collect();
            labels.push("service");
            for name in with_and_without_dc(&labels, dc, domain) {
                self.collect(
                    &name,
                    &SERVICE_TYPES,
                    &mut records,
                    Some(&mut addrs),
                    at.addr_suffix,
                );
            }
        }
        if !key.contains('.') {
            let service = format!("_{key}");
            let mut protocols = vec!["_tcp".to_owned()];
            protocols.extend(tags.iter().map(|t| format!("_{t}")));
            for protocol in &protocols {
                let labels = [service.as_str(), protocol.as_str(), "service"];
                for name in with_and_without_dc(&labels, dc, domain) {
                    let addrs = Some(&mut addrs);
                    self.collect(
                        &name,
                        &[RecordType::SRV],
                        &mut records,
                        addrs,
                        at.addr_suffix,
                    );
                }
            }
        }
        ServicePart {
            data,
            records,
            addrs,
        }
    }

    /// Adds the records owned by `name` that queries for `types` answer; with `addrs`,
    /// notes the `addr` names SRV records point at.
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

/// Where a service's names are.
struct NamesOf<'a> {
    dc: &'a str,
    domain: &'a Name,
    /// `addr.<dc>.<domain>`: SRV targets below it are names of the zone.
    addr_suffix: Option<&'a Name>,
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
