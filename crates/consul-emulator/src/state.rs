//! Catalog data (nodes, services, checks) and Consul-style index tables.
//!
//! Index rules (Consul's memdb `index` table): every write bumps the raft index; the
//! resource indexes below move to that raft index only when the resource really changed:
//! * `nodes`: a node created, changed or removed;
//! * `services`: a service instance created, changed or removed;
//! * `service:<lowercase name>`: an instance of that service, its checks, or its node
//!   (fields or node-level checks) changed or was removed;
//! * `node:<lowercase name>`: anything on that node changed;
//! * `connect:<lowercase name>`: as `service:` for every Connect proxy whose destination is
//!   that service and every Connect-native instance of it;
//! * `ingress:<lowercase name>` (`ingress:*` for wildcards): an ingress-gateway config entry
//!   listing that service was written or deleted;
//! * `prepared-queries`, `config-entries`: any prepared query / config entry written.
//!
//! Every datacenter is a separate [`Catalog`] (its own cluster, own indexes).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use super::config_entry::ConfigEntry;
use super::query::QuerySpec;
use super::register::{CheckSpec, DeregisterRequest, NodeSpec, RegisterRequest, ServiceSpec};
use super::versioned::Versioned;
use super::EmulatorError;

#[derive(Debug, Clone)]
pub(super) struct NodeEntry {
    pub node: Versioned<NodeSpec>,
    /// By service ID.
    pub services: BTreeMap<String, Versioned<ServiceSpec>>,
    /// By check ID.
    pub checks: BTreeMap<String, Versioned<CheckSpec>>,
}

/// Which index a read endpoint reports and blocks on.
#[derive(Debug, Clone)]
pub(super) enum Resource {
    Raft,
    Nodes,
    Services,
    Service(String),
    Node(String),
    /// Proxies and Connect-native instances for a service.
    Connect(String),
    /// Ingress gateways fronting a service.
    Ingress(String),
    Queries,
    ConfigEntries,
}

/// The datacenters, each a separate cluster; the first is the agent's (primary).
pub(super) struct Datacenters {
    list: Vec<Catalog>,
}

impl Datacenters {
    /// Duplicate names (case-insensitive) are dropped.
    pub fn new(primary: &str, extra: &[String]) -> Self {
        let mut list: Vec<Catalog> = Vec::new();
        for name in std::iter::once(primary).chain(extra.iter().map(String::as_str)) {
            if !list.iter().any(|c| c.datacenter.eq_ignore_ascii_case(name)) {
                list.push(Catalog::new(name.to_string()));
            }
        }
        Datacenters { list }
    }

    /// Position of a datacenter (case-insensitive); absent or empty means the primary.
    pub fn position(&self, dc: Option<&str>) -> Option<usize> {
        match dc {
            None | Some("") => Some(0),
            Some(dc) => self
                .list
                .iter()
                .position(|c| c.datacenter.eq_ignore_ascii_case(dc)),
        }
    }

    pub fn at(&self, pos: usize) -> &Catalog {
        &self.list[pos]
    }

    pub fn get(&self, dc: Option<&str>) -> Option<&Catalog> {
        self.position(dc).map(|i| &self.list[i])
    }

    pub fn get_mut(&mut self, dc: Option<&str>) -> Option<&mut Catalog> {
        self.position(dc).map(|i| &mut self.list[i])
    }

    pub fn primary(&self) -> &Catalog {
        &self.list[0]
    }

    pub fn primary_mut(&mut self) -> &mut Catalog {
        &mut self.list[0]
    }

    pub fn names(&self) -> Vec<String> {
        self.list.iter().map(|c| c.datacenter.clone()).collect()
    }
}

pub(super) struct Catalog {
    pub datacenter: String,
    raft_index: u64,
    tables: HashMap<String, u64>,
    /// By lowercase node name (Consul's node index is case-insensitive).
    pub nodes: BTreeMap<String, NodeEntry>,
    /// Prepared queries by ID.
    pub queries: BTreeMap<String, Versioned<QuerySpec>>,
    /// Config entries by (kind, lowercase name).
    pub config_entries: BTreeMap<(String, String), Versioned<ConfigEntry>>,
    /// Number of snapshot restores; a change releases every blocked query.
    pub restores: u64,
    /// The instances of each service (by lower-case name): (node key, service ID), in
    /// node then ID order. Worked out once per write: every blocked query asks whether
    /// its service exists on each wake-up (a scan of every instance for each of a thousand
    /// of them made one change take milliseconds to show), and a health read scanned every
    /// instance of the catalog (30 ms a read at 300k instances).
    by_service: OnceLock<HashMap<String, Vec<(String, String)>>>,
}

