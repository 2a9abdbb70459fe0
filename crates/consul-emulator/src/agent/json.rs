//! JSON of the agent's read endpoints: `api.AgentService` (`/v1/agent/services`,
//! `/v1/agent/service/<id>`) and the agent's `HealthCheck` (`/v1/agent/checks`), as
//! Consul's `buildAgentService` and `AgentChecks` emit them (OSS: no `Namespace`).

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::{json, Map, Value};

use super::LocalCheck;
use crate::register::{ServiceSpec, KIND_CONNECT_PROXY};
use crate::views::{connect_json, proxy_json, tagged_addresses_json, weights_json};

/// An `api.AgentService`; `CreateIndex`/`ModifyIndex` are 0 in local state, so omitted.
pub(super) fn service_json(s: &ServiceSpec, datacenter: &str) -> Value {
    let mut map = Map::new();
    map.insert("ID".into(), json!(s.id));
    map.insert("Service".into(), json!(s.name));
    map.insert("Tags".into(), json!(s.tags));
    map.insert("Meta".into(), json!(s.meta));
    map.insert("Port".into(), json!(s.port));
    map.insert("Address".into(), json!(s.address));
    map.insert("Weights".into(), weights_json(s));
    map.insert("EnableTagOverride".into(), json!(s.enable_tag_override));
    map.insert("Datacenter".into(), json!(datacenter));
    // The rest is `omitempty`; `Proxy` only for proxies and gateways, `Connect` only when
    // native.
    if !s.kind.is_empty() {
        map.insert("Kind".into(), json!(s.kind));
    }
    if !s.tagged_addresses.is_empty() {
        map.insert("TaggedAddresses".into(), tagged_addresses_json(s));
    }
    if s.kind == KIND_CONNECT_PROXY || s.kind.ends_with("-gateway") {
        map.insert("Proxy".into(), proxy_json(s));
    }
    if s.connect_native {
        map.insert("Connect".into(), connect_json(s));
    }
    Value::Object(map)
}

/// `/v1/agent/service/<id>`: the service with its `ContentHash` (hash-based blocking).
pub(super) fn service_with_hash(s: &ServiceSpec, datacenter: &str) -> (String, Value) {
    let mut v = service_json(s, datacenter);
    let mut hasher = DefaultHasher::new();
    v.to_string().hash(&mut hasher);
    let hash = format!("{:x}", hasher.finish());
    if let Value::Object(map) = &mut v {
        map.insert("ContentHash".into(), json!(hash));
    }
    (hash, v)
}

/// A check of `/v1/agent/checks`: `ServiceName`/`ServiceTags` from the service as
/// registered now, indexes 0 (local state).
pub(super) fn check_json(check: &LocalCheck, services: &BTreeMap<String, ServiceSpec>) -> Value {
    let c = &check.spec;
    let (service_name, service_tags) = services
        .get(&c.service_id)
        .filter(|_| !c.service_id.is_empty())
        .map(|s| (s.name.clone(), s.tags.clone()))
        .unwrap_or_default();
    json!({
        "Node": c.node,
        "CheckID": c.check_id,
        "Name": c.name,
        "Status": c.status,
        "Notes": c.notes,
        "Output": c.output,
        "ServiceID": c.service_id,
        "ServiceName": service_name,
        "ServiceTags": service_tags,
        "Type": c.check_type,
        "Interval": check.interval_text(),
        "Timeout": check.timeout_text(),
        "ExposedPort": 0,
        "Definition": c.definition,
        "CreateIndex": 0,
        "ModifyIndex": 0,
    })
}
