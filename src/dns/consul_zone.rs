//! Answers for names under the Consul domain, from the view. Nothing here waits on Consul
//! except the first load of a service nobody asked for before (coalesced, see
//! the view's `Source`) and, before the first sync, a short bounded wait for it.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{NS, PTR, SOA};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use rand::seq::SliceRandom;
use tracing::debug;

use super::answer::{ede, find_service, instance_records, node_records, service_records, Answer};
use super::fetch::{Fetched, Need};
use super::forward::Recursors;
use super::name::{self, ConsulName, Locality};
use crate::config::{ServiceTtl, SoaConfig};
use crate::metrics::{Metrics, NameForm};
use crate::view::freshness::{ServiceData, WatchHealth};
use crate::view::records::{generated_name, ip_rdata, NodeRecords, NodeTable, ServiceRecords};
use crate::view::{Directory, DomainId, Endpoint, RemoteLists, ServiceRef, Source, SourceError};

/// Answering settings, from the configuration.
#[derive(Debug, Clone)]
pub struct ZoneOptions {
    /// Served domains, lower-case FQDNs, primary first.
    pub domains: Vec<Name>,
    pub node_ttl: u32,
    /// `service_ttl`, for reverse answers naming a service.
    pub service_ttl: ServiceTtl,
    pub soa: SoaConfig,
    /// `a_record_limit`: most A/AAAA/ANY answers (0: no limit).
    pub a_record_limit: usize,
    /// `enable_additional_node_meta_txt`.
    pub node_meta_txt: bool,
    /// How long a query waits for the first sync before SERVFAIL.
    pub startup_wait: Duration,
    /// `max_stale`: data whose watch has been failing longer than this is not served.
    pub max_stale: Duration,
    /// Answers for a zone transfer: every name server at the apex, in a stable order,
    /// rather than three drawn at random.
    pub complete: bool,
}

/// The service list or the node list of one datacenter.
struct ListSnapshot<T> {
    list: Arc<T>,
    /// The local service list's version (0 otherwise).
    version: u64,
    /// How long its watch has been failing.
    stale: Option<Duration>,
}

/// `list` with how stale its watch is; an error when there is none yet.
fn snapshot<T>(
    list: Option<Arc<T>>,
    version: u64,
    health: &WatchHealth,
) -> Lookup<ListSnapshot<T>> {
    let list = list.ok_or(LookupError::NoList)?;
    Ok(ListSnapshot {
        list,
        version,
        stale: health.stale_for(),
    })
}

/// Why the zone cannot answer from what is known: SERVFAIL.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("not synced with Consul yet")]
    NotSynced,
    #[error("data older than max_stale ({0:?})")]
    TooStale(Duration),
    #[error("the service or node list is not known yet")]
    NoList,
    #[error("cannot load the lists of datacenter {datacenter}: {error}")]
    Remote {
        datacenter: String,
        error: SourceError,
    },
    #[error("cannot load service {service}: {error}")]
    Service { service: String, error: SourceError },
    #[error("cannot execute prepared query {query}: {error}")]
    Query { query: String, error: SourceError },
    #[error("the same data was needed twice")]
    Loop,
}

impl LookupError {
    /// The RFC 8914 Extended DNS Error saying why: 14 "Not Ready" before the first sync,
    /// 22 "No Reachable Authority" when Consul could not give the data, 0 "Other" else;
    /// with a text for whoever reads it. The text never carries Consul's own error (its
    /// body may name tokens' accessors, hosts, paths): that goes to the log.
    fn extended_error(&self) -> (u16, String) {
        match self {
            LookupError::NotSynced | LookupError::NoList => {
                (ede::NOT_READY, "not synced with Consul yet".into())
            }
            LookupError::TooStale(age) => (
                ede::NO_REACHABLE_AUTHORITY,
                format!("Consul unreachable for {}s, past max_stale", age.as_secs()),
            ),
            LookupError::Remote { datacenter, .. } => (
                ede::NO_REACHABLE_AUTHORITY,
                format!("Consul did not give datacenter {datacenter}'s lists"),
            ),
            LookupError::Service { .. } => (
                ede::NO_REACHABLE_AUTHORITY,
                "Consul did not give this service's instances".into(),
            ),
            LookupError::Query { .. } => (
                ede::NO_REACHABLE_AUTHORITY,
                "Consul did not execute this prepared query".into(),
            ),
            LookupError::Loop => (ede::OTHER, "internal error".into()),
        }
    }
}

