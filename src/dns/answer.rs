//! The outcome of a query (`Answer`) and the records assembled for it from a service's
//! prepared instances: which instances a name means (tags, hierarchical names), their
//! order (shuffled, by weight), and the A/AAAA/CNAME or SRV records with their Additional
//! section.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::SRV;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::metrics::NameForm;
use crate::view::freshness::ServiceBasis;
use crate::view::records::{ip_rdata, target_record, NodeRecords, ServiceRecords, Target};
use crate::view::Directory;
use crate::view::DomainId;

/// The outcome of a query, before limits and encoding.
#[derive(Debug, Default)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
    /// Add the SOA to Authority (negative answers).
    pub with_soa: bool,
    /// Records for Authority besides the SOA.
    pub authority: Vec<Record>,
    /// The data behind this answer comes from a watch that is failing, since this long
    /// (served within `max_stale`, marked with an Extended DNS Error "Stale Answer").
    pub stale: Option<Duration>,
    /// Set when the answer rests only on a local service's data (see `ServiceBasis`).
    pub basis: Option<Box<ServiceBasis>>,
    /// Some of the instances asked for were left out by a random draw (`a_record_limit`,
    /// or one hostname among several): another query may get other instances.
    pub cut: bool,
    /// It points at host names (a CNAME, SRV targets without an address) whose records
    /// are still to be added (`ConsulZone::chase`).
    pub hostnames: bool,
    /// Why there is no answer (a SERVFAIL): an RFC 8914 Extended DNS Error code
    /// ([`ede`]) and its text, sent to clients that sent EDNS.
    pub error: Option<(u16, String)>,
    /// What the name asked is (counted and logged with the query).
    pub form: NameForm,
}

/// RFC 8914 Extended DNS Errors: the option code and the INFO-CODEs we send.
pub mod ede {
    pub const OPTION: u16 = 15;
    pub const OTHER: u16 = 0;
    pub const STALE_ANSWER: u16 = 3;
    pub const NOT_READY: u16 = 14;
    pub const NO_REACHABLE_AUTHORITY: u16 = 22;
}

impl Answer {
    pub(super) fn records(answers: Vec<Record>, additionals: Vec<Record>) -> Self {
        if answers.is_empty() {
            return Answer::nodata();
        }
        Answer {
            answers,
            additionals,
            ..Default::default()
        }
    }

    pub(super) fn nodata() -> Self {
        Answer {
            with_soa: true,
            ..Default::default()
        }
    }

    pub(super) fn nxdomain() -> Self {
        Answer {
            rcode: ResponseCode::NXDomain,
            with_soa: true,
            ..Default::default()
        }
    }

    pub(super) fn code(rcode: ResponseCode) -> Self {
        Answer {
            rcode,
            ..Default::default()
        }
    }

    /// NXDOMAIN or NODATA from fresh data: no records but the zone's SOA, nothing else.
    /// Its response depends on the question only through the question itself.
    pub fn is_plain_negative(&self) -> bool {
        matches!(self.rcode, ResponseCode::NXDomain | ResponseCode::NoError)
            && self.with_soa
            && self.answers.is_empty()
            && self.authority.is_empty()
            && self.additionals.is_empty()
            && self.stale.is_none()
    }

    /// This answer, to a name of `form`.
    pub(super) fn of_form(mut self, form: NameForm) -> Self {
        self.form = form;
        self
    }

    /// Notes that this answer rests on data `stale` old (None: fresh).
    pub(super) fn resting_on(mut self, stale: Option<Duration>) -> Self {
        self.stale = self.stale.max(stale);
        self
    }
}

/// Finds the service a name means, and the tag filter left. For `a.b.c.service…` (`tag`
/// `a.b`, `service` `c`, as Consul reads it), the longest known service name first: the
/// service `a.b.c` (dotted, as marathon-consul registers `/a/b/c`… reversed, or any
/// dotted name), else the app whose path reversed is `a.b.c` (an alias: `/c/b/a` or
/// `c.b.a`), then `b.c` with tag `a`, and last `c` with tag `a.b`, Consul's reading. At
/// each length a service's own name wins over an alias. None when no reading names a
/// known service.
pub(crate) fn find_service<'a>(
    dir: &'a Directory,
    service: &'a str,
    tag: Option<&'a str>,
) -> Option<(&'a str, Option<Cow<'a, str>>)> {
    let known = |name: &str| {
        dir.services
            .get_key_value(name)
            .map(|(key, _)| key.as_str())
            .or_else(|| dir.aliases.get(name).map(String::as_str))
    };
    let Some(tag) = tag else {
        return known(service).map(|key| (key, None));
    };
    let full = format!("{tag}.{service}");
    // Each reading: a suffix of `full` at a label boundary names the service, what is
    // left of it the tags.
    let starts = std::iter::once(0).chain(full.match_indices('.').map(|(i, _)| i + 1));
    for start in starts {
        let Some(key) = known(&full[start..]) else {
            continue;
        };
        let rest = match start {
            0 => None,
            _ if start == tag.len() + 1 => Some(Cow::Borrowed(tag)),
            _ => Some(Cow::Owned(full[..start - 1].to_owned())),
        };
        return Some((key, rest));
    }
    None
}

