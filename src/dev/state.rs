//! Catalog data (nodes, services, checks) and Consul-style index tables.
//!
//! Index rules (Consul's memdb `index` table): every write bumps the raft index; the
//! resource indexes below move to that raft index only when the resource really changed:
//! * `nodes`: a node created, changed or removed;
//! * `services`: a service instance created, changed or removed;
//! * `service:<lowercase name>`: an instance of that service, its checks, or its node
//!   (fields or node-level checks) changed or was removed;
//! * `node:<lowercase name>`: anything on that node changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::register::{CheckSpec, DeregisterRequest, NodeSpec, RegisterRequest, ServiceSpec};
use super::EmulatorError;

/// A stored value with its Consul bookkeeping indexes.
#[derive(Debug, Clone)]
pub(super) struct Versioned<T> {
    pub spec: T,
    pub create_index: u64,
    pub modify_index: u64,
}

impl<T: PartialEq> Versioned<T> {
    fn new(spec: T, idx: u64) -> Self {
        Versioned {
            spec,
            create_index: idx,
            modify_index: idx,
        }
    }

    /// Replaces the spec; returns false (and keeps ModifyIndex) when nothing changed.
    fn update(&mut self, spec: T, idx: u64) -> bool {
        if self.spec == spec {
            return false;
        }
        self.spec = spec;
        self.modify_index = idx;
        true
    }
}

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
}

pub(super) struct Catalog {
    pub datacenter: String,
    raft_index: u64,
    tables: HashMap<String, u64>,
    /// By lowercase node name (Consul's node index is case-insensitive).
    pub nodes: BTreeMap<String, NodeEntry>,
    /// Number of snapshot restores; a change releases every blocked query.
    pub restores: u64,
}

fn service_key(name: &str) -> String {
    format!("service:{}", name.to_lowercase())
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
            restores: 0,
        }
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
        };
        idx.max(1)
    }

    pub fn node(&self, name: &str) -> Option<&NodeEntry> {
        self.nodes.get(&name.to_lowercase())
    }

    fn has_service(&self, name: &str) -> bool {
        self.nodes.values().any(|n| {
            n.services
                .values()
                .any(|s| s.spec.name.eq_ignore_ascii_case(name))
        })
    }

    pub fn register(&mut self, req: RegisterRequest) -> Result<(), EmulatorError> {
        self.validate_register(&req)?;
        self.raft_index += 1;
        let idx = self.raft_index;
        let mut touched = BTreeSet::new();
        let node_lc = req.node.name.to_lowercase();

        if !req.skip_node_update {
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
                        touched.extend(entry.services.values().map(|s| service_key(&s.spec.name)));
                    }
                }
            }
        }

        if let Some(svc) = req.service {
            let Some(entry) = self.nodes.get_mut(&node_lc) else {
                return Err(EmulatorError::MissingNodeRegistration); // excluded by validation
            };
            let keys = [
                "services".to_string(),
                service_key(&svc.name),
                node_key(&node_lc),
            ];
            match entry.services.get_mut(&svc.id) {
                None => {
                    entry
                        .services
                        .insert(svc.id.clone(), Versioned::new(svc, idx));
                    touched.extend(keys);
                }
                Some(existing) => {
                    let old_name = existing.spec.name.clone();
                    if existing.update(svc, idx) {
                        touched.extend(keys);
                        touched.insert(service_key(&old_name));
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
        let node_exists = self.nodes.contains_key(&node_lc);
        let will_exist = node_exists || !req.skip_node_update;
        if !will_exist && (req.service.is_some() || !req.checks.is_empty()) {
            return Err(EmulatorError::MissingNodeRegistration);
        }
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
        self.raft_index += 1;
        let idx = self.raft_index;
        let node_lc = req.node.to_lowercase();
        let mut touched = BTreeSet::new();

        if req.service_id.is_none() && req.check_id.is_none() {
            if let Some(entry) = self.nodes.remove(&node_lc) {
                touched.extend(["nodes".to_string(), node_key(&node_lc)]);
                if !entry.services.is_empty() {
                    touched.insert("services".to_string());
                }
                touched.extend(entry.services.values().map(|s| service_key(&s.spec.name)));
            }
            self.bump(touched, idx);
            return Ok(());
        }

        if let Some(entry) = self.nodes.get_mut(&node_lc) {
            if let Some(service_id) = &req.service_id {
                if let Some(svc) = entry.services.remove(service_id) {
                    entry.checks.retain(|_, c| &c.spec.service_id != service_id);
                    touched.extend([
                        "services".to_string(),
                        service_key(&svc.spec.name),
                        node_key(&node_lc),
                    ]);
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
        .map(|s| service_key(&s.spec.name))
        .collect()
}
