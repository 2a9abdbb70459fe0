//! DNS data prepared when the catalog changes, so that answering a query is a lookup and a
//! few copies: the health filter, the address choice, SRV targets, their additional records
//! and the tag index are computed here, once per Consul update, never per query.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use ipnet::IpNet;

use super::DomainId;
use crate::model::{AgentService, CheckStatus, Node, ServiceEntry};

/// What the preparation needs to know of the zone.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Served domains, lower-case FQDNs: the primary first, then `alt_domain`.
    pub domains: Vec<Name>,
    /// The local datacenter, lower-case.
    pub datacenter: String,
    /// `only_passing`: drop instances with a warning check too.
    pub only_passing: bool,
    /// `node_ttl` in seconds.
    pub node_ttl: u32,
    /// `enable_additional_node_meta_txt`.
    pub node_meta_txt: bool,
    /// `internal_cidrs`: when not empty, only addresses inside these networks are answered.
    pub internal_cidrs: Vec<IpNet>,
    /// Translate to WAN addresses (`translate_wan_addrs` and `datacenter` is remote, and the
    /// agent did not translate already).
    pub wan: bool,
}

/// [`Settings`] with what is worked out from them once: the SRV target suffixes
/// `addr.<dc>.<domain>.` and `node.<dc>.<domain>.` of each served domain (None when too
/// long), as SRV targets are named when an answer is built. What records are built with.
#[derive(Debug)]
pub struct RecordSettings {
    settings: Settings,
    suffixes: Box<[DomainSuffixes]>,
}

/// `addr.<dc>.<domain>.` and `node.<dc>.<domain>.` of one served domain.
type DomainSuffixes = (Option<Name>, Option<Name>);

impl RecordSettings {
    pub fn new(settings: Settings) -> Self {
        let suffix = |kind: &[u8], domain: &Name| {
            Name::new()
                .append_label(kind)
                .and_then(|n| n.append_label(settings.datacenter.as_bytes()))
                .and_then(|n| n.append_domain(domain))
                .ok()
        };
        let suffixes = settings
            .domains
            .iter()
            .map(|domain| (suffix(b"addr", domain), suffix(b"node", domain)))
            .collect();
        RecordSettings { settings, suffixes }
    }

    /// The settings they were worked out from.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The `addr` and `node` suffixes of served domain `d`.
    fn srv_suffixes(&self, d: DomainId) -> Option<&DomainSuffixes> {
        self.suffixes.get(d.index())
    }
}

impl Default for RecordSettings {
    fn default() -> Self {
        RecordSettings::new(Settings::default())
    }
}

impl std::ops::Deref for RecordSettings {
    type Target = Settings;

    fn deref(&self) -> &Settings {
        &self.settings
    }
}

/// Where an answer for one instance or node points, for one kind of question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An IP address. `node_record`: it is the node's own address (SRV target
    /// `<node>.node.<dc>.<domain>`), else `<hex>.addr.<dc>.<domain>`.
    Ip { ip: IpAddr, node_record: bool },
    /// A hostname (answered with a CNAME). Boxed: rare, and a `Name` would make every
    /// target (three per instance) 88 bytes instead of 24.
    Fqdn(Box<Name>),
}

/// Which address families a question accepts (Consul's `translateAddressAccept`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accept {
    V4,
    V6,
    Any,
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.parse().ok()
}

/// The addresses Consul chooses from: the default one and the IPv4/IPv6 tagged ones. With
/// WAN translation (a remote datacenter and `translate_wan_addrs`) the `wan*` tagged
/// addresses replace them where present (dns-spec.md §8).
struct Addrs<'a> {
    default: &'a str,
    v4: Option<&'a str>,
    v6: Option<&'a str>,
}

impl<'a> Addrs<'a> {
    fn pick(tagged: impl Fn(&str) -> Option<&'a str>, address: &'a str, wan: bool) -> Self {
        let tagged = |k: &str| tagged(k).filter(|a| !a.is_empty());
        let lan = Addrs {
            default: address,
            v4: tagged("lan_ipv4"),
            v6: tagged("lan_ipv6"),
        };
        if !wan {
            return lan;
        }
        Addrs {
            default: tagged("wan").unwrap_or(lan.default),
            v4: tagged("wan_ipv4").or(lan.v4),
            v6: tagged("wan_ipv6").or(lan.v6),
        }
    }

    fn of_service(service: &'a AgentService, wan: bool) -> Self {
        let tagged = |k: &str| service.tagged_addresses.get(k).map(|a| a.address.as_str());
        Self::pick(tagged, &service.address, wan)
    }

    fn of_node(node: &'a Node, wan: bool) -> Self {
        Self::pick(
            |k| node.tagged_addresses.get(k).map(String::as_str),
            &node.address,
            wan,
        )
    }

    /// Consul's `translateAddressAccept`: tagged IPv6/IPv4 first, then the default address
    /// if its family fits (or it is a hostname). "" when nothing fits.
    fn choose(&self, accept: Accept) -> &'a str {
        // `Any` accepts both families, and Consul tries IPv6 first (translate_addr.go).
        if let (Accept::V6 | Accept::Any, Some(v6)) = (accept, self.v6) {
            return v6;
        }
        if let (Accept::V4 | Accept::Any, Some(v4)) = (accept, self.v4) {
            return v4;
        }
        let default = self.default;
        if accept == Accept::Any && !default.is_empty() {
            return default;
        }
        match parse_ip(default) {
            Some(IpAddr::V4(_)) if accept == Accept::V4 => default,
            Some(IpAddr::V6(_)) if accept == Accept::V6 => default,
            None if !default.is_empty() => default,
            _ => "",
        }
    }
}