/// The healthy instances carrying `tag`: Consul's meaning first (one tag, dots included);
/// when no instance has such a tag, `a.b` means every one of the tags `a` and `b`. None
/// when the tag is unknown to the service (NXDOMAIN); an empty list when it is known but no
/// healthy instance carries it (NODATA).
pub(crate) fn tagged(
    p: &ServiceRecords,
    known_tags: &HashSet<String>,
    tag: &str,
) -> Option<Vec<usize>> {
    let known = |t: &str| known_tags.contains(t) || p.all_tags().contains(t);
    if let Some(list) = p.with_tag(tag) {
        return Some(list.to_vec());
    }
    if known(tag) {
        return Some(Vec::new());
    }
    let parts: Vec<&str> = tag.split('.').collect();
    if parts.len() < 2 || !parts.iter().all(|t| known(t)) {
        return None;
    }
    let mut lists = parts.iter().map(|t| p.with_tag(t).unwrap_or(&[]));
    let first = lists.next().unwrap_or(&[]);
    let rest: Vec<&[usize]> = lists.collect();
    Some(
        first
            .iter()
            .copied()
            .filter(|i| rest.iter().all(|l| l.contains(i)))
            .collect(),
    )
}

/// Random order, drawn by weight when the instances' weights differ (Efraimidis-Spirakis),
/// so that when a limit cuts the answer the instances kept follow their Consul `Weights`.
pub(crate) fn shuffle(order: &mut [usize], p: &ServiceRecords) {
    let mut rng = rand::rng();
    if p.uniform_weights {
        order.shuffle(&mut rng);
        return;
    }
    let mut keyed: Vec<(f64, usize)> = order
        .iter()
        .map(|&i| {
            let w = f64::from(p.instances[i].weight);
            let u: f64 = rng.random_range(f64::EPSILON..1.0);
            (if w > 0.0 { -u.ln() / w } else { f64::INFINITY }, i)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (slot, (_, i)) in order.iter_mut().zip(keyed) {
        *slot = i;
    }
}

/// A/AAAA/ANY for the instances in `order` (already shuffled): one record per distinct
/// address; a hostname address becomes a CNAME, used only when no instance has an IP
/// (Consul answers a single CNAME chain).
pub(crate) fn address_records(
    qname: &Name,
    qtype: RecordType,
    p: &ServiceRecords,
    order: &[usize],
    limit: usize,
) -> Answer {
    let mut answers: Vec<Record> = Vec::new();
    let mut cname: Option<&Target> = None;
    let mut seen: Vec<IpAddr> = Vec::new();
    let mut cut = false;
    for (n, &i) in order.iter().enumerate() {
        match p.address_target(i, qtype, qname) {
            Some(Target::Ip { ip, .. }) => {
                if seen.contains(ip) {
                    continue;
                }
                seen.push(*ip);
                answers.push(Record::from_rdata(qname.clone(), p.ttl, ip_rdata(*ip)));
                if limit > 0 && answers.len() >= limit {
                    cut = n + 1 < order.len();
                    break;
                }
            }
            Some(t @ Target::Fqdn(_)) => {
                cname.get_or_insert(t);
            }
            None => {}
        }
    }
    let hostnames = answers.is_empty() && cname.is_some();
    if let (true, Some(t)) = (hostnames, cname) {
        answers.push(target_record(qname, p.ttl, t));
        cut = order.len() > 1;
    }
    Answer {
        cut,
        hostnames,
        ..Answer::records(answers, Vec::new())
    }
}

/// SRV for the instances in `order`, deduplicated as Consul does (node, address, port), with
/// each target's address (and node meta TXT) in Additional.
pub(crate) fn srv_records(
    qname: &Name,
    p: &ServiceRecords,
    order: &[usize],
    d: DomainId,
) -> Answer {
    let mut answers = Vec::with_capacity(order.len());
    let mut additionals: Vec<Record> = Vec::new();
    let mut seen_keys: Vec<u32> = Vec::with_capacity(order.len());
    let mut seen_targets: Vec<u32> = Vec::with_capacity(order.len());
    let mut seen_nodes: Vec<u32> = Vec::with_capacity(order.len());
    let mut hostnames = false;
    for &i in order {
        let inst = &p.instances[i];
        if !inst.has_srv || seen_keys.contains(&inst.srv_key_id) {
            continue;
        }
        let Some(target) = p.srv_target(i, d, qname) else {
            continue;
        };
        seen_keys.push(inst.srv_key_id);
        if matches!(inst.any, Some(Target::Fqdn(_))) {
            // A hostname, or the node standing in for it (its number is the hostname's).
            hostnames |= target.address.is_none();
            if !additionals.iter().any(|r| r.name == target.name) {
                additionals.extend(target.address_record(p.ttl));
            }
        } else if !seen_targets.contains(&inst.target_id) {
            seen_targets.push(inst.target_id);
            additionals.extend(target.address_record(p.ttl));
        }
        let srv = SRV::new(1, inst.weight, inst.port, target.name);
        answers.push(Record::from_rdata(qname.clone(), p.ttl, RData::SRV(srv)));
        if !seen_nodes.contains(&inst.node_id) {
            seen_nodes.push(inst.node_id);
            additionals.extend(p.node_meta_records(inst, d));
        }
    }
    Answer {
        hostnames,
        ..Answer::records(answers, additionals)
    }
}

/// The answer for a service name: the instances carrying `tag` (all without one), in
/// random order, as records for `qtype`. `limit`: `a_record_limit`.
pub(crate) fn service_records(
    qname: &Name,
    qtype: RecordType,
    d: DomainId,
    prepared: &ServiceRecords,
    known_tags: &HashSet<String>,
    tag: Option<&str>,
    limit: usize,
) -> Answer {
    let mut order: Vec<usize> = match tag {
        None => (0..prepared.instances.len()).collect(),
        Some(tag) => match tagged(prepared, known_tags, tag) {
            Some(list) => list,
            None => return Answer::nxdomain(),
        },
    };
    if order.is_empty() {
        return Answer::nodata();
    }
    shuffle(&mut order, prepared);
    instance_records(qname, qtype, d, prepared, &order, limit)
}

/// The records of the instances in `order` for `qtype`, in served domain `d`.
pub(crate) fn instance_records(
    qname: &Name,
    qtype: RecordType,
    d: DomainId,
    p: &ServiceRecords,
    order: &[usize],
    limit: usize,
) -> Answer {
    match qtype {
        RecordType::SRV => srv_records(qname, p, order, d),
        RecordType::A | RecordType::AAAA | RecordType::ANY => {
            address_records(qname, qtype, p, order, limit)
        }
        _ => Answer::nodata(),
    }
}

/// `<node>.node…`: its address for A/AAAA/ANY (ANY adds its meta TXT), its meta for TXT;
/// with `node_meta_txt` the meta goes in Additional.
pub(crate) fn node_records(
    qname: &Name,
    qtype: RecordType,
    n: &NodeRecords,
    ttl: u32,
    node_meta_txt: bool,
) -> Answer {
    let txt = || {
        n.txt
            .iter()
            .map(|t| Record::from_rdata(qname.clone(), ttl, RData::TXT(t.clone())))
    };
    let target = match qtype {
        RecordType::A => n.a.as_ref(),
        RecordType::AAAA => n.aaaa.as_ref(),
        RecordType::ANY => n.any.as_ref(),
        RecordType::TXT => return Answer::records(txt().collect(), Vec::new()),
        _ => return Answer::nodata(),
    };
    let Some(target) = target else {
        return Answer::nodata();
    };
    let answers = vec![target_record(qname, ttl, target)];
    let hostnames = matches!(target, Target::Fqdn(_));
    let answer = match qtype {
        RecordType::ANY => Answer::records(answers.into_iter().chain(txt()).collect(), Vec::new()),
        _ if node_meta_txt => Answer::records(answers, txt().collect()),
        _ => Answer::records(answers, Vec::new()),
    };
    Answer {
        hostnames,
        ..answer
    }
}