impl From<LookupError> for Answer {
    /// SERVFAIL with an Extended DNS Error saying why, and the one log line.
    fn from(e: LookupError) -> Answer {
        debug!(error = %e, "SERVFAIL");
        Answer {
            error: Some(e.extended_error()),
            ..Answer::code(ResponseCode::ServFail)
        }
    }
}

/// Why a lookup stopped short of its data.
enum Missing {
    /// Not in memory: fetch it and work the answer out again.
    Need(Need),
    /// It cannot be had.
    Failed(LookupError),
}

impl From<Need> for Missing {
    fn from(need: Need) -> Self {
        Missing::Need(need)
    }
}

impl From<LookupError> for Missing {
    fn from(e: LookupError) -> Self {
        Missing::Failed(e)
    }
}

/// What a lookup found, or why it did not.
type Lookup<T> = Result<T, Missing>;

/// A service lookup as the question asks it.
#[derive(Debug, Clone, Copy)]
struct ServiceQuestion<'a> {
    endpoint: Endpoint,
    datacenter: Option<&'a str>,
    service: &'a str,
    tag: Option<&'a str>,
}

impl<'a> ServiceQuestion<'a> {
    fn new(
        endpoint: Endpoint,
        datacenter: Option<&'a str>,
        service: &'a str,
        tag: Option<&'a str>,
    ) -> Self {
        ServiceQuestion {
            endpoint,
            datacenter,
            service,
            tag,
        }
    }
}

/// The Consul zone(s): the primary domain and `alt_domain`.
pub struct ConsulZone {
    options: ZoneOptions,
    lower_domains: Vec<LowerName>,
    /// Per domain, the SOA with serial 0 (set per answer: it follows the catalog).
    soas: Vec<Record>,
    source: Arc<dyn Source>,
    metrics: Arc<Metrics>,
    /// Resolve hostname addresses outside the served domains, when configured.
    recursors: Option<Arc<Recursors>>,
}

/// How many hostnames deep an answer follows addresses that are hostnames (Consul's
/// `maxRecursionLevelDefault`): a chain of services naming each other ends there.
const MAX_CHASE: u8 = 3;

impl ConsulZone {
    pub fn new(
        options: ZoneOptions,
        source: Arc<dyn Source>,
        metrics: Arc<Metrics>,
        recursors: Option<Arc<Recursors>>,
    ) -> Self {
        let lower_domains = options.domains.iter().map(LowerName::new).collect();
        let t = options.soa;
        let soas = options
            .domains
            .iter()
            .map(|domain| {
                let label = |l: &str| {
                    Name::from_ascii(l)
                        .and_then(|n| n.append_domain(domain))
                        .unwrap_or_else(|_| domain.clone())
                };
                let soa = SOA::new(
                    label("ns"),
                    label("hostmaster"),
                    0,
                    t.refresh as i32,
                    t.retry as i32,
                    t.expire as i32,
                    t.min_ttl,
                );
                Record::from_rdata(domain.clone(), t.min_ttl, RData::SOA(soa))
            })
            .collect();
        ConsulZone {
            options,
            lower_domains,
            soas,
            source,
            metrics,
            recursors,
        }
    }