/// The port of an instance: the `wan` tagged port when translating and set, else its own.
fn service_port(service: &AgentService, wan: bool) -> u16 {
    match service.tagged_addresses.get("wan") {
        Some(a) if wan && a.port != 0 => a.port,
        _ => service.port,
    }
}

/// Consul's per-instance decision tree (dns-spec.md §6.1) for one kind of question.
fn instance_target(
    accept: Accept,
    service: &AgentService,
    node: &Node,
    wan: bool,
) -> Option<Target> {
    let svc = Addrs::of_service(service, wan).choose(accept);
    let node_addr = Addrs::of_node(node, wan).choose(accept);
    match (svc.is_empty(), node_addr.is_empty()) {
        (true, true) => None,
        (true, false) => match parse_ip(node_addr) {
            Some(ip) => Some(Target::Ip {
                ip,
                node_record: node_addr == node.address,
            }),
            None => fqdn(node_addr).map(|n| Target::Fqdn(Box::new(n))),
        },
        (false, _) => match parse_ip(svc) {
            Some(ip) => Some(Target::Ip {
                ip,
                node_record: false,
            }),
            None => fqdn(svc).map(|n| Target::Fqdn(Box::new(n))),
        },
    }
}

fn node_target(accept: Accept, node: &Node, wan: bool) -> Option<Target> {
    let addr = Addrs::of_node(node, wan).choose(accept);
    if addr.is_empty() {
        return None;
    }
    match parse_ip(addr) {
        Some(ip) => Some(Target::Ip {
            ip,
            node_record: addr == node.address,
        }),
        None => fqdn(addr).map(|n| Target::Fqdn(Box::new(n))),
    }
}

fn fqdn(host: &str) -> Option<Name> {
    let mut name = Name::from_ascii(host).ok()?;
    name.set_fqdn(true);
    Some(name)
}

/// The A or AAAA record data of an IP.
pub fn ip_rdata(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// `<hex>` of `<hex>.addr.`: 8 lower-case hex digits for IPv4, 32 for IPv6.
pub fn hex_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{:08x}", u32::from(v4)),
        IpAddr::V6(v6) => format!("{:032x}", u128::from(v6)),
    }
}

/// The IP of a `<hex>.addr.` label, if it is 8 or 32 hex digits.
pub fn ip_from_hex(hex: &str) -> Option<IpAddr> {
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    match hex.len() {
        8 => u32::from_str_radix(hex, 16)
            .ok()
            .map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        32 => u128::from_str_radix(hex, 16)
            .ok()
            .map(|v| IpAddr::V6(Ipv6Addr::from(v))),
        _ => None,
    }
}

/// `<first>.<kind>.<dc>.<domain>`, or None when `first` is not a valid DNS label.
pub fn generated_name(first: &str, kind: &str, dc: &str, domain: &Name) -> Option<Name> {
    let relative = Name::from_ascii(format!("{first}.{kind}.{dc}")).ok()?;
    relative.append_domain(domain).ok()
}

/// Node meta as TXT strings, RFC 1464 `key=value` as Consul writes them (dns-spec.md §5).
pub fn meta_txt(meta: &std::collections::BTreeMap<String, String>) -> Vec<TXT> {
    meta.iter()
        .map(|(k, v)| {
            let s = if k.to_ascii_lowercase().starts_with("rfc1035-") {
                v.clone()
            } else {
                format!("{}={}", rfc1464_key(k), v.replace('`', "``"))
            };
            long_txt(&s)
        })
        .collect()
}

/// The most a TXT character-string holds.
const TXT_STRING_MAX: usize = 255;

/// A TXT of one text of any length: cut into character-strings of at most 255 bytes, which
/// clients join (as for long SPF or DKIM records). One longer string cannot be encoded,
/// and would make every response carrying it fail (meta values may be 512 bytes).
fn long_txt(s: &str) -> TXT {
    if s.is_empty() {
        return TXT::from_bytes(vec![&[]]);
    }
    TXT::from_bytes(s.as_bytes().chunks(TXT_STRING_MAX).collect())
}

fn rfc1464_key(key: &str) -> String {
    let escaped = key.replace('`', "``").replace('=', "`=");
    let lead = escaped.len() - escaped.trim_start_matches(' ').len();
    let trimmed = escaped.trim_start_matches(' ');
    let trail = trimmed.len() - trimmed.trim_end_matches(' ').len();
    let core = trimmed.trim_end_matches(' ');
    format!("{}{}{}", "` ".repeat(lead), core, "` ".repeat(trail))
}

/// An SRV target in one served domain. Worked out when an SRV answer is built, from the
/// instance's address: stored, it cost 144 bytes per instance.
#[derive(Debug, Clone)]
pub struct SrvTarget {
    pub name: Name,
    /// The target's address, for its record in Additional (none for a hostname target).
    pub address: Option<IpAddr>,
}

