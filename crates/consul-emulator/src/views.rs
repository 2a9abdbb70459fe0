//! JSON bodies of the read endpoints, in the shapes real Consul (OSS) agents emit.
//! Enterprise-only fields (`Namespace`, `Partition`) are not emitted.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

use super::register::{CheckSpec, ServiceSpec};
use super::state::{Catalog, NodeEntry};
use super::versioned::Versioned;
use super::EmulatorConfig;

pub(super) type Instance<'a> = (&'a NodeEntry, &'a Versioned<ServiceSpec>);

/// Which instances a service endpoint returns.
pub(super) enum Select<'a> {
    /// `/v1/{catalog,health}/service/<name>`.
    Service(&'a str),
    /// `/v1/{catalog,health}/connect/<name>`: proxies for it and its Connect-native instances.
    Connect(&'a str),
    /// `/v1/health/ingress/<name>`: instances of the ingress gateways fronting it.
    Ingress(&'a str),
}

impl Catalog {
    /// `/v1/catalog/services`: name → sorted, deduplicated union of tags.
    pub fn catalog_services_json(&self) -> Value {
        let mut services: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for svc in self.nodes.values().flat_map(|n| n.services.values()) {
            let tags = services.entry(svc.spec.name.as_str()).or_default();
            tags.extend(svc.spec.tags.iter().map(String::as_str));
        }
        json!(services)
    }

    /// `/v1/catalog/nodes`, sorted by node name.
    pub fn catalog_nodes_json(&self) -> Value {
        Value::Array(self.nodes.values().map(|n| self.node_json(n)).collect())
    }

    /// `/v1/catalog/service/<name>` (and `connect`): flat node + service entries.
    pub fn catalog_service_json(&self, select: &Select<'_>, tags: &[String]) -> Value {
        let entries = self.select(select, tags).into_iter().map(|(node, svc)| {
            let n = &node.node.spec;
            let s = &svc.spec;
            let mut v = json!({
                "ID": n.id,
                "Node": n.name,
                "Address": n.address,
                "Datacenter": self.datacenter,
                "TaggedAddresses": n.tagged_addresses,
                "NodeMeta": n.meta,
                "ServiceKind": s.kind,
                "ServiceID": s.id,
                "ServiceName": s.name,
                "ServiceTags": s.tags,
                "ServiceAddress": s.address,
                "ServiceWeights": weights_json(s),
                "ServiceMeta": s.meta,
                "ServicePort": s.port,
                "ServiceEnableTagOverride": s.enable_tag_override,
                "ServiceProxy": proxy_json(s),
                "ServiceConnect": connect_json(s),
                "CreateIndex": svc.create_index,
                "ModifyIndex": svc.modify_index,
            });
            // `omitempty` in Consul's ServiceNode.
            if let (Value::Object(map), false) = (&mut v, s.tagged_addresses.is_empty()) {
                map.insert("ServiceTaggedAddresses".into(), tagged_addresses_json(s));
            }
            v
        });
        Value::Array(entries.collect())
    }

    /// `/v1/catalog/node/<name>`: `null` for an unknown node.
    pub fn catalog_node_json(&self, name: &str) -> Value {
        let Some(node) = self.node(name) else {
            return Value::Null;
        };
        let services: Map<String, Value> = node
            .services
            .iter()
            .map(|(id, svc)| (id.clone(), service_json(svc)))
            .collect();
        json!({ "Node": self.node_json(node), "Services": services })
    }

    /// `/v1/health/{service,connect,ingress}/<name>`: node, service and (node-level +
    /// service) checks.
    pub fn health_service_json(
        &self,
        select: &Select<'_>,
        tags: &[String],
        passing_only: bool,
    ) -> Value {
        let entries = self
            .select(select, tags)
            .into_iter()
            .filter(|(node, svc)| {
                !passing_only
                    || self
                        .instance_checks(node, svc)
                        .iter()
                        .all(|c| c.spec.status == "passing")
            })
            .map(|(node, svc)| self.health_entry_json(node, svc));
        Value::Array(entries.collect())
    }

    /// A ServiceEntry (CheckServiceNode).
    pub fn health_entry_json(&self, node: &NodeEntry, svc: &Versioned<ServiceSpec>) -> Value {
        let checks = self.instance_checks(node, svc);
        json!({
            "Node": self.node_json(node),
            "Service": service_json(svc),
            "Checks": checks.iter().map(|c| check_json(node, c)).collect::<Vec<_>>(),
        })
    }

    /// The node-level checks and the instance's own checks.
    pub fn instance_checks<'a>(
        &self,
        node: &'a NodeEntry,
        svc: &Versioned<ServiceSpec>,
    ) -> Vec<&'a Versioned<CheckSpec>> {
        node.checks
            .values()
            .filter(|c| c.spec.service_id.is_empty() || c.spec.service_id == svc.spec.id)
            .collect()
    }

    /// `/v1/health/node/<name>`: every check on the node (`[]` for an unknown node).
    pub fn health_node_json(&self, name: &str) -> Value {
        let checks = self
            .node(name)
            .map(|node| node.checks.values().map(|c| check_json(node, c)).collect())
            .unwrap_or_default();
        Value::Array(checks)
    }

    /// Selected instances carrying all `tags` (case-insensitive), ordered by node then
    /// service ID (ingress: by gateway name first). Names match case-insensitively.
    pub fn select(&self, select: &Select<'_>, tags: &[String]) -> Vec<Instance<'_>> {
        let all = || {
            self.nodes
                .values()
                .flat_map(|node| node.services.values().map(move |svc| (node, svc)))
        };
        let selected: Vec<Instance<'_>> = match *select {
            Select::Service(name) => self.instances_of(name).collect(),
            Select::Connect(name) => all()
                .filter(|(_, svc)| {
                    svc.spec
                        .connect_target()
                        .is_some_and(|t| t.eq_ignore_ascii_case(name))
                })
                .collect(),
            Select::Ingress(name) => self
                .ingress_gateways_for(name)
                .iter()
                .flat_map(|gw| self.instances_of(gw).collect::<Vec<_>>())
                .collect(),
        };
        selected
            .into_iter()
            .filter(|(_, svc)| {
                tags.iter()
                    .all(|want| svc.spec.tags.iter().any(|t| t.eq_ignore_ascii_case(want)))
            })
            .collect()
    }

    fn node_json(&self, node: &NodeEntry) -> Value {
        let n = &node.node.spec;
        json!({
            "ID": n.id,
            "Node": n.name,
            "Address": n.address,
            "Datacenter": self.datacenter,
            "TaggedAddresses": n.tagged_addresses,
            "Meta": n.meta,
            "CreateIndex": node.node.create_index,
            "ModifyIndex": node.node.modify_index,
        })
    }
}