    /// The served domain containing `name` (the longest, so an alt domain below the primary
    /// one wins), as an index into `domains`.
    pub fn domain_of(&self, name: &Name) -> Option<DomainId> {
        DomainId::all(self.lower_domains.len())
            .zip(&self.lower_domains)
            .filter(|(_, d)| Name::zone_of(d, name))
            .max_by_key(|(_, d)| d.num_labels())
            .map(|(id, _)| id)
    }

    /// Served domain `d`.
    pub fn domain(&self, d: DomainId) -> &Name {
        &self.options.domains[d.index()]
    }

    /// The served domains.
    pub fn domains(&self) -> impl Iterator<Item = DomainId> {
        DomainId::all(self.options.domains.len())
    }

    /// This zone answering as for a zone transfer: complete RRsets (no `a_record_limit`),
    /// every name server.
    pub fn complete(&self) -> ConsulZone {
        let options = ZoneOptions {
            a_record_limit: 0,
            complete: true,
            ..self.options.clone()
        };
        ConsulZone::new(
            options,
            Arc::clone(&self.source),
            Arc::clone(&self.metrics),
            self.recursors.clone(),
        )
    }

    /// Length on the wire of domain `d` (its labels and the root).
    pub fn domain_len(&self, d: DomainId) -> usize {
        self.options
            .domains
            .get(d.index())
            .map_or(0, super::response_cache::wire_len)
    }

    /// The SOA serial: it follows the catalog.
    pub fn serial(&self) -> u32 {
        self.source.view().serial()
    }

    /// The SOA of domain `d` with serial 0.
    pub fn soa_template(&self, d: DomainId) -> Record {
        self.soas[d.index()].clone()
    }

    /// The SOA of domain `d`.
    pub fn soa(&self, d: DomainId) -> Record {
        let mut record = self.soas[d.index()].clone();
        if let RData::SOA(soa) = &mut record.data {
            soa.serial = self.source.view().serial();
        }
        record
    }

    /// Answers `qname`/`qtype`; `qname` is the question as sent (its spelling is kept in
    /// the answer), `d` the served domain it is under. What the answer needs beyond memory
    /// (see [`Need`]) is fetched, and the answer worked out again.
    pub async fn answer(&self, qname: &Name, qtype: RecordType, d: DomainId) -> Answer {
        let mut fetched = Fetched::default();
        loop {
            match self.resolve(qname, qtype, d, &fetched, MAX_CHASE) {
                Ok(answer) => return self.checked(answer),
                Err(need) => {
                    let recursors = self.recursors.as_deref();
                    if !fetched
                        .fetch(need, &*self.source, recursors, self.options.startup_wait)
                        .await
                    {
                        // Each need is fetched once; asked again, it is a bug: no loop.
                        return Answer::from(LookupError::Loop);
                    }
                }
            }
        }
    }

    /// [`ConsulZone::answer`] if it can be worked out from memory alone (the view is synced
    /// and holds what the question needs): no waiting, no future. None otherwise.
    pub fn answer_now(&self, qname: &Name, qtype: RecordType, d: DomainId) -> Option<Answer> {
        let answer = self
            .resolve(qname, qtype, d, &Fetched::NOTHING, MAX_CHASE)
            .ok()?;
        Some(self.checked(answer))
    }

    /// `answer`, unless its data is older than `max_stale`.
    fn checked(&self, answer: Answer) -> Answer {
        match answer.stale {
            Some(age) if age > self.options.max_stale => {
                self.metrics.max_stale_exceeded.inc();
                Answer::from(LookupError::TooStale(age)).of_form(answer.form)
            }
            _ => answer,
        }
    }