impl SrvTarget {
    /// The target's address record, with `ttl`.
    pub fn address_record(&self, ttl: u32) -> Option<Record> {
        let ip = self.address?;
        Some(Record::from_rdata(self.name.clone(), ttl, ip_rdata(ip)))
    }
}

/// The SRV target name of `target` in served domain `d`: `<node>.node.<dc>.<domain>` for a
/// node's own address (given its lower-case name), else `<hex>.addr.<dc>.<domain>`, or the
/// hostname. None when the name would not be valid.
fn srv_name(
    target: &Target,
    node: Option<&str>,
    settings: &RecordSettings,
    d: DomainId,
) -> Option<Name> {
    match target {
        Target::Ip { ip, node_record } => {
            let by_node = match (node_record, node) {
                (true, Some(node)) => node_name(node, settings, d),
                _ => None,
            };
            by_node.or_else(|| addr_name(*ip, settings.srv_suffixes(d)?.0.as_ref()?))
        }
        Target::Fqdn(host) => Some(Name::clone(host)),
    }
}

/// `<hex>.` prepended to `addr.<dc>.<domain>.`, built as labels: parsing the text form took
/// most of the time of an SRV answer built from scratch.
fn addr_name(ip: IpAddr, suffix: &Name) -> Option<Name> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let (bits, len) = match ip {
        IpAddr::V4(v4) => (u128::from(v4.to_bits()), 8),
        IpAddr::V6(v6) => (v6.to_bits(), 32),
    };
    let mut hex = [0u8; 32];
    for (i, digit) in hex[..len].iter_mut().enumerate() {
        *digit = DIGITS[((bits >> (4 * (len - 1 - i))) & 0xf) as usize];
    }
    Name::new()
        .append_label(&hex[..len])
        .and_then(|n| n.append_name(suffix))
        .ok()
}

/// `<node>.node.<dc>.<domain>` in served domain `d`. A name of one plain label (the usual)
/// is prepended to the suffix; others (dots, escapes) are parsed as their text form.
fn node_name(node: &str, settings: &RecordSettings, d: DomainId) -> Option<Name> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if node.is_empty() || !node.bytes().all(plain) {
        let domain = settings.domains.get(d.index())?;
        return generated_name(node, "node", &settings.datacenter, domain);
    }
    let suffix = settings.srv_suffixes(d)?.1.as_ref()?;
    Name::new()
        .append_label(node.as_bytes())
        .and_then(|n| n.append_name(suffix))
        .ok()
}

/// What SRV answers need to know of a node: its lower-case name (for a target named after
/// it) and its meta (`enable_additional_node_meta_txt`). Kept only for the nodes that need
/// it.
#[derive(Debug, Clone)]
struct NodeFacts {
    id: u32,
    name: Box<str>,
    meta: Vec<TXT>,
}

/// One healthy instance, ready to answer.
#[derive(Debug, Clone)]
pub struct InstanceRecords {
    /// The target of ANY questions; A and AAAA mostly have the same one (`a`, `aaaa`).
    pub any: Option<Target>,
    a: Family,
    aaaa: Family,
    pub port: u16,
    pub weight: u16,
    /// Instances with the same SRV dedupe key (Consul's: node, address and port) share this
    /// number: answering compares integers, not strings.
    pub srv_key_id: u32,
    /// Instances whose SRV target is the same name share this number: their address
    /// records are the same and go in once.
    pub target_id: u32,
    /// Instances on the same node share this number: the node's meta TXT goes in once.
    pub node_id: u32,
    /// The instance has an SRV target in every served domain.
    pub has_srv: bool,
}

/// Where an instance's A or AAAA answer points. Mostly at the `any` target: a target of
/// its own (from tagged addresses) is kept in the service's `own_targets`, so an instance
/// is 48 bytes smaller than with three targets inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    None,
    Any,
    Own,
}

/// Numbers equal strings in the order they are first seen. Only the numbers are kept:
/// the strings (node names, SRV keys) would cost an allocation each, per instance.
#[derive(Default)]
struct Numbering(HashMap<String, u32>);

impl Numbering {
    fn number(&mut self, key: String) -> u32 {
        let n = u32::try_from(self.0.len()).unwrap_or(u32::MAX);
        *self.0.entry(key).or_insert(n)
    }
}

/// Numbers the instances of one service by node, SRV key and SRV target, and collects the
/// facts of the nodes that SRV answers need.
#[derive(Default)]
struct Duplicates {
    nodes: Numbering,
    keys: Numbering,
    targets: Numbering,
    facts: Vec<NodeFacts>,
    own_targets: Vec<(u32, bool, Target)>,
    fallbacks: Vec<(u32, NodeFallback)>,
}

/// The node's own targets of an instance whose service address is a hostname: answered
/// instead when the hostname is the name asked (a service whose address names itself;
/// Consul's loop protection, dns-spec.md §6.1 rule 5).
#[derive(Debug, Clone, Default)]
struct NodeFallback {
    any: Option<Target>,
    a: Option<Target>,
    aaaa: Option<Target>,
}