const QUERIES_TABLE: &str = "prepared-queries";
const CONFIG_TABLE: &str = "config-entries";

fn service_key(name: &str) -> String {
    format!("service:{}", name.to_lowercase())
}

fn connect_key(name: &str) -> String {
    format!("connect:{}", name.to_lowercase())
}

fn ingress_key(name: &str) -> String {
    format!("ingress:{}", name.to_lowercase())
}

/// Keys bumped when an instance (or its checks or node) changes.
fn instance_keys(s: &ServiceSpec) -> Vec<String> {
    let mut keys = vec![service_key(&s.name)];
    keys.extend(s.connect_target().map(connect_key));
    keys
}

fn node_key(name: &str) -> String {
    format!("node:{}", name.to_lowercase())
}

impl Catalog {
    pub fn new(datacenter: String) -> Self {
        Catalog {
            datacenter,
            raft_index: 0,
            tables: HashMap::new(),
            nodes: BTreeMap::new(),
            queries: BTreeMap::new(),
            config_entries: BTreeMap::new(),
            restores: 0,
            by_service: OnceLock::new(),
        }
    }

    /// Starts a write: bumps and returns the raft index.
    fn next_index(&mut self) -> u64 {
        self.by_service = OnceLock::new();
        self.raft_index += 1;
        self.raft_index
    }

    pub fn raft_index(&self) -> u64 {
        self.raft_index
    }

    fn table(&self, key: &str) -> u64 {
        self.tables.get(key).copied().unwrap_or(0)
    }

    /// The index of a resource; an absent service or node reports its table's index so that
    /// blocking on it wakes when it appears. Never 0 (Consul sends 1 instead).
    pub fn index_of(&self, res: &Resource) -> u64 {
        let idx = match res {
            Resource::Raft => self.raft_index,
            Resource::Nodes => self.table("nodes"),
            Resource::Services => self.table("services"),
            Resource::Service(name) if self.has_service(name) => self.table(&service_key(name)),
            Resource::Service(_) => self.table("services"),
            Resource::Node(name) if self.node(name).is_some() => self.table(&node_key(name)),
            Resource::Node(_) => self.table("nodes"),
            Resource::Connect(name) if self.has_connect(name) => self.table(&connect_key(name)),
            Resource::Connect(_) => self.table("services"),
            Resource::Ingress(name) => self.ingress_index(name),
            Resource::Queries => self.table(QUERIES_TABLE),
            Resource::ConfigEntries => self.table(CONFIG_TABLE),
        };
        idx.max(1)
    }

    /// Highest of: the entries listing the service, the gateways fronting it, and (when a
    /// wildcard listener exists) the service itself, whose existence decides the match.
    fn ingress_index(&self, name: &str) -> u64 {
        let mut idx = self
            .table(&ingress_key(name))
            .max(self.table(&ingress_key("*")));
        for gateway in self.ingress_gateways_for(name) {
            idx = idx.max(self.table(&service_key(&gateway)));
        }
        if self.has_ingress_wildcard() {
            idx = idx.max(self.table(&service_key(name)));
        }
        idx
    }

    fn has_connect(&self, name: &str) -> bool {
        self.nodes.values().any(|n| {
            n.services.values().any(|s| {
                s.spec
                    .connect_target()
                    .is_some_and(|t| t.eq_ignore_ascii_case(name))
            })
        })
    }

    fn has_ingress_wildcard(&self) -> bool {
        self.config_entries
            .values()
            .any(|e| e.spec.ingress_services.iter().any(|s| s == "*"))
    }