    /// The answer to `qname`/`qtype` in served domain `d`, with the hostnames it points at
    /// followed `depth` deep.
    fn resolve(
        &self,
        qname: &Name,
        qtype: RecordType,
        d: DomainId,
        f: &Fetched,
        depth: u8,
    ) -> Result<Answer, Need> {
        let mut lower = [0; 255];
        let domain_labels = self.lower_domains[d.index()].num_labels();
        let labels = name::relative_labels(qname, domain_labels, &mut lower);
        // None: a label that is not UTF-8, which no name of the domain has.
        let parsed = labels
            .as_ref()
            .map(|labels| name::parse(labels, qtype == RecordType::SRV));
        let form = match (&parsed, qtype) {
            (_, RecordType::AXFR | RecordType::IXFR) => NameForm::Transfer,
            (Some(parsed), _) => parsed.form(),
            (None, _) => NameForm::Invalid,
        };
        let found = self
            .resolve_name(qname, qtype, d, parsed, f)
            .and_then(|mut answer| {
                self.chase(&mut answer, qtype, f, depth)?;
                Ok(answer)
            });
        match found {
            Ok(answer) => Ok(answer.of_form(form)),
            Err(Missing::Need(need)) => Err(need),
            Err(Missing::Failed(e)) => Ok(Answer::from(e).of_form(form)),
        }
    }

    /// Follows the hostnames an answer points at (services and nodes whose address is a
    /// hostname, dns-spec.md §6.1): for A, AAAA and ANY the CNAME's target, its records
    /// after the CNAME; for SRV the targets without an address, their records in
    /// Additional. Names in a served domain are answered from the view, others by the
    /// recursors (none without them). The records take the answer's TTL, as in Consul.
    fn chase(
        &self,
        answer: &mut Answer,
        qtype: RecordType,
        f: &Fetched,
        depth: u8,
    ) -> Result<(), Need> {
        if !answer.hostnames {
            return Ok(());
        }
        let (hosts, chase_type): (Vec<(Name, u32)>, RecordType) = match qtype {
            RecordType::A | RecordType::AAAA | RecordType::ANY => {
                match answer.answers.first().map(|r| (&r.data, r.ttl)) {
                    Some((RData::CNAME(c), ttl)) => (vec![(c.0.clone(), ttl)], qtype),
                    _ => return Ok(()),
                }
            }
            RecordType::SRV => {
                let mut hosts: Vec<(Name, u32)> = Vec::new();
                for r in &answer.answers {
                    let RData::SRV(srv) = &r.data else { continue };
                    let addressed = answer.additionals.iter().any(|a| {
                        a.name == srv.target
                            && matches!(a.record_type(), RecordType::A | RecordType::AAAA)
                    });
                    if !addressed && !hosts.iter().any(|(h, _)| *h == srv.target) {
                        hosts.push((srv.target.clone(), r.ttl));
                    }
                }
                (hosts, RecordType::ANY)
            }
            _ => return Ok(()),
        };
        for (host, ttl) in hosts {
            let section = if qtype == RecordType::SRV {
                &mut answer.additionals
            } else {
                &mut answer.answers
            };
            for mut record in self.host_records(&host, chase_type, f, depth)? {
                record.ttl = ttl;
                if !section.contains(&record) {
                    section.push(record);
                }
            }
            // The answer rests on more than its service's data now.
            answer.basis = None;
        }
        Ok(())
    }

    /// The CNAME, A and AAAA records (as `qtype` asks) answering `host`, followed
    /// `depth` deep: from the view for a name in a served domain, else from the
    /// recursors.
    fn host_records(
        &self,
        host: &Name,
        qtype: RecordType,
        f: &Fetched,
        depth: u8,
    ) -> Result<Vec<Record>, Need> {
        if depth == 0 {
            debug!(%host, "hostnames followed {MAX_CHASE} deep: no further");
            return Ok(Vec::new());
        }
        let wanted = |r: &Record| match r.record_type() {
            RecordType::CNAME => true,
            RecordType::A => qtype != RecordType::AAAA,
            RecordType::AAAA => qtype != RecordType::A,
            _ => false,
        };
        if let Some(d) = self.domain_of(host) {
            let inner = self.resolve(host, qtype, d, f, depth - 1)?;
            return Ok(inner.answers.into_iter().filter(|r| wanted(r)).collect());
        }
        if self.recursors.is_none() {
            return Ok(Vec::new());
        }
        match f.host(host) {
            Some(records) => Ok(records.iter().filter(|r| wanted(r)).cloned().collect()),
            None => Err(Need::Host(host.clone())),
        }
    }