/// The healthy instances of one service and its tag index, rebuilt on every change.
#[derive(Debug, Clone, Default)]
pub struct ServiceRecords {
    /// TTL of every record of this service (`service_ttl`).
    pub ttl: u32,
    pub instances: Vec<InstanceRecords>,
    /// None when no instance has a tag: two empty maps are 96 bytes, per service.
    tags: Option<Box<TagIndex>>,
    /// The Consul index this was built from.
    pub index: u64,
    /// Instances in the catalog, healthy or not.
    pub total: usize,
    /// Healthy instances left out because none of their addresses is inside
    /// `internal_cidrs`.
    pub excluded: usize,
    /// Every instance has the same weight: a uniform shuffle will do.
    pub uniform_weights: bool,
    /// Service addresses of all instances (for reverse lookups).
    pub addresses: Vec<IpAddr>,
    /// The service's virtual IP (tagged address `consul-virtual`), for `.virtual` names.
    pub virtual_ip: Option<IpAddr>,
    /// What it was prepared with: SRV targets are named from its datacenter and domains.
    settings: std::sync::Arc<RecordSettings>,
    /// By `node_id`, the nodes whose name or meta SRV answers need.
    nodes: Box<[NodeFacts]>,
    /// A and AAAA targets that differ from their instance's `any` target: (instance,
    /// whether AAAA, target).
    own_targets: Box<[(u32, bool, Target)]>,
    /// By instance, the node's targets of instances whose service address is a hostname.
    fallbacks: Box<[(u32, NodeFallback)]>,
}

/// The tags of a service's instances.
#[derive(Debug, Clone, Default)]
struct TagIndex {
    /// Healthy instances carrying each tag (lower-case).
    by_tag: HashMap<String, Vec<usize>>,
    /// Every tag of every instance, healthy or not (lower-case): a tag nobody carries is
    /// NXDOMAIN, a tag whose instances are all unhealthy is NODATA.
    all: HashSet<String>,
}

static NO_TAGS: std::sync::LazyLock<HashSet<String>> = std::sync::LazyLock::new(HashSet::new);

impl ServiceRecords {
    /// The target of instance `i` for an address question (`A`, `AAAA`, else ANY) named
    /// `qname`: the node's when the instance's own is the hostname `qname` itself.
    pub fn address_target(&self, i: usize, qtype: RecordType, qname: &Name) -> Option<&Target> {
        let own = self.own_address_target(i, qtype)?;
        match (own, self.fallback(i, qname)) {
            (Target::Fqdn(_), Some(node)) => match qtype {
                RecordType::A => node.a.as_ref(),
                RecordType::AAAA => node.aaaa.as_ref(),
                _ => node.any.as_ref(),
            },
            _ => Some(own),
        }
    }

    /// The node fallback of instance `i` if its hostname target is `qname`.
    fn fallback(&self, i: usize, qname: &Name) -> Option<&NodeFallback> {
        let inst = self.instances.get(i)?;
        match &inst.any {
            Some(Target::Fqdn(host)) if host.eq_ignore_root(qname) => self
                .fallbacks
                .iter()
                .find(|(j, _)| *j as usize == i)
                .map(|(_, f)| f),
            _ => None,
        }
    }

    fn own_address_target(&self, i: usize, qtype: RecordType) -> Option<&Target> {
        let inst = self.instances.get(i)?;
        let (family, v6) = match qtype {
            RecordType::A => (inst.a, false),
            RecordType::AAAA => (inst.aaaa, true),
            _ => return inst.any.as_ref(),
        };
        match family {
            Family::None => None,
            Family::Any => inst.any.as_ref(),
            Family::Own => self
                .own_targets
                .iter()
                .find(|(j, six, _)| *j as usize == i && *six == v6)
                .map(|(_, _, t)| t),
        }
    }

    /// The SRV target of instance `i` in served domain `d`, for a question named `qname`
    /// (the node's when the instance's own is the hostname `qname` itself).
    pub fn srv_target(&self, i: usize, d: DomainId, qname: &Name) -> Option<SrvTarget> {
        let inst = self.instances.get(i)?;
        if !inst.has_srv {
            return None;
        }
        let target = match self.fallback(i, qname) {
            Some(node) => node.any.as_ref()?,
            None => inst.any.as_ref()?,
        };
        let node = self.node_facts(inst.node_id).map(|f| &*f.name);
        let name = srv_name(target, node, &self.settings, d)?;
        let address = match target {
            Target::Ip { ip, .. } => Some(*ip),
            Target::Fqdn(_) => None,
        };
        Some(SrvTarget { name, address })
    }

    /// The meta TXT records of the node of `inst` in served domain `d`, which go in the
    /// Additional section of SRV answers with `enable_additional_node_meta_txt`.
    pub fn node_meta_records(&self, inst: &InstanceRecords, d: DomainId) -> Vec<Record> {
        let Some(facts) = self.node_facts(inst.node_id) else {
            return Vec::new();
        };
        if facts.meta.is_empty() {
            return Vec::new();
        }
        let Some(name) = node_name(&facts.name, &self.settings, d) else {
            return Vec::new();
        };
        facts
            .meta
            .iter()
            .map(|t| Record::from_rdata(name.clone(), self.ttl, RData::TXT(t.clone())))
            .collect()
    }

    fn node_facts(&self, id: u32) -> Option<&NodeFacts> {
        self.nodes.iter().find(|f| f.id == id)
    }