/// An AgentService/NodeService (`Service` in health entries, values of `Services`).
fn service_json(svc: &Versioned<ServiceSpec>) -> Value {
    let s = &svc.spec;
    let mut v = json!({
        "ID": s.id,
        "Service": s.name,
        "Tags": s.tags,
        "Address": s.address,
        "Meta": s.meta,
        "Port": s.port,
        "Weights": weights_json(s),
        "EnableTagOverride": s.enable_tag_override,
        "Proxy": proxy_json(s),
        "Connect": connect_json(s),
        "CreateIndex": svc.create_index,
        "ModifyIndex": svc.modify_index,
    });
    // Both are `omitempty` in Consul's NodeService.
    if let Value::Object(map) = &mut v {
        if !s.kind.is_empty() {
            map.insert("Kind".into(), json!(s.kind));
        }
        if !s.tagged_addresses.is_empty() {
            map.insert("TaggedAddresses".into(), tagged_addresses_json(s));
        }
    }
    v
}

fn check_json(node: &NodeEntry, check: &Versioned<CheckSpec>) -> Value {
    let c = &check.spec;
    // ServiceName/ServiceTags come from the service as currently registered.
    let (service_name, service_tags) = node
        .services
        .get(&c.service_id)
        .filter(|_| !c.service_id.is_empty())
        .map(|s| (s.spec.name.clone(), s.spec.tags.clone()))
        .unwrap_or_default();
    let def = |key: &str| c.definition.get(key).and_then(Value::as_str).unwrap_or("");
    let check_type = if c.check_type.is_empty() {
        ["HTTP", "TCP", "GRPC", "UDP", "TTL"]
            .into_iter()
            .find(|k| c.definition.get(*k).is_some())
            .map(str::to_lowercase)
            .unwrap_or_default()
    } else {
        c.check_type.clone()
    };
    json!({
        "Node": node.node.spec.name,
        "CheckID": c.check_id,
        "Name": c.name,
        "Status": c.status,
        "Notes": c.notes,
        "Output": c.output,
        "ServiceID": c.service_id,
        "ServiceName": service_name,
        "ServiceTags": service_tags,
        "Type": check_type,
        "Interval": def("Interval"),
        "Timeout": def("Timeout"),
        "ExposedPort": 0,
        "Definition": c.definition,
        "CreateIndex": check.create_index,
        "ModifyIndex": check.modify_index,
    })
}

pub(super) fn tagged_addresses_json(s: &ServiceSpec) -> Value {
    let map: Map<String, Value> = s
        .tagged_addresses
        .iter()
        .map(|(k, a)| (k.clone(), json!({ "Address": a.address, "Port": a.port })))
        .collect();
    Value::Object(map)
}

pub(super) fn weights_json(s: &ServiceSpec) -> Value {
    json!({ "Passing": s.weights.0, "Warning": s.weights.1 })
}