    /// The answer to `qname` (read as `parsed`; None: a name no label of the domain can
    /// be) for `qtype` in served domain `d`.
    fn resolve_name(
        &self,
        qname: &Name,
        qtype: RecordType,
        d: DomainId,
        parsed: Option<ConsulName<'_>>,
        f: &Fetched,
    ) -> Lookup<Answer> {
        if !self.source.view().is_ready() {
            if !f.waited_for_sync() {
                return Err(Need::Sync.into());
            }
            return Err(LookupError::NotSynced.into());
        }
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            // Served over TCP to `allow_transfer` before this (`transfer`); refused here.
            return Ok(Answer::code(ResponseCode::Refused));
        }
        let Some(parsed) = parsed else {
            return Ok(Answer::nxdomain());
        };
        Ok(match parsed {
            ConsulName::Apex => self.apex(qtype, d, f)?,
            ConsulName::Service {
                service,
                tag,
                locality,
                ..
            } => match self.locate(&locality) {
                Some(dc) => {
                    let question =
                        ServiceQuestion::new(Endpoint::Service, dc, service, tag.as_deref());
                    self.service(qname, qtype, d, question, f)?
                }
                None => Answer::nxdomain(),
            },
            ConsulName::Connect { service, locality } => match self.locate(&locality) {
                Some(dc) => {
                    let question = ServiceQuestion::new(Endpoint::Connect, dc, service, None);
                    self.service(qname, qtype, d, question, f)?
                }
                None => Answer::nxdomain(),
            },
            ConsulName::Ingress { service, locality } => match self.locate(&locality) {
                Some(dc) => {
                    let question = ServiceQuestion::new(Endpoint::Ingress, dc, service, None);
                    self.service(qname, qtype, d, question, f)?
                }
                None => Answer::nxdomain(),
            },
            ConsulName::Node { node, locality } => match self.locate(&locality) {
                Some(dc) => self.node(qname, qtype, dc, &node, f)?,
                None => Answer::nxdomain(),
            },
            ConsulName::Addr { ip } => self.addr(qname, qtype, ip),
            ConsulName::EmptyNonTerminal { datacenter } => {
                let locality = Locality {
                    datacenter,
                    peer: None,
                };
                match self.locate(&locality) {
                    Some(_) => Answer::nodata(),
                    None => Answer::nxdomain(),
                }
            }
            ConsulName::Virtual { service, peer } => {
                if peer.is_some() {
                    return Ok(Answer::nxdomain());
                }
                self.virtual_ip(qname, qtype, service, f)?
            }
            ConsulName::PreparedQuery { name, datacenter } => {
                let locality = Locality {
                    datacenter,
                    peer: None,
                };
                match self.locate(&locality) {
                    Some(dc) => self.prepared_query(qname, qtype, d, &name, dc, f)?,
                    None => Answer::nxdomain(),
                }
            }
            ConsulName::Invalid => Answer::nxdomain(),
        })
    }

    /// The datacenter a locality names: `Some(None)` for the local one, `Some(Some(dc))` for
    /// another datacenter Consul knows, None for an unknown one or a peer (NXDOMAIN).
    fn locate<'a>(&self, locality: &Locality<'a>) -> Option<Option<&'a str>> {
        if locality.peer.is_some() {
            return None;
        }
        match locality.datacenter {
            None => Some(None),
            Some(dc) if Some(dc) == self.source.view().datacenter() => Some(None),
            Some(dc) if self.source.datacenter_known(dc) => Some(Some(dc)),
            Some(_) => None,
        }
    }

    /// The service list of a datacenter (None: local).
    fn services_of(&self, dc: Option<&str>, f: &Fetched) -> Lookup<ListSnapshot<Directory>> {
        let Some(dc) = dc else {
            let (version, directory) = self.source.view().directory_versioned();
            return snapshot(directory, version, self.source.directory_health());
        };
        let r = self.remote(dc, f)?;
        snapshot(Some(r.directory.load_full()), 0, &r.directory_health)
    }

    /// The node list of a datacenter (None: local).
    fn nodes_of(&self, dc: Option<&str>, f: &Fetched) -> Lookup<ListSnapshot<NodeTable>> {
        let Some(dc) = dc else {
            let nodes = self.source.view().nodes();
            return snapshot(nodes, 0, self.source.nodes_health());
        };
        let r = self.remote(dc, f)?;
        snapshot(Some(r.nodes.load_full()), 0, &r.nodes_health)
    }

    /// Another datacenter's lists, once fetched.
    fn remote<'f>(&self, dc: &str, f: &'f Fetched) -> Lookup<&'f RemoteLists> {
        match f.remote(dc).ok_or_else(|| Need::Remote(dc.to_owned()))? {
            Ok(r) => Ok(r),
            Err(error) => Err(LookupError::Remote {
                datacenter: dc.to_owned(),
                error: Arc::clone(error),
            }
            .into()),
        }
    }

    /// The data of a service (see [`Source::instances`]).
    fn instances(&self, service_ref: ServiceRef<'_>, f: &Fetched) -> Lookup<ServiceData> {
        let loaded = match f.instances(&service_ref) {
            Some(fetched) => fetched.clone(),
            None => match self.source.instances_in_memory(service_ref) {
                Some(data) => Ok(data),
                None => return Err(Need::Instances(service_ref.into()).into()),
            },
        };
        loaded.map_err(|error| {
            LookupError::Service {
                service: service_ref.name.to_owned(),
                error,
            }
            .into()
        })
    }

    fn apex(&self, qtype: RecordType, d: DomainId, f: &Fetched) -> Lookup<Answer> {
        Ok(match qtype {
            RecordType::SOA => {
                // As Consul: the name servers in Authority, their addresses in Additional.
                let (ns, glue) = self.name_servers(d, f)?;
                Answer {
                    authority: ns,
                    ..Answer::records(vec![self.soa(d)], glue)
                }
            }
            RecordType::NS => {
                let (ns, glue) = self.name_servers(d, f)?;
                Answer::records(ns, glue)
            }
            RecordType::ANY => {
                let (mut ns, glue) = self.name_servers(d, f)?;
                ns.insert(0, self.soa(d));
                Answer::records(ns, glue)
            }
            _ => Answer::nodata(),
        })
    }

    /// NS records for up to 3 healthy instances of service `consul` (the Consul servers),
    /// with glue, as Consul does.
    fn name_servers(&self, d: DomainId, f: &Fetched) -> Lookup<(Vec<Record>, Vec<Record>)> {
        let domain = &self.options.domains[d.index()];
        let Some(consul) = self
            .source
            .view()
            .directory()
            .and_then(|dir| dir.services.get("consul").map(|s| s.name.clone()))
        else {
            return Ok((Vec::new(), Vec::new()));
        };
        // Without the servers' data (it cannot be loaded), no NS records.
        let data = match self.instances(ServiceRef::local_service("consul", &consul), f) {
            Ok(data) => data,
            Err(Missing::Failed(_)) => return Ok((Vec::new(), Vec::new())),
            Err(need) => return Err(need),
        };
        let prepared = data.records;
        let mut order: Vec<usize> = (0..prepared.instances.len()).collect();
        let most = if self.options.complete {
            order.len()
        } else {
            order.shuffle(&mut rand::rng());
            3
        };
        let ttl = self.options.node_ttl;
        let (mut ns, mut glue) = (Vec::new(), Vec::new());
        for i in order.into_iter().take(most) {
            let Some(target) = prepared.srv_target(i, d, domain) else {
                continue;
            };
            ns.push(Record::from_rdata(
                domain.clone(),
                ttl,
                RData::NS(NS(target.name.clone())),
            ));
            glue.extend(target.address_record(ttl));
        }
        Ok((ns, glue))
    }

    fn service(
        &self,
        qname: &Name,
        qtype: RecordType,
        d: DomainId,
        question: ServiceQuestion<'_>,
        f: &Fetched,
    ) -> Lookup<Answer> {
        let services = self.services_of(question.datacenter, f)?;
        let Some((key, tag)) = find_service(&services.list, question.service, question.tag) else {
            return Ok(Answer::nxdomain().resting_on(services.stale));
        };
        let Some(known) = services.list.services.get(key) else {
            return Ok(Answer::nxdomain().resting_on(services.stale));
        };
        let service_ref = ServiceRef {
            endpoint: question.endpoint,
            datacenter: question.datacenter,
            key,
            name: &known.name,
        };
        let data = self.instances(service_ref, f)?;
        if question.endpoint != Endpoint::Service && data.records.total == 0 {
            // No proxy or gateway for it: the name does not exist (as Consul answers).
            return Ok(Answer::nxdomain().resting_on(services.stale));
        }
        let limit = self.options.a_record_limit;
        let tag = tag.as_deref();
        let mut answer = service_records(qname, qtype, d, &data.records, &known.tags, tag, limit)
            .resting_on(services.stale.max(data.health.stale_for()));
        if question.datacenter.is_none() && answer.stale.is_none() {
            answer.basis = Some(Box::new(self.source.basis(services.version, &data)));
        }
        Ok(answer)
    }

    /// `<name>.query[.<dc>].<domain>`: the prepared query's instances, in Consul's order.
    fn prepared_query(
        &self,
        qname: &Name,
        qtype: RecordType,
        d: DomainId,
        name: &str,
        dc: Option<&str>,
        f: &Fetched,
    ) -> Lookup<Answer> {
        if !name::valid_query_name(name) {
            return Ok(Answer::nxdomain());
        }
        let query = f
            .prepared_query(name, dc)
            .ok_or_else(|| Need::PreparedQuery(name.to_owned(), dc.map(str::to_owned)))?;
        match query {
            Ok(Some(p)) if !p.instances.is_empty() => {
                let order: Vec<usize> = (0..p.instances.len()).collect();
                Ok(self.records(qname, qtype, d, p, &order))
            }
            Ok(_) => Ok(Answer::nxdomain()),
            Err(error) => Err(LookupError::Query {
                query: name.to_owned(),
                error: Arc::clone(error),
            }
            .into()),
        }
    }

    /// The records of the instances in `order`, for the question's type.
    fn records(
        &self,
        qname: &Name,
        qtype: RecordType,
        d: DomainId,
        p: &ServiceRecords,
        order: &[usize],
    ) -> Answer {
        instance_records(qname, qtype, d, p, order, self.options.a_record_limit)
    }

    /// `<service>.virtual.<domain>`: the service's virtual IP (Consul's transparent-proxy
    /// VIP, the `consul-virtual` tagged address of its instances or of its sidecar proxies).
    fn virtual_ip(
        &self,
        qname: &Name,
        qtype: RecordType,
        service: &str,
        f: &Fetched,
    ) -> Lookup<Answer> {
        let services = self.services_of(None, f)?;
        let directory_stale = services.stale;
        let Some(known) = services.list.services.get(service) else {
            return Ok(Answer::nxdomain().resting_on(directory_stale));
        };
        let data = self.instances(ServiceRef::local_service(service, &known.name), f)?;
        // Consul records the VIP on the service's sidecar proxies when not on the service.
        let data = if data.records.virtual_ip.is_some() {
            data
        } else {
            let proxies = ServiceRef {
                endpoint: Endpoint::Connect,
                datacenter: None,
                key: service,
                name: &known.name,
            };
            match self.instances(proxies, f) {
                Ok(proxies) if proxies.records.virtual_ip.is_some() => proxies,
                Err(Missing::Need(need)) => return Err(need.into()),
                _ => data,
            }
        };
        let stale = directory_stale.max(data.health.stale_for());
        let fits = |ip: &IpAddr| match qtype {
            RecordType::A => ip.is_ipv4(),
            RecordType::AAAA => ip.is_ipv6(),
            RecordType::ANY => true,
            _ => false,
        };
        let answers = data
            .records
            .virtual_ip
            .filter(fits)
            .map(|ip| Record::from_rdata(qname.clone(), self.options.node_ttl, ip_rdata(ip)))
            .into_iter()
            .collect();
        Ok(Answer::records(answers, Vec::new()).resting_on(stale))
    }

    /// PTR for an address of the view: a node's address (`<node>.node.<dc>.<domain>`, as
    /// Consul), else a service address of a service in the view
    /// (`<service>.service.<dc>.<domain>`); NODATA for other types. None when the address
    /// is unknown (or the name is not an address under `in-addr.arpa`/`ip6.arpa`): the
    /// caller passes it on.
    pub async fn reverse(&self, qname: &Name, qtype: RecordType) -> Option<Answer> {
        let net = qname.parse_arpa_name().ok()?;
        if net.prefix_len() != net.max_prefix_len() {
            return None;
        }
        let ip = net.addr();
        let view = self.source.view();
        // Before the first sync the address may be ours: wait as for Consul names.
        if !view.is_ready() && !view.wait_ready(self.options.startup_wait).await {
            return Some(Answer::from(LookupError::NotSynced));
        }
        let dc = view.datacenter()?;
        let domain = &self.options.domains[DomainId::PRIMARY.index()];
        let (target, ttl) =
            if let Some(node) = view.nodes().and_then(|n| n.by_addr.get(&ip).cloned()) {
                (
                    generated_name(&node.to_ascii_lowercase(), "node", dc, domain)?,
                    self.options.node_ttl,
                )
            } else {
                let service = self.source.service_at(&ip)?;
                let key = service.to_ascii_lowercase();
                (
                    generated_name(&key, "service", dc, domain)?,
                    self.options.service_ttl.ttl_for(&key),
                )
            };
        if !matches!(qtype, RecordType::PTR | RecordType::ANY) {
            return Some(Answer::nodata());
        }
        let ptr = Record::from_rdata(qname.clone(), ttl, RData::PTR(PTR(target)));
        Some(Answer::records(vec![ptr], Vec::new()))
    }

    fn node(
        &self,
        qname: &Name,
        qtype: RecordType,
        dc: Option<&str>,
        node: &str,
        f: &Fetched,
    ) -> Lookup<Answer> {
        let nodes = self.nodes_of(dc, f)?;
        let Some(n) = nodes.list.by_name.get(node) else {
            return Ok(Answer::nxdomain().resting_on(nodes.stale));
        };
        Ok(self.node_records(qname, qtype, n).resting_on(nodes.stale))
    }

    fn node_records(&self, qname: &Name, qtype: RecordType, n: &NodeRecords) -> Answer {
        node_records(
            qname,
            qtype,
            n,
            self.options.node_ttl,
            self.options.node_meta_txt,
        )
    }

    fn addr(&self, qname: &Name, qtype: RecordType, ip: IpAddr) -> Answer {
        let fits = matches!(
            (qtype, ip),
            (RecordType::A, IpAddr::V4(_))
                | (RecordType::AAAA, IpAddr::V6(_))
                | (RecordType::ANY, _)
        );
        if !fits {
            return Answer::nodata();
        }
        Answer::records(
            vec![Record::from_rdata(
                qname.clone(),
                self.options.node_ttl,
                ip_rdata(ip),
            )],
            Vec::new(),
        )
    }
}