    /// The healthy instances carrying `tag` (lower-case), None when none does.
    pub fn with_tag(&self, tag: &str) -> Option<&[usize]> {
        self.tags.as_ref()?.by_tag.get(tag).map(Vec::as_slice)
    }

    /// Every tag of every instance, healthy or not (lower-case).
    pub fn all_tags(&self) -> &HashSet<String> {
        self.tags.as_ref().map_or(&NO_TAGS, |t| &t.all)
    }
}

/// Consul's health filter (dns-spec.md §7): any critical check drops the instance;
/// with `only_passing`, any check that is not passing does.
fn healthy(entry: &ServiceEntry, only_passing: bool) -> bool {
    entry.checks.iter().all(|c| match c.status {
        CheckStatus::Passing => true,
        CheckStatus::Warning => !only_passing,
        CheckStatus::Critical => false,
        CheckStatus::Other => !only_passing,
    })
}

/// Consul's `findWeight`: the aggregated status of the instance's checks.
fn weight(entry: &ServiceEntry) -> u16 {
    let worst = entry
        .checks
        .iter()
        .filter(|c| {
            c.service_id.is_empty()
                || c.service_name == entry.service.service
                || c.service_id == entry.service.id
        })
        .map(|c| c.status)
        .max()
        .unwrap_or(CheckStatus::Passing);
    match worst {
        CheckStatus::Passing => entry.service.weights.passing,
        CheckStatus::Warning => entry.service.weights.warning,
        CheckStatus::Critical => 0,
        CheckStatus::Other => 1,
    }
}

impl ServiceRecords {
    pub fn build(
        entries: &[ServiceEntry],
        ttl: u32,
        index: u64,
        settings: &std::sync::Arc<RecordSettings>,
    ) -> Self {
        let mut duplicates = Duplicates::default();
        let mut tag_index = TagIndex::default();
        let mut out = ServiceRecords {
            ttl,
            index,
            total: entries.len(),
            settings: std::sync::Arc::clone(settings),
            ..Default::default()
        };
        for entry in entries {
            let tags: Vec<String> = entry
                .service
                .tags
                .iter()
                .map(|t| t.to_ascii_lowercase())
                .collect();
            tag_index.all.extend(tags.iter().cloned());
            if out.virtual_ip.is_none() {
                out.virtual_ip = entry
                    .service
                    .tagged_addresses
                    .get("consul-virtual")
                    .and_then(|a| parse_ip(&a.address));
            }
            if let Some(ip) = parse_ip(&entry.service.address) {
                if !out.addresses.contains(&ip) {
                    out.addresses.push(ip);
                }
            }
            if !healthy(entry, settings.only_passing) {
                continue;
            }
            let i = out.instances.len();
            let Some(instance) = prepare_instance(entry, settings, &mut duplicates, i) else {
                out.excluded += 1;
                continue;
            };
            let i = out.instances.len();
            for tag in &tags {
                let list = tag_index.by_tag.entry(tag.clone()).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
            out.instances.push(instance);
        }
        out.instances.shrink_to_fit();
        out.addresses.shrink_to_fit();
        out.nodes = duplicates.facts.into_boxed_slice();
        out.own_targets = duplicates.own_targets.into_boxed_slice();
        out.fallbacks = duplicates.fallbacks.into_boxed_slice();
        if !tag_index.all.is_empty() {
            out.tags = Some(Box::new(tag_index));
        }
        out.uniform_weights = out.instances.windows(2).all(|w| w[0].weight == w[1].weight);
        out
    }
}

/// The instance ready to answer, or None when `internal_cidrs` leaves it no address.
fn prepare_instance(
    entry: &ServiceEntry,
    settings: &RecordSettings,
    duplicates: &mut Duplicates,
    i: usize,
) -> Option<InstanceRecords> {
    let target = |accept| {
        if settings.internal_cidrs.is_empty() {
            instance_target(accept, &entry.service, &entry.node, settings.wan)
        } else {
            internal_target(accept, entry, &settings.internal_cidrs)
        }
    };
    let any = target(Accept::Any);
    if any.is_none() && !settings.internal_cidrs.is_empty() {
        return None;
    }
    let node = entry.node.node.to_ascii_lowercase();
    let srv_key = format!(
        "{}:{}:{}",
        node,
        match &any {
            Some(Target::Ip { ip, .. }) => ip.to_string(),
            Some(Target::Fqdn(n)) => n.to_ascii(),
            None => String::new(),
        },
        service_port(&entry.service, settings.wan)
    );
    // An SRV target needs a valid name in every served domain; the first one numbers it.
    let first_srv = any.as_ref().and_then(|t| {
        let first = srv_name(t, Some(&node), settings, DomainId::PRIMARY)?;
        DomainId::all(settings.domains.len())
            .skip(1)
            .all(|d| srv_name(t, Some(&node), settings, d).is_some())
            .then_some(first)
    });
    let has_srv = first_srv.is_some();
    let target_name = first_srv
        .map(|n| n.to_ascii().to_ascii_lowercase())
        .unwrap_or_default();
    // A hostname service address may name the very name asked: the node answers then.
    let fallback = match &any {
        Some(Target::Fqdn(_)) if !entry.service.address.is_empty() => {
            let node_only = |accept| node_target(accept, &entry.node, settings.wan);
            Some(NodeFallback {
                any: node_only(Accept::Any),
                a: node_only(Accept::V4),
                aaaa: node_only(Accept::V6),
            })
        }
        _ => None,
    };
    let fallback_by_node = fallback.as_ref().is_some_and(|f| {
        matches!(
            f.any,
            Some(Target::Ip {
                node_record: true,
                ..
            })
        )
    });
    let (needs_name, needs_meta) = match &any {
        Some(Target::Ip { node_record, .. }) if has_srv => (
            *node_record,
            settings.node_meta_txt && !entry.node.meta.is_empty(),
        ),
        _ => (fallback_by_node, false),
    };
    let node_id = duplicates.nodes.number(node.clone());
    if (needs_name || needs_meta) && !duplicates.facts.iter().any(|f| f.id == node_id) {
        duplicates.facts.push(NodeFacts {
            id: node_id,
            name: node.into_boxed_str(),
            meta: if settings.node_meta_txt {
                meta_txt(&entry.node.meta)
            } else {
                Vec::new()
            },
        });
    }
    let mut family = |t: Option<Target>, v6: bool| match t {
        None => Family::None,
        Some(t) if Some(&t) == any.as_ref() => Family::Any,
        Some(t) => {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            duplicates.own_targets.push((i, v6, t));
            Family::Own
        }
    };
    let a = family(target(Accept::V4), false);
    let aaaa = family(target(Accept::V6), true);
    if let Some(f) = fallback {
        duplicates
            .fallbacks
            .push((u32::try_from(i).unwrap_or(u32::MAX), f));
    }
    Some(InstanceRecords {
        a,
        aaaa,
        any,
        port: service_port(&entry.service, settings.wan),
        weight: weight(entry),
        srv_key_id: duplicates.keys.number(srv_key),
        target_id: duplicates.targets.number(target_name),
        node_id,
        has_srv,
    })
}

/// Tagged address keys in the order `internal_cidrs` tries them (others follow, by name).
const TAGGED_ORDER: [&str; 6] = ["lan_ipv4", "lan_ipv6", "lan", "wan_ipv4", "wan_ipv6", "wan"];

fn tagged_in_order<'a, V>(
    tagged: &'a std::collections::BTreeMap<String, V>,
    addr: impl Fn(&'a V) -> &'a str,
) -> Vec<&'a str> {
    let known = TAGGED_ORDER
        .iter()
        .filter_map(|k| tagged.get(*k).map(&addr));
    let others = tagged
        .iter()
        .filter(|(k, _)| !TAGGED_ORDER.contains(&k.as_str()))
        .map(|(_, v)| addr(v));
    known.chain(others).collect()
}