    /// Names of the ingress gateways whose config entry lists `name`; a `*` listener
    /// matches every typical service present except `consul`.
    pub fn ingress_gateways_for(&self, name: &str) -> Vec<String> {
        let wildcard_ok = !name.eq_ignore_ascii_case("consul")
            && self.nodes.values().any(|n| {
                n.services
                    .values()
                    .any(|s| s.spec.kind.is_empty() && s.spec.name.eq_ignore_ascii_case(name))
            });
        self.config_entries
            .values()
            .filter(|e| {
                e.spec
                    .ingress_services
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(name) || (s == "*" && wildcard_ok))
            })
            .map(|e| e.spec.name.clone())
            .collect()
    }

    pub fn node(&self, name: &str) -> Option<&NodeEntry> {
        self.nodes.get(&name.to_lowercase())
    }

    fn has_service(&self, name: &str) -> bool {
        self.by_service().contains_key(&name.to_ascii_lowercase())
    }

    /// The instances of service `name` (any case), in node then service ID order.
    pub fn instances_of(
        &self,
        name: &str,
    ) -> impl Iterator<Item = (&NodeEntry, &Versioned<ServiceSpec>)> {
        self.by_service()
            .get(&name.to_ascii_lowercase())
            .into_iter()
            .flatten()
            .filter_map(|(node, id)| {
                let entry = self.nodes.get(node)?;
                Some((entry, entry.services.get(id)?))
            })
    }

    fn by_service(&self) -> &HashMap<String, Vec<(String, String)>> {
        self.by_service.get_or_init(|| {
            let mut map: HashMap<String, Vec<(String, String)>> = HashMap::new();
            for (key, node) in &self.nodes {
                for (id, svc) in &node.services {
                    map.entry(svc.spec.name.to_ascii_lowercase())
                        .or_default()
                        .push((key.clone(), id.clone()));
                }
            }
            map
        })
    }

    pub fn register(&mut self, req: RegisterRequest) -> Result<(), EmulatorError> {
        self.validate_register(&req)?;
        let idx = self.next_index();
        let mut touched = BTreeSet::new();
        let node_lc = req.node.name.to_lowercase();

        // SkipNodeUpdate keeps a registered node as it is; a node not registered yet is
        // created all the same (Consul's documentation of the parameter).
        if !req.skip_node_update || !self.nodes.contains_key(&node_lc) {
            match self.nodes.get_mut(&node_lc) {
                None => {
                    let entry = NodeEntry {
                        node: Versioned::new(req.node, idx),
                        services: BTreeMap::new(),
                        checks: BTreeMap::new(),
                    };
                    self.nodes.insert(node_lc.clone(), entry);
                    touched.extend(["nodes".to_string(), node_key(&node_lc)]);
                }
                Some(entry) => {
                    let mut spec = req.node;
                    if spec.id.is_empty() {
                        spec.id = entry.node.spec.id.clone();
                    }
                    if entry.node.update(spec, idx) {
                        touched.extend(["nodes".to_string(), node_key(&node_lc)]);
                        touched
                            .extend(entry.services.values().flat_map(|s| instance_keys(&s.spec)));
                    }
                }
            }
        }

        if let Some(svc) = req.service {
            let Some(entry) = self.nodes.get_mut(&node_lc) else {
                return Err(EmulatorError::MissingNodeRegistration); // excluded by validation
            };
            let mut keys = vec!["services".to_string(), node_key(&node_lc)];
            keys.extend(instance_keys(&svc));
            match entry.services.get_mut(&svc.id) {
                None => {
                    entry
                        .services
                        .insert(svc.id.clone(), Versioned::new(svc, idx));
                    touched.extend(keys);
                }
                Some(existing) => {
                    let old_keys = instance_keys(&existing.spec);
                    if existing.update(svc, idx) {
                        touched.extend(keys);
                        touched.extend(old_keys);
                    }
                }
            }
        }

        for check in req.checks {
            let check_node = check.node.to_lowercase();
            let Some(entry) = self.nodes.get_mut(&check_node) else {
                continue; // validated above
            };
            let mut service_ids = vec![check.service_id.clone()];
            let changed = match entry.checks.get_mut(&check.check_id) {
                None => {
                    entry
                        .checks
                        .insert(check.check_id.clone(), Versioned::new(check, idx));
                    true
                }
                Some(existing) => {
                    service_ids.push(existing.spec.service_id.clone());
                    existing.update(check, idx)
                }
            };
            if changed {
                touched.insert(node_key(&check_node));
                touched.extend(check_service_keys(entry, &service_ids));
            }
        }

        self.bump(touched, idx);
        Ok(())
    }

    /// Everything that can fail is checked before anything is written.
    fn validate_register(&self, req: &RegisterRequest) -> Result<(), EmulatorError> {
        let node_lc = req.node.name.to_lowercase();
        for check in &req.checks {
            let check_node = check.node.to_lowercase();
            let on_request_node = check_node == node_lc;
            if !on_request_node && !self.nodes.contains_key(&check_node) {
                return Err(EmulatorError::MissingNodeRegistration);
            }
            if check.service_id.is_empty() {
                continue;
            }
            let in_request = on_request_node
                && req
                    .service
                    .as_ref()
                    .is_some_and(|s| s.id == check.service_id);
            let stored = self
                .nodes
                .get(&check_node)
                .is_some_and(|n| n.services.contains_key(&check.service_id));
            if !in_request && !stored {
                return Err(EmulatorError::MissingServiceRegistration);
            }
        }
        Ok(())
    }

    pub fn deregister(&mut self, req: DeregisterRequest) -> Result<(), EmulatorError> {
        let idx = self.next_index();
        let node_lc = req.node.to_lowercase();
        let mut touched = BTreeSet::new();

        if req.service_id.is_none() && req.check_id.is_none() {
            if let Some(entry) = self.nodes.remove(&node_lc) {
                touched.extend(["nodes".to_string(), node_key(&node_lc)]);
                if !entry.services.is_empty() {
                    touched.insert("services".to_string());
                }
                touched.extend(entry.services.values().flat_map(|s| instance_keys(&s.spec)));
            }
            self.bump(touched, idx);
            return Ok(());
        }

        if let Some(entry) = self.nodes.get_mut(&node_lc) {
            if let Some(service_id) = &req.service_id {
                if let Some(svc) = entry.services.remove(service_id) {
                    entry.checks.retain(|_, c| &c.spec.service_id != service_id);
                    touched.extend(["services".to_string(), node_key(&node_lc)]);
                    touched.extend(instance_keys(&svc.spec));
                }
            }
            if let Some(check_id) = &req.check_id {
                if let Some(check) = entry.checks.remove(check_id) {
                    touched.insert(node_key(&node_lc));
                    touched.extend(check_service_keys(entry, &[check.spec.service_id]));
                }
            }
        }
        self.bump(touched, idx);
        Ok(())
    }

    fn bump(&mut self, keys: BTreeSet<String>, idx: u64) {
        for key in keys {
            self.tables.insert(key, idx);
        }
    }

    /// Prepared query by UUID (case-insensitive), else by name (case-insensitive), else the
    /// template whose name is the longest prefix of it (Consul's `PreparedQueryResolve`).
    pub fn resolve_query(&self, id_or_name: &str) -> Option<&Versioned<QuerySpec>> {
        if id_or_name.is_empty() {
            return None;
        }
        let asked = id_or_name.to_lowercase();
        self.queries.get(&asked).or_else(|| {
            self.queries
                .values()
                .find(|q| !q.spec.name.is_empty() && q.spec.name.eq_ignore_ascii_case(id_or_name))
                .or_else(|| {
                    self.queries
                        .values()
                        .filter(|q| q.spec.is_template())
                        .filter(|q| asked.starts_with(&q.spec.name.to_lowercase()))
                        .max_by_key(|q| q.spec.name.len())
                })
        })
    }

    /// Consul's state-store checks: a name may alias neither another query's name nor an ID.
    fn check_query_name(
        &self,
        spec: &QuerySpec,
        own_id: Option<&str>,
    ) -> Result<(), EmulatorError> {
        if spec.name.is_empty() {
            return Ok(());
        }
        let aliased = self.queries.values().any(|q| {
            Some(q.spec.id.as_str()) != own_id && q.spec.name.eq_ignore_ascii_case(&spec.name)
        });
        if aliased {
            return Err(EmulatorError::Invalid(format!(
                "name '{}' aliases an existing query name",
                spec.name
            )));
        }
        if self.queries.contains_key(&spec.name.to_lowercase()) {
            return Err(EmulatorError::Invalid(format!(
                "name '{}' aliases an existing query ID",
                spec.name
            )));
        }
        Ok(())
    }

    /// Stores a new query under a fresh UUID and returns it.
    pub fn create_query(&mut self, mut spec: QuerySpec) -> Result<String, EmulatorError> {
        self.check_query_name(&spec, None)?;
        let id = loop {
            let id = super::query::new_uuid();
            if !self.queries.contains_key(&id) {
                break id;
            }
        };
        spec.id = id.clone();
        let idx = self.next_index();
        self.queries.insert(id.clone(), Versioned::new(spec, idx));
        self.bump(BTreeSet::from([QUERIES_TABLE.to_string()]), idx);
        Ok(id)
    }

    pub fn update_query(&mut self, id: &str, mut spec: QuerySpec) -> Result<(), EmulatorError> {
        let key = id.to_lowercase();
        if !self.queries.contains_key(&key) {
            return Err(non_existent_query(id));
        }
        self.check_query_name(&spec, Some(&key))?;
        spec.id = key.clone();
        let idx = self.next_index();
        if let Some(q) = self.queries.get_mut(&key) {
            if q.update(spec, idx) {
                self.bump(BTreeSet::from([QUERIES_TABLE.to_string()]), idx);
            }
        }
        Ok(())
    }

    pub fn delete_query(&mut self, id: &str) -> Result<(), EmulatorError> {
        let key = id.to_lowercase();
        if !self.queries.contains_key(&key) {
            return Err(non_existent_query(id));
        }
        let idx = self.next_index();
        self.queries.remove(&key);
        self.bump(BTreeSet::from([QUERIES_TABLE.to_string()]), idx);
        Ok(())
    }

    pub fn config_entry(&self, kind: &str, name: &str) -> Option<&Versioned<ConfigEntry>> {
        self.config_entries
            .get(&(kind.to_lowercase(), name.to_lowercase()))
    }

    /// Creates or replaces an entry (same kind and name, case-insensitive).
    pub fn put_config_entry(&mut self, entry: ConfigEntry) {
        let idx = self.next_index();
        let key = (entry.kind.to_lowercase(), entry.name.to_lowercase());
        let mut touched: BTreeSet<String> = entry
            .ingress_services
            .iter()
            .map(|s| ingress_key(s))
            .collect();
        let changed = match self.config_entries.get_mut(&key) {
            None => {
                self.config_entries.insert(key, Versioned::new(entry, idx));
                true
            }
            Some(existing) => {
                touched.extend(
                    existing
                        .spec
                        .ingress_services
                        .iter()
                        .map(|s| ingress_key(s)),
                );
                existing.update(entry, idx)
            }
        };
        if changed {
            touched.insert(CONFIG_TABLE.to_string());
            self.bump(touched, idx);
        }
    }

    /// Deleting an absent entry is not an error (as in Consul).
    pub fn delete_config_entry(&mut self, kind: &str, name: &str) {
        let idx = self.next_index();
        let key = (kind.to_lowercase(), name.to_lowercase());
        if let Some(old) = self.config_entries.remove(&key) {
            let mut touched: BTreeSet<String> = old
                .spec
                .ingress_services
                .iter()
                .map(|s| ingress_key(s))
                .collect();
            touched.insert(CONFIG_TABLE.to_string());
            self.bump(touched, idx);
        }
    }

    /// Lowers the raft index and every index to at most `index`; releases blocked queries.
    pub fn restore_snapshot(&mut self, index: u64) {
        self.raft_index = self.raft_index.min(index);
        for v in self.tables.values_mut() {
            *v = (*v).min(index);
        }
        for entry in self.nodes.values_mut() {
            clamp(&mut entry.node, index);
            entry.services.values_mut().for_each(|s| clamp(s, index));
            entry.checks.values_mut().for_each(|c| clamp(c, index));
        }
        self.queries.values_mut().for_each(|q| clamp(q, index));
        self.config_entries
            .values_mut()
            .for_each(|e| clamp(e, index));
        self.restores += 1;
    }
}

fn clamp<T>(v: &mut Versioned<T>, index: u64) {
    v.create_index = v.create_index.min(index);
    v.modify_index = v.modify_index.min(index);
}

/// Index keys of the services affected by a check change: a node-level check (empty
/// service ID) affects every service on the node.
fn check_service_keys(entry: &NodeEntry, service_ids: &[String]) -> Vec<String> {
    entry
        .services
        .values()
        .filter(|s| {
            service_ids
                .iter()
                .any(|id| id.is_empty() || *id == s.spec.id)
        })
        .flat_map(|s| instance_keys(&s.spec))
        .collect()
}

fn non_existent_query(id: &str) -> EmulatorError {
    EmulatorError::Invalid(format!("Cannot modify non-existent prepared query: '{id}'"))
}