/// ConnectProxyConfig: `MeshGateway` and `Expose` are always present (structs), the
/// registered fields follow Go's `omitempty`.
pub(super) fn proxy_json(s: &ServiceSpec) -> Value {
    let mut map = Map::new();
    map.insert("MeshGateway".into(), json!({}));
    map.insert("Expose".into(), json!({}));
    for (k, v) in &s.proxy {
        let empty = match v {
            Value::Null => true,
            Value::String(x) => x.is_empty(),
            Value::Number(n) => n.as_f64() == Some(0.0),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty() && k != "MeshGateway" && k != "Expose",
            Value::Bool(_) => false,
        };
        if !empty {
            map.insert(k.clone(), v.clone());
        }
    }
    Value::Object(map)
}

/// ServiceConnect: `{"Native": true}` or `{}` (both fields `omitempty`).
pub(super) fn connect_json(s: &ServiceSpec) -> Value {
    if s.connect_native {
        json!({ "Native": true })
    } else {
        json!({})
    }
}

/// `/v1/agent/self` for a single dev server agent.
pub(super) fn agent_self_json(cfg: &EmulatorConfig, node_id: &str) -> Value {
    json!({
        "Config": {
            "Datacenter": cfg.datacenter,
            "NodeName": cfg.node_name,
            "NodeID": node_id,
            "Server": true,
            "Revision": "emulator",
            "Version": "1.20.0",
        },
        "DebugConfig": {},
        "Coord": { "Adjustment": 0, "Error": 1.5, "Vec": [0, 0, 0, 0, 0, 0, 0, 0] },
        "Member": {
            "Name": cfg.node_name,
            "Addr": "127.0.0.1",
            "Port": 8301,
            "Tags": {
                "bootstrap": "1",
                "dc": cfg.datacenter,
                "id": node_id,
                "port": "8300",
                "role": "consul",
                "vsn": "2",
                "vsn_max": "3",
                "vsn_min": "2",
            },
            "Status": 1,
            "ProtocolMin": 1,
            "ProtocolMax": 5,
            "ProtocolCur": 2,
            "DelegateMin": 2,
            "DelegateMax": 5,
            "DelegateCur": 4,
        },
        "Meta": {},
    })
}

impl Catalog {
    /// `GET /v1/query/<id-or-name>/execute` body, `None` for an unknown query.
    /// Node order is deterministic (by node, then service ID): Consul shuffles.
    pub fn execute_query_json(&self, id_or_name: &str, limit: usize) -> Option<Value> {
        let q = &self.resolve_query(id_or_name)?.spec.rendered(id_or_name);
        let select = if q.connect {
            Select::Connect(&q.service)
        } else {
            Select::Service(&q.service)
        };
        let mut nodes: Vec<Value> = self
            .select(&select, &[])
            .into_iter()
            .filter(|(node, svc)| {
                // Consul's CheckServiceNodes.FilterIgnore.
                self.instance_checks(node, svc).iter().all(|c| {
                    q.ignore_check_ids.contains(&c.spec.check_id)
                        || match c.spec.status.as_str() {
                            "critical" => false,
                            "passing" => true,
                            _ => !q.only_passing,
                        }
                })
            })
            .filter(|(node, _)| meta_matches(q.node_meta.as_ref(), &node.node.spec.meta))
            .filter(|(_, svc)| meta_matches(q.service_meta.as_ref(), &svc.spec.meta))
            .filter(|(_, svc)| tags_match(q.tags.as_deref().unwrap_or_default(), &svc.spec.tags))
            .map(|(node, svc)| self.health_entry_json(node, svc))
            .collect();
        if limit > 0 {
            nodes.truncate(limit);
        }
        Some(json!({
            "Service": q.service,
            "Nodes": nodes,
            "DNS": { "TTL": q.dns_ttl },
            "Datacenter": self.datacenter,
            "PeerName": "",
            "Failovers": 0,
            // Consul embeds QueryMeta in the response struct, so it is marshalled too.
            "Index": 0,
            "LastContact": 0,
            "KnownLeader": true,
            "ConsistencyLevel": "",
            "NotModified": false,
            "Backend": 0,
            "ResultsFilteredByACLs": false,
        }))
    }
}

fn meta_matches(
    filter: Option<&BTreeMap<String, String>>,
    meta: &BTreeMap<String, String>,
) -> bool {
    filter.is_none_or(|f| f.iter().all(|(k, v)| meta.get(k) == Some(v)))
}

/// Consul's prepared-query `tagFilter`: every tag required (case-insensitive), none of the
/// `!`-prefixed ones present.
fn tags_match(filter: &[String], tags: &[String]) -> bool {
    let has = |want: &str| tags.iter().any(|t| t.eq_ignore_ascii_case(want));
    filter.iter().all(|f| match f.strip_prefix('!') {
        Some(not) => !has(not),
        None => has(f),
    })
}