/// With `internal_cidrs`: the first address inside them, trying the service address, the
/// service's tagged addresses, then the node's address and tagged addresses.
fn internal_target(accept: Accept, entry: &ServiceEntry, cidrs: &[IpNet]) -> Option<Target> {
    let (service, node) = (&entry.service, &entry.node);
    std::iter::once(service.address.as_str())
        .chain(tagged_in_order(&service.tagged_addresses, |a| {
            a.address.as_str()
        }))
        .chain(std::iter::once(node.address.as_str()))
        .chain(tagged_in_order(&node.tagged_addresses, String::as_str))
        .filter_map(|a| Some((a, parse_ip(a)?)))
        .find(|(_, ip)| {
            let family = match accept {
                Accept::V4 => ip.is_ipv4(),
                Accept::V6 => ip.is_ipv6(),
                Accept::Any => true,
            };
            family && cidrs.iter().any(|net| net.contains(ip))
        })
        .map(|(a, ip)| Target::Ip {
            ip,
            node_record: a == node.address,
        })
}

/// A node, ready to answer `<node>.node.<dc>.<domain>`.
#[derive(Debug, Clone)]
pub struct NodeRecords {
    pub a: Option<Target>,
    pub aaaa: Option<Target>,
    pub any: Option<Target>,
    pub txt: Vec<TXT>,
}

/// Every node of the local datacenter by lower-case name.
#[derive(Debug, Clone, Default)]
pub struct NodeTable {
    pub by_name: HashMap<String, NodeRecords>,
    /// Node address -> node name (the first by name, as Consul's reverse lookup).
    pub by_addr: HashMap<IpAddr, String>,
    pub index: u64,
}

impl NodeTable {
    /// `wan`: translate to WAN addresses (a remote datacenter with `translate_wan_addrs`).
    pub fn build(nodes: &[Node], index: u64, wan: bool) -> Self {
        let mut table = NodeTable {
            index,
            ..Default::default()
        };
        let mut sorted: Vec<&Node> = nodes.iter().collect();
        sorted.sort_by(|a, b| a.node.cmp(&b.node));
        for n in sorted {
            if let Some(ip) = parse_ip(&n.address) {
                table.by_addr.entry(ip).or_insert_with(|| n.node.clone());
            }
            table.by_name.insert(
                n.node.to_ascii_lowercase(),
                NodeRecords {
                    a: node_target(Accept::V4, n, wan),
                    aaaa: node_target(Accept::V6, n, wan),
                    any: node_target(Accept::Any, n, wan),
                    txt: meta_txt(&n.meta),
                },
            );
        }
        table
    }
}

/// The record answering an A/AAAA/ANY question for one target, owned by `owner`.
pub fn target_record(owner: &Name, ttl: u32, target: &Target) -> Record {
    match target {
        Target::Ip { ip, .. } => Record::from_rdata(owner.clone(), ttl, ip_rdata(*ip)),
        Target::Fqdn(host) => {
            Record::from_rdata(owner.clone(), ttl, RData::CNAME(CNAME(Name::clone(host))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HealthCheck, ServiceAddress};
    use std::sync::Arc;

    fn settings() -> Settings {
        Settings {
            domains: vec![Name::from_ascii("consul.").unwrap()],
            datacenter: "dc1".into(),
            only_passing: false,
            node_ttl: 0,
            node_meta_txt: true,
            internal_cidrs: Vec::new(),
            wan: false,
        }
    }

    fn entry(node_addr: &str, svc_addr: &str, checks: &[CheckStatus]) -> ServiceEntry {
        ServiceEntry {
            node: Node {
                node: "Node1".into(),
                address: node_addr.into(),
                datacenter: "dc1".into(),
                ..Default::default()
            },
            service: AgentService {
                id: "web1".into(),
                service: "web".into(),
                tags: vec!["Primary".into()],
                address: svc_addr.into(),
                port: 80,
                ..Default::default()
            },
            checks: checks
                .iter()
                .map(|s| HealthCheck {
                    status: *s,
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn address_choice_follows_consul() {
        let ip = |s: &str| {
            Some(Target::Ip {
                ip: s.parse().unwrap(),
                node_record: false,
            })
        };
        // Service address wins, and is an IP record even for SRV.
        let e = entry("192.168.0.1", "10.2.0.1", &[]);
        assert_eq!(
            instance_target(Accept::V4, &e.service, &e.node, false),
            ip("10.2.0.1")
        );
        // No service address: the node's own address is a node record.
        let e = entry("192.168.0.1", "", &[]);
        assert_eq!(
            instance_target(Accept::Any, &e.service, &e.node, false),
            Some(Target::Ip {
                ip: "192.168.0.1".parse().unwrap(),
                node_record: true
            })
        );
        // AAAA of an IPv4-only instance: nothing (NODATA).
        let e = entry("192.168.0.1", "10.2.0.1", &[]);
        assert_eq!(
            instance_target(Accept::V6, &e.service, &e.node, false),
            None
        );
        // IPv6 service on an IPv4 node: A falls back to the node.
        let e = entry("192.168.0.1", "2001:db8::1", &[]);
        assert_eq!(
            instance_target(Accept::V4, &e.service, &e.node, false),
            Some(Target::Ip {
                ip: "192.168.0.1".parse().unwrap(),
                node_record: true
            })
        );
        // lan_ipv4 tagged address wins for A.
        let mut e = entry("192.168.0.1", "2001:db8::1", &[]);
        e.service.tagged_addresses.insert(
            "lan_ipv4".into(),
            ServiceAddress {
                address: "10.2.0.9".into(),
                port: 80,
            },
        );
        assert_eq!(
            instance_target(Accept::V4, &e.service, &e.node, false),
            ip("10.2.0.9")
        );
        // Hostname service address.
        let e = entry("192.168.0.1", "db.example.com", &[]);
        assert_eq!(
            instance_target(Accept::V4, &e.service, &e.node, false),
            Some(Target::Fqdn(Box::new(
                Name::from_ascii("db.example.com.").unwrap()
            )))
        );
    }

    #[test]
    fn health_filter_and_tags() {
        let entries = vec![
            entry("192.168.0.1", "10.2.0.1", &[CheckStatus::Passing]),
            entry("192.168.0.2", "10.2.0.2", &[CheckStatus::Warning]),
            entry(
                "192.168.0.3",
                "10.2.0.3",
                &[CheckStatus::Passing, CheckStatus::Critical],
            ),
        ];
        let p = ServiceRecords::build(&entries, 5, 7, &Arc::new(RecordSettings::new(settings())));
        assert_eq!(p.instances.len(), 2);
        assert_eq!(p.with_tag("primary"), Some(&[0, 1][..]));
        assert!(p.all_tags().contains("primary"));
        let s = Settings {
            only_passing: true,
            ..settings()
        };
        assert_eq!(
            ServiceRecords::build(&entries, 5, 7, &Arc::new(RecordSettings::new(s)))
                .instances
                .len(),
            1
        );
    }

    #[test]
    fn srv_targets_and_additionals() {
        let settings = Arc::new(RecordSettings::new(settings()));
        let p = ServiceRecords::build(&[entry("192.168.0.1", "10.2.0.1", &[])], 5, 1, &settings);
        let srv = p.srv_target(0, DomainId::PRIMARY, &Name::root()).unwrap();
        assert_eq!(srv.name.to_ascii(), "0a020001.addr.dc1.consul.");
        assert_eq!(
            srv.address_record(5).unwrap().to_string(),
            "0a020001.addr.dc1.consul. 5 IN A 10.2.0.1"
        );
        assert!(
            p.node_meta_records(&p.instances[0], DomainId::PRIMARY)
                .is_empty(),
            "no meta"
        );
        assert_eq!(
            p.srv_target(0, DomainId::all(2).last().unwrap(), &Name::root())
                .map(|t| t.name),
            None,
            "one domain"
        );
        // A service without an address: the target is the node, and its meta goes along.
        let mut on_node = entry("192.168.0.1", "", &[]);
        on_node.node.meta.insert("rack".into(), "r1".into());
        let p = ServiceRecords::build(&[on_node], 5, 1, &settings);
        let srv = p.srv_target(0, DomainId::PRIMARY, &Name::root()).unwrap();
        assert_eq!(srv.name.to_ascii(), "node1.node.dc1.consul.");
        let meta: Vec<String> = p
            .node_meta_records(&p.instances[0], DomainId::PRIMARY)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(meta, vec!["node1.node.dc1.consul. 5 IN TXT rack=r1"]);
    }

    #[test]
    fn addr_names_are_built_as_the_text_form_parses() {
        let settings = RecordSettings::new(settings());
        let domain = &settings.domains[DomainId::PRIMARY.index()];
        for ip in ["10.2.0.1", "255.0.171.9", "2001:db8::1", "fd00::abcd:ef01"] {
            let ip: IpAddr = ip.parse().unwrap();
            let target = Target::Ip {
                ip,
                node_record: false,
            };
            let built = srv_name(&target, None, &settings, DomainId::PRIMARY).unwrap();
            let parsed = generated_name(&hex_ip(ip), "addr", "dc1", domain).unwrap();
            assert!(built.eq_case(&parsed), "{built} vs {parsed}");
            assert!(built.is_fqdn());
        }
        for node in ["node1", "web_01", "Big-Node", "my.test-node", "odd node"] {
            let built = node_name(node, &settings, DomainId::PRIMARY);
            let parsed = generated_name(node, "node", "dc1", domain);
            assert_eq!(
                built.map(|n| n.to_ascii()),
                parsed.map(|n| n.to_ascii()),
                "{node}"
            );
        }
        // Settings for another datacenter name their targets there.
        let other = RecordSettings::new(Settings {
            datacenter: "dc2".into(),
            ..settings.settings().clone()
        });
        assert_eq!(
            node_name("node1", &other, DomainId::PRIMARY).map(|n| n.to_ascii()),
            Some("node1.node.dc2.consul.".to_string())
        );
    }

    #[test]
    fn address_targets_by_question_type() {
        let settings = Arc::new(RecordSettings::new(settings()));
        // An IPv6 service on an IPv4 node with a lan_ipv4: ANY and AAAA the service
        // address, A its own target.
        let mut tagged = entry("192.168.0.1", "2001:db8::1", &[]);
        tagged.service.tagged_addresses.insert(
            "lan_ipv4".into(),
            ServiceAddress {
                address: "10.2.0.9".into(),
                port: 80,
            },
        );
        let plain = entry("192.168.0.2", "10.2.0.1", &[]);
        let p = ServiceRecords::build(&[plain, tagged], 5, 1, &settings);
        let at = |i, qtype| match p.address_target(i, qtype, &Name::root()) {
            Some(Target::Ip { ip, .. }) => Some(ip.to_string()),
            Some(Target::Fqdn(n)) => Some(n.to_ascii()),
            None => None,
        };
        assert_eq!(at(0, RecordType::A).as_deref(), Some("10.2.0.1"));
        assert_eq!(at(0, RecordType::AAAA), None);
        assert_eq!(at(0, RecordType::ANY).as_deref(), Some("10.2.0.1"));
        assert_eq!(at(1, RecordType::A).as_deref(), Some("10.2.0.9"));
        assert_eq!(at(1, RecordType::AAAA).as_deref(), Some("2001:db8::1"));
        assert_eq!(at(1, RecordType::ANY).as_deref(), Some("10.2.0.9"));
        assert_eq!(at(2, RecordType::A), None, "no third instance");
    }

    #[test]
    fn hex_round_trip() {
        for ip in ["10.2.0.1", "2001:db8::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_from_hex(&hex_ip(ip)), Some(ip));
        }
        assert_eq!(ip_from_hex("zz000000"), None);
        assert_eq!(ip_from_hex("0a0200"), None);
    }

    #[test]
    fn long_meta_is_cut_into_strings() {
        let mut meta = std::collections::BTreeMap::new();
        meta.insert("k".to_string(), "v".repeat(600));
        meta.insert("rfc1035-e".to_string(), String::new());
        let txt = meta_txt(&meta);
        let lens: Vec<usize> = txt[0].txt_data.iter().map(|s| s.len()).collect();
        assert_eq!(lens, vec![255, 255, 92]);
        assert_eq!(
            txt[0].txt_data.concat(),
            format!("k={}", "v".repeat(600)).into_bytes()
        );
        assert_eq!(txt[1].txt_data.len(), 1);
    }

    #[test]
    fn rfc1464_escaping() {
        let mut meta = std::collections::BTreeMap::new();
        meta.insert(" a=b`c ".to_string(), "v`".to_string());
        meta.insert("rfc1035-raw".to_string(), "as is=".to_string());
        let txt: Vec<String> = meta_txt(&meta).iter().map(|t| t.to_string()).collect();
        assert!(txt.contains(&"` a`=b``c` =v``".to_string()), "{txt:?}");
        assert!(txt.contains(&"as is=".to_string()), "{txt:?}");
    }
}
